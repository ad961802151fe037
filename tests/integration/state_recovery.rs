//! Fault injection on the real engine and nginx (issue #11): a new color that dies right
//! after the switch, a deploy killed between writing the include and reloading nginx, a
//! state write that fails after the switch. Each test failed before its fix.

use std::time::{Duration, Instant};

use cutover::demo::Load;

use crate::harness::project::{nginx_words, ready, script, App, Project};

/// The id of `service`'s running container.
fn container_of(project: &Project, service: &str) -> String {
    cutover::docker::compose::containers_of(&project.name)
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
    // The new color passed its gate and the probe proved nginx serves it: now it crashes
    // (restart: on-failure brings it back, as a crash-looping app would).
    project.wait_for_step("settle");
    assert!(project.include().contains(&format!(":{};", project.green)));
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

#[test]
fn e2e_killed_between_include_and_reload_the_next_deploy_keeps_the_served_color() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    let flag = project.path().join("slow-nginx-test");
    // `nginx -t` that takes 5 s while the flag exists: the window between the include write
    // and the reload.
    let wrapper = script(
        &project,
        "nginx-test.sh",
        &format!(
            "[ -e '{}' ] && sleep 5\nexec {}",
            flag.display(),
            nginx_words(&project, &["-t"])
        ),
    );
    let app = App::compose().nginx_test(&[&wrapper]);
    project.write_config(&app);
    project.deploy_ok("cutover-demo:v1");
    std::fs::write(&flag, "").unwrap();
    let mut child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    wait_for_include(&project, project.green);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&flag).unwrap();
    // The file names green; nginx still serves blue, and status says so.
    let status = project.status_json();
    assert_eq!(status["nginx_serves"], "blue", "{status}");
    assert_eq!(status["nginx_points_at"], "green", "{status}");
    assert_eq!(status["active"], "blue", "{status}");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("nginx serves blue, but the include on disk names green"),
        "{problems}"
    );
    let load = Load::start(project.port, Duration::from_secs(120));
    let run = project.deploy_ok("cutover-demo:v2");
    let tally = load.finish();
    assert!(
        run.stderr.contains("restored the include for blue"),
        "{run}"
    );
    assert_eq!(tally.failed, 0, "{tally:?}");
    project.assert_serving("green", "v2");
}

/// A tiny tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts 64 KiB at `dir`; None (loudly, and a failure under CI) when this box cannot.
    fn mount(dir: &std::path::Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        if out.status.success() {
            return Some(Tmpfs(dir.to_owned()));
        }
        let msg = format!(
            "cannot mount a tmpfs (root needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so this is a failure");
        }
        crate::common::loud(&format!("*** SKIPPED: {msg} ***"));
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn e2e_state_write_failing_after_the_switch_says_what_is_live_and_is_repaired() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    let dir = project.path().join("tiny-state");
    let Some(_tmpfs) = Tmpfs::mount(&dir) else {
        return;
    };
    let app = App::compose().state_dir(&dir);
    project.write_config(&app);
    project.deploy_ok("cutover-demo:v1");
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(dir.join("state.json"))
        .unwrap_or_default()
        .contains("\"step\": \"health\"")
    {
        assert!(Instant::now() < deadline, "deploy never reached health");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Fill the state dir while the new color is being health-gated.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", dir.join("fill").display()))
        .stderr(std::process::Stdio::null())
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("live: nginx serves green with cutover-demo:v2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not recorded: state.json was not updated"),
        "{stderr}"
    );
    assert_eq!(
        project.get("/").map(|(c, b)| (c, b.trim().to_string())),
        Some((200, "version=v2 color=green".to_string()))
    );
    std::fs::remove_file(dir.join("fill")).unwrap();
    // The next command repairs the record from what runs: rollback finds v1.
    let run = project.cutover(["rollback"]).success();
    assert!(run.stderr.contains("repaired the record"), "{run}");
    assert_eq!(
        project.get("/").map(|(c, b)| (c, b.trim().to_string())),
        Some((200, "version=v1 color=blue".to_string()))
    );
}

#[test]
fn e2e_a_reload_wrapper_drains_only_the_workers_of_the_nginx_it_reloads() {
    if !ready() {
        return;
    }
    // Another nginx on this box, whose workers no reload of ours ever replaces.
    let other = tempfile::tempdir().unwrap();
    let other_prefix = other.path().join("nginx");
    std::fs::create_dir_all(&other_prefix).unwrap();
    let port = crate::common::free_port();
    std::fs::write(
        other_prefix.join("site.conf"),
        format!("server {{ listen 127.0.0.1:{port}; return 200 ok; }}\n"),
    )
    .unwrap();
    let _other_nginx = cutover::nginx::LocalNginx::start(&other_prefix).unwrap();
    let project = Project::compose(App::compose());
    // A reload without -c/-p, as `systemctl reload nginx` would be.
    let wrapper = script(
        &project,
        "nginx-reload.sh",
        &format!("exec {}", nginx_words(&project, &["-s", "reload"])),
    );
    project.write_config(&App::compose().nginx_reload(&[&wrapper]));
    project.deploy_ok("cutover-demo:v1");
    let run = project.deploy_ok("cutover-demo:v2");
    let shown = format!("{run}");
    assert!(shown.contains("0 old nginx workers left"), "{shown}");
    assert!(
        !shown.contains("were left after the drain limit"),
        "{shown}"
    );
    project.assert_serving("green", "v2");
}
