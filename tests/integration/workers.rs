//! Workers (`workers:`), end to end on the real engine and nginx: they follow every deploy and
//! rollback (`overlap: false` never runs two), a failing one keeps the web switch and
//! restarts the old one, one taken out of the config is removed, and the memory budget counts
//! them. The images are harness/workers_app.rs's (`cutover-demo-workers:v1` / `:v2`); `logs`
//! and `exec` reaching the workers are in logs_exec_run.rs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::project::Project;
use crate::harness::workers_app::{app, ready, W1, W2};

/// A scheduler that must never run twice and a collector that may overlap.
fn two_workers() -> Value {
    json!({
        "scheduler": { "command": ["worker", "scheduler"], "memory": "16M", "settle": "1s" },
        "collector": {
            "command": ["worker", "collector"],
            "memory": "16M",
            "overlap": true,
            "health": { "command": ["/app", "ready"], "interval": "200ms", "timeout": "20s" },
        },
    })
}

/// Samples the running containers of each worker every 50 ms until stopped; returns the
/// most of each seen at once.
fn sample_peaks(project: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, usize)> {
    let project = project.to_string();
    std::thread::spawn(move || {
        let (mut scheduler, mut collector) = (0, 0);
        while !stop.load(Ordering::SeqCst) {
            let count = |worker: &str| {
                let out = std::process::Command::new("docker")
                    .args(["ps", "-q", "--filter"])
                    .arg(format!("label=com.docker.compose.project={project}"))
                    .arg("--filter")
                    .arg(format!("label=dev.cutover.worker={worker}"))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).lines().count()
            };
            scheduler = scheduler.max(count("scheduler"));
            collector = collector.max(count("collector"));
            std::thread::sleep(Duration::from_millis(50));
        }
        (scheduler, collector)
    })
}

#[test]
fn e2e_workers_follow_every_deploy_and_rollback() {
    if !ready() {
        return;
    }
    let project = Project::compose(app(two_workers()));
    project.deploy_ok(W1);
    for name in ["scheduler", "collector"] {
        assert_eq!(
            project.running_worker(name),
            vec![(format!("web-{name}-blue"), W1.to_string())],
            "first deploy starts {name}"
        );
    }

    let plan = project
        .cutover(["deploy", "--dry-run", "--image", W2])
        .success();
    let text = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        text.contains(
            "worker scheduler: stop web-scheduler-blue, up -d --no-deps web-scheduler-green"
        ),
        "{plan}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peaks(&project.name, Arc::clone(&stop));
    let run = project.deploy_ok(W2);
    stop.store(true, Ordering::SeqCst);
    let (scheduler_peak, collector_peak) = sampler.join().unwrap();
    assert_eq!(
        scheduler_peak, 1,
        "overlap: false never runs two schedulers"
    );
    assert_eq!(
        collector_peak, 2,
        "overlap: true starts the new collector first"
    );
    assert!(run.stderr.contains("workers"), "{run}");
    for name in ["scheduler", "collector"] {
        assert_eq!(
            project.running_worker(name),
            vec![(format!("web-{name}-green"), W2.to_string())]
        );
        let w = project.status_worker(name);
        assert_eq!(w["image"], W2);
        assert_eq!(w["color"], "green");
    }
    assert_eq!(project.status_worker("collector")["health"], "healthy");
    let last = project.history().pop().unwrap();
    let outcomes = last["workers"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{last}");
    assert!(outcomes
        .iter()
        .all(|o| o["result"] == "ok" && o["image"] == W2));
    assert!(last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "workers"));

    // The text status lists them too.
    let text = project.cutover(["status"]).success().stdout;
    assert!(
        text.contains("worker scheduler") && text.contains(W2),
        "{text}"
    );

    let rollback = project.cutover(["rollback", "--json"]).success();
    let summary = rollback.stdout_json();
    let moved = summary["workers"].as_array().expect("workers in --json");
    assert!(
        moved.iter().all(|w| w["image"] == W1 && w["to"] == "blue"),
        "{summary}"
    );
    for name in ["scheduler", "collector"] {
        assert_eq!(
            project.running_worker(name),
            vec![(format!("web-{name}-blue"), W1.to_string())],
            "rollback moves {name} back"
        );
    }
}

#[test]
fn e2e_a_worker_that_fails_keeps_the_switch_and_restarts_the_old_one() {
    if !ready() {
        return;
    }
    let project = Project::compose(app(two_workers()));
    project.deploy_ok(W1);
    // The next deploy's scheduler exits at once (and restarts: `restart: on-failure`).
    let mut workers = two_workers();
    workers["scheduler"]["command"] = json!(["exit", "3", "scheduler gave up"]);
    project.write_config(&app(workers));
    let run = project.cutover(["deploy", "--image", W2]).code(1);
    assert!(
        run.stderr.contains("worker scheduler failed to come up"),
        "{run}"
    );
    assert!(run.stderr.contains("the web switch is kept"), "{run}");
    // The web switch stays.
    let (code, body) = project.get("/").unwrap();
    assert_eq!((code, body.trim()), (200, "version=v2 color=green"));
    // The old scheduler runs again, from the old image; the collector moved.
    assert_eq!(
        project.running_worker("scheduler"),
        vec![("web-scheduler-blue".to_string(), W1.to_string())]
    );
    assert_eq!(
        project.running_worker("collector"),
        vec![("web-collector-green".to_string(), W2.to_string())]
    );
    let last = project.history().pop().unwrap();
    assert_eq!(last["result"], "failed");
    assert_eq!(last["to"], "green");
    let failed: Vec<&Value> = last["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["result"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{last}");
    assert_eq!(failed[0]["name"], "scheduler");
    let status = project.status_json();
    assert_eq!(status["active"], "green", "{status}");
    assert_eq!(project.status_worker("scheduler")["image"], W1);

    // The next deploy (scheduler fixed) moves the scheduler from where it still runs.
    project.write_config(&app(two_workers()));
    project.deploy_ok(W1);
    assert_eq!(
        project.running_worker("scheduler"),
        vec![("web-scheduler-green".to_string(), W1.to_string())]
    );
}

#[test]
fn a_worker_taken_out_of_the_config_is_removed_by_the_next_deploy() {
    if !ready() {
        return;
    }
    let project = Project::compose(app(two_workers()));
    project.deploy_ok(W1);
    assert_eq!(project.running_worker("collector").len(), 1);
    let mut workers = two_workers();
    workers.as_object_mut().unwrap().remove("collector");
    project.write_config(&app(workers));

    let plan = project
        .cutover(["deploy", "--dry-run", "--image", W2])
        .success();
    assert!(
        plan.stdout
            .contains("worker collector: no longer in cutover.yml; stop and rm its 1 container(s)"),
        "{plan}"
    );
    assert_eq!(
        project.running_worker("collector").len(),
        1,
        "a plan changes nothing"
    );

    let run = project.deploy_ok(W2);
    assert!(
        run.stderr
            .contains("worker collector (no longer in cutover.yml): stopped and removed"),
        "{run}"
    );
    let left: Vec<String> = cutover::docker::compose::containers_of(&project.name)
        .unwrap()
        .into_iter()
        .filter(|c| c.service.starts_with("web-collector-"))
        .map(|c| format!("{} {}", c.service, c.state))
        .collect();
    assert!(left.is_empty(), "collector containers left: {left:?}");
    assert_eq!(
        project.running_worker("scheduler"),
        vec![("web-scheduler-green".to_string(), W2.to_string())]
    );
    let status = project.status_json();
    let names: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, vec!["scheduler"], "{status}");
    let state = std::fs::read_to_string(project.path().join(".cutover/state.json")).unwrap();
    assert!(!state.contains("collector"), "{state}");
}

#[test]
fn budget_refusal_counts_workers() {
    if !ready() {
        return;
    }
    let workers = json!({ "hog": { "command": ["worker"], "memory": "1000000G" } });
    let project = Project::compose(app(workers));
    let run = project.cutover(["deploy", "--image", W1]).code(1);
    assert!(run.stderr.contains("not enough memory"), "{run}");
    assert!(run.stderr.contains("workers 1024000000 MiB"), "{run}");
    assert!(project.running_services().is_empty(), "nothing started");
}
