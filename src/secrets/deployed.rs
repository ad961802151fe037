//! What each running service's values were deployed from, for `app.secrets_delivery: files`:
//! when a deploy writes a service's files on the tmpfs, it also keeps the ciphertext they were
//! decrypted from (the `secrets/*.age` bytes it read) in the project's state directory,
//! `.cutover/deployed-secrets/<service>.json` (0600, replaced atomically). After a reboot,
//! `secrets restore` decrypts these copies, not the store as it is by then: a `secrets set`
//! never deployed (never health-checked) must not reach the serving color, as in env mode,
//! where Docker keeps the environment a container was started with.
//!
//! When a deploy stops the old web color, its copy is not dropped but moved to
//! `deployed-secrets/stopped/<service>.json`, where it stays until that color is stopped again:
//! `rollback` brings the color back with the values it was deployed with, decrypted from that
//! copy in memory, not with whatever the store holds by then. (Env mode keeps the web colors'
//! copies too, for the same rollback.) The copy of any other service goes when it stops.
//!
//! `secrets rekey` and `rotate-identity` re-encrypt every copy here with the store ([`all`],
//! [`rekey`]): one left to a retired key would refuse the rollback and fail the boot restore.
//!
//! Only ciphertext is on this disk, the same bytes `secrets/` already holds in git; nothing
//! here ever holds a decrypted value.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::deploy_env::Ciphertext;

/// The directory under the state directory.
pub const DIR: &str = "deployed-secrets";

/// The directory under [`DIR`] of the stopped web colors' copies.
pub const STOPPED: &str = "stopped";

/// One service's kept ciphertext, as JSON (hex, since age files may be binary).
#[derive(Serialize, Deserialize)]
struct Kept {
    /// The image the service was started with: a rollback takes a stopped color's copy only
    /// for the image it deploys (absent in copies kept before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    files: Vec<KeptFile>,
}

/// A stopped web color's copy: the image it ran and the ciphertext it was deployed with.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopped {
    pub image: Option<String>,
    pub files: Ciphertext,
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

/// Where the ciphertext of a stopped `service` is kept for a rollback.
pub fn stopped_path(state_dir: &Path, service: &str) -> PathBuf {
    state_dir
        .join(DIR)
        .join(STOPPED)
        .join(format!("{service}.json"))
}

/// The kept copies' directories are cutover's own: a symlink (or a file) in their place is
/// refused, so nothing is written through it to wherever it points, nor read from there.
fn own_dirs(state_dir: &Path) -> anyhow::Result<()> {
    let dir = state_dir.join(DIR);
    for dir in [dir.clone(), dir.join(STOPPED)] {
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if !meta.file_type().is_dir() => bail!(
                "{} is not a directory (a symlink or a file): refusing to keep or read deployed ciphertext through it; remove it (the next deploy makes it again)",
                dir.display()
            ),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
        }
    }
    Ok(())
}

/// Keeps the ciphertext `service` was just given its values from, started with `image`.
pub fn save(
    state_dir: &Path,
    service: &str,
    image: Option<&str>,
    files: &Ciphertext,
) -> anyhow::Result<()> {
    own_dirs(state_dir)?;
    let kept = Kept {
        image: image.map(str::to_string),
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
    own_dirs(state_dir)?;
    Ok(load_file(&path(state_dir, service), service)?.map(|s| s.files))
}

/// The ciphertext the stopped `service` was last deployed with (see [`retire`]); `None` when
/// none was kept.
pub fn load_stopped(state_dir: &Path, service: &str) -> anyhow::Result<Option<Stopped>> {
    own_dirs(state_dir)?;
    load_file(&stopped_path(state_dir, service), service)
}

fn load_file(file: &Path, service: &str) -> anyhow::Result<Option<Stopped>> {
    let text = match std::fs::read(file) {
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
    let image = kept.image;
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
        .map(|files| Some(Stopped { image, files }))
}

/// Forgets what `service` was deployed from (it is stopped); nothing kept is fine.
pub fn remove(state_dir: &Path, service: &str) -> anyhow::Result<()> {
    own_dirs(state_dir)?;
    remove_file(&path(state_dir, service))
}

/// The web color `service` is being stopped: its copy moves to `stopped/` (one rename),
/// replacing what an earlier stop kept there, for a rollback to bring it back with these
/// values. Nothing kept (deployed by a cutover that kept none) removes the earlier stop's
/// copy: it holds older values than the ones this color ran.
pub fn retire(state_dir: &Path, service: &str) -> anyhow::Result<()> {
    own_dirs(state_dir)?;
    let (from, to) = (path(state_dir, service), stopped_path(state_dir, service));
    if !from.exists() {
        return remove_file(&to);
    }
    let dir = crate::atomic::temp_dir_of(&to);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
    std::fs::rename(&from, &to)
        .with_context(|| format!("could not move {} to {}", from.display(), to.display()))
}

/// Every kept copy under `state_dir` (each running service's and each stopped web color's),
/// for `secrets rekey` and `rotate-identity`, which re-encrypt them with the store: left
/// encrypted to a retired key, a rollback would be refused and a reboot's `restore` would
/// fail until the next deploy. Anything else than a file there (a symlink) is refused.
pub fn all(state_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    own_dirs(state_dir)?;
    let mut found = Vec::new();
    for dir in [state_dir.join(DIR), state_dir.join(DIR).join(STOPPED)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let file = entry.path();
            // A temp file a crash left (`.cutover-tmp-…`) is not a copy.
            if file.extension().is_none_or(|e| e != "json")
                || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", file.display()))?;
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                bail!(
                    "{} is not a file (a symlink?): refusing to re-encrypt a kept copy through it; remove it (a rollback to that color then uses the store's values)",
                    file.display()
                );
            }
            found.push(file);
        }
    }
    found.sort();
    Ok(found)
}

/// The kept copy `file` re-encrypted to `recipients` and staged beside it (0600), not yet
/// renamed over it: each ciphertext is decrypted in memory with `decrypt_with`, sealed again
/// and checked with `verify_with`; the image and the names stay. Nothing plaintext is written.
pub fn rekey(
    file: &Path,
    decrypt_with: &super::Identities,
    recipients: &super::keys::Recipients,
    verify_with: &super::Identities,
) -> anyhow::Result<super::store::Staged> {
    let service = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kept = load_file(file, &service)?
        .with_context(|| format!("{} disappeared while it was re-encrypted", file.display()))?;
    let way_out = || {
        format!(
            "cannot re-encrypt {}, the ciphertext {service} was deployed with; remove it to go on (a rollback to that color, or a reboot's restore, then uses the store's values as they are now)",
            file.display()
        )
    };
    let mut files = Vec::with_capacity(kept.files.len());
    for (path, bytes) in &kept.files {
        let plain = super::store::decrypt_bytes(bytes, path, decrypt_with).with_context(way_out)?;
        let label = path.display().to_string();
        let sealed = super::store::seal(&plain.text, &label, recipients, Some(verify_with), path)
            .with_context(way_out)?;
        files.push(KeptFile {
            path: path.clone(),
            age_hex: hex(&sealed),
        });
    }
    let json = serde_json::to_vec(&Kept {
        image: kept.image,
        files,
    })?;
    Ok(super::store::stage(file, &json, 0o600)?)
}

fn remove_file(file: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(file) {
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
        save(dir.path(), "web-blue", None, &files).unwrap();
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
    fn a_stopped_color_keeps_its_copy_until_it_stops_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![(PathBuf::from("s.age"), b"a".to_vec())];
        let b = vec![(PathBuf::from("s.age"), b"b".to_vec())];
        save(dir.path(), "web-blue", Some("app:1"), &a).unwrap();
        retire(dir.path(), "web-blue").unwrap();
        assert!(load(dir.path(), "web-blue").unwrap().is_none());
        assert_eq!(
            load_stopped(dir.path(), "web-blue").unwrap().unwrap(),
            Stopped {
                image: Some("app:1".into()),
                files: a.clone()
            }
        );
        // Started again (a rollback) and stopped again: the newer copy replaces it.
        save(dir.path(), "web-blue", Some("app:2"), &b).unwrap();
        assert_eq!(
            load_stopped(dir.path(), "web-blue").unwrap().unwrap(),
            Stopped {
                image: Some("app:1".into()),
                files: a.clone()
            }
        );
        retire(dir.path(), "web-blue").unwrap();
        assert_eq!(
            load_stopped(dir.path(), "web-blue").unwrap().unwrap(),
            Stopped {
                image: Some("app:2".into()),
                files: b
            }
        );
        let mode = std::fs::metadata(stopped_path(dir.path(), "web-blue"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Stopped with nothing kept: the older copy must not stand in for what it ran.
        retire(dir.path(), "web-blue").unwrap();
        assert!(load_stopped(dir.path(), "web-blue").unwrap().is_none());
    }

    #[test]
    fn a_symlink_in_place_of_the_kept_copies_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join(DIR)).unwrap();
        let files = vec![(PathBuf::from("s.age"), b"x".to_vec())];
        let err = format!(
            "{:#}",
            save(dir.path(), "web-blue", None, &files).unwrap_err()
        );
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        assert!(load_stopped(dir.path(), "web-blue").is_err());
        assert!(retire(dir.path(), "web-blue").is_err());
        std::fs::remove_file(dir.path().join(DIR)).unwrap();
        std::fs::create_dir(dir.path().join(DIR)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join(DIR).join(STOPPED)).unwrap();
        assert!(save(dir.path(), "web-blue", None, &files).is_err());
        assert!(retire(dir.path(), "web-blue").is_err());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn all_lists_every_kept_copy_and_refuses_a_symlink_among_them() {
        let dir = tempfile::tempdir().unwrap();
        assert!(all(dir.path()).unwrap().is_empty());
        let files = vec![(PathBuf::from("s.age"), b"x".to_vec())];
        save(dir.path(), "web-blue", None, &files).unwrap();
        retire(dir.path(), "web-blue").unwrap();
        save(dir.path(), "web-green", None, &files).unwrap();
        // A temp file a crash left is no copy.
        std::fs::write(dir.path().join(DIR).join(".cutover-tmp-x.json"), "").unwrap();
        assert_eq!(
            all(dir.path()).unwrap(),
            [
                stopped_path(dir.path(), "web-blue"),
                path(dir.path(), "web-green")
            ]
        );
        std::os::unix::fs::symlink("/etc/hostname", path(dir.path(), "db")).unwrap();
        let err = format!("{:#}", all(dir.path()).unwrap_err());
        assert!(
            err.contains("db.json") && err.contains("not a file"),
            "{err}"
        );
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
