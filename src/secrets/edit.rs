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

/// The start of the lines `edit` puts above the text when the last save did not pass: they
/// are removed before the text is checked again, so they never reach the encrypted file.
pub const ERROR_MARK: &str = "# cutover: ";

/// How many times the editor opens for one edit: an editor script that keeps writing broken
/// text must not loop forever.
pub const MAX_ROUNDS: usize = 5;

/// Runs an edit session of `original` (file name `label`, e.g. `prod.env`, used in parse
/// errors): write it to the workspace, run the editor, read back and validate (`check`: the
/// caller's checks on the parsed entries). Text that does not pass reopens the editor with the
/// error in [`ERROR_MARK`] lines at the top, as `git commit` and `kubectl edit` do, instead of
/// throwing the edit away; saving it unchanged gives up with that error, and so does the
/// [`MAX_ROUNDS`]th failure. An editor that fails is an error. The caller keeps the original
/// whenever this returns an error.
pub fn edit_text(
    original: &SecretString,
    label: &str,
    mut run_editor: impl FnMut(&Path) -> Result<(), SecretsError>,
    check: impl Fn(&[dotenv::Entry]) -> Result<(), SecretsError>,
) -> Result<(Outcome, bool), SecretsError> {
    let workspace = Workspace::new()?;
    let on_tmpfs = workspace.on_tmpfs;
    let mut shown = SecretString::from(original.expose_secret().to_string());
    let mut round = 0;
    let (text, new_entries) = loop {
        round += 1;
        let path = workspace.path().join(label);
        let _ = fs::remove_file(&path);
        let path = workspace.write(label, &shown)?;
        run_editor_held(&mut run_editor, &path)?;
        let bytes =
            Zeroizing::new(fs::read(&path).map_err(|e| SecretsError::io("read", &path, e))?);
        let saved = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        let unchanged_after_error = round > 1 && saved.as_str() == shown.expose_secret();
        let stripped = Zeroizing::new(without_error_lines(&saved));
        let result = dotenv::parse_bytes(stripped.as_bytes(), label)
            .map_err(SecretsError::from)
            .and_then(|entries| check(&entries).map(|()| entries));
        match result {
            Ok(entries) => break (SecretString::from(stripped.to_string()), entries),
            Err(err) if unchanged_after_error || round >= MAX_ROUNDS => return Err(err),
            Err(err) => {
                shown = SecretString::from(format!("{}{}", error_lines(&err), stripped.as_str()));
            }
        }
    };
    drop(workspace);
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

/// Runs the editor with SIGINT/SIGTERM/SIGHUP held off (the workspace must be cleaned up);
/// a signal that arrived meanwhile is an interruption.
fn run_editor_held(
    run_editor: &mut impl FnMut(&Path) -> Result<(), SecretsError>,
    path: &Path,
) -> Result<(), SecretsError> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let ids: Vec<_> = [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]
    .into_iter()
    .filter_map(|sig| signal_hook::flag::register(sig, Arc::clone(&interrupted)).ok())
    .collect();
    let result = run_editor(path);
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result?;
    if interrupted.load(Ordering::SeqCst) {
        return Err(SecretsError::Interrupted);
    }
    Ok(())
}

/// The error above the text the editor reopens with (errors name lines and keys, never a
/// value).
fn error_lines(err: &SecretsError) -> String {
    let mut out = format!("{ERROR_MARK}this edit was not saved:\n");
    for line in err.to_string().lines() {
        out.push_str(&format!("{ERROR_MARK}  {line}\n"));
    }
    out.push_str(&format!(
        "{ERROR_MARK}fix it and save to try again, or save without a change to give up;\n\
         {ERROR_MARK}these lines are removed first (line numbers count from below them).\n"
    ));
    out
}

/// The text without the leading [`ERROR_MARK`] lines.
fn without_error_lines(text: &str) -> String {
    let mut rest = text;
    while rest.starts_with(ERROR_MARK) {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    rest.to_string()
}
