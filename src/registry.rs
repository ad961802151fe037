//! The box-wide list of cutover projects, so that pruning one project never removes an image
//! another project records as current or as its rollback target.
//!
//! Two projects on one box may share an image repository (staging and prod of one app): each
//! project's own state names only its own images, so without a shared list the project with
//! `keep_images: 1` prunes the image the other needs for `rollback`. Every deploy registers its
//! state directory here; prune reads every registered project's `state.json`.
//!
//! One file per project, named by a hash of the state directory's canonical path and holding
//! that path, so registering is an idempotent atomic write and needs no lock. Where:
//! - `CUTOVER_REGISTRY_DIR` when set (tests, or a box that wants it elsewhere);
//! - as root, `/var/lib/cutover/projects` (mode 0755, entries 0644: they hold paths only, so
//!   an unprivileged user's prune sees root's projects too);
//! - otherwise `$XDG_STATE_HOME/cutover/projects`, else `~/.local/state/cutover/projects`.
//!
//! Reading lists the system directory and the user's own (and only the override when it is
//! set). An entry whose state directory has vanished is skipped (and removed when it is ours).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// Overrides where the registry lives (tests, or a box that keeps it elsewhere).
pub const DIR_ENV: &str = "CUTOVER_REGISTRY_DIR";

/// The registry root's default location when cutover runs as root.
pub const SYSTEM_DIR: &str = "/var/lib/cutover/projects";

/// Where this process registers its projects.
pub fn write_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if is_root() {
        return Ok(PathBuf::from(SYSTEM_DIR));
    }
    user_dir().context(
        "cannot find a per-user state directory for the project registry (HOME and XDG_STATE_HOME are unset); set CUTOVER_REGISTRY_DIR",
    )
}

/// Every registry directory this process reads, the one it writes first.
pub fn read_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs: Vec<PathBuf> = write_dir().into_iter().collect();
    for dir in [Some(PathBuf::from(SYSTEM_DIR)), user_dir()]
        .into_iter()
        .flatten()
    {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

fn user_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("cutover/projects"))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The entry name of a state directory: 16 hex digits of the sha256 of its canonical path.
fn entry_name(state_dir: &Path) -> String {
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The registry file that lists `state_dir`, in whichever registry directory holds it.
pub fn entry_of(state_dir: &Path) -> Option<PathBuf> {
    let canonical = state_dir.canonicalize().ok()?;
    let name = entry_name(&canonical);
    read_dirs()
        .into_iter()
        .map(|dir| dir.join(&name))
        .find(|entry| entry.is_file())
}

/// Records `state_dir` (which must exist) in the registry; a no-op when it already is.
pub fn register(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let state_dir = state_dir
        .canonicalize()
        .with_context(|| format!("could not resolve {}", state_dir.display()))?;
    let dir = write_dir()?;
    let entry = dir.join(entry_name(&state_dir));
    let mut text = state_dir.as_os_str().as_encoded_bytes().to_vec();
    text.push(b'\n');
    if std::fs::read(&entry).ok().as_deref() == Some(text.as_slice()) {
        return Ok(entry);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    crate::atomic::write(&entry, &text, 0o644).with_context(|| {
        format!(
            "could not register {} in {}",
            state_dir.display(),
            dir.display()
        )
    })?;
    Ok(entry)
}

/// The state directories of every registered project that still exists, sorted.
pub fn projects() -> anyhow::Result<Vec<PathBuf>> {
    let own = write_dir().ok();
    let mut found = BTreeSet::new();
    for dir in read_dirs() {
        let forget = own.as_deref() == Some(dir.as_path());
        found.extend(projects_in(&dir, forget)?);
    }
    Ok(found.into_iter().collect())
}

/// The existing state directories registered in `dir`; `forget`: remove the entries of
/// projects deleted since (only in this user's own registry).
fn projects_in(dir: &Path, forget: bool) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("could not list the project registry {}", dir.display()))
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry
            .with_context(|| format!("could not list the project registry {}", dir.display()))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // an atomic write's temp file
        }
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            // Gone since the listing (another run forgot a deleted project, below, at the
            // same moment), or a link to nothing: nothing to keep for it. A link (`register`
            // never writes one) is forgotten; a name gone is not touched again, since the
            // project may have registered anew under it since.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
                if forget && link {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("could not read the registry entry {}", path.display())
                })
            }
        };
        let text = String::from_utf8_lossy(&text);
        let state_dir = PathBuf::from(text.trim_end_matches('\n'));
        if state_dir.is_dir() {
            found.push(state_dir);
        } else if forget {
            // The project was deleted: forget it (best effort, it is only a cache entry).
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry removed between the listing and its read (another run forgetting a deleted
    /// project at the same moment; here, a link to nothing) is skipped, not an error that
    /// fails the deploy; one that cannot be read for another reason still is.
    #[test]
    fn an_entry_gone_before_it_is_read_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let kept = state.path().to_path_buf();
        std::fs::write(dir.path().join("aaaa"), format!("{}\n", kept.display())).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("bbbb")).unwrap();
        assert_eq!(
            projects_in(dir.path(), false).unwrap(),
            std::slice::from_ref(&kept)
        );
        assert!(dir.path().join("bbbb").symlink_metadata().is_ok());
        // In this user's own registry, the link to nothing is forgotten.
        assert_eq!(projects_in(dir.path(), true).unwrap(), [kept]);
        assert!(dir.path().join("bbbb").symlink_metadata().is_err());
        std::fs::create_dir(dir.path().join("cccc")).unwrap();
        let e = projects_in(dir.path(), false).unwrap_err();
        assert!(
            format!("{e:#}").contains("could not read the registry entry"),
            "{e:#}"
        );
    }

    #[test]
    fn entry_names_are_stable_and_distinct() {
        let a = entry_name(Path::new("/srv/prod/.cutover"));
        assert_eq!(a.len(), 16);
        assert_eq!(a, entry_name(Path::new("/srv/prod/.cutover")));
        assert_ne!(a, entry_name(Path::new("/srv/staging/.cutover")));
    }
}
