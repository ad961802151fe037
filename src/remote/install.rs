//! Self-install: make sure the box runs exactly this cutover, uploading it when it does not.
//!
//! The binary lives in a per-user directory (`${XDG_DATA_HOME:-~/.local/share}/cutover/bin`),
//! named `cutover-<version>-<sha8>`, so deploys need no root and "this exact version" is one
//! `test -x` plus a sha256 of the file on the box. An upload is `cat` into a temp file in that
//! directory over the open connection, checked against our sha256 on the box, tried
//! (`--version`) and renamed into place, so a cut-off upload never becomes the binary.
//! Each upload then keeps the [`KEEP_BINARIES`] newest `cutover-*` files there and removes
//! the rest, so a small box's disk does not fill with every version ever deployed.

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

/// The running binary and its digest.
pub struct Local {
    bytes: Vec<u8>,
    sha256: String,
}

impl Local {
    pub fn current() -> anyhow::Result<Local> {
        let exe = std::env::current_exe().context("could not find the running cutover binary")?;
        let bytes =
            std::fs::read(&exe).with_context(|| format!("could not read {}", exe.display()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        Ok(Local { bytes, sha256 })
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
        "armv7l" | "armv7" => "armv7",
        other => other,
    };
    format!(
        "cutover-{}-{arch}-unknown-linux-gnu",
        env!("CARGO_PKG_VERSION")
    )
}

/// Opens the connection (the first command), checks the box's OS and architecture, and
/// whether our binary is installed with the right digest.
pub fn probe(session: &mut Session, local: &Local) -> anyhow::Result<Probe> {
    let name = local.file_name();
    let script = format!(
        "uname -s; uname -m; printf '%s\\n' \"$HOME\"; \
         d=\"${{XDG_DATA_HOME:-$HOME/.local/share}}/cutover/bin\"; printf '%s\\n' \"$d\"; \
         f=\"$d/{name}\"; \
         if [ -x \"$f\" ]; then sha256sum \"$f\" | cut -d' ' -f1; else echo missing; fi"
    );
    let out = session.exec_ok(&script, "inspect the box (uname, installed cutover)", None)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    let [os, machine, home, dir, digest] = lines[..] else {
        bail!(
            "could not inspect {}: expected 5 lines (uname -s, uname -m, $HOME, the binary \
             directory, a sha256) from the box, got: {:?}",
            session.target,
            out.stdout
        );
    };
    if os != "Linux" || std::env::consts::OS != "linux" {
        bail!(
            "{} runs {os}, and this cutover is built for {}: cutover runs on Linux boxes and \
             uploads itself only from a Linux machine of the same architecture; install {} on \
             the box instead",
            session.target,
            std::env::consts::OS,
            artifact_for(machine)
        );
    }
    let ours = local_machine();
    let same_arch = machine == ours || (ours == "aarch64" && machine == "arm64");
    if !same_arch {
        bail!(
            "{} is {machine} and this cutover is built for {ours}, so it cannot upload itself; \
             install the release artifact {} on the box (into {dir}/{name} or on PATH), or run \
             `cutover --host` from a {machine} machine",
            session.target,
            artifact_for(machine)
        );
    }
    let binary = format!("{dir}/{name}");
    let was_installed = match digest {
        "missing" => false,
        d if d == local.sha256 => true,
        d if d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()) => false,
        other => bail!(
            "could not inspect {}: `sha256sum {binary}` printed {other:?}",
            session.target
        ),
    };
    Ok(Probe {
        binary,
        was_installed,
        home: home.to_string(),
    })
}

/// Uploads the running binary to `probe.binary` over the open connection.
pub fn upload(session: &mut Session, local: &Local, probe: &Probe) -> anyhow::Result<()> {
    let (dir, _) = probe
        .binary
        .rsplit_once('/')
        .context("the box's binary path has no directory")?;
    let q = crate::process::shell_quote;
    let script = format!(
        "set -e; d={dir}; f={file}; mkdir -p \"$d\"; t=$(mktemp \"$d/.upload.XXXXXX\"); \
         trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; \
         s=$(sha256sum \"$t\" | cut -d' ' -f1); \
         if [ \"$s\" != {sha} ]; then echo \"the upload arrived with sha256 $s, expected {sha}\" >&2; exit 3; fi; \
         chmod 0755 \"$t\"; \
         if ! v=$(\"$t\" --version 2>&1); then echo \"the uploaded binary does not run on this box: $v\" >&2; exit 4; fi; \
         mv -f \"$t\" \"$f\"; trap - EXIT; \
         ls -1t \"$d\" | grep '^cutover-' | tail -n +{first_old} | \
         while read -r old; do rm -f \"$d/$old\"; done",
        dir = q(dir),
        file = q(&probe.binary),
        sha = local.sha256,
        first_old = KEEP_BINARIES + 1,
    );
    session.exec_ok(
        &script,
        "upload cutover to the box",
        Some(local.bytes.clone()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_name_the_box_architecture() {
        assert!(artifact_for("aarch64").ends_with("-aarch64-unknown-linux-gnu"));
        assert!(artifact_for("arm64").ends_with("-aarch64-unknown-linux-gnu"));
        assert!(artifact_for("x86_64").starts_with("cutover-0."));
    }
}
