//! Phase 3: deploys with the image shipped over SSH (the box has no registry): after the
//! walk's first deploy (include + reload), the project moves to `nginx.switch: nft`
//! (`crate::nft`), then blue → green under load through the box's nginx from this machine
//! (the nft mode's set-up: the include's one reload), a rollback with nginx's PIDs
//! unchanged (the rule alone switches), a reboot (the boot unit's restore).

use std::time::Duration;

use cutover::demo::Load;

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
    // The walk's first deploy (blue, v1) serves; after the bootstrap phase's reboot it comes
    // back by itself.
    vm.wait_for(
        "the walk's deploy (blue, v1) to answer",
        Duration::from_secs(180),
        || {
            vm.http_get("/")
                .is_ok_and(|b| b.contains("blue") && b.contains("v1"))
        },
    );

    // The suite's one load client: a fresh connection per request, as every e2e test
    // uses. A pooled keep-alive client would count the HTTP/1.1 idle-close race (nginx's
    // old workers close idle keep-alive connections on reload; a request written onto one
    // just then is never read, and clients retry it, RFC 9112 §9.3.1) as a dropped request,
    // which under QEMU's slow user-mode networking happens about once a run.
    crate::nft::switch_to_nft(vm, web);
    let load = Load::start(vm.http_port, Duration::from_secs(600));
    std::thread::sleep(Duration::from_secs(2));
    let second = web.cutover(&[
        "deploy",
        "--ship",
        "--image",
        "cutover-vmsuite:v2",
        "--json",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let tally = load.finish();
    assert!(
        second.out.status.success(),
        "blue → green failed:\n{}\n{}",
        second.stdout(),
        second.stderr()
    );
    loud(&format!(
        "vm: blue → green took {:.1}s under load: {} requests ok, {} failed, answers {:?}",
        second.took.as_secs_f64(),
        tally.ok,
        tally.failed,
        tally.by_answer
    ));
    assert_eq!(second.json()["to"], "green");
    assert_eq!(second.json()["switch"], "nft", "{}", second.stdout());
    assert_eq!(
        tally.failed, 0,
        "failed requests during the switch: {:?}",
        tally.failures
    );
    assert!(tally.ok >= 10, "the load loop barely ran: {tally:?}");
    let answered = |color: &str, version: &str| {
        tally
            .by_answer
            .keys()
            .any(|a| a.contains(color) && a.contains(version))
    };
    assert!(
        answered("blue", "v1") && answered("green", "v2"),
        "both colors should have answered during the switch: {:?}",
        tally.by_answer
    );
    let body = serving(vm);
    assert!(body.contains("green") && body.contains("v2"), "{body}");

    // The rollback: the rule alone switches, nginx keeps its master and workers. (Not under
    // a second load: the one above leaves ~40 new connections a second in conntrack's
    // TIME_WAIT for two minutes, and a second load at once fills the 1 GiB box's conntrack
    // table, `nf_conntrack: table full, dropping packet`, in either switch mode.)
    let pids = crate::nft::nginx_pids(vm);
    let back = web.cutover_ok(&["rollback", "--json"]);
    assert_eq!(back.json()["to"], "blue", "{}", back.stderr());
    assert_eq!(back.json()["switch"], "nft", "{}", back.stdout());
    assert_eq!(
        crate::nft::nginx_pids(vm),
        pids,
        "nginx's PIDs changed across an nft rollback"
    );
    loud(&format!(
        "vm: rollback in nft mode took {:.1}s, nginx's PIDs unchanged ({pids})",
        back.took.as_secs_f64()
    ));
    let body = serving(vm);
    assert!(body.contains("blue") && body.contains("v1"), "{body}");

    // A reboot with the config's defaults (`app.restart` unset): the serving color comes
    // back by itself, and `status` says all is well (it exits 1 when the site is down).
    let rebooted = std::time::Instant::now();
    vm.reboot();
    vm.wait_for(
        "the app to answer after the reboot",
        Duration::from_secs(180),
        || {
            vm.http_get("/")
                .is_ok_and(|b| b.contains("blue") && b.contains("v1"))
        },
    );
    loud(&format!(
        "vm: after a reboot the app answered again in {:.1}s",
        rebooted.elapsed().as_secs_f64()
    ));
    crate::nft::after_reboot(vm, web);
    let status = web.cutover_ok(&["status", "--json"]);
    assert_eq!(
        status.json()["down"],
        serde_json::Value::Null,
        "{}",
        status.stdout()
    );
}
