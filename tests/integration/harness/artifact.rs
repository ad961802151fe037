//! The static release artifacts the release and CI tests use (scripts/release.sh's tarballs,
//! their .sha256 and install.sh), a local HTTP server to fetch them from as from a GitHub
//! release, and the aarch64 build run under qemu-user ([`Aarch64`]).
//!
//! The artifacts are built once per test run by scripts/test.sh (`scripts/release.sh
//! --profile dev --out target/dist-test`, for x86_64 and, in Debian's cross toolchain, for
//! aarch64: the same static link as a release, without the minutes LTO costs);
//! `CUTOVER_TEST_RELEASE_DIR` points elsewhere. Without them the tests skip loudly (and fail
//! under CI). scripts/test.sh builds the aarch64 one in the background while the tests run
//! (it takes minutes of CPU the waiting tests leave idle) and names a status file in
//! `CUTOVER_TEST_AARCH64_STATUS`: a test that needs it waits for that file ([`artifacts_for`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::common::{free_port, isolate, loud, repo_root, require};

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
pub(crate) const X86_64: &str = "x86_64-unknown-linux-gnu";
pub(crate) const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// The x86_64 tarball's name (without .tar.gz): the machine the tests run on.
pub(crate) fn name() -> String {
    name_for(X86_64)
}

pub(crate) fn name_for(triple: &str) -> String {
    format!("cutover-{VERSION}-{triple}")
}

/// The directory holding the x86_64 tarball, its .sha256 and install.sh, or None (skipped
/// loudly; a failure under CI).
pub(crate) fn artifacts() -> Option<PathBuf> {
    artifacts_for(X86_64)
}

/// The directory holding `triple`'s tarball, or None (skipped loudly; a failure under CI).
/// For aarch64, first waits for scripts/test.sh's background build when one is running.
pub(crate) fn artifacts_for(triple: &str) -> Option<PathBuf> {
    if triple == AARCH64 {
        wait_for_background_build();
    }
    let dir = std::env::var_os("CUTOVER_TEST_RELEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/dist-test"));
    let name = name_for(triple);
    if dir.join(format!("{name}.tar.gz")).is_file() {
        return Some(dir);
    }
    let msg = format!(
        "no release artifact {name}.tar.gz in {}: run `scripts/release.sh --profile dev \
         --target {triple} --out {}` (scripts/test.sh does)",
        dir.display(),
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure)");
    }
    loud(&format!("*** SKIPPED: {msg} ***"));
    None
}

/// How long a test waits for the background aarch64 build: a cold one (every crate, in the
/// cross root, at the lowest CPU priority beside the tests) is minutes; this bound only
/// keeps a wedged build from hanging the suite.
const BACKGROUND_BUILD_BOUND: Duration = Duration::from_secs(40 * 60);

/// Waits until `CUTOVER_TEST_AARCH64_STATUS` (set by scripts/test.sh, which builds the
/// aarch64 artifact in the background) exists, then fails the test unless it says `0`, with
/// the build's log. Unset: nothing is building, the directory is as it is.
fn wait_for_background_build() {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let Some(status) = std::env::var_os("CUTOVER_TEST_AARCH64_STATUS").map(PathBuf::from) else {
        return;
    };
    // One test waits and says so; the others wait on the lock.
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !*done && !status.exists() {
        loud(&format!(
            "waiting for scripts/test.sh's background aarch64 build ({} appears when it ends)",
            status.display()
        ));
        let start = Instant::now();
        // The job's pid (scripts/test.sh): gone without a status, nothing will write one.
        let job = std::env::var("CUTOVER_TEST_AARCH64_PID").ok();
        while !status.exists() {
            if let Some(pid) = &job {
                assert!(
                    Path::new("/proc").join(pid).exists() || status.exists(),
                    "the background aarch64 build (pid {pid}) ended without writing {}",
                    status.display()
                );
            }
            assert!(
                start.elapsed() < BACKGROUND_BUILD_BOUND,
                "the background aarch64 build did not end within {:?} ({} never appeared)",
                BACKGROUND_BUILD_BOUND,
                status.display()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        loud(&format!(
            "the background aarch64 build ended after {:.0?} of waiting",
            start.elapsed()
        ));
    }
    *done = true;
    let code = std::fs::read_to_string(&status)
        .unwrap_or_else(|e| panic!("read {}: {e}", status.display()));
    if code.trim() != "0" {
        let log = std::env::var_os("CUTOVER_TEST_AARCH64_LOG").map(PathBuf::from);
        let text = log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        panic!(
            "the background aarch64 build failed (exit status {:?} in {}); the end of its log \
             ({}):\n{}",
            code.trim(),
            status.display(),
            log.as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}

/// qemu-user's aarch64 emulator: `qemu-aarch64` (Debian's `qemu-user`, which scripts/test.sh
/// installs without its recommended `qemu-user-binfmt`, so nothing is registered host-wide) or
/// else `qemu-aarch64-static` (`qemu-user-static`, which registers itself for every aarch64
/// ELF on a systemd machine). The tests never need a host registration. None: skipped loudly
/// (a failure under CI).
pub(crate) fn qemu_aarch64() -> Option<PathBuf> {
    ["qemu-aarch64", "qemu-aarch64-static"]
        .into_iter()
        .find_map(cutover::process::which)
        .or_else(|| {
            require("qemu-aarch64", "run the aarch64 binary (apt: qemu-user)");
            None
        })
}

/// The aarch64 release binary, unpacked from its tarball, run under qemu-user
/// ([`qemu_aarch64`], called by name: the tests need no binfmt_misc registration).
pub(crate) struct Aarch64 {
    _dir: tempfile::TempDir,
    qemu: PathBuf,
    pub(crate) bin: PathBuf,
}

impl Aarch64 {
    /// The unpacked binary, or None (skipped loudly; a failure under CI) without the
    /// artifact or qemu-user.
    pub(crate) fn unpack() -> Option<Aarch64> {
        let qemu = qemu_aarch64()?;
        let dist = artifacts_for(AARCH64)?;
        let dir = tempfile::tempdir().unwrap();
        let name = name_for(AARCH64);
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(dist.join(format!("{name}.tar.gz")))
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "could not unpack {name}.tar.gz");
        let bin = dir.path().join(&name).join("cutover");
        Some(Aarch64 {
            _dir: dir,
            qemu,
            bin,
        })
    }

    /// `qemu-aarch64 <the binary>` in `dir`, isolated under `home` like the tests'
    /// own binary ([`isolate`]). Its children (docker, nginx, age) are this machine's own:
    /// qemu-user hands an execve of a native program to the kernel.
    pub(crate) fn command(&self, dir: &Path, home: &Path) -> Command {
        let mut cmd = Command::new(&self.qemu);
        cmd.arg(&self.bin).current_dir(dir);
        isolate(&mut cmd, home);
        cmd
    }
}

/// `program args…` where aarch64 ELFs run as if native: in a user namespace of its own with
/// its own binfmt_misc instance (Linux ≥ 6.7), where [`qemu_aarch64`] is registered for
/// them. This machine's binfmt_misc is never touched; the namespace and its registration end
/// with the command. For what execs an aarch64 program itself (install.sh's try-run, the
/// box's check of an upload).
pub(crate) fn aarch64_binfmt(program: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!("set -e; {}; exec \"$@\"", register_aarch64()))
        .arg("aarch64-binfmt")
        .arg(program);
    cmd
}

/// Mounts a private binfmt_misc and registers [`qemu_aarch64`] for aarch64 ELFs (the magic
/// and mask qemu's own binfmt files use; `F`: the emulator is opened now, so it need not be
/// reachable from where the program runs). Callers gate on [`qemu_aarch64`] first.
fn register_aarch64() -> String {
    let qemu = qemu_aarch64().expect("qemu-aarch64 is gated on before a binfmt registration");
    format!(
        r"mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:{}:F' >/proc/sys/fs/binfmt_misc/register",
        qemu.display()
    )
}

/// Starts `daemon` (a shell command that forks into the background, such as sshd) in a
/// user namespace with aarch64 binfmt as [`aarch64_binfmt`], but identity-mapped over every
/// uid and gid, so the daemon can still become other users. The map is written from here
/// (root in this namespace may map any range; `unshare --map-users` would need newuidmap).
pub(crate) fn aarch64_binfmt_daemon(daemon: &str) {
    use std::io::Write as _;
    let mut child = Command::new("unshare")
        .args(["--user", "--mount", "sh", "-c"])
        .arg(format!(
            "read -r go; set -e; {}; exec {daemon}",
            register_aarch64()
        ))
        .stdin(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let ours = ns("self");
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns(&pid) == ours {
        assert!(Instant::now() < deadline, "unshare made no user namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), "0 0 4294967295\n")
            .unwrap_or_else(|e| panic!("write /proc/{pid}/{map}: {e}"));
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "`{daemon}` in the aarch64 namespace failed: {status}"
    );
}

/// `python3 -m http.server` on a free loopback port, serving `root`; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(root: &Path) -> Server {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the HTTP server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
