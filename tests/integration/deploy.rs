//! End-to-end deploys on the real Docker engine and a real nginx (in a temp prefix on a
//! loopback port), with the demo app images `cutover-demo:v1` / `:v2` built by
//! `scripts/demo-image.sh`. Every test is a [`Project`] with its own compose project name,
//! free ports and HOME, so tests run in parallel, and removes its containers and nginx when
//! it ends. The stderr of each failure path is also checked whole, against a snapshot.
//!
//! The compose tool is whatever `cutover` detects (`CUTOVER_COMPOSE` selects v1 or v2);
//! `scripts/test.sh` runs these tests once per flavour.

use std::time::{Duration, Instant};

use cutover::demo::{http_get, Load};

use crate::common::free_port;
use crate::harness::project::{ready, App, Project, Run};

#[test]
fn e2e_full_cycle_under_load_has_zero_failed_requests() {
    if !ready() {
        return;
    }
    // No stop grace: docker kills the old color at once, so the slow requests below complete
    // only because cutover drains the old color before stopping it.
    let project = Project::compose(App::compose().stop_grace("0s"));
    project.deploy_ok("cutover-demo:v1");
    project.assert_serving("blue", "v1");

    let load = Load::start(project.port, Duration::from_secs(300));
    for (image, color, version) in [
        ("cutover-demo:v2", "green", "v2"),
        ("cutover-demo:v1", "blue", "v1"),
    ] {
        let child = project.spawn(["deploy", "--image", image]);
        // Slow requests on the old color, started while the new one is being health-gated
        // (about a second before the switch), must all complete.
        project.wait_for_step("health");
        let port = project.port;
        let slow: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || http_get(port, "/slow?ms=2000")))
            .collect();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("to {color}")), "{stdout}");
        for handle in slow {
            let answer = handle.join().unwrap();
            let (code, body) = answer.expect("slow request answered");
            assert_eq!(code, 200, "{body}");
            assert!(body.contains("slow ms=2000 color"), "{body}");
        }
        project.assert_serving(color, version);
    }
    let tally = load.finish();
    assert_eq!(
        tally.failed, 0,
        "{} failed of {}: {:?}",
        tally.failed, tally.sent, tally.failures
    );
    assert!(
        tally.ok > 50,
        "the load client sent only {} requests",
        tally.ok
    );
    // Both versions answered during the cycle: the traffic really crossed the switches.
    assert!(
        tally
            .by_answer
            .keys()
            .any(|k| k.contains("version=v2 color=green")),
        "{:?}",
        tally.by_answer
    );
    let history = project.history();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h["result"] == "ok"));
    // Step timings are recorded for each deploy.
    let steps: Vec<&str> = history[2]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["lock", "observe", "up", "health", "switch", "probe", "settle", "drain", "stop"]
    );
}

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

#[test]
fn e2e_concurrent_deploy_fails_naming_the_holder_or_waits() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().startup_delay_ms(3000));
    let mut child = project
        .command(["deploy", "--image", "cutover-demo:v1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first deploy holds the lock (its holder line is written).
    let lock = project.path().join(".cutover/lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&lock)
        .map(|t| t.is_empty())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "first deploy never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let failure = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    project.assert_stderr_snapshot("e2e-concurrent-deploy-lock-holder", &failure);
    let stderr = &failure.stderr;
    assert!(
        stderr.contains("another deploy is running: deploy cutover-demo:v1 by"),
        "{stderr}"
    );
    project
        .cutover(["deploy", "--image", "cutover-demo:v2", "--lock-wait", "60s"])
        .success();
    assert!(child.wait().unwrap().success());
    project.assert_serving("green", "v2");
}

#[test]
fn e2e_sigterm_before_the_switch_tears_the_new_color_down() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().startup_delay_ms(1000));
    project.deploy_ok("cutover-demo:v1");
    let include_before = project.include();
    project.write_config(&App::compose().startup_delay_ms(8000));
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("health");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("deploy interrupted"), "{stderr}");
    assert_eq!(project.running_services(), ["web-blue"]);
    assert_eq!(project.include(), include_before);
    assert_eq!(project.history().pop().unwrap()["result"], "interrupted");
    assert!(project.status_json()["problems"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn e2e_sigterm_after_the_switch_completes_the_deploy() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().drain("20s"));
    project.deploy_ok("cutover-demo:v1");
    // A slow request keeps the old color draining while the signal arrives.
    let port = project.port;
    let slow = std::thread::spawn(move || http_get(port, "/slow?ms=6000"));
    std::thread::sleep(Duration::from_millis(200));
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("drain");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(slow.join().unwrap().map(|(c, _)| c), Some(200));
    project.assert_serving("green", "v2");
}

#[test]
fn e2e_kill_9_mid_deploy_is_explained_and_recovered() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    project.write_config(&App::compose().startup_delay_ms(8000));
    let mut child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("health");
    child.kill().unwrap();
    child.wait().unwrap();
    let status = project.status_json();
    let problems = status["problems"].to_string();
    assert!(problems.contains("did not finish"), "{problems}");
    assert!(problems.contains("at step `health`"), "{problems}");
    assert_eq!(status["active"], "blue");
    project.write_config(&App::compose());
    project.deploy_ok("cutover-demo:v2");
    project.assert_serving("green", "v2");
    assert!(project.status_json()["problems"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn e2e_redeploy_without_image_and_rollback() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().accessory());
    let stdout = project.deploy_ok("cutover-demo:v1").stdout;
    assert!(stdout.contains("to blue"), "{stdout}");
    // One deploy recorded: there is no previous image to roll back to.
    let failure = project.cutover(["rollback"]).code(1);
    assert!(
        failure.stderr.contains("nothing to roll back to"),
        "{failure}"
    );
    project.assert_stderr_snapshot("e2e-rollback-nothing-to-roll-back", &failure);
    // The first deploy starts the accessory (before the app); later deploys leave it alone.
    let accessory_id = || {
        let containers = cutover::docker::compose::containers_of(&project.name).unwrap();
        let cache: Vec<_> = containers
            .into_iter()
            .filter(|c| c.service == "cache" && c.running())
            .collect();
        assert_eq!(cache.len(), 1, "one running accessory");
        cache[0].id.clone()
    };
    let first_id = accessory_id();
    let steps: Vec<String> = project.history()[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    let pos = |name: &str| steps.iter().position(|s| s == name).unwrap();
    assert!(pos("accessories") < pos("up"), "{steps:?}");
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(accessory_id(), first_id, "the accessory was not recreated");
    let running = project.running_services();
    assert_eq!(running, ["cache", "web-green"]);
    // No --image: the active image moves to the other color (a config or secret change).
    let stdout = project.cutover(["deploy"]).success().stdout;
    assert!(
        stdout.contains("deployed cutover-demo:v2 to blue"),
        "{stdout}"
    );
    project.assert_serving("blue", "v2");
    let stdout = project.cutover(["rollback"]).success().stdout;
    assert!(
        stdout.contains("rolled back to cutover-demo:v1"),
        "{stdout}"
    );
    project.assert_serving("green", "v1");
    assert_eq!(project.history().pop().unwrap()["action"], "rollback");
}

#[test]
fn e2e_dry_run_changes_nothing() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let include_before = project.include();
    let stdout = project
        .cutover(["deploy", "--image", "cutover-demo:v2", "--dry-run"])
        .success()
        .stdout;
    assert!(
        stdout.contains("plan: deploy cutover-demo:v2 to green"),
        "{stdout}"
    );
    assert!(
        stdout.contains("up -d --no-deps --force-recreate web-green"),
        "{stdout}"
    );
    assert_eq!(project.include(), include_before);
    assert_eq!(project.running_services(), ["web-blue"]);
    assert_eq!(project.history().len(), 1);
    // --json summary for scripts.
    let summary = project
        .cutover([
            "deploy",
            "--image",
            "cutover-demo:v2",
            "--dry-run",
            "--json",
        ])
        .success()
        .stdout_json();
    assert_eq!(summary["to"], "green");
    assert_eq!(summary["dry_run"], true);
    assert_eq!(project.history().len(), 1);

    // The plan and the deploy are one list: every step the deploy records was planned, in
    // the planned order.
    let names = |steps: &serde_json::Value, pick: fn(&serde_json::Value) -> &serde_json::Value| {
        steps
            .as_array()
            .unwrap_or_else(|| panic!("{summary}"))
            .iter()
            .map(|s| pick(s).as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let planned = names(&summary["plan_steps"], |s| s);
    let done = project
        .cutover(["deploy", "--image", "cutover-demo:v2", "--json"])
        .success()
        .stdout_json();
    let ran = names(&done["steps"], |s| &s["step"]);
    assert_eq!(ran, planned, "planned {summary}\nran {done}");
    assert!(planned.contains(&"stop".to_string()), "{summary}");
}

#[test]
fn e2e_demo_runs_a_clean_cycle_and_leaves_nothing_behind() {
    if !ready() {
        return;
    }
    let report = Project::new()
        .cutover(["demo", "--json"])
        .success()
        .stdout_json();
    assert_eq!(report["load"]["failed"], 0, "{report}");
    assert!(report["load"]["ok"].as_u64().unwrap() > 20, "{report}");
    assert_eq!(report["slow_requests"], 3);
    assert_eq!(report["slow_ok"], 3);
    assert_eq!(report["first"]["to"], "blue");
    assert_eq!(report["second"]["to"], "green");
    let project = report["project"].as_str().unwrap();
    assert!(
        cutover::docker::compose::containers_of(project)
            .unwrap()
            .is_empty(),
        "containers left behind"
    );
    let port: u16 = report["nginx"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(http_get(port, "/").is_none(), "nginx left running");
}

#[test]
fn e2e_secrets_reach_the_app_only_through_the_environment_and_rotate_with_a_redeploy() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets());
    let demo_secret = project.secret_value("DEMO_SECRET");
    assert!(
        demo_secret.len() >= 8,
        "the fixture's value is distinctive enough to search for"
    );

    let Run { stdout, stderr, .. } = project.deploy_ok("cutover-demo:v1");
    assert!(
        !stdout.contains(&demo_secret) && !stderr.contains(&demo_secret),
        "value printed"
    );
    assert_eq!(
        project.get("/env?key=DEMO_SECRET").unwrap(),
        (200, demo_secret.clone())
    );
    // The compose file names the key and never holds the value; nor does any state file.
    let compose = std::fs::read_to_string(project.path().join(".cutover/compose.yml")).unwrap();
    assert!(compose.contains("DEMO_SECRET"), "{compose}");
    for entry in std::fs::read_dir(project.path().join(".cutover")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !text.contains(&demo_secret),
                "{} holds the secret value",
                path.display()
            );
        }
    }

    // The rotation flow: set a new value, redeploy the active image.
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            "rotated-e2e-value-7f3a\n",
        )
        .success();
    let stdout = project.cutover(["deploy"]).success().stdout;
    assert!(
        stdout.contains("deployed cutover-demo:v1 to green"),
        "{stdout}"
    );
    assert_eq!(
        project.get("/env?key=DB_PASSWORD").unwrap(),
        (200, "rotated-e2e-value-7f3a".to_string())
    );
    project.assert_serving("green", "v1");

    // No identity: deploy fails before touching anything.
    let mut cmd = project.command(["deploy", "--image", "cutover-demo:v2"]);
    cmd.env_remove("CUTOVER_IDENTITY")
        .env("HOME", project.path())
        .env("XDG_CONFIG_HOME", project.path().join("nothing"));
    let stderr = Run::of(cmd).code(1).stderr;
    assert!(
        stderr.contains("cannot decrypt the secrets files named in cutover.yml"),
        "{stderr}"
    );
    project.assert_serving("green", "v1");
}

#[test]
fn e2e_memory_budget_refuses_a_second_color_that_cannot_fit() {
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

#[test]
fn e2e_prune_keeps_the_newest_and_removes_the_rest() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    // A private repository (tags of the demo image), so other tests' images are never touched.
    let repo = format!("cutover-prune-{}", project.name);
    let tag = |t: &str| format!("{repo}:{t}");
    for t in ["a", "b", "c"] {
        let ok = std::process::Command::new("docker")
            .args(["tag", "cutover-demo:v1", &tag(t)])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    project.write_config(&App::compose().image(&repo));
    let plan = project
        .cutover(["prune", "--keep", "1", "--dry-run", "--json"])
        .success()
        .stdout_json();
    assert_eq!(
        plan["removed"],
        serde_json::json!([tag("b"), tag("a")]),
        "{plan}"
    );
    assert!(
        cutover::docker::images::exists(&tag("a")),
        "dry run removes nothing"
    );
    project.cutover(["prune", "--keep", "1"]).success();
    assert!(cutover::docker::images::exists(&tag("c")));
    assert!(
        !cutover::docker::images::exists(&tag("b")) && !cutover::docker::images::exists(&tag("a"))
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag("c")])
        .output();
}
