//! What a crash or a damaged file leaves behind, and how the next command recovers (issue
//! #11; each test failed before its fix): a deploy killed between writing the include and
//! reloading nginx (the next deploy keeps the color nginx serves), a state write failing
//! after the switch (what is live is said, the record repaired), a torn history tail (set
//! aside; the state files are 0600), a damaged state.json (explained; the next deploy
//! rebuilds it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cutover::demo::Load;

use crate::harness::project::{nginx_words, ready, script, App, Project};

/// Waits (bounded) until the include on disk points at `port`.
fn wait_for_include(project: &Project, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !project.include().contains(&format!(":{port};")) {
        assert!(Instant::now() < deadline, "include never pointed at {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
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
fn state_write_failing_after_the_switch_says_what_is_live_and_is_repaired() {
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

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Issue #11, defect 5: a torn last line in history.jsonl (a crash mid-append) is set aside,
/// every complete entry survives, the next deploy is its own line, and `status` says so.
/// Also: the state files are 0600, never world-readable.
#[test]
fn a_torn_history_tail_is_set_aside_and_the_next_deploy_is_recorded() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let history = project.path().join(".cutover/history.jsonl");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&history)
        .and_then(|mut f| std::io::Write::write_all(&mut f, br#"{"time":"2026"#))
        .unwrap();
    project.deploy_ok("cutover-demo:v2");
    let entries = project.history();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["image"], "cutover-demo:v1");
    assert_eq!(entries[1]["image"], "cutover-demo:v2");
    assert_eq!(entries[1]["result"], "ok");
    let text = project.cutover(["history"]).success();
    assert!(
        text.stdout
            .lines()
            .last()
            .unwrap()
            .contains("cutover-demo:v2"),
        "{text}"
    );

    let torn: Vec<PathBuf> = std::fs::read_dir(project.path().join(".cutover"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("history.jsonl.torn-")
        })
        .collect();
    assert_eq!(torn.len(), 1, "{torn:?}");
    assert_eq!(
        std::fs::read_to_string(&torn[0]).unwrap(),
        r#"{"time":"2026"#
    );
    let status = project.status_json();
    assert_eq!(status["last_deploy"]["image"], "cutover-demo:v2");
    assert!(
        status["problems"]
            .to_string()
            .contains("history.jsonl.torn-"),
        "{status}"
    );
    let text = project.cutover(["status"]).success();
    assert!(text.stdout.contains("history.jsonl.torn-"), "{text}");

    // State files hold images, users and reasons: owner only.
    for name in ["state.json", "history.jsonl", "compose.yml", "lock"] {
        let path = project.path().join(".cutover").join(name);
        assert_eq!(mode_of(&path), 0o600, "{name}");
    }
}

/// Issue #11: a damaged state.json made every command refuse with no hint. Now the error names
/// the file, line and column and the way out; following it (move the file aside, deploy)
/// rebuilds the record from what is observed, with nothing lost on the serving side.
#[test]
fn a_damaged_state_file_is_explained_and_the_next_deploy_rebuilds_it() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let state = project.path().join(".cutover/state.json");
    std::fs::write(
        &state,
        "{\n  \"active\": \"blue\",\n  \"images\": {\"blue\": \n",
    )
    .unwrap();
    for args in [
        &["status"][..],
        &["deploy", "--image", "cutover-demo:v2"],
        &["rollback"],
    ] {
        let run = project.cutover(args).failure();
        assert!(
            run.stderr.contains(&format!(
                "{}:4:1: the deploy record is damaged",
                state.display()
            )),
            "{run}"
        );
        assert!(
            run.stderr
                .contains(&format!("mv {} {}.bad", state.display(), state.display()))
                && run.stderr.contains("rebuilds it from what it observes"),
            "{run}"
        );
    }
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
    std::fs::rename(&state, project.path().join(".cutover/state.json.bad")).unwrap();
    project.deploy_ok("cutover-demo:v2");
    project.assert_serving("green", "v2");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(record["active"], "green");
    assert_eq!(record["previous_image"], "cutover-demo:v1", "{record}");
    project.cutover(["rollback"]).success();
    project.assert_serving("blue", "v1");
}

/// Issue #21: a project whose `state_dir` changed is still the same project: its old state
/// dir's claims do not refuse it (they did, naming the project against itself).
#[test]
fn a_project_whose_state_dir_moved_is_not_refused_against_itself() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().stop_grace("0s"));
    project.deploy_ok("cutover-demo:v1");
    let moved = project.path().join("state-elsewhere");
    project.write_config(&App::compose().stop_grace("0s").state_dir(&moved));
    let run = project.deploy_ok("cutover-demo:v2");
    assert!(!run.stderr.contains("collides"), "{}", run.stderr);
    project.assert_serving("green", "v2");
    assert!(moved.join("state.json").exists());
}

/// Issue #21: after an outage that left nothing running (a reboot under a restart policy that
/// did not bring the app back), `status` says the site is down and exits 1, and a plain
/// `cutover deploy` redeploys what served (green's v2), not blue's older v1.
#[test]
fn e2e_a_redeploy_after_everything_stopped_brings_back_what_served() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().stop_grace("0s"));
    project.deploy_ok("cutover-demo:v1");
    project.deploy_ok("cutover-demo:v2");
    for id in cutover::docker::compose::containers_of(&project.name).unwrap() {
        let out = std::process::Command::new("docker")
            .args(["stop", "-t", "0", &id.id])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let down = project.cutover(["status"]).code(1);
    assert!(down.stdout.contains("the site is down"), "{}", down.stdout);
    let run = project.cutover(["deploy"]).success();
    assert!(
        run.stderr
            .contains("recovery: nothing runs, but green served cutover-demo:v2"),
        "{}",
        run.stderr
    );
    project.assert_serving("green", "v2");
    assert_eq!(project.status_json()["down"], serde_json::Value::Null);
}
