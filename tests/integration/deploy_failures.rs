//! A deploy that fails, or is refused, leaves the old color serving: the health gate never
//! passing, the new container exiting during the gate, `nginx -t` failing (include restored,
//! no reload), the probe not seeing the new color (include restored, reloaded), the new
//! color dying in the settle window (switched back), with the reason kept in history (never
//! the app's log lines); and the refusals before anything changes (the memory budget, an
//! include directory the deploy user cannot write). The stderr of each failure path is also
//! checked whole, against a snapshot.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cutover::demo::Load;

use crate::common::{free_port, project_from_fixture, require, set_key};
use crate::harness::project::{ready, App, Project};

#[test]
fn e2e_health_never_passing_leaves_old_color_serving() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let include_before = project.include();
    project.write_config(&App::compose().health_timeout("3s").env("FAIL_HEALTH", "1"));
    let failure = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    // Whether the app's start line is still among the last 20 log lines depends on how
    // many polls fit in the timeout.
    project.assert_stderr_snapshot_with(
        "e2e-health-never-passes",
        &failure,
        &[(r"(?m)^ +\S+ +\| listening on .*\n?", "")],
    );
    let stderr = &failure.stderr;
    assert!(stderr.contains("health gate timed out"), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(stderr.contains("last log lines of web-green"), "{stderr}");
    assert!(
        stderr.contains("web-green was stopped and removed; nginx still serves blue"),
        "{stderr}"
    );
    assert_eq!(project.running_services(), ["web-blue"]);
    assert_eq!(project.include(), include_before, "nginx untouched");
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
    assert_eq!(project.history().pop().unwrap()["result"], "failed");
}

#[test]
fn e2e_container_exiting_during_the_gate_fails_fast() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    // The demo app refuses a non-numeric delay and exits 2 at once.
    project.write_config(
        &App::compose()
            .health_timeout("120s")
            .restart("no")
            .env("STARTUP_DELAY_MS", "soon"),
    );
    let failure = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    project.assert_stderr_snapshot("e2e-container-exits", &failure);
    let stderr = &failure.stderr;
    assert!(stderr.contains("the green container exited"), "{stderr}");
    assert!(
        !stderr.contains("timed out"),
        "must fail fast, not wait out the timeout: {stderr}"
    );
    assert!(
        stderr.contains("STARTUP_DELAY_MS"),
        "the app's own error is shown: {stderr}"
    );
    assert_eq!(project.running_services(), ["web-blue"]);
}

#[test]
fn e2e_failing_nginx_test_restores_the_include_without_reload() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let include_before = project.include();
    std::fs::create_dir_all(project.path().join("templates")).unwrap();
    std::fs::write(
        project.path().join("templates/service-url.inc.j2"),
        "set $service_url {{ upstream }}\n",
    )
    .unwrap();
    let failure = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    project.assert_stderr_snapshot("e2e-nginx-test-fails", &failure);
    let stderr = &failure.stderr;
    assert!(
        stderr.contains("failed to test the nginx config"),
        "{stderr}"
    );
    assert!(
        stderr.contains("restored the previous one, nginx not reloaded"),
        "{stderr}"
    );
    assert_eq!(project.include(), include_before);
    assert_eq!(project.running_services(), ["web-blue"]);
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
}

#[test]
fn e2e_probe_not_seeing_the_new_color_restores_and_reloads() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let include_before = project.include();
    // A probe URL where nothing answers: the switch cannot be proven.
    let nowhere = free_port();
    project.write_config(&App::compose().probe(&format!("http://127.0.0.1:{nowhere}")));
    let failure = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    project.assert_stderr_snapshot_with(
        "e2e-probe-fails",
        &failure,
        &[(&format!(r"\b{nowhere}\b"), "[PROBE_PORT]")],
    );
    let stderr = &failure.stderr;
    assert!(
        stderr.contains("nginx did not serve green after the reload"),
        "{stderr}"
    );
    assert!(
        stderr.contains("restored the previous nginx include"),
        "{stderr}"
    );
    assert_eq!(project.include(), include_before);
    assert_eq!(project.running_services(), ["web-blue"]);
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
}

/// The id of `service`'s running container.
fn container_of(project: &Project, service: &str) -> String {
    project.running_container(service)
}

#[test]
fn e2e_new_color_dying_after_the_switch_switches_back_to_the_old_one() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().settle("5s"));
    project.deploy_ok("cutover-demo:v1");
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    // The new color passed its gate and the probe proved nginx serves it: now it crashes
    // (restart: on-failure brings it back, as a crash-looping app would).
    project.wait_for_step("settle");
    assert!(project.include().contains(&format!(":{};", project.green)));
    // Issue #21: the site's upstream group has blue as green's backup, so from here on
    // (green serving, dead, restarting, then the switch back) no request fails.
    assert!(
        project
            .include()
            .contains(&format!("http://cutover_{}_green;", project.name)),
        "{}",
        project.include()
    );
    let load = Load::start(project.port, Duration::from_secs(120));
    while load.answered() < 50 {
        std::thread::sleep(Duration::from_millis(20));
    }
    project.kill("web-green");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("settle window"), "{stderr}");
    assert!(stderr.contains("switched back to blue"), "{stderr}");
    // Blue never stopped: it served through green's death and serves on, and green is gone.
    std::thread::sleep(Duration::from_millis(1500));
    let tally = load.finish();
    assert_eq!(
        tally.failed, 0,
        "green dead, then the switch back: {tally:?}"
    );
    assert_eq!(
        tally.by_answer.keys().collect::<Vec<_>>(),
        ["version=v1 color=blue", "version=v2 color=green"],
        "{tally:?}"
    );
    let colors: Vec<String> = project
        .running_services()
        .into_iter()
        .filter(|s| s.starts_with("web-"))
        .collect();
    assert_eq!(colors, ["web-blue"]);
    assert!(project.include().contains(&format!(":{};", project.blue)));
    assert_eq!(
        project.get("/").map(|(c, b)| (c, b.trim().to_string())),
        Some((200, "version=v1 color=blue".to_string()))
    );
    let last = project.history().pop().unwrap();
    assert_eq!(last["result"], "failed");
    assert_eq!(project.status_json()["active"], "blue");
}

/// Issue #11: history stores the one-line reason of a failure, never the app's log lines
/// (which the terminal shows, and which may hold anything the app prints).
#[test]
fn e2e_history_keeps_the_reason_but_not_the_apps_log_lines() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    // The demo app refuses a non-numeric delay and exits 2 at once, saying why in its log.
    project.write_config(
        &App::compose()
            .health_timeout("60s")
            .restart("no")
            .env("STARTUP_DELAY_MS", "soon"),
    );
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    assert!(
        run.stderr.contains("cutover-demo-app:"),
        "the terminal shows the logs: {run}"
    );
    let last = project.history().pop().unwrap();
    assert_eq!(last["result"], "failed");
    let reason = last["reason"].as_str().expect("a reason");
    assert!(reason.contains("the green container exited"), "{reason}");
    assert!(!reason.contains('\n'), "one line: {reason:?}");
    assert!(
        !reason.contains("cutover-demo-app"),
        "no app log lines: {reason:?}"
    );
    let raw = std::fs::read_to_string(project.path().join(".cutover/history.jsonl")).unwrap();
    assert!(!raw.contains("cutover-demo-app"), "{raw}");
}

#[test]
fn memory_budget_refuses_a_second_color_that_cannot_fit() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().memory("4096G"));
    let failure = project
        .cutover(["deploy", "--image", "cutover-demo:v1"])
        .failure();
    project.assert_stderr_snapshot_with(
        "e2e-memory-budget-refusal",
        &failure,
        &[(
            r"MemAvailable \d+ MiB \+ SwapFree \d+ MiB = \d+ MiB",
            "MemAvailable [N] MiB + SwapFree [N] MiB = [N] MiB",
        )],
    );
    let stderr = &failure.stderr;
    assert!(stderr.contains("not enough memory"), "{stderr}");
    assert!(
        stderr.contains("it needs 4194304 MiB"),
        "numbers in MiB: {stderr}"
    );
    assert!(
        stderr.contains("MemAvailable") && stderr.contains("SwapFree"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(project.running_services().is_empty(), "nothing started");
    // The refusal is in the history, with its reason.
    let history = project.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["result"], "failed");
    assert!(
        history[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not enough memory"),
        "{history:?}"
    );
}

/// `cutover` run by a user other than root: uid/gid 65534 through `setpriv` when the tests
/// run as root (root passes access(2) whatever a directory's mode), else this user.
struct DeployUser {
    uid: u32,
    through_setpriv: bool,
}

impl DeployUser {
    fn pick() -> Option<DeployUser> {
        if !rustix::process::geteuid().is_root() {
            return Some(DeployUser {
                uid: rustix::process::getuid().as_raw(),
                through_setpriv: false,
            });
        }
        require("setpriv", "run cutover as another user").then_some(DeployUser {
            uid: 65534,
            through_setpriv: true,
        })
    }

    /// Gives `path` to this user (a no-op when it is the test's own user).
    fn own(&self, path: &Path) {
        if self.through_setpriv {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.uid)).unwrap();
        }
    }

    /// Makes `dir` a directory this user cannot create files in (`writable: false`), or can.
    fn set_writable(&self, dir: &Path, writable: bool) {
        use std::os::unix::fs::PermissionsExt;
        if self.through_setpriv {
            let owner = if writable { self.uid } else { 0 };
            std::os::unix::fs::chown(dir, Some(owner), Some(owner)).unwrap();
        } else {
            let mode = if writable { 0o755 } else { 0o555 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    fn cutover(&self, project: &Path, home: &Path, args: &[&str]) -> std::process::Output {
        let inner = crate::common::cutover_command(project, home);
        // A copy beside the project: the build's own path may sit under a directory (a CI
        // runner's home) that uid 65534 cannot enter.
        let binary = project.parent().unwrap().join("cutover");
        if !binary.exists() {
            std::fs::copy(inner.get_program(), &binary).expect("copy the cutover binary");
        }
        let mut cmd = if self.through_setpriv {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        cmd.args(args).current_dir(project);
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        // The tests' project registry may be root's; this user registers in its own.
        cmd.env("CUTOVER_REGISTRY_DIR", home.join("project-registry"));
        cmd.output().expect("run cutover")
    }
}

#[test]
fn a_deploy_as_a_user_who_cannot_write_the_includes_directory_is_refused_before_anything() {
    let Some(user) = DeployUser::pick() else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    // Under /tmp (world-traversable) whatever TMPDIR says.
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // An include directory the deploy user cannot write, as Debian's root-owned
    // /etc/nginx/conf.d; the project and HOME are the deploy user's.
    let nginx_dir = dir.path().join("conf.d");
    std::fs::create_dir(&nginx_dir).unwrap();
    let include = nginx_dir.join("service-url.inc");
    std::fs::write(&include, "set $service_url http://127.0.0.1:9001;\n").unwrap();
    user.set_writable(&nginx_dir, false);
    let (project, home) = (dir.path().join("project"), dir.path().join("home"));
    for d in [&project, &home] {
        std::fs::create_dir(d).unwrap();
        user.own(d);
    }
    project_from_fixture(&project, "minimal", |map| {
        set_key(
            map,
            "nginx",
            "include",
            include.display().to_string().into(),
        );
    });

    for args in [
        &["deploy", "--image", "example/web:v2"][..],
        &["deploy", "--image", "example/web:v2", "--dry-run"],
        &["rollback"],
        &["maintenance", "on"],
    ] {
        let out = user.cutover(&project, &home, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for needle in [
            format!("nginx.include {}", include.display()),
            format!(
                "uid {} cannot create files in {}",
                user.uid,
                nginx_dir.display()
            ),
            "Permission denied".into(),
            "sudo -n".into(),
        ] {
            assert!(stderr.contains(&needle), "{args:?}: {needle}: {stderr}");
        }
        // Refused before observe: no container was looked at, nothing written or recorded.
        assert!(!stderr.contains("observe"), "{args:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(&nginx_dir).unwrap().count(),
        1,
        "only the include"
    );
    assert!(!project.join(".cutover/history.jsonl").exists());

    // A directory the deploy user may write gets past the check (and on to observe, where
    // a user outside the docker group cannot reach the engine).
    user.set_writable(&nginx_dir, true);
    let out = user.cutover(
        &project,
        &home,
        &["deploy", "--image", "example/web:v2", "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("cannot create files in"), "{stderr}");
    assert!(
        out.status.success() || stderr.contains("failed to list the containers of minimal"),
        "{stderr}"
    );
}

fn docker_ok(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
}

/// Issue #21: when the new color fails in the settle window and the old one is not healthy
/// either, nginx stays on the new one (it may still answer some requests) and the error says
/// no healthy color exists; it used to switch back to the dead old color and leave it there.
#[test]
fn e2e_with_no_healthy_color_to_go_back_to_nginx_stays_on_the_new_one() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().settle("8s"));
    project.deploy_ok("cutover-demo:v1");
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("settle");
    let blue = container_of(&project, "web-blue");
    let green = container_of(&project, "web-green");
    // Blue goes for good (a stop: no restart policy brings it back); green crashes and is
    // brought back by its restart policy, which the watch sees.
    docker_ok(&["stop", "-t", "0", &blue]);
    docker_ok(&["kill", "-s", "KILL", &green]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no healthy color exists"), "{stderr}");
    assert!(!stderr.contains("switched back"), "{stderr}");
    assert!(project.include().contains(&format!(":{};", project.green)));
    // Not torn down: green's container is still there (its restart policy may be bringing
    // it back just now).
    let containers = cutover::docker::compose::containers_of(&project.name).unwrap();
    assert!(
        containers.iter().any(|c| c.service == "web-green"),
        "{containers:?}"
    );
    assert_eq!(project.history().pop().unwrap()["result"], "failed");
}

/// Issue #21: a first deploy is watched too: an app that crashes after passing its health
/// gate fails the deploy, saying what was seen (it used to be reported deployed).
#[test]
fn e2e_a_first_deploy_whose_app_crashes_in_the_settle_window_fails() {
    if !ready() {
        return;
    }
    // Health polls 1 s apart: the restart the watcher sees (within ~0.5 s) comes before
    // three failed polls would.
    let project = Project::compose(App::compose().settle("8s").health_interval("1s"));
    let child = project.spawn(["deploy", "--image", "cutover-demo:v1"]);
    project.wait_for_step("settle");
    docker_ok(&["kill", "-s", "KILL", &container_of(&project, "web-blue")]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restarts"), "{stderr}");
    assert!(stderr.contains("this was the first deploy"), "{stderr}");
    assert!(stderr.contains("✗ settle"), "{stderr}");
    assert_eq!(project.history().pop().unwrap()["result"], "failed");
}

/// Issue #21, defect 12: a restart inside the watch window is noticed when it happens, not
/// when the window ends. The restart policy brings the container back within a second, and
/// the health polls are 2 s apart (three failures to fail): what sees the death is the
/// watcher (the container's restart count and start time, read on every poll). The window is
/// 20 s, so a notice at its end shows.
#[test]
fn e2e_a_restart_in_the_watch_window_is_seen_when_it_happens() {
    if !ready() {
        return;
    }
    let app = || App::compose().health_interval("2s").health_timeout("30s");
    // The first deploy's own window short; the one under test 20 s.
    let project = Project::compose(app().settle("1s"));
    project.deploy_ok("cutover-demo:v1");
    project.write_config(&app().settle("20s"));
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("settle");
    docker_ok(&["kill", "-s", "KILL", &container_of(&project, "web-green")]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restarts"), "{stderr}");
    assert!(stderr.contains("switched back to blue"), "{stderr}");
    let last = project.history().pop().unwrap();
    let settle_ms = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "settle")
        .and_then(|s| s["ms"].as_u64())
        .unwrap_or_else(|| panic!("no settle step: {last:#}"));
    assert!(
        settle_ms < 8_000,
        "the restart was seen {settle_ms} ms into a 20 s window"
    );
}

/// Issue #21 (hostile run): the old color is nginx's backup only while the watch window is
/// open. Blue serves v1; a deploy of v2 starts green, which never passes its gate; while the
/// gate runs, blue stops. nginx must not hand traffic to green, which nobody switched to (a
/// 502 is right: nothing healthy serves).
#[test]
fn e2e_the_old_color_dying_during_the_next_gate_does_not_serve_the_ungated_new_one() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().settle("1s"));
    project.deploy_ok("cutover-demo:v1");
    project.write_config(
        &App::compose()
            .settle("1s")
            .health_timeout("20s")
            .env("FAIL_HEALTH", "1"),
    );
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("health");
    // Green listens (and fails its health check).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while cutover::health::Prober::new(Duration::from_secs(1))
        .get(&format!("http://127.0.0.1:{}/", project.green), None)
        .describe()
        .contains("refused")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    docker_ok(&["stop", "-t", "0", &container_of(&project, "web-blue")]);
    let answer = project.get("/");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !answer
            .as_ref()
            .is_some_and(|(code, body)| *code == 200 && body.contains("version=v2")),
        "nginx served the green color that never passed its gate: {answer:?}\ninclude:\n{}",
        project.include()
    );
}

/// The post-reload probe must prove that nginx's NEW config routes to a healthy app. An
/// include whose marker is right but whose route is broken (a custom template with a typo,
/// or the group of a site nginx never loaded) must fail the switch and be put back. The
/// probe polls every 10 ms; one poll can get the marker from a new nginx worker and the
/// health answer from an old worker (still accepting during the reload, old include, old
/// color): the broken include passes and the old color is stopped.
#[test]
fn a_broken_route_with_the_right_marker_fails_the_probe() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().stop_grace("0s"));
    project.deploy_ok("cutover-demo:v1");
    let templates = project.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("service-url.inc.j2"),
        "set $cutover_upstream {{ upstream }};\nset $service_url http://127.0.0.1:9;\n\
         location = /.cutover/active { default_type text/plain; \
         return 200 \"{{ color }} {{ upstream }} {{ project }}\\n\"; }\n",
    )
    .unwrap();
    let run = project.cutover(["deploy", "--image", "cutover-demo:v2"]);
    let answer = project.get("/health");
    assert!(
        !run.ok(),
        "deployed through a route that answers nothing; nginx now answers {answer:?}: {run}"
    );
    assert_eq!(answer.map(|(code, _)| code), Some(200));
}

/// A port change in `colors:` (or `colors.bind`) reaches the include on the next deploy,
/// but the site's upstream groups keep the old addresses until someone re-renders the site:
/// the new color's group points at a port nothing listens on, its backup (the old color,
/// still running during the probe) answers the probe, the deploy says "deployed", the old
/// color stops, and every request gets 502. Before the groups, the include carried the new
/// address and a port change just worked.
#[test]
fn a_changed_color_port_is_served_after_the_next_deploy() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().stop_grace("0s"));
    project.deploy_ok("cutover-demo:v1");
    let moved = crate::common::free_port();
    crate::harness::project::edit_config(&project, |config| {
        config["colors"]["green"] = serde_json::json!(moved);
    });
    let run = project.cutover(["deploy", "--image", "cutover-demo:v2"]);
    let answer = project.get("/");
    let status = project.cutover(["status"]);
    assert!(
        answer
            .as_ref()
            .is_some_and(|(code, body)| *code == 200 && body.contains("version=v")),
        "after moving colors.green to {moved}: deploy {run}\nnginx answers {answer:?}\n{status}"
    );
}
