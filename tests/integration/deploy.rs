//! A deploy's happy path, end to end on the real Docker engine and a real nginx (in a temp
//! prefix on a loopback port), with the demo app images `cutover-demo:v1` / `:v2` built by
//! `scripts/demo-image.sh`: a full blue/green cycle under load with no failed request and
//! slow requests drained, and a dry run that changes nothing and plans exactly the steps the
//! deploy then runs. What fails is in deploy_failures.rs, what is interrupted in
//! interrupts.rs, rollback in rollback.rs.
//!
//! Every test is a [`Project`] with its own compose project name, free ports and HOME, so
//! tests run in parallel, and removes its containers and nginx when it ends. The compose tool
//! is whatever `cutover` detects (`CUTOVER_COMPOSE` selects v1 or v2): tests named `e2e_*`
//! run once per flavour (harness/mod.rs).

use std::time::Duration;

use cutover::demo::{http_get, Load};

use crate::harness::project::{ready, App, Project};

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
        [
            "decrypt", "lock", "observe", "up", "health", "switch", "probe", "settle", "drain",
            "stop"
        ]
    );
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
    // `decrypt` (the command's, before the engine) is the first of both.
    let ran = names(&done["steps"], |s| &s["step"]);
    assert_eq!(ran.first().map(String::as_str), Some("decrypt"), "{done}");
    assert_eq!(ran, planned, "planned {summary}\nran {done}");
    assert!(planned.contains(&"stop".to_string()), "{summary}");
    // The plan's operations name the steps they are recorded as, in the same order.
    let operations: Vec<String> = summary["plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["step"].as_str().map(str::to_string))
        .collect();
    let mut recorded = planned.clone();
    recorded.retain(|s| !["decrypt", "lock", "observe"].contains(&s.as_str()));
    assert_eq!(operations, recorded, "{summary}");
    // The three documents name the same things alike: this deploy's history entry and
    // status's last deploy carry its time, result, steps, total and switch time.
    let entry = project.history().pop().unwrap();
    let last = project.status_json()["last_deploy"].clone();
    assert_eq!(entry, last);
    // History's steps are the deploy's, decrypt first (what cmd/ ran before the engine).
    assert_eq!(names(&entry["steps"], |s| &s["step"]), ran, "{entry}");
    for key in ["result", "image", "from", "to", "switch_ms"] {
        assert_eq!(
            entry[key], done[key],
            "{key}: history {entry}\ndeploy {done}"
        );
    }
    assert!(
        done["switch_ms"].is_u64() && done["time"].is_string(),
        "{done}"
    );
    crate::json_contract::validate("deploy.schema.json", &summary);
    crate::json_contract::validate("deploy.schema.json", &done);
    crate::json_contract::validate("status.schema.json", &project.status_json());
}
