//! Shared test helpers: the binary under test in an isolated environment, the one place
//! tests read and write YAML, fixtures, and tool gates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `cutover` binary built for this test run, as assert_cmd's command, in `dir`, with the
/// environment of [`isolate`] and the per-run [`shared_home`].
pub fn cutover(dir: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(cutover_command(dir, &shared_home()))
}

/// The `cutover` binary in `dir` with `home` as its HOME (see [`isolate`]).
pub fn cutover_command(dir: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.current_dir(dir);
    isolate(&mut cmd, home);
    cmd
}

/// Gives a run of the binary its own HOME and XDG dirs under `home`, so no test reads or
/// writes the user's `~/.cache` (compose detection caches there) or `~/.config` (identities
/// live there). What selects the tools passes through unchanged: PATH, CI,
/// CUTOVER_COMPOSE and DOCKER_CONFIG; without DOCKER_CONFIG the docker CLI would look for its
/// plugins under the fake HOME, so it is pinned to the real `~/.docker`.
pub fn isolate(cmd: &mut Command, home: &Path) {
    if std::env::var_os("DOCKER_CONFIG").is_none() {
        if let Some(real_home) = std::env::var_os("HOME") {
            cmd.env("DOCKER_CONFIG", PathBuf::from(real_home).join(".docker"));
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env_remove("CUTOVER_IDENTITY")
        .env_remove("CUTOVER_AGE_KEY")
        // Projects register for box-wide pruning: in the tests' own registry, not the box's.
        .env(
            "CUTOVER_REGISTRY_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("project-registry"),
        )
        .env("NO_COLOR", "1");
}

/// The HOME of runs that are not part of a [`crate::harness::project::Project`] (which has
/// its own): one per test binary build, under cargo's target tmp dir, never the user's.
pub fn shared_home() -> PathBuf {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-home");
    std::fs::create_dir_all(&home).expect("create the shared test HOME");
    home
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

/// True when every image exists locally; else skipped loudly (a failure under `CI`), naming
/// the command that builds them.
pub fn require_images(images: &[&str], build: &str) -> bool {
    if images.iter().all(|i| cutover::docker::images::exists(i)) {
        return true;
    }
    let msg = format!(
        "demo images {} are missing (run {build})",
        images.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI is set, so this is a failure");
    }
    loud(&format!("*** SKIPPED: {msg} ***"));
    false
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    cutover::demo::free_port().expect("a free loopback port")
}

// ---- YAML: the only place tests parse or write it ------------------------------------------
// Tests work on serde_json values; swapping the YAML crate is a change to these two functions.

/// Where `step` comes in a deploy document's (or history entry's) `steps`, by name; `None`
/// when it did not run.
pub fn step_at(doc: &serde_json::Value, step: &str) -> Option<usize> {
    doc["steps"]
        .as_array()?
        .iter()
        .position(|s| s["step"].as_str() == Some(step))
}

/// Parses YAML text (a config, a rendered or resolved stack file, cloud-init user-data).
pub fn yaml_to_json(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}

/// Writes a value as YAML text (a cutover.yml).
pub fn json_to_yaml(value: &serde_json::Value) -> String {
    serde_saphyr::to_string(value).expect("a JSON value is YAML")
}

/// Copies `fixtures/configs/good/<name>.yml` into `dir/cutover.yml`, letting `edit` change
/// the config first (e.g. to point nginx paths into a temp prefix).
pub fn project_from_fixture(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> PathBuf {
    let text = std::fs::read_to_string(fixture(&format!("configs/good/{name}.yml"))).unwrap();
    let mut value = yaml_to_json(&text);
    edit(value.as_object_mut().expect("a config is a mapping"));
    let path = dir.join("cutover.yml");
    std::fs::write(&path, json_to_yaml(&value)).unwrap();
    path
}

/// Sets `section.key = value` in a config mapping, creating the section.
pub fn set_key(
    map: &mut serde_json::Map<String, serde_json::Value>,
    section: &str,
    key: &str,
    value: serde_json::Value,
) {
    let entry = map
        .entry(section)
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    entry
        .as_object_mut()
        .expect("a config section is a mapping")
        .insert(key.into(), value);
}

/// Escapes `text` for an insta filter (a regex).
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Prints past the test harness's output capture, so a skip or a partial check shows in the
/// CI log even when the test passes (`eprintln!` output of passing tests is swallowed).
pub fn loud(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n{msg}\n");
}

/// Compose projects read-hold this for their whole life; leaving the test swarm takes it for
/// writing. `docker swarm leave --force` breaks the networks of compose projects created while
/// the swarm was active, so the swarm suite leaves only once no compose project is up.
pub static ENGINE_MODE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A read hold on [`ENGINE_MODE`], kept by a compose project until it is dropped.
pub fn compose_hold() -> ComposeHold {
    ComposeHold(Some(ENGINE_MODE.read().unwrap_or_else(|p| p.into_inner())))
}

/// What a compose project runs once it lets go of [`ENGINE_MODE`]: the integration harness's
/// swarm sets it (`harness/swarm.rs`, `leave_if_idle`: a swarm leave left pending); the VM
/// suite, which shares this file and has no swarm, never does.
pub static ON_COMPOSE_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// [`compose_hold`]'s hold: once released, the swarm the swarm tests left pending is left if
/// this was the last compose project up ([`ON_COMPOSE_RELEASE`]).
pub struct ComposeHold(Option<std::sync::RwLockReadGuard<'static, ()>>);

impl Drop for ComposeHold {
    fn drop(&mut self) {
        self.0.take();
        if let Some(hook) = ON_COMPOSE_RELEASE.get() {
            hook();
        }
    }
}

/// Removes an image a test made, when dropped (declare it after the project, so the
/// project's containers are gone first).
pub struct ImageGuard(pub String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .output();
    }
}

// ---- shell and file helpers ------------------------------------------------------------

/// SIGTERM to a spawned cutover (what `kill` or systemd sends), then its output.
pub fn sigterm_and_wait(child: std::process::Child) -> std::process::Output {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -TERM {}", child.id());
    child.wait_with_output().unwrap()
}

pub fn sh(script: &str) -> std::process::Output {
    Command::new("sh").args(["-c", script]).output().unwrap()
}

pub fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn texts(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` whose bytes contain `needle` (followed as root; symlinks skipped).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path);
            }
        }
    }
    hits
}
