//! The secrets a deploy needs, decrypted in memory from every file cutover.yml names: the
//! values (compose: process environment; swarm: the swarm secrets' contents) and the key
//! names per service (for rendering).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Loaded;
use crate::render::SecretKeys;

/// Every decrypted value by key, and which service owns which keys.
pub struct DeployEnv {
    pub values: BTreeMap<String, SecretString>,
    pub keys: SecretKeys,
}

/// Secret key names per service, for rendering. Values are decrypted only to learn the names
/// and are dropped here.
pub fn secret_keys(identity: Option<&Path>, loaded: &Loaded) -> anyhow::Result<SecretKeys> {
    deploy_env(identity, loaded).map(|env| env.keys)
}

/// Decrypts every secrets file the config names. A key in both the app's and an accessory's
/// files must carry the same value, since compose gets one environment. The key named by
/// `registry.password_secret` is decrypted but reaches no container.
pub fn deploy_env(identity: Option<&Path>, loaded: &Loaded) -> anyhow::Result<DeployEnv> {
    let config = &loaded.config;
    let mut values = BTreeMap::new();
    let mut keys = SecretKeys::default();
    let groups: Vec<(String, &Vec<PathBuf>)> =
        std::iter::once(("app".to_string(), &config.app.secrets))
            .chain(
                config
                    .accessories
                    .iter()
                    .map(|(n, a)| (n.to_string(), &a.secrets)),
            )
            .filter(|(_, files)| !files.is_empty())
            .collect();
    if groups.is_empty() {
        return Ok(DeployEnv { values, keys });
    }
    let identities = super::resolve_identity(identity)
        .context("cannot decrypt the secrets files named in cutover.yml")?;
    for (owner, files) in groups {
        let paths: Vec<_> = files.iter().map(|f| loaded.resolve(f)).collect();
        let env = super::load_env(&paths, &identities)
            .with_context(|| format!("cannot decrypt the secrets of {owner}"))?;
        let mut names: BTreeSet<String> = env.keys().map(str::to_string).collect();
        for (key, value) in env.iter() {
            let clash = values
                .get(key)
                .is_some_and(|v: &SecretString| v.expose_secret() != value.expose_secret());
            if clash {
                bail!("secret key `{key}` of {owner} has a different value in another service's secrets files; compose gets one environment, so use distinct key names");
            }
            values.insert(key.to_string(), value.clone());
        }
        // The registry password is for `docker login` on the box, not for the app: no
        // container's environment names it (values keeps it for the pull step).
        if let Some(registry) = &config.registry {
            names.remove(&registry.password_secret.0);
        }
        if owner == "app" {
            keys.app = names;
        } else {
            keys.accessories.insert(owner, names);
        }
    }
    Ok(DeployEnv { values, keys })
}

/// `text` with every decrypted value in it replaced by `***` (longest first, so a value that
/// contains another is masked whole): output of the release command or a hook shown to the
/// user must never carry a secret.
pub fn redact(text: &str, values: &BTreeMap<String, SecretString>) -> String {
    let mut secrets: Vec<&str> = values
        .values()
        .map(|v| v.expose_secret())
        .filter(|v| !v.is_empty())
        .collect();
    secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for secret in secrets {
        if out.contains(secret) {
            out = out.replace(secret, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_every_value_longest_first() {
        let values: BTreeMap<String, SecretString> = [("A", "hunter2"), ("B", "hunter2-admin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v)))
            .collect();
        assert_eq!(
            redact("pw=hunter2-admin and hunter2, ok", &values),
            "pw=*** and ***, ok"
        );
    }
}
