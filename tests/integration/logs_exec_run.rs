//! `cutover run`, `cutover logs` and `cutover exec`, end to end on the real engine and nginx:
//! a one-off of the serving image with its environment and secrets and the command's exit
//! code (the `task`-mode images of harness/lifecycle_app.rs); logs and exec reaching the
//! colors, the accessories and the workers (the images of harness/workers_app.rs), `logs -f`
//! until a signal. The `--host` forms are in remote.rs.

use std::time::Duration;

use serde_json::json;

use crate::harness::lifecycle_app::{lifecycle_app, lifecycle_ready, H1};
use crate::harness::project::Project;
// `ready` and `app` of the workers images: the logs and exec test deploys them.
use crate::harness::workers_app::{app, ready, W1};

#[test]
fn e2e_run_uses_the_serving_image_with_env_and_secrets_and_passes_the_exit_code() {
    if !lifecycle_ready() {
        return;
    }
    let project = Project::compose(lifecycle_app());
    let stderr = project
        .cutover(["run", "--", "task", "say=hi"])
        .code(1)
        .stderr;
    assert!(stderr.contains("nothing is serving in project"), "{stderr}");

    project.deploy_ok(H1);
    let secret = project.secret_value("DEMO_SECRET");
    let run = project
        .cutover([
            "run",
            "--",
            "task",
            "print=VERSION",
            "print=DEMO_SECRET",
            "exit=4",
        ])
        .code(4);
    assert!(run.stdout.contains("VERSION=v1"), "{run}");
    assert!(
        run.stdout.contains(&format!("DEMO_SECRET={secret}")),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("one-off container of web-blue (cutover-demo-lifecycle:v1), no TTY"),
        "{run}"
    );
    // stdin reaches the command when it is not a terminal (`-T`).
    let run = project
        .cutover_with_stdin(["run", "--", "task", "stdin"], "piped in\n")
        .success();
    assert_eq!(run.stdout, "piped in\n");
    assert!(project.oneoff_containers().is_empty());
    project.assert_serving("blue", "v1");
}

#[test]
fn e2e_logs_and_exec_reach_colors_accessories_and_workers() {
    if !ready() {
        return;
    }
    let workers = json!({ "scheduler": { "command": ["worker", "scheduler"], "memory": "16M", "settle": "1s" } });
    let project = Project::compose(app(workers));
    project.deploy_ok(W1);

    let logs = project.cutover(["logs"]).success();
    assert!(logs.stdout.contains("listening on"), "{logs}");
    let logs = project.cutover(["logs", "scheduler", "-n", "1"]).success();
    assert_eq!(logs.stdout.lines().count(), 1, "{logs}");
    assert!(logs.stdout.contains("worker scheduler tick"), "{logs}");
    let bad = project.cutover(["logs", "nope"]).code(1);
    assert!(
        bad.stderr
            .contains("no service `nope` in this project; expected one of: blue, green, scheduler"),
        "{bad}"
    );
    let none = project.cutover(["logs", "green"]).code(1);
    assert!(none.stderr.contains("green has no container"), "{none}");

    // exec: the command's exit code is cutover's, its output cutover's stdout.
    let run = project
        .cutover(["exec", "--", "/app", "exit", "7", "from", "exec"])
        .code(7);
    assert_eq!(run.stdout.trim(), "from exec");
    project
        .cutover(["exec", "--service", "scheduler", "--", "/app", "ready"])
        .success();
    project
        .cutover(["exec", "--color", "blue", "--", "/app", "exit", "0"])
        .success();
    // A piped stdin (not a terminal) goes through `docker exec -i` and does not hang it.
    let run = project.cutover_with_stdin(["exec", "--", "/app", "exit", "4"], "input\n");
    assert_eq!(run.status.code(), Some(4), "{run}");
    let run = project
        .cutover(["exec", "--color", "green", "--", "/app"])
        .code(1);
    assert!(run.stderr.contains("green has no container"), "{run}");

    // -f follows until a signal, then exits 130.
    let mut child = project.spawn(["logs", "-f", "scheduler"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "logs -f keeps running");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stdout).contains("worker scheduler tick"));
    let id = &project.running_worker_ids("scheduler")[0];
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("docker logs --follow {id}")])
        .status()
        .unwrap();
    assert!(!left.success(), "a docker logs -f outlived cutover");
}
