//! Shared test helpers: the binary under test, temp projects, and tool gates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `cutover` binary built for this test run, with a clean, predictable environment.
pub fn cutover(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("cutover").expect("cutover binary");
    cmd.current_dir(dir)
        .env_remove("CUTOVER_IDENTITY")
        .env_remove("CUTOVER_AGE_KEY")
        // Projects register for box-wide pruning: in the tests' own registry, not the box's.
        .env(
            "CUTOVER_REGISTRY_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("project-registry"),
        )
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
    loud(&format!(
        "*** SKIPPED: {msg} (install it with scripts/test.sh) ***"
    ));
    false
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    cutover::demo::free_port().expect("a free loopback port")
}

/// Copies `fixtures/configs/good/<name>.yml` into `dir/cutover.yml`, letting `edit` change
/// the YAML first (e.g. to point nginx paths into a temp prefix).
pub fn project_from_fixture(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_yaml::Mapping),
) -> PathBuf {
    let text = std::fs::read_to_string(fixture(&format!("configs/good/{name}.yml"))).unwrap();
    let mut value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    edit(value.as_mapping_mut().unwrap());
    let path = dir.join("cutover.yml");
    std::fs::write(&path, serde_yaml::to_string(&value).unwrap()).unwrap();
    path
}

/// Sets `section.key = value` in a config mapping, creating the section.
pub fn set_key(map: &mut serde_yaml::Mapping, section: &str, key: &str, value: serde_yaml::Value) {
    let entry = map
        .entry(section.into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    entry.as_mapping_mut().unwrap().insert(key.into(), value);
}

/// Prints past the test harness's output capture, so a skip or a partial check shows in the
/// CI log even when the test passes (`eprintln!` output of passing tests is swallowed).
pub fn loud(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n{msg}\n");
}
