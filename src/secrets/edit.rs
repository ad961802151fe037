//! `secrets edit`: the one place plaintext touches a filesystem.
//!
//! An editor needs a file, so the decrypted text goes into a 0600 file inside a fresh 0700
//! directory, on a tmpfs when one is available (`$XDG_RUNTIME_DIR`, then `/dev/shm`) so it
//! never reaches a disk block. The directory is a `TempDir`, removed when this module is
//! done, on success, error or panic; the file is truncated first so its pages are freed even
//! if something still holds it open. SIGINT/SIGTERM/SIGHUP are held off while the editor runs
//! so Ctrl-C cannot kill cutover before the cleanup.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::dotenv;
use super::SecretsError;

/// Where the plaintext lives while the editor runs.
pub struct Workspace {
    dir: tempfile::TempDir,
    /// Whether `dir` is on a tmpfs (the command layer warns when it is not).
    pub on_tmpfs: bool,
}

impl Workspace {
    pub fn new() -> Result<Self, SecretsError> {
        let candidates = [
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            Some(PathBuf::from("/dev/shm")),
        ];
        let tmpfs = candidates
            .into_iter()
            .flatten()
            .find(|dir| dir.is_dir() && is_tmpfs(dir) && writable(dir));
        let (base, on_tmpfs) = match tmpfs {
            Some(dir) => (dir, true),
            None => (std::env::temp_dir(), false),
        };
        let dir = tempfile::Builder::new()
            .prefix("cutover-edit-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| SecretsError::io("create a private temp directory in", &base, e))?;
        Ok(Workspace { dir, on_tmpfs })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to a new 0600 file in the workspace.
    pub fn write(&self, file_name: &str, text: &SecretString) -> Result<PathBuf, SecretsError> {
        let path = self.dir.path().join(file_name);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SecretsError::io("create", &path, e))?;
        file.write_all(text.expose_secret().as_bytes())
            .map_err(|e| SecretsError::io("write", &path, e))?;
        Ok(path)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Truncate before the TempDir removes the files: frees tmpfs pages immediately even if
        // an editor left a process holding the file open.
        if let Ok(entries) = fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let _ = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(entry.path());
            }
        }
    }
}

fn writable(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| !m.permissions().readonly())
}

/// Looks `dir`'s mount up in /proc/self/mountinfo (the longest mount point that contains it).
fn is_tmpfs(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let mut best: Option<(usize, bool)> = None;
    for line in info.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source opts
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mount_point) = fields.get(4) else {
            continue;
        };
        let mount_point = unescape_mountinfo(mount_point);
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let fstype = fields.get(sep + 1).copied().unwrap_or("");
        if dir.starts_with(&mount_point) {
            let len = mount_point.len();
            if best.is_none_or(|(l, _)| len >= l) {
                best = Some((len, fstype == "tmpfs"));
            }
        }
    }
    best.is_some_and(|(_, tmpfs)| tmpfs)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// How a session ended.
pub enum Outcome {
    Unchanged,
    Changed {
        text: SecretString,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
}

/// The editor command: `$VISUAL`, `$EDITOR`, else `vi`, split on whitespace (no shell), so
/// `EDITOR="code --wait"` works.
pub fn editor_command() -> Vec<String> {
    let configured = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty());
    match configured {
        Some(cmd) => cmd.split_whitespace().map(str::to_string).collect(),
        None => vec!["vi".to_string()],
    }
}

/// Runs one edit session of `original` (file name `label`, e.g. `prod.env`, used in parse
/// errors): write it to the workspace, run the editor, read back and validate. An editor that
/// fails or content that does not parse is an error and the caller keeps the original.
pub fn edit_text(
    original: &SecretString,
    label: &str,
    run_editor: impl FnOnce(&Path) -> Result<(), SecretsError>,
) -> Result<(Outcome, bool), SecretsError> {
    let workspace = Workspace::new()?;
    let on_tmpfs = workspace.on_tmpfs;
    let path = workspace.write(label, original)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    let ids: Vec<_> = [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]
    .into_iter()
    .filter_map(|sig| signal_hook::flag::register(sig, Arc::clone(&interrupted)).ok())
    .collect();
    let result = run_editor(&path);
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result?;
    if interrupted.load(Ordering::SeqCst) {
        return Err(SecretsError::Interrupted);
    }

    let bytes = Zeroizing::new(fs::read(&path).map_err(|e| SecretsError::io("read", &path, e))?);
    drop(workspace);
    let new_entries = dotenv::parse_bytes(&bytes, label)?;
    let text = SecretString::from(String::from_utf8_lossy(&bytes).into_owned());
    if text.expose_secret() == original.expose_secret() {
        return Ok((Outcome::Unchanged, on_tmpfs));
    }
    // The original parsed when it was decrypted.
    let old_entries = dotenv::parse(original.expose_secret(), label)?;
    let find = |entries: &[dotenv::Entry], key: &str| {
        entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.expose_secret().to_string())
            .map(Zeroizing::new)
    };
    let added = new_entries
        .iter()
        .filter(|e| find(&old_entries, &e.key).is_none())
        .map(|e| e.key.clone())
        .collect();
    let removed = old_entries
        .iter()
        .filter(|e| find(&new_entries, &e.key).is_none())
        .map(|e| e.key.clone())
        .collect();
    let changed = new_entries
        .iter()
        .filter(|e| find(&old_entries, &e.key).is_some_and(|old| *old != e.value.expose_secret()))
        .map(|e| e.key.clone())
        .collect();
    Ok((
        Outcome::Changed {
            text,
            added,
            removed,
            changed,
        },
        on_tmpfs,
    ))
}
