//! Self-install: make sure the box runs exactly this cutover, uploading it when it does not.
//!
//! The binary lives in a per-user directory (`${XDG_DATA_HOME:-~/.local/share}/cutover/bin`),
//! named `cutover-<version>-<sha8>`, so deploys need no root and "this exact version" is one
//! `test -x` plus a sha256 of the file on the box. An upload is `cat` into a temp file in that
//! directory over the open connection, checked against our sha256 on the box, tried
//! (`--version`) and renamed into place, so a cut-off upload never becomes the binary.
//! Each upload then keeps the [`KEEP_BINARIES`] newest `cutover-*` files there and removes
//! the rest, so a small box's disk does not fill with every version ever deployed.
//!
//! A box of another architecture (an ARM box deployed to from an x86_64 laptop) gets the
//! release binary of its architecture and of our version, which the laptop keeps where the
//! box keeps its own: `${XDG_DATA_HOME:-~/.local/share}/cutover/bin/cutover-<version>-<triple>`
//! (the release tarball's binary, renamed). Its ELF header is checked here, and the box
//! checks its `--version` before the upload becomes its binary.

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};

use super::ssh::Session;

/// How many installed binaries an upload leaves on the box (the new one included): two
/// teammates on different versions each keep theirs instead of uploading on every deploy.
/// A deploy still running an older one is not hurt: Linux keeps a running file alive.
pub const KEEP_BINARIES: usize = 3;

/// What the box reported about itself and its cutover.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The installed binary's absolute path on the box.
    pub binary: String,
    /// False when it had to be uploaded.
    pub was_installed: bool,
    /// The box's `$HOME` (remote.dir's `~`).
    pub home: String,
}

/// The binary the box gets (ours, or the release binary of the box's architecture) and its
/// digest.
pub struct Local {
    bytes: Vec<u8>,
    sha256: String,
    /// The kept other-arch binary it was read from (None: the running binary), named when
    /// the box refuses it.
    kept: Option<std::path::PathBuf>,
}

impl Local {
    /// The running binary.
    pub fn current() -> anyhow::Result<Local> {
        let exe = std::env::current_exe().context("could not find the running cutover binary")?;
        let bytes =
            std::fs::read(&exe).with_context(|| format!("could not read {}", exe.display()))?;
        Ok(Local::of(bytes, None))
    }

    fn of(bytes: Vec<u8>, kept: Option<std::path::PathBuf>) -> Local {
        let sha256 = hex(&Sha256::digest(&bytes));
        Local {
            bytes,
            sha256,
            kept,
        }
    }

    /// What a box whose `uname -m` is `machine` runs: this binary on a box of our own
    /// architecture, else the release binary of the box's architecture and our version from
    /// [`foreign_binary_path`]. `target` names the box in errors.
    pub fn for_machine(machine: &str, target: &str) -> anyhow::Result<Local> {
        if same_arch(machine) {
            return Local::current();
        }
        let Some(elf) = elf_machine_of(machine) else {
            bail!(
                "{target} is {machine} and cutover has no release for it (there are x86_64 and \
                 aarch64): run `cutover --host` only against x86_64 or aarch64 boxes"
            );
        };
        let artifact = artifact_for(machine);
        let path = foreign_binary_path(&artifact)?;
        let file = match open_kept(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{target} is {machine} and this cutover is built for {ours}: put the {machine} \
                 release binary of this version at {path} (the `cutover` inside {artifact}.tar.gz, \
                 renamed), or run `cutover --host` from an {machine} machine",
                ours = local_machine(),
                path = path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        // It runs on the box as the deploy user (as root with sudo): only its owner may
        // have been able to change it. Checked on the open file, then read from it: what
        // is checked is what is sent.
        refuse_a_binary_others_could_change(&path, &file)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)
            .with_context(|| format!("could not read {}", path.display()))?;
        if elf_machine(&bytes) != Some(elf) {
            bail!(
                "{} is not an {machine} Linux binary (its ELF header says otherwise): it should \
                 be the `cutover` of {artifact}.tar.gz",
                path.display()
            );
        }
        Ok(Local::of(bytes, Some(path)))
    }

    fn file_name(&self) -> String {
        format!(
            "cutover-{}-{}",
            env!("CARGO_PKG_VERSION"),
            &self.sha256[..8]
        )
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// Opens the kept binary without waiting on a FIFO's writer (a regular file reads the same).
fn open_kept(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

/// The kept binary (open as `file`), its directory and, when `path` is a symlink, the
/// directory it leads to must belong to this user or root and be writable by nobody else: the
/// ELF and `--version` checks tell what it is, not who put it there. Only a regular file (a
/// FIFO or a device would be read from forever).
fn refuse_a_binary_others_could_change(
    path: &std::path::Path,
    file: &std::fs::File,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    let meta = file
        .metadata()
        .with_context(|| format!("could not read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file: it should be the `cutover` of the release tarball",
            path.display()
        );
    }
    let real = std::fs::canonicalize(path)
        .with_context(|| format!("could not resolve {}", path.display()))?;
    let mut places = vec![(path.to_path_buf(), meta)];
    for dir in [path.parent(), real.parent()].into_iter().flatten() {
        let meta =
            std::fs::metadata(dir).with_context(|| format!("could not read {}", dir.display()))?;
        places.push((dir.to_path_buf(), meta));
    }
    for (place, meta) in places {
        if (meta.uid() != me && meta.uid() != 0) || meta.mode() & 0o022 != 0 {
            bail!(
                "{} is uid {}'s with mode {:o}: another user could have replaced the binary \
                 uploaded to the box; it must be yours (or root's) and writable by nobody else \
                 (chmod go-w)",
                place.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// Where the laptop keeps the release binary `artifact` (`cutover-<version>-<triple>`) for
/// boxes of another architecture, in the layout of the box's own install directory:
/// `${XDG_DATA_HOME:-~/.local/share}/cutover/bin/<artifact>`.
pub fn foreign_binary_path(artifact: &str) -> anyhow::Result<std::path::PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| std::path::PathBuf::from(home).join(".local/share"))
            .context(
                "cannot find where the other architecture's cutover binary is kept (HOME and \
                 XDG_DATA_HOME are unset)",
            )?,
    };
    Ok(base.join("cutover/bin").join(artifact))
}

/// True when a box whose `uname -m` is `machine` runs this very binary.
fn same_arch(machine: &str) -> bool {
    let ours = local_machine();
    machine == ours
        || (ours == "aarch64" && machine == "arm64")
        || (ours == "x86_64" && machine == "amd64")
}

/// The ELF `e_machine` of the release binary for `machine`, when cutover has a release for it.
fn elf_machine_of(machine: &str) -> Option<u16> {
    match machine {
        "x86_64" | "amd64" => Some(0x3e),
        "aarch64" | "arm64" => Some(0xb7),
        _ => None,
    }
}

/// The `e_machine` of a 64-bit little-endian ELF, or None for anything else.
fn elf_machine(bytes: &[u8]) -> Option<u16> {
    let header = bytes.get(..20)?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    Some(u16::from_le_bytes([header[18], header[19]]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Our architecture in `uname -m` terms.
fn local_machine() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "arm" => "armv7l",
        other => other,
    }
}

/// The release artifact a box of `machine` needs (the target triple cutover is built for).
fn artifact_for(machine: &str) -> String {
    let arch = match machine {
        "arm64" | "aarch64" => "aarch64",
        "amd64" | "x86_64" => "x86_64",
        "armv7l" | "armv7" => "armv7",
        other => other,
    };
    format!(
        "cutover-{}-{arch}-unknown-linux-gnu",
        env!("CARGO_PKG_VERSION")
    )
}

/// Opens the connection (the first command), checks the box's OS and architecture, picks
/// the binary the box runs ([`Local::for_machine`]) and whether it is installed with the
/// right digest.
pub fn probe(session: &mut Session) -> anyhow::Result<(Local, Probe)> {
    // The digests of this version's binaries on the box (an upload keeps at most
    // KEEP_BINARIES): which one is ours is known once `uname -m` has picked it.
    let version = env!("CARGO_PKG_VERSION");
    let script = format!(
        "uname -s; uname -m; printf '%s\\n' \"$HOME\"; \
         d=\"${{XDG_DATA_HOME:-$HOME/.local/share}}/cutover/bin\"; printf '%s\\n' \"$d\"; \
         for f in \"$d\"/cutover-{version}-*; do \
         if [ -x \"$f\" ]; then sha256sum \"$f\"; fi; done"
    );
    let out = session.exec_ok(&script, "inspect the box (uname, installed cutover)", None)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    let [os, machine, home, dir, ref digests @ ..] = lines[..] else {
        bail!(
            "could not inspect {}: expected 4 lines (uname -s, uname -m, $HOME, the binary \
             directory) and the installed binaries' sha256 from the box, got: {:?}",
            session.target,
            out.stdout
        );
    };
    if os != "Linux" || std::env::consts::OS != "linux" {
        bail!(
            "{} runs {os}, and this cutover is built for {}: cutover runs on Linux boxes and \
             uploads itself only from a Linux machine; install {} on the box instead",
            session.target,
            std::env::consts::OS,
            artifact_for(machine)
        );
    }
    let local = Local::for_machine(machine, &session.target.to_string())?;
    let binary = format!("{dir}/{}", local.file_name());
    let mut was_installed = false;
    for line in digests {
        match line.split_once("  ") {
            Some((digest, path)) if digest.len() == 64 => {
                was_installed |= path == binary && digest == local.sha256;
            }
            _ => bail!(
                "could not inspect {}: `sha256sum` of the installed binaries printed {line:?}",
                session.target
            ),
        }
    }
    let probe = Probe {
        binary,
        was_installed,
        home: home.to_string(),
    };
    Ok((local, probe))
}

/// Uploads the box's binary to `probe.binary` over the open connection; the box checks its
/// sha256 and that it runs and says our version before it becomes the binary.
pub fn upload(session: &mut Session, local: &Local, probe: &Probe) -> anyhow::Result<()> {
    let (dir, _) = probe
        .binary
        .rsplit_once('/')
        .context("the box's binary path has no directory")?;
    let q = crate::process::shell_quote;
    // The temp file goes on every way out: an EXIT trap, and the signals a dropped
    // connection brings (dash runs no EXIT trap when SIGPIPE kills it on writing to a closed
    // stderr), and each failure removes it before it reports. One that a kill -9 left is
    // swept by a later upload once it is an hour old (a younger one may be another upload's).
    let script = format!(
        "set -e; d={dir}; f={file}; mkdir -p \"$d\"; \
         find \"$d\" -maxdepth 1 -name '.upload.*' -mmin +60 -exec rm -f {{}} + 2>/dev/null || true; \
         t=$(mktemp \"$d/.upload.XXXXXX\"); \
         trap 'rm -f \"$t\"' EXIT; trap 'rm -f \"$t\"; exit 1' HUP INT PIPE TERM; cat > \"$t\"; \
         s=$(sha256sum \"$t\" | cut -d' ' -f1); \
         if [ \"$s\" != {sha} ]; then rm -f \"$t\"; echo \"the upload arrived with sha256 $s, expected {sha}\" >&2; exit 3; fi; \
         chmod 0755 \"$t\"; \
         if ! v=$(\"$t\" --version 2>&1); then rm -f \"$t\"; echo \"the uploaded binary does not run on this box: $v\" >&2; exit 4; fi; \
         if [ \"$v\" != {want} ]; then rm -f \"$t\"; echo \"the uploaded binary says '$v', expected {want}\" >&2; exit 4; fi; \
         mv -f \"$t\" \"$f\"; trap - EXIT; \
         ls -1t \"$d\" | grep '^cutover-' | tail -n +{first_old} | \
         while read -r old; do rm -f \"$d/$old\"; done",
        dir = q(dir),
        file = q(&probe.binary),
        sha = local.sha256,
        want = q(&format!("cutover {}", env!("CARGO_PKG_VERSION"))),
        first_old = KEEP_BINARIES + 1,
    );
    let sent = session.exec_ok(
        &script,
        "upload cutover to the box",
        Some(local.bytes.clone()),
    );
    match (&local.kept, sent) {
        (_, Ok(_)) => Ok(()),
        // The box refused the kept other-arch binary: the file to replace is on this machine.
        (Some(kept), Err(e)) => Err(e.context(format!(
            "the box refused {}: replace it with the `cutover` of this version's release \
             tarball for the box's architecture",
            kept.display()
        ))),
        (None, Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_headers_name_their_machine() {
        let mut header = b"\x7fELF\x02\x01\x01".to_vec();
        header.resize(20, 0);
        header[18] = 0xb7;
        assert_eq!(elf_machine(&header), Some(0xb7));
        assert_eq!(elf_machine(&header[..10]), None);
        assert_eq!(elf_machine(b"#!/bin/sh\necho cutover 0.1.0\n"), None);
        assert_eq!(elf_machine_of("arm64"), elf_machine_of("aarch64"));
        assert_eq!(elf_machine_of("riscv64"), None);
        assert!(same_arch(local_machine()));
    }

    /// Hostile run #2 on #25: the kept binary a symlink into a directory anyone may write
    /// (checked before: the symlink's own directory only), or a FIFO (read forever).
    #[test]
    fn a_kept_binary_behind_a_symlink_into_a_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let work = tempfile::tempdir().unwrap();
        let bin = work.path().join("bin");
        let shared = work.path().join("shared");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(shared.join("cutover"), b"\x7fELF").unwrap();
        std::fs::set_permissions(
            shared.join("cutover"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let kept = bin.join("cutover-x");
        std::os::unix::fs::symlink(shared.join("cutover"), &kept).unwrap();
        let file = std::fs::File::open(&kept).unwrap();
        let err = refuse_a_binary_others_could_change(&kept, &file)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{} is uid ", shared.display())) && err.contains("mode 777"),
            "{err}"
        );

        // Made private, the same symlink is accepted.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        refuse_a_binary_others_could_change(&kept, &file).unwrap();

        let fifo = bin.join("cutover-fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let file = open_kept(&fifo).unwrap();
        let err = refuse_a_binary_others_could_change(&fifo, &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a regular file"), "{err}");
    }

    #[test]
    fn artifacts_name_the_box_architecture() {
        assert!(artifact_for("aarch64").ends_with("-aarch64-unknown-linux-gnu"));
        assert!(artifact_for("arm64").ends_with("-aarch64-unknown-linux-gnu"));
        assert!(artifact_for("x86_64").starts_with("cutover-0."));
    }
}
