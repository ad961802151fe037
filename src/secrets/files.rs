//! `app.secrets_delivery: files`: decrypted values as files on a memory-backed filesystem,
//! one directory per compose service, so no value reaches a container's config (and so
//! Docker's state on disk), the compose file or `docker inspect`.
//!
//! Layout: `<root>/<project>/<service>/<KEY>`, where `<root>` is [`ROOT_ENV`] when set (tests,
//! a box that wants another tmpfs), else `/run/cutover/secrets` (see [`root`]). Each service (a web color, a worker color, an
//! accessory) has its own directory, so a rotation reaches only the color being started and a
//! rollback finds the old value where it was; the directory goes when its service stops.
//!
//! Modes: every directory 0700, owned by whoever runs cutover (root on a box), so on the host
//! only that user reaches a value. The files themselves are 0444: each is bind-mounted alone,
//! read-only, at `/run/secrets/<KEY>`, and inside the container the parent directories are not
//! traversed, so whatever user the image runs as can read its own secrets and nobody on the
//! host but root can. Files are created with `create_new` + mode 0600, written, then made
//! 0444, in a fresh directory that replaces the old one by rename: no half-written set is ever
//! visible under the service's name.
//!
//! Before anything is written, the root's filesystem must be a tmpfs or ramfs (statfs magic):
//! a root on a disk is refused, since the point is that no block device ever holds a value.
//! The check comes first: a refused root is never created or changed. An existing root is
//! never chmodded (a shared tmpfs such as `/dev/shm` keeps its 1777); it must belong to this
//! user or root and, if others may write to it, carry the sticky bit. The project's directory
//! is cutover's own: never a symlink, owned by this user, 0700, and checked again for its
//! filesystem (a disk mounted there is refused too). A write that fails, or one a kill
//! stopped, leaves no plaintext: the half-written set is removed, and so is any set an earlier
//! run left half-written.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use secrecy::{ExposeSecret, SecretString};

/// Overrides the root of the secret files (tests; a box that mounts its own tmpfs).
pub const ROOT_ENV: &str = "CUTOVER_SECRETS_RUN_DIR";

/// The root as root: `/run` is a tmpfs on every systemd box.
pub const SYSTEM_ROOT: &str = "/run/cutover/secrets";

/// Where a container sees its secrets.
pub const MOUNT_DIR: &str = "/run/secrets";

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The root of every project's secret directories for this process: [`ROOT_ENV`], else
/// [`SYSTEM_ROOT`]. Not root, that directory must exist and be this user's when files are
/// written (`render` only names it): `bootstrap` makes it for the deploy user at every boot
/// (a tmpfiles.d line). `$XDG_RUNTIME_DIR` is
/// no place for them: logind removes it when the user's last session ends, and Docker
/// needs a mount's source again whenever it restarts a container.
pub fn root() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ROOT_ENV).filter(|d| !d.is_empty()) {
        return checked_root(PathBuf::from(dir));
    }
    Ok(PathBuf::from(SYSTEM_ROOT))
}

/// The root must be absolute and plain: it is written into the compose file as a bind
/// mount's source, where `:` would split the spec and `$` would be interpolated.
fn checked_root(dir: PathBuf) -> anyhow::Result<PathBuf> {
    let text = dir.to_str().with_context(|| {
        format!(
            "{ROOT_ENV}={}: not UTF-8; expected an absolute path on a tmpfs",
            dir.display()
        )
    })?;
    if !dir.is_absolute() || text.contains([':', '$', '\n', '"', ',']) {
        bail!(
            "{ROOT_ENV}={text}: expected an absolute path on a tmpfs without `:`, `$`, `,` or quotes (it becomes a bind mount's source in the compose file)"
        );
    }
    Ok(dir)
}

/// The project's secret directories when it asks for files (`None` in env mode).
pub fn for_project(config: &crate::config::Config) -> anyhow::Result<Option<ProjectDirs>> {
    match config.app.secrets_delivery {
        crate::config::SecretsDelivery::Env => Ok(None),
        crate::config::SecretsDelivery::Files => {
            Ok(Some(ProjectDirs::new(&root()?, config.project.as_str())))
        }
    }
}

/// One project's secret directories under `root`.
#[derive(Debug, Clone)]
pub struct ProjectDirs {
    pub dir: PathBuf,
}

impl ProjectDirs {
    pub fn new(root: &Path, project: &str) -> Self {
        ProjectDirs {
            dir: root.join(project),
        }
    }

    /// The directory of one compose service (a color, a worker color, an accessory).
    pub fn service(&self, service: &str) -> PathBuf {
        self.dir.join(service)
    }

    /// Writes `values` as the service's files, replacing whatever set it had.
    pub fn write<'a>(
        &self,
        service: &str,
        values: impl IntoIterator<Item = (&'a str, &'a SecretString)>,
    ) -> anyhow::Result<PathBuf> {
        let root = self
            .dir
            .parent()
            .context("the secrets directory has no parent")?;
        usable_root(root).with_context(|| {
            format!(
                "app.secrets_delivery is `files`: {} must be a directory this user can write, on a tmpfs; `cutover bootstrap` on the box makes {SYSTEM_ROOT} for the deploy user at every boot, or set {ROOT_ENV}",
                root.display()
            )
        })?;
        own_private_dir(&self.dir)?;
        require_memory_backed(&self.dir)?;
        remove_half_written(&self.dir, service)?;
        let target = self.service(service);
        let fresh = self
            .dir
            .join(format!(".{service}.new-{}", std::process::id()));
        remove(&fresh)?;
        private_dir(&fresh)?;
        let written = values
            .into_iter()
            .try_for_each(|(key, value)| write_file(&fresh.join(key), value));
        if let Err(e) = written {
            // No plaintext left behind by a write that failed (a full tmpfs).
            let _ = remove(&fresh);
            return Err(e);
        }
        let old = self
            .dir
            .join(format!(".{service}.old-{}", std::process::id()));
        if target.exists() {
            fs::rename(&target, &old)
                .with_context(|| format!("cannot move {} aside to replace it", target.display()))?;
        }
        fs::rename(&fresh, &target).with_context(|| {
            format!("cannot rename {} to {}", fresh.display(), target.display())
        })?;
        remove(&old)?;
        Ok(target)
    }

    /// Removes one service's files (nothing to do when they are gone already).
    pub fn remove(&self, service: &str) -> anyhow::Result<()> {
        remove(&self.service(service))
    }
}

/// Refuses a directory that is not on a tmpfs or ramfs.
pub fn require_memory_backed(dir: &Path) -> anyhow::Result<()> {
    let stat =
        rustix::fs::statfs(dir).with_context(|| format!("cannot statfs {}", dir.display()))?;
    let magic = stat.f_type as u64;
    if magic != TMPFS_MAGIC && magic != RAMFS_MAGIC {
        bail!(
            "{} is not on a tmpfs or ramfs (filesystem magic {magic:#x}): secret files would reach a disk; point {ROOT_ENV} at a tmpfs (`stat -f -c %T DIR` says tmpfs) or use app.secrets_delivery: env",
            dir.display()
        );
    }
    Ok(())
}

/// The root, checked before anything is created or changed: on a tmpfs (a root that does
/// not exist yet is made, 0700, only where its nearest existing ancestor is on one), owned
/// by this user or root, sticky if others may write to it. An existing root keeps its mode.
fn usable_root(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        let ancestor = root
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("/"));
        require_memory_backed(ancestor)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
    }
    require_memory_backed(root)?;
    let meta = fs::metadata(root).with_context(|| format!("cannot stat {}", root.display()))?;
    let me = rustix::process::geteuid().as_raw();
    use std::os::unix::fs::MetadataExt as _;
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{} belongs to uid {}, not to this user (uid {me}) or root: another user could swap the secret files",
            root.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        bail!(
            "{} is writable by other users without the sticky bit (mode {:o}): another user could swap the secret files",
            root.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// The project's directory: made 0700 if missing; if present, a real directory (never a
/// symlink) owned by this user, then made 0700.
fn own_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return private_dir(dir);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
        Ok(meta) if !meta.file_type().is_dir() => bail!(
            "{} is not a directory (a symlink or a file): refusing to write secret files through it",
            dir.display()
        ),
        Ok(meta) if meta.uid() != rustix::process::geteuid().as_raw() => bail!(
            "{} belongs to uid {}, not to this user: refusing to write secret files into it",
            dir.display(),
            meta.uid()
        ),
        Ok(_) => {}
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))
}

/// Removes the half-written sets of `service` an earlier run left (`.<service>.new-<pid>`,
/// `.<service>.old-<pid>`: a kill between write and rename).
fn remove_half_written(dir: &Path, service: &str) -> anyhow::Result<()> {
    let (new, old) = (format!(".{service}.new-"), format!(".{service}.old-"));
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&new) || name.starts_with(&old) {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn write_file(path: &Path, value: &SecretString) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(value.expose_secret().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Read-only for whatever user the container runs as; the 0700 directory keeps it from
    // every other user of the host.
    file.set_permissions(fs::Permissions::from_mode(0o444))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

fn remove(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm() -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir_in("/dev/shm").ok()?;
        require_memory_backed(dir.path()).ok()?;
        Some(dir)
    }

    #[test]
    fn a_root_on_a_disk_is_refused_before_anything_is_written() {
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        if require_memory_backed(disk.path()).is_ok() {
            return; // the checkout itself is on a tmpfs: nothing to prove here
        }
        let dirs = ProjectDirs::new(disk.path(), "p");
        let secret = SecretString::from("s3cret-value");
        let err = dirs.write("app-blue", [("K", &secret)]).unwrap_err();
        assert!(format!("{err:#}").contains("not on a tmpfs"), "{err:#}");
        assert!(!dirs.service("app-blue").exists());
    }

    #[test]
    fn files_are_written_whole_private_and_replaced_as_a_set() {
        let Some(tmp) = shm() else { return };
        let dirs = ProjectDirs::new(tmp.path(), "p");
        let (a, b) = (SecretString::from("one"), SecretString::from("two"));
        let dir = dirs.write("app-blue", [("A", &a), ("B", &b)]).unwrap();
        assert_eq!(fs::read_to_string(dir.join("A")).unwrap(), "one");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dirs.dir), 0o700);
        assert_eq!(mode(&dir.join("B")), 0o444);
        let c = SecretString::from("three");
        dirs.write("app-blue", [("A", &c)]).unwrap();
        assert_eq!(fs::read_to_string(dir.join("A")).unwrap(), "three");
        assert!(
            !dir.join("B").exists(),
            "a key no longer in the set is gone"
        );
        let names: Vec<_> = fs::read_dir(&dirs.dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temp directory left: {names:?}");
        dirs.remove("app-blue").unwrap();
        assert!(!dir.exists());
        dirs.remove("app-blue").unwrap();
    }

    #[test]
    fn a_root_that_would_break_the_compose_file_is_refused() {
        for bad in ["relative/dir", "/run/a:b", "/run/$HOME"] {
            assert!(checked_root(PathBuf::from(bad)).is_err(), "{bad}");
        }
        assert!(checked_root(PathBuf::from("/dev/shm/x")).is_ok());
    }
}
