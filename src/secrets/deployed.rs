//! What each running service's values were deployed from, for `app.secrets_delivery: files`:
//! when a deploy writes a service's files on the tmpfs, it also keeps the ciphertext they were
//! decrypted from (the `secrets/*.age` bytes it read) in the project's state directory,
//! `.cutover/deployed-secrets/<service>.json` (0600, replaced atomically). After a reboot,
//! `secrets restore` decrypts these copies, not the store as it is by then: a `secrets set`
//! never deployed (never health-checked) must not reach the serving color, as in env mode,
//! where Docker keeps the environment a container was started with. The copy goes when the
//! service is stopped.
//!
//! Only ciphertext is on this disk, the same bytes `secrets/` already holds in git; nothing
//! here ever holds a decrypted value.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::deploy_env::Ciphertext;

/// The directory under the state directory.
pub const DIR: &str = "deployed-secrets";

/// One service's kept ciphertext, as JSON (hex, since age files may be binary).
#[derive(Serialize, Deserialize)]
struct Kept {
    files: Vec<KeptFile>,
}

#[derive(Serialize, Deserialize)]
struct KeptFile {
    /// The file as the deploy read it: only to name it in errors.
    path: PathBuf,
    age_hex: String,
}

/// Where the ciphertext of `service` is kept.
pub fn path(state_dir: &Path, service: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{service}.json"))
}

/// Keeps the ciphertext `service` was just given its values from.
pub fn save(state_dir: &Path, service: &str, files: &Ciphertext) -> anyhow::Result<()> {
    let kept = Kept {
        files: files
            .iter()
            .map(|(path, bytes)| KeptFile {
                path: path.clone(),
                age_hex: hex(bytes),
            })
            .collect(),
    };
    let file = path(state_dir, service);
    crate::atomic::write(&file, &serde_json::to_vec(&kept)?, 0o600)
        .with_context(|| format!("cannot keep the ciphertext {service} was deployed from"))
}

/// The ciphertext `service` was deployed from; `None` when nothing was kept (deployed by a
/// cutover that did not keep it yet).
pub fn load(state_dir: &Path, service: &str) -> anyhow::Result<Option<Ciphertext>> {
    let file = path(state_dir, service);
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", file.display())),
    };
    let kept: Kept = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} does not parse (expected the ciphertext {service} was deployed from, as JSON)",
            file.display()
        )
    })?;
    kept.files
        .into_iter()
        .map(|f| match unhex(&f.age_hex) {
            Some(bytes) => Ok((f.path, bytes)),
            None => bail!(
                "{}: the copy of {} is not hex",
                file.display(),
                f.path.display()
            ),
        })
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

/// Forgets what `service` was deployed from (it is stopped); nothing kept is fine.
pub fn remove(state_dir: &Path, service: &str) -> anyhow::Result<()> {
    let file = path(state_dir, service);
    match std::fs::remove_file(&file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("could not remove {}", file.display()))
        }
        _ => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn kept_ciphertext_round_trips_0600_and_goes_on_remove() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            (PathBuf::from("secrets/a.env.age"), vec![0u8, 1, 0xfe, 0xff]),
            (
                PathBuf::from("secrets/b.env.age"),
                b"age-encryption".to_vec(),
            ),
        ];
        assert!(load(dir.path(), "web-blue").unwrap().is_none());
        save(dir.path(), "web-blue", &files).unwrap();
        assert_eq!(load(dir.path(), "web-blue").unwrap().unwrap(), files);
        let mode = std::fs::metadata(path(dir.path(), "web-blue"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        remove(dir.path(), "web-blue").unwrap();
        remove(dir.path(), "web-blue").unwrap();
        assert!(load(dir.path(), "web-blue").unwrap().is_none());
    }

    #[test]
    fn a_damaged_copy_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "web-green");
        crate::atomic::write(
            &file,
            br#"{"files":[{"path":"s.age","age_hex":"zz"}]}"#,
            0o600,
        )
        .unwrap();
        let err = format!("{:#}", load(dir.path(), "web-green").unwrap_err());
        assert!(
            err.contains("web-green.json") && err.contains("s.age"),
            "{err}"
        );
    }
}
