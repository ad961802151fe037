//! Phase 2: deploys with the image shipped over SSH (the box has no registry): the first
//! deploy, blue → green under load through the box's nginx from this machine, rollback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::loud;
use crate::machine::{cannot_run, Vm};
use crate::project::BoxProject;

/// Whether this build's `deploy` can ship a local image over the SSH connection.
pub fn ship_available() -> bool {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["deploy", "--help"])
        .output()
        .expect("run cutover deploy --help");
    String::from_utf8_lossy(&help.stdout).contains("--ship")
}

/// The images the suite ships: the demo app (`scripts/demo-image.sh`, idempotent) under a
/// repository of its own, so no other test's prune or retag on a shared engine touches them.
pub fn local_images() {
    let out = std::process::Command::new("bash")
        .arg(crate::common::repo_root().join("scripts/demo-image.sh"))
        .args(["--repo", "cutover-vmsuite", "v1", "v2"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/demo-image.sh");
    assert!(
        out.status.success(),
        "scripts/demo-image.sh --repo cutover-vmsuite v1 v2 failed"
    );
}

/// What a load loop saw.
#[derive(Debug, Default)]
pub struct Load {
    pub ok: usize,
    pub failed: Vec<String>,
    /// The `X-Version`-bearing bodies, in order of arrival, deduplicated runs.
    pub answers: Vec<String>,
}

/// GETs `/` through the forwarded port 80 until `stop` (or `limit`), one at a time.
pub fn load_loop(
    port: u16,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> std::thread::JoinHandle<Load> {
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(20)))
            .http_status_as_error(true)
            .build()
            .into();
        let url = format!("http://127.0.0.1:{port}/");
        let mut load = Load::default();
        let start = Instant::now();
        while !stop.load(Ordering::SeqCst) && start.elapsed() < limit {
            match agent.get(&url).call() {
                Ok(mut resp) => {
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    load.ok += 1;
                    let first = body.lines().next().unwrap_or("").to_string();
                    if load.answers.last() != Some(&first) {
                        load.answers.push(first);
                    }
                }
                Err(e) => load
                    .failed
                    .push(format!("{:.1}s: {e}", start.elapsed().as_secs_f64())),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        load
    })
}

/// Which color and version answer through the box's nginx.
fn serving(vm: &Vm) -> String {
    vm.http_get("/")
        .unwrap_or_else(|e| panic!("GET / through the box's nginx: {e}"))
}

pub fn blue_green_under_load_and_rollback(vm: &Vm, web: &BoxProject) {
    if !ship_available() {
        cannot_run(
            "deploy --ship (send a local image over SSH) is not in this build: the box has no \
             registry, so the remote deploy phase and the small-box phase did NOT run",
        );
        return;
    }
    local_images();
    let first = web.cutover_ok(&[
        "deploy",
        "--ship",
        "--image",
        "cutover-vmsuite:v1",
        "--json",
    ]);
    let summary = first.json();
    assert_eq!(summary["to"], "blue", "{}", first.stderr());
    let body = serving(vm);
    assert!(body.contains("blue") && body.contains("v1"), "{body}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = load_loop(vm.http_port, Arc::clone(&stop), Duration::from_secs(600));
    std::thread::sleep(Duration::from_secs(2));
    let second = web.cutover(&[
        "deploy",
        "--ship",
        "--image",
        "cutover-vmsuite:v2",
        "--json",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let load = load.join().unwrap();
    assert!(
        second.out.status.success(),
        "blue → green failed:\n{}\n{}",
        second.stdout(),
        second.stderr()
    );
    loud(&format!(
        "vm: blue → green took {:.1}s under load: {} requests ok, {} failed, answers {:?}",
        second.took.as_secs_f64(),
        load.ok,
        load.failed.len(),
        load.answers
    ));
    assert_eq!(second.json()["to"], "green");
    assert!(
        load.failed.is_empty(),
        "failed requests during the switch: {:?}",
        load.failed
    );
    assert!(load.ok >= 10, "the load loop barely ran: {load:?}");
    let last = load.answers.last().cloned().unwrap_or_default();
    assert!(
        last.contains("green") && last.contains("v2"),
        "{:?}",
        load.answers
    );
    assert!(
        load.answers.first().is_some_and(|a| a.contains("blue")),
        "{:?}",
        load.answers
    );

    let back = web.cutover_ok(&["rollback", "--json"]);
    assert_eq!(back.json()["to"], "blue", "{}", back.stderr());
    let body = serving(vm);
    assert!(body.contains("blue") && body.contains("v1"), "{body}");
}
