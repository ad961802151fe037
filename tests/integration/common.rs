//! Shared test helpers: the binary under test, temp projects, and tool gates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `cutover` binary built for this test run, with a clean, predictable environment.
pub fn cutover(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("cutover").expect("cutover binary");
    cmd.current_dir(dir)
        .env_remove("CUTOVER_IDENTITY")
        .env_remove("CUTOVER_AGE_KEY")
        .env("NO_COLOR", "1");
    cmd
}

/// Path of the repository root (for fixtures/ and templates/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

/// True when `program` is on PATH. Without it the test is skipped loudly; with `CI` set a
/// missing tool fails the test, so CI can never report green for a test that did not run.
pub fn require(program: &str, why: &str) -> bool {
    if cutover::process::which(program).is_some() {
        return true;
    }
    let msg = format!("`{program}` is not installed: cannot {why}");
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure; run scripts/test.sh to install it)");
    }
    eprintln!("\n*** SKIPPED: {msg} (install it with scripts/test.sh) ***\n");
    false
}
