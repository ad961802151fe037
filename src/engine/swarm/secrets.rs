//! The swarm engine's secrets: every decrypted value becomes an immutable swarm secret whose
//! name carries a hash of the value ([`secret_name`]), created before the stack deploy that
//! references it, and removed once no service spec (current or previous) references it.
//! Values reach docker on stdin only (`docker::swarm::create_secret`).

use std::collections::{BTreeMap, BTreeSet};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::docker::swarm;
use crate::docker::DockerError;

/// `<project>_<KEY>_<first 10 hex of sha256(project, KEY, value)>`. Project and key are
/// hashed in too, so one value under two keys gives two names that do not reveal that the
/// values are equal. Who can list swarm secrets is a swarm manager, who can read them anyway.
pub fn secret_name(project: &str, key: &str, value: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [project.as_bytes(), b"\0", key.as_bytes(), b"\0", value] {
        hash.update(part);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{project}_{key}_{hex}")
}

/// The swarm secret name of every key, from its decrypted value.
pub fn secret_names(
    project: &str,
    secrets: &BTreeMap<String, SecretString>,
) -> BTreeMap<String, String> {
    secrets
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                secret_name(project, k, v.expose_secret().as_bytes()),
            )
        })
        .collect()
}

/// The `(key, name)` pairs of `names` that `project` does not have as swarm secrets yet.
pub fn missing<'n>(
    names: &'n BTreeMap<String, String>,
    existing: &BTreeSet<String>,
) -> Vec<(&'n String, &'n String)> {
    names
        .iter()
        .filter(|(_, name)| !existing.contains(*name))
        .collect()
}

/// The names of the swarm secrets cutover created for `project`.
pub fn existing(project: &str) -> Result<BTreeSet<String>, DockerError> {
    Ok(swarm::secrets_of(project)?
        .into_iter()
        .map(|s| s.name)
        .collect())
}

/// Creates the missing versions; returns their names. Existing ones are immutable and already
/// hold the same value: the name is the value's hash.
pub fn create(
    project: &str,
    missing: &[(&String, &String)],
    values: &BTreeMap<String, SecretString>,
) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for (key, name) in missing {
        swarm::create_secret(project, key, name, &values[*key])?;
        created.push((*name).clone());
    }
    Ok(created)
}

/// Removes cutover's secrets of `project` that no service spec (current or previous)
/// references. Returns the removed names and notes for those swarm refused to remove.
pub fn prune(project: &str) -> Result<(Vec<String>, Vec<String>), DockerError> {
    let services = swarm::services_of(project)?;
    let referenced: BTreeSet<&String> = services
        .iter()
        .flat_map(|s| s.secrets.iter().chain(&s.previous_secrets))
        .collect();
    let mut removed = Vec::new();
    let mut notes = Vec::new();
    for secret in swarm::secrets_of(project)? {
        if referenced.contains(&secret.name) {
            continue;
        }
        match swarm::remove_secret(&secret.name) {
            Ok(()) => removed.push(secret.name),
            Err(e) => notes.push(format!("kept swarm secret {}: {e}", secret.name)),
        }
    }
    Ok((removed, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_versioned_by_value() {
        let a = secret_name("shop", "DB_PASSWORD", b"hunter2");
        assert!(a.starts_with("shop_DB_PASSWORD_"), "{a}");
        assert_eq!(a.len(), "shop_DB_PASSWORD_".len() + 10);
        assert_eq!(a, secret_name("shop", "DB_PASSWORD", b"hunter2"));
        assert_ne!(a, secret_name("shop", "DB_PASSWORD", b"hunter3"));
        // The same value under another key is another, unrelated name.
        let b = secret_name("shop", "API_KEY", b"hunter2");
        assert_ne!(a[a.len() - 10..], b[b.len() - 10..]);
    }
}
