//! Project sync: the files a deploy reads, sent to `remote.dir` on the box as one tar stream.
//!
//! Sent: the config (as `cutover.yml`), `templates/`, `secrets/*.age` and
//! `secrets/recipients.txt`; nothing else, and never the state dir. A plaintext dotenv file
//! anywhere in `secrets/` refuses the whole sync before anything is sent, so plaintext never
//! leaves the machine. On the box the stream is unpacked into a fresh
//! `releases/.incoming-<stamp>`, renamed to `releases/<stamp>` once complete, and only then is
//! the `current` symlink swapped (`mv -T`, atomic): a half-copied project is never used. Every
//! release links the one state dir (`<remote.dir>/.cutover`), so the lock, state and history
//! outlive releases.
//!
//! The archive is built here with `tar::Builder` (GNU headers, so a path of any length travels
//! whole through a long-name entry) rather than by a local `tar`, so what is sent is exactly
//! the list this module decides: regular files and their parent directories, every entry
//! appended from bytes read here, owned by 0:0. Nothing outside `templates/` and `secrets/` is
//! read for them: a symlink that resolves inside its own folder is followed (a linked file
//! travels as a regular file with its target's bytes, a linked directory as the files under it,
//! never into a directory it is already inside), and one that resolves elsewhere (`/etc/shadow`, a key outside the
//! project, the project root itself with its state dir and plaintext), or nowhere, refuses the
//! sync naming the link and its target.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

pub use crate::config::SYNC_MARKER;

/// The loosest modes sent: files, executables (any `x` bit at the source) and directories.
/// The mode sent is this one with the bits the source lacks taken away, so a file never
/// arrives looser than it is here.
const FILE_MODE: u32 = 0o644;
const EXEC_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;

/// The most a sync sends: a project's config, templates and ciphertext are kilobytes; links
/// that fan out (each level linking the next twice) would otherwise grow without bound.
const MAX_FILES: usize = 10_000;
const MAX_BYTES: usize = 256 << 20;

/// One file to send: its path in the archive and its bytes.
struct Entry {
    name: String,
    bytes: Vec<u8>,
    mode: u32,
}

/// What to send: the files, and the mode of each directory above them.
#[derive(Default)]
struct Contents {
    files: Vec<Entry>,
    dir_modes: BTreeMap<String, u32>,
    /// Bytes collected so far.
    bytes: usize,
    /// The folder being collected (`templates/` or `secrets/`), resolved: a link must stay in it.
    within: PathBuf,
    /// The directories being walked (resolved), from the folder down: a link back up to one
    /// of them would loop, and is not followed.
    walking: BTreeSet<PathBuf>,
}

impl Contents {
    fn file(&mut self, name: String, bytes: Vec<u8>, mode: u32) -> anyhow::Result<()> {
        self.bytes += bytes.len();
        if self.files.len() >= MAX_FILES || self.bytes > MAX_BYTES {
            bail!(
                "refusing to sync the project: more than {MAX_FILES} files or {} MiB under \
                 templates/ and secrets/ (at {name}); check for links that fan out",
                MAX_BYTES >> 20
            );
        }
        self.files.push(Entry { name, bytes, mode });
        Ok(())
    }

    /// Records a directory's mode; it is sent only if a file under it is.
    /// `path` itself, or the refusal of a symlink that leaves the project or leads nowhere.
    fn inside(&self, path: &Path) -> anyhow::Result<()> {
        let is_link = std::fs::symlink_metadata(path)
            .with_context(|| format!("could not read {}", path.display()))?
            .file_type()
            .is_symlink();
        if !is_link {
            return Ok(());
        }
        let target = std::fs::read_link(path).unwrap_or_default();
        let resolved = path.canonicalize().map_err(|e| {
            anyhow::anyhow!(
                "refusing to sync the project: {} is a symlink to {}, which cannot be resolved ({e})",
                path.display(),
                target.display()
            )
        })?;
        if !resolved.starts_with(&self.within) {
            bail!(
                "refusing to sync the project: {} is a symlink to {} ({}), outside {}; nothing \
                 outside it is sent to the box (copy the file in, or remove the link)",
                path.display(),
                target.display(),
                resolved.display(),
                self.within.display()
            );
        }
        Ok(())
    }

    fn dir(&mut self, name: &str, source: &std::fs::Metadata) {
        // The owner keeps rwx: the box must be able to remove an old release.
        let mode = DIR_MODE & (source.permissions().mode() | 0o700);
        self.dir_modes.insert(name.to_string(), mode);
    }
}

/// `policy`, with the bits `source` lacks taken away.
fn file_mode(policy: u32, source: &std::fs::Metadata) -> u32 {
    policy & source.permissions().mode()
}

/// The project as a tar archive, with what it holds (for the progress line).
pub struct Archive {
    pub tar: Vec<u8>,
    pub files: usize,
}

/// Collects the files to send from `dir` (config at `config_path`) and packs them.
pub fn pack(dir: &Path, config_path: &Path, marker: &str) -> anyhow::Result<Archive> {
    let mut contents = Contents::default();
    let config = std::fs::read(config_path)
        .with_context(|| format!("could not read {}", config_path.display()))?;
    let mode = file_mode(FILE_MODE, &metadata(config_path)?);
    contents.file("cutover.yml".into(), config, mode)?;
    for (folder, collect) in [
        (
            "templates",
            collect_tree as fn(&Path, &str, &mut Contents) -> anyhow::Result<()>,
        ),
        ("secrets", collect_secrets),
    ] {
        let path = dir.join(folder);
        // The folder itself is never a link: one to the project root (or its state dir) would
        // send everything under it, state and plaintext included, as templates.
        let linked = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if linked {
            bail!(
                "refusing to sync the project: {} is a symlink to {}; {folder}/ must be a \
                 directory of the project itself",
                path.display(),
                std::fs::read_link(&path).unwrap_or_default().display()
            );
        }
        if !path.is_dir() {
            continue;
        }
        contents.within = path
            .canonicalize()
            .with_context(|| format!("could not resolve {}", path.display()))?;
        collect(&path, folder, &mut contents)?;
    }
    let marker = marker.as_bytes().to_vec();
    contents.file(SYNC_MARKER.into(), marker, FILE_MODE)?;
    Ok(Archive {
        tar: write_tar(&contents)?,
        files: contents.files.len(),
    })
}

/// Metadata, symlinks followed.
fn metadata(path: &Path) -> anyhow::Result<std::fs::Metadata> {
    std::fs::metadata(path).with_context(|| format!("could not read {}", path.display()))
}

/// The tar stream of `contents`, each file preceded by its parent directories.
fn write_tar(contents: &Contents) -> anyhow::Result<Vec<u8>> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs_written = BTreeSet::new();
    for entry in &contents.files {
        // Parent directories first, so every tar (GNU, busybox) creates them with our mode.
        let parents = entry.name.match_indices('/').map(|(i, _)| &entry.name[..i]);
        for parent in parents {
            if dirs_written.insert(parent) {
                let dir = tar::EntryType::Directory;
                let mode = contents.dir_modes.get(parent).copied().unwrap_or(DIR_MODE);
                append(&mut tar, parent, dir, mode, &[], mtime)?;
            }
        }
        let kind = tar::EntryType::Regular;
        append(&mut tar, &entry.name, kind, entry.mode, &entry.bytes, mtime)?;
    }
    tar.into_inner()
        .context("could not finish the project's tar archive")
}

/// One entry; `append_data` writes a GNU long-name entry first when `name` needs one.
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    bytes: &[u8],
    mtime: u64,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(bytes.len() as u64);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    tar.append_data(&mut header, name, bytes)
        .with_context(|| format!("could not add {name} to the project's tar archive"))
}

fn collect_tree(root: &Path, prefix: &str, contents: &mut Contents) -> anyhow::Result<()> {
    let resolved = root
        .canonicalize()
        .with_context(|| format!("could not resolve {}", root.display()))?;
    if !contents.walking.insert(resolved.clone()) {
        return Ok(());
    }
    let walked = walk_tree(root, prefix, contents);
    contents.walking.remove(&resolved);
    walked
}

fn walk_tree(root: &Path, prefix: &str, contents: &mut Contents) -> anyhow::Result<()> {
    contents.dir(prefix, &metadata(root)?);
    let mut children: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("could not list {}", root.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("could not list {}", root.display()))?;
    children.sort();
    for path in children {
        let name = format!("{prefix}/{}", file_name(&path)?);
        contents.inside(&path)?;
        let meta = metadata(&path)?;
        if meta.is_dir() {
            collect_tree(&path, &name, contents)?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let policy = if meta.permissions().mode() & 0o111 != 0 {
                EXEC_MODE
            } else {
                FILE_MODE
            };
            contents.file(name, bytes, file_mode(policy, &meta))?;
        }
    }
    Ok(())
}

fn collect_secrets(dir: &Path, prefix: &str, contents: &mut Contents) -> anyhow::Result<()> {
    contents.dir(prefix, &metadata(dir)?);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("could not list {}", dir.display()))?;
    files.sort();
    for path in files {
        contents.inside(&path)?;
        if !path.is_file() {
            continue;
        }
        let name = file_name(&path)?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
        if crate::secrets::store::looks_like_plaintext_dotenv(&bytes) && name != "recipients.txt" {
            bail!(
                "{} is a plaintext dotenv file; refusing to sync the project to the box (plaintext \
                 never leaves this machine). Encrypt it with `cutover secrets encrypt {} --rm`, \
                 or move it out of secrets/",
                path.display(),
                path.display()
            );
        }
        // What is sent must be what its name says: ciphertext, or public keys. A plaintext
        // file named `.age` (in any encoding), or a dotenv saved as recipients.txt, stays here.
        if name.ends_with(".age") && !crate::secrets::store::looks_like_age(&bytes) {
            bail!(
                "{} is named .age but is not an age file; refusing to sync the project to the \
                 box (only ciphertext leaves this machine)",
                path.display()
            );
        }
        if name == "recipients.txt" {
            if let Some(n) = not_a_recipient_line(&bytes) {
                bail!(
                    "{}:{n} is not a recipient (expected `age1…` or `ssh-…` public keys, one a \
                     line, and `#` comments); refusing to sync the project to the box",
                    path.display()
                );
            }
        }
        if name.ends_with(".age") || name == "recipients.txt" {
            let mode = file_mode(FILE_MODE, &metadata(&path)?);
            contents.file(format!("secrets/{name}"), bytes, mode)?;
        }
    }
    Ok(())
}

/// The first line (1-based) of a recipients file that is not a public key, a comment or blank.
fn not_a_recipient_line(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .position(|line| {
            let line = line.trim();
            !(line.is_empty()
                || line.starts_with('#')
                || line.starts_with("age1")
                || line.starts_with("ssh-"))
        })
        .map(|i| i + 1)
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{}: the file name is not UTF-8", path.display()))
}

/// The shell script that unpacks the archive (on stdin) into a new release under `root` (a
/// shell expression) and prints the release's absolute path. `state_dir` is the config's
/// (relative ones are linked to the one under `root`). It changes nothing else: `current`
/// moves, and old releases go, only once the command run in the release has succeeded, under
/// the deploy lock (`remote/release.rs`).
pub fn unpack_script(root: &str, stamp: &str, state_dir: &Path) -> String {
    let q = crate::process::shell_quote;
    let link_state = if state_dir.is_absolute() {
        String::new()
    } else {
        let rel = q(&state_dir.display().to_string());
        format!(
            "(umask 027 && mkdir -p \"$root\"/{rel}) && mkdir -p \"$(dirname \"$t\"/{rel})\" && \
             ln -s \"$root\"/{rel} \"$t\"/{rel}; "
        )
    };
    format!(
        "set -e; root={root}; stamp={stamp}; mkdir -p \"$root/releases\"; \
         t=\"$root/releases/.incoming-$stamp\"; rm -rf \"$t\"; mkdir \"$t\"; \
         trap 'rm -rf \"$t\"' EXIT; \
         tar -x -f - -C \"$t\"; \
         {link_state}\
         mv \"$t\" \"$root/releases/$stamp\"; trap - EXIT; \
         printf '%s\\n' \"$root/releases/$stamp\"",
        stamp = q(stamp),
    )
}

#[cfg(test)]
mod tests;
