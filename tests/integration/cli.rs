//! The command surface itself: help, usage errors, completions.

use crate::common::cutover;

#[test]
fn help_lists_every_command_of_the_design() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path()).arg("--help").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for name in [
        "init",
        "render",
        "deploy",
        "rollback",
        "status",
        "history",
        "prune",
        "secrets",
        "bootstrap",
        "demo",
        "completions",
    ] {
        assert!(
            text.contains(&format!("  {name}")),
            "--help lacks {name}:\n{text}"
        );
    }
}

#[test]
fn usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path()).arg("--no-such-flag").assert().code(2);
}

#[test]
fn completions_for_bash_name_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path())
        .args(["completions", "bash"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains("deploy") && text.contains("rollback"),
        "{text}"
    );
}

#[test]
fn verbose_traces_each_subprocess_with_its_exit_code() {
    if !crate::common::require("docker", "trace docker subprocesses") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let out = cutover(dir.path()).args(["-v", "status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("    $ docker ps -a -q --no-trunc --filter"),
        "{stderr}"
    );
    assert!(stderr.contains("exit 0"), "{stderr}");
    let quiet = cutover(dir.path()).arg("status").output().unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("    $ "));
}

/// The compose version probe runs once; its answer is cached until what picks the tool
/// changes (here: CUTOVER_COMPOSE).
#[test]
fn compose_detection_is_cached_until_the_choice_changes() {
    if !crate::common::require("docker", "detect compose") {
        return;
    }
    let tools = cutover::compose::Compose::all_available();
    let Some(tool) = tools.first() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no compose tool works here and CI is set"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |choice: &str| {
        let out = cutover(dir.path())
            .env("XDG_CACHE_HOME", &cache)
            .env("CUTOVER_COMPOSE", choice)
            .args(["-v", "deploy", "--image", "example/web:1", "--dry-run"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let probe = format!("$ {} version --short", tool.program());
    assert!(run(&tool.program()).contains(&probe), "first run probes");
    assert!(
        !run(&tool.program()).contains(&probe),
        "second run uses the cache"
    );
    assert!(cache.join("cutover/compose-tool.json").is_file());
    // Naming the same tool differently changes the fingerprint: probed again.
    let spaced = format!(" {} ", tool.program());
    assert!(
        run(&spaced).contains(&probe),
        "a changed choice probes again"
    );
}
