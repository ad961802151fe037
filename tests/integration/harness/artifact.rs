//! The static release artifact the release and CI tests use (scripts/release.sh's tarball,
//! its .sha256 and install.sh), and a local HTTP server to fetch it from as from a GitHub
//! release.
//!
//! The artifact is built once per test run by scripts/test.sh (`scripts/release.sh --profile
//! dev --out target/dist-test`: the same static link as a release, without the minutes LTO
//! costs); `CUTOVER_TEST_RELEASE_DIR` points elsewhere. Without it the tests skip loudly (and
//! fail under CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::common::{free_port, loud, repo_root};

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

pub(crate) fn name() -> String {
    format!("cutover-{VERSION}-{TRIPLE}")
}

/// The directory holding the tarball, its .sha256 and install.sh, or None (skipped loudly;
/// a failure under CI).
pub(crate) fn artifacts() -> Option<PathBuf> {
    let dir = std::env::var_os("CUTOVER_TEST_RELEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/dist-test"));
    if dir.join(format!("{}.tar.gz", name())).is_file() {
        return Some(dir);
    }
    let msg = format!(
        "no release artifact {}.tar.gz in {}: run `scripts/release.sh --profile dev --out {}` \
         (scripts/test.sh does)",
        name(),
        dir.display(),
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure)");
    }
    loud(&format!("*** SKIPPED: {msg} ***"));
    None
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
