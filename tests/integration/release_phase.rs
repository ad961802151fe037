//! The release phase (`app.release`), end to end on the real Docker engine and nginx: a
//! one-off of the new image before the new color starts (not on a rollback without
//! `--release`); its failure or timeout changes nothing and removes the container. The images
//! are harness/lifecycle_app.rs's (`task` mode). Named `e2e_*`: the compose v1 run of
//! scripts/test.sh runs them too.

use crate::harness::lifecycle_app::{lifecycle_app, lifecycle_ready, H1, H2};
use crate::harness::project::Project;

/// The image's entrypoint is `/app`: a command is its arguments.
const RELEASE: &[&str] = &[
    "task",
    "say=migrating",
    "print=VERSION",
    "print=STARTUP_DELAY_MS",
    "print=DEMO_SECRET",
];

#[test]
fn e2e_release_runs_once_in_the_new_image_before_it_starts_and_rollback_skips_it() {
    if !lifecycle_ready() {
        return;
    }
    let project = Project::compose(lifecycle_app().release(RELEASE, "1m"));
    let secret = project.secret_value("DEMO_SECRET");

    let plan = project
        .cutover(["deploy", "--image", H1, "--dry-run"])
        .success()
        .stdout;
    assert!(
        plan.contains("run --rm --no-deps -T web-blue task say=migrating"),
        "{plan}"
    );

    let run = project.deploy_ok(H1);
    let stderr = &run.stderr;
    assert_eq!(stderr.matches("release | migrating").count(), 1, "{stderr}");
    // The NEW image, the app's environment, its secrets (masked in what is shown).
    assert!(stderr.contains("release | VERSION=v1"), "{stderr}");
    assert!(
        stderr.contains("release | STARTUP_DELAY_MS=1000"),
        "{stderr}"
    );
    assert!(stderr.contains("release | DEMO_SECRET=***"), "{stderr}");
    assert!(!stderr.contains(&secret) && !run.stdout.contains(&secret));
    // Before the new color starts.
    let release_at = stderr.find("✓ release").expect("a release step line");
    let up_at = stderr.find("✓ up").expect("an up step line");
    assert!(release_at < up_at, "{stderr}");
    assert_eq!(
        project.last_history_steps(),
        // A first deploy is watched too (`settle`), then waits for old nginx workers.
        [
            "decrypt", "lock", "observe", "release", "up", "health", "switch", "probe", "settle",
            "drain"
        ]
    );
    assert!(project.oneoff_containers().is_empty());
    project.assert_serving("blue", "v1");

    let stderr = project.deploy_ok(H2).stderr;
    assert!(stderr.contains("release | VERSION=v2"), "{stderr}");
    project.assert_serving("green", "v2");

    // A rollback does not re-run it, unless asked.
    let stderr = project.cutover(["rollback"]).success().stderr;
    assert!(!stderr.contains("release | "), "{stderr}");
    assert!(
        stderr.contains("not run (a rollback runs it only with --release)"),
        "{stderr}"
    );
    assert!(!project
        .last_history_steps()
        .contains(&"release".to_string()));
    project.assert_serving("blue", "v1");
    let stderr = project.cutover(["rollback", "--release"]).success().stderr;
    assert!(stderr.contains("release | VERSION=v2"), "{stderr}");
    project.assert_serving("green", "v2");
}

#[test]
fn e2e_release_failure_or_timeout_changes_nothing_and_removes_the_container() {
    if !lifecycle_ready() {
        return;
    }
    let app = lifecycle_app().release(RELEASE, "1m");
    let project = Project::compose(app.clone());
    let secret = project.secret_value("DEMO_SECRET");
    project.deploy_ok(H1);
    let include = project.include();

    // A non-zero exit: the deploy fails, its last lines shown (the secret masked).
    project.write_config(
        &app.clone()
            .release(&["task", "say=boom", "print=DEMO_SECRET", "exit=3"], "1m"),
    );
    let run = project.cutover(["deploy", "--image", H2]).code(1);
    let stderr = &run.stderr;
    assert!(
        stderr.contains("the release command `task say=boom print=DEMO_SECRET exit=3` exited 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("last output lines of the release command:"),
        "{stderr}"
    );
    assert!(stderr.contains("    DEMO_SECRET=***"), "{stderr}");
    assert!(
        stderr.contains("the new color was not started; nginx still serves blue"),
        "{stderr}"
    );
    assert!(!stderr.contains(&secret), "{stderr}");
    assert_eq!(project.include(), include);
    project.assert_still_serving("blue", "v1");
    assert!(project.oneoff_containers().is_empty());
    let history = project.history();
    let last = history.last().unwrap();
    assert_eq!(last["result"], "failed");
    assert!(last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "release"));

    // Its timeout: the one-off is killed and removed, nothing else changes.
    project.write_config(&app.release(&["task", "say=slow", "sleep=60000"], "8s"));
    let stderr = project.cutover(["deploy", "--image", H2]).code(1).stderr;
    assert!(
        stderr.contains("timed out after 8s (app.release_timeout) and was killed"),
        "{stderr}"
    );
    // (Its last lines are shown too, but whether compose v1 on a loaded machine got the
    // container as far as printing before the bound is timing: the exit-3 case checks them.)
    assert_eq!(project.include(), include);
    project.assert_still_serving("blue", "v1");
    assert!(
        project.oneoff_containers().is_empty(),
        "{:?}",
        project.oneoff_containers()
    );
}
