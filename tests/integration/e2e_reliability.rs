//! Fault injection on the real engine and nginx (issue #11): a new color that dies right
//! after the switch, a deploy killed between writing the include and reloading nginx, a
//! state write that fails after the switch. Each test failed before its fix.

use std::time::{Duration, Instant};

use cutover::demo::Load;

use crate::e2e::ready;
use crate::project::{App, Project};

/// The id of `service`'s running container.
fn container_of(project: &Project, service: &str) -> String {
    cutover::compose::containers_of(&project.name)
        .unwrap()
        .into_iter()
        .find(|c| c.service == service && c.running())
        .unwrap_or_else(|| panic!("no running {service}"))
        .id
}

/// Waits (bounded) until the include on disk points at `port`.
fn wait_for_include(project: &Project, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !project.include().contains(&format!(":{port};")) {
        assert!(Instant::now() < deadline, "include never pointed at {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn e2e_new_color_dying_after_the_switch_switches_back_to_the_old_one() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().settle("5s"));
    project.deploy_ok("cutover-demo:v1");
    let before = Load::start(project.port, Duration::from_secs(120));
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    // The new color passed its gate and nginx serves it: now it crashes (restart: on-failure
    // brings it back, as a crash-looping app would).
    wait_for_include(&project, project.green);
    let green = container_of(&project, "web-green");
    let tally = before.finish();
    assert_eq!(tally.failed, 0, "before the crash: {tally:?}");
    let killed = std::process::Command::new("docker")
        .args(["kill", "-s", "KILL", &green])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("settle window"), "{stderr}");
    assert!(stderr.contains("switched back to blue"), "{stderr}");
    // Blue never stopped: it serves again at once, and green is gone.
    let after = Load::start(project.port, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1500));
    let tally = after.finish();
    assert_eq!(tally.failed, 0, "after the switch back: {tally:?}");
    assert_eq!(tally.by_answer.len(), 1, "{tally:?}");
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
