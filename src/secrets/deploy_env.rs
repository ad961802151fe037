//! The secrets a deploy needs, decrypted in memory from every file cutover.yml names: the
//! values (compose: process environment; swarm: the swarm secrets' contents) and the key
//! names per service ([`SecretKeys`], what rendering gets: names, never values).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Loaded;

/// Secret key names per service group: values never pass through rendering.
#[derive(Debug, Clone, Default)]
pub struct SecretKeys {
    pub app: BTreeSet<String>,
    pub accessories: BTreeMap<String, BTreeSet<String>>,
}

impl SecretKeys {
    /// The secret key names of one accessory (none when it has no secrets files).
    pub fn accessory(&self, name: &str) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        self.accessories.get(name).unwrap_or(&NONE)
    }
}

/// Whose secrets files a group is: the app's, or one accessory's. An enum, not the name:
/// an accessory may be called `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    App,
    Accessory(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::App => f.write_str("the app"),
            Owner::Accessory(name) => write!(f, "accessory `{name}`"),
        }
    }
}

/// The ciphertext a deploy decrypted, file by file as read (the path as cutover.yml resolves
/// it, and the bytes): what files mode keeps per started service (`secrets::deployed`), so a
/// reboot restores the values that deploy started, not whatever the store holds by then.
pub type Ciphertext = Vec<(PathBuf, Vec<u8>)>;

/// The ciphertext of every group, as this deploy read it.
#[derive(Debug, Clone, Default)]
pub struct SecretSources {
    pub app: Ciphertext,
    pub accessories: BTreeMap<String, Ciphertext>,
}

impl SecretSources {
    /// The files of one accessory (none when it has no secrets files).
    pub fn accessory(&self, name: &str) -> &[(PathBuf, Vec<u8>)] {
        self.accessories.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Every decrypted value by key, which service owns which keys, and the ciphertext they came
/// from.
pub struct DeployEnv {
    pub values: BTreeMap<String, SecretString>,
    pub keys: SecretKeys,
    pub sources: SecretSources,
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
    let groups: Vec<(Owner, &Vec<PathBuf>)> = std::iter::once((Owner::App, &config.app.secrets))
        .chain(
            config
                .accessories
                .iter()
                .map(|(n, a)| (Owner::Accessory(n.to_string()), &a.secrets)),
        )
        .filter(|(_, files)| !files.is_empty())
        .collect();
    if groups.is_empty() {
        return Ok(DeployEnv {
            values: BTreeMap::new(),
            keys: SecretKeys::default(),
            sources: SecretSources::default(),
        });
    }
    let identities = super::resolve_identity(identity)
        .context("cannot decrypt the secrets files named in cutover.yml")?;
    let mut decrypted = Vec::with_capacity(groups.len());
    let mut sources = SecretSources::default();
    for (owner, files) in groups {
        // Read once, decrypt those bytes, keep those bytes: what is kept for a reboot is
        // exactly what this deploy started, even if `secrets set` runs meanwhile.
        let read: Ciphertext = files
            .iter()
            .map(|f| {
                let path = loaded.resolve(f);
                super::store::read_file(&path).map(|bytes| (path, bytes))
            })
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot decrypt the secrets of {owner}"))?;
        let env = super::load_env_bytes(&read, &identities)
            .with_context(|| format!("cannot decrypt the secrets of {owner}"))?;
        match &owner {
            Owner::App => sources.app = read,
            Owner::Accessory(name) => {
                sources.accessories.insert(name.clone(), read);
            }
        }
        decrypted.push((owner, env));
    }
    let registry_key = registry_key(loaded);
    let mut env = combine(decrypted, registry_key)?;
    env.sources = sources;
    Ok(env)
}

/// The key `registry.password_secret` names: decrypted for `docker login`, given to no
/// service.
pub fn registry_key(loaded: &Loaded) -> Option<&str> {
    loaded
        .config
        .registry
        .as_ref()
        .map(|r| r.password_secret.0.as_str())
}

/// One environment from every group's values, and each group's key names. A key in two
/// groups must carry the same value, since compose gets one environment. The registry
/// password (`registry_key`) is for `docker login` on the box, not for the app: no
/// container's environment names it (`values` keeps it for the pull step).
fn combine(
    groups: Vec<(Owner, super::SecretEnv)>,
    registry_key: Option<&str>,
) -> anyhow::Result<DeployEnv> {
    let mut values = BTreeMap::new();
    let mut keys = SecretKeys::default();
    for (owner, env) in groups {
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
        if let Some(registry_key) = registry_key {
            names.remove(registry_key);
        }
        match owner {
            Owner::App => keys.app = names,
            Owner::Accessory(name) => {
                keys.accessories.insert(name, names);
            }
        }
    }
    Ok(DeployEnv {
        values,
        keys,
        sources: SecretSources::default(),
    })
}

/// Values at least this long are masked wherever they appear, inside longer words too;
/// shorter ones only where they stand as a word of their own, so a value like `plain` or
/// `1` does not turn every `plain` or `1` in unrelated output into `***`.
pub const MASK_EVERYWHERE_FROM: usize = 8;

/// `text` with every decrypted value in it replaced by `***`: output of the release command
/// or a hook shown to the user must never carry a secret. Every occurrence of every value is
/// found in the original text first and overlapping or touching ones are masked as one, so a
/// value that contains another, or two values that overlap (`…gh12` and `12345…`), leave no
/// fragment. See [`MASK_EVERYWHERE_FROM`] for short values.
pub fn redact(text: &str, values: &BTreeMap<String, SecretString>) -> String {
    // A value of several lines (a PEM key) is masked line by line too: output is redacted
    // one line at a time.
    let secrets = values
        .values()
        .map(|v| v.expose_secret())
        .flat_map(|v| std::iter::once(v).chain(v.lines().filter(move |_| v.contains('\n'))))
        .map(str::trim_end)
        .filter(|v| !v.is_empty());
    // Every occurrence, and whether its value is long enough to be masked anywhere.
    let mut occurrences: Vec<(usize, usize, bool)> = Vec::new();
    for secret in secrets {
        let everywhere = secret.chars().count() >= MASK_EVERYWHERE_FROM;
        let mut from = 0;
        while let Some(offset) = text[from..].find(secret) {
            let at = from + offset;
            occurrences.push((at, at + secret.len(), everywhere));
            // Overlapping occurrences too (`aaaa` in `aaaaa`): go on one character later.
            from = at + text[at..].chars().next().map_or(1, char::len_utf8);
        }
    }
    // A short value is masked where it stands as a word; another secret touching or
    // overlapping it counts as a word's edge (`a1b2c3<token>`, the value twice in a row).
    let edge_before = |at: usize, me: usize| {
        occurrences
            .iter()
            .enumerate()
            .any(|(i, (s, e, _))| i != me && *s < at && at <= *e)
    };
    let edge_after = |end: usize, me: usize| {
        occurrences
            .iter()
            .enumerate()
            .any(|(i, (s, e, _))| i != me && *s <= end && end < *e)
    };
    let mut found: Vec<(usize, usize)> = occurrences
        .iter()
        .enumerate()
        .filter(|(i, (at, end, everywhere))| {
            *everywhere
                || ((edge_before(*at, *i) || word_edge_before(text, *at))
                    && (edge_after(*end, *i) || word_edge_after(text, *end)))
        })
        .map(|(_, (at, end, _))| (*at, *end))
        .collect();
    if found.is_empty() {
        return text.to_string();
    }
    found.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut shown_to = 0;
    let mut current: Option<(usize, usize)> = None;
    for (at, end) in found {
        current = match current {
            Some((start, stop)) if at <= stop => Some((start, stop.max(end))),
            Some((start, stop)) => {
                out.push_str(&text[shown_to..start]);
                out.push_str("***");
                shown_to = stop;
                Some((at, end))
            }
            None => Some((at, end)),
        };
    }
    if let Some((start, stop)) = current {
        out.push_str(&text[shown_to..start]);
        out.push_str("***");
        shown_to = stop;
    }
    out.push_str(&text[shown_to..]);
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// No letter, digit or `_` right before `at`.
fn word_edge_before(text: &str, at: usize) -> bool {
    !text[..at].chars().next_back().is_some_and(is_word)
}

/// No letter, digit or `_` right after `end`.
fn word_edge_after(text: &str, end: usize) -> bool {
    !text[end..].chars().next().is_some_and(is_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> crate::secrets::SecretEnv {
        crate::secrets::SecretEnv::from_pairs(pairs)
    }

    #[test]
    fn an_accessory_named_app_keeps_its_keys_apart_from_the_app() {
        let combined = combine(
            vec![
                (Owner::App, env(&[("APP_KEY", "a"), ("REGISTRY_PW", "r")])),
                (Owner::Accessory("app".into()), env(&[("DB_PASSWORD", "d")])),
            ],
            Some("REGISTRY_PW"),
        )
        .unwrap();
        assert_eq!(
            combined.keys.app,
            BTreeSet::from(["APP_KEY".to_string()]),
            "the app's keys, not the accessory's, and never the registry password"
        );
        assert_eq!(
            combined.keys.accessory("app"),
            &BTreeSet::from(["DB_PASSWORD".to_string()])
        );
        assert_eq!(combined.values.len(), 3);
    }

    #[test]
    fn a_key_with_two_values_is_refused_naming_the_owner_not_the_value() {
        let err = combine(
            vec![
                (Owner::App, env(&[("K", "s3cret-first")])),
                (
                    Owner::Accessory("db".into()),
                    env(&[("K", "s3cret-second")]),
                ),
            ],
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("`K` of accessory `db`"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn short_values_are_masked_only_as_words_of_their_own() {
        let values: BTreeMap<String, SecretString> = [("MODE", "plain"), ("N", "7")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v)))
            .collect();
        assert_eq!(
            redact("mode=plain, explained plainly; 7 of 17 (v7)", &values),
            "mode=***, explained plainly; *** of 17 (v7)"
        );
        assert_eq!(redact("plain", &values), "***");
    }

    #[test]
    fn a_multi_line_value_is_masked_line_by_line() {
        let pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n";
        let values: BTreeMap<String, SecretString> =
            [("KEY".to_string(), SecretString::from(pem))].into();
        let shown: Vec<String> = pem.lines().map(|l| redact(l, &values)).collect();
        assert!(!shown.iter().any(|l| l.contains("MIIEvQ")), "{shown:?}");
    }

    #[test]
    fn overlapping_values_leave_no_fragment() {
        let values: BTreeMap<String, SecretString> =
            [("A", "abcdefgh12"), ("B", "12345678xy"), ("C", "aaaaaaaa")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(v)))
                .collect();
        assert_eq!(redact("x abcdefgh12345678xy y", &values), "x *** y");
        assert_eq!(redact("aaaaaaaaaa", &values), "***");
        assert_eq!(redact("ünïcödé abcdefgh12", &values), "ünïcödé ***");
    }

    #[test]
    fn a_short_value_touching_another_secret_is_masked() {
        let values: BTreeMap<String, SecretString> =
            [("PIN", "a1b2c3"), ("TOKEN", "tok_0123456789abcdef")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(v)))
                .collect();
        assert_eq!(
            redact("auth a1b2c3tok_0123456789abcdef", &values),
            "auth ***"
        );
        assert_eq!(redact("twice a1b2c3a1b2c3!", &values), "twice ***!");
        assert_eq!(redact("inside xa1b2c3x", &values), "inside xa1b2c3x");
    }

    #[test]
    fn short_values_are_masked_only_as_words() {
        let values: BTreeMap<String, SecretString> = [("A", "plain")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v)))
            .collect();
        assert_eq!(
            redact("plain text, plaintext, x=plain", &values),
            "*** text, plaintext, x=***"
        );
    }

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
