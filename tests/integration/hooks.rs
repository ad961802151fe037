//! The deploy hooks (`hooks:`, issue #14), end to end on the real Docker engine and nginx:
//! `post_deploy` posting a webhook with the `CUTOVER_*` environment and no secret unless it
//! names the key, `on_failure` on a failed health gate, a failing `post_deploy` only warning,
//! and a failing `pre_deploy` changing nothing.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::require;
use crate::harness::project::{ready, App, Project};

/// Accepts one HTTP request on a loopback port; the receiver gets (request line, body).
fn webhook_receiver() -> (u16, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        let _ = tx.send((request_line, String::from_utf8_lossy(&body).into_owned()));
    });
    (port, rx)
}

/// The README's webhook, with the URL from the secrets (`env: [WEBHOOK_URL]`).
const WEBHOOK: &str = r#"env > post.env; curl -fsS -H 'Content-Type: application/json' --data "{\"project\":\"$CUTOVER_PROJECT\",\"image\":\"$CUTOVER_IMAGE\",\"color\":\"$CUTOVER_COLOR\",\"result\":\"$CUTOVER_RESULT\"}" "$WEBHOOK_URL""#;

#[test]
fn e2e_post_deploy_hook_posts_a_webhook_and_hooks_get_no_secret_unless_asked() {
    if !ready() || !require("curl", "deliver a webhook from a post_deploy hook") {
        return;
    }
    let (port, received) = webhook_receiver();
    let project = Project::compose(App::compose().secrets().hooks(json!({
        "pre_deploy": ["sh", "-c", "env > pre.env; echo checking"],
        "post_deploy": { "command": ["sh", "-c", WEBHOOK], "env": ["WEBHOOK_URL"], "timeout": "20s" },
    })));
    let url = format!("http://127.0.0.1:{port}/hook");
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "WEBHOOK_URL"],
            &format!("{url}\n"),
        )
        .success();
    let secret = project.secret_value("DEMO_SECRET");

    let run = project
        .cutover(["deploy", "--image", "cutover-demo:v1", "--json"])
        .success();
    let (request_line, body) = received
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook arrived");
    assert!(request_line.starts_with("POST /hook "), "{request_line}");
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        payload,
        json!({ "project": project.name, "image": "cutover-demo:v1", "color": "blue", "result": "ok" })
    );
    let summary = run.stdout_json();
    assert_eq!(summary["hooks"][0]["hook"], "post_deploy");
    assert_eq!(summary["hooks"][0]["ok"], true);

    // pre_deploy: the facts, nothing secret; post_deploy: only the key it asked for.
    let pre = project.env_dump("pre.env");
    assert_eq!(pre["CUTOVER_PROJECT"], project.name);
    assert_eq!(pre["CUTOVER_IMAGE"], "cutover-demo:v1");
    assert_eq!(pre["CUTOVER_COLOR"], "blue");
    assert_eq!(pre["CUTOVER_FROM_IMAGE"], "");
    assert_eq!(pre["CUTOVER_RESULT"], "pending");
    assert_eq!(pre["CUTOVER_ERROR"], "");
    let post = project.env_dump("post.env");
    assert_eq!(post["CUTOVER_RESULT"], "ok");
    assert!(post["CUTOVER_DURATION_MS"].parse::<u64>().unwrap() > 0);
    assert_eq!(post["WEBHOOK_URL"], url);
    for (name, dump) in [("pre_deploy", &pre), ("post_deploy", &post)] {
        for key in [
            "CUTOVER_IDENTITY",
            "CUTOVER_AGE_KEY",
            "DEMO_SECRET",
            "DB_PASSWORD",
        ] {
            assert!(!dump.contains_key(key), "{name} got {key}");
        }
        assert!(
            !dump.values().any(|v| v.contains(&secret)),
            "{name} got a secret value"
        );
    }
    assert!(
        !pre.contains_key("WEBHOOK_URL"),
        "pre_deploy did not ask for it"
    );
    assert!(!run.stderr.contains(&secret));
}

#[test]
fn e2e_on_failure_runs_on_a_failed_health_gate_and_a_failing_post_deploy_only_warns() {
    if !ready() {
        return;
    }
    let hooks = json!({
        "on_failure": ["sh", "-c", "env > failure.env"],
        "post_deploy": ["sh", "-c", "echo webhook down; exit 5"],
    });
    let app = App::compose().health_timeout("2s").hooks(hooks);
    let project = Project::compose(app.clone().env("FAIL_HEALTH", "1"));
    let stderr = project
        .cutover(["deploy", "--image", "cutover-demo:v1"])
        .code(1)
        .stderr;
    assert!(stderr.contains("health gate"), "{stderr}");
    let failure = project.env_dump("failure.env");
    assert_eq!(failure["CUTOVER_RESULT"], "failed");
    assert!(
        failure["CUTOVER_ERROR"].contains("health gate"),
        "{failure:?}"
    );
    assert_eq!(failure["CUTOVER_COLOR"], "blue");
    assert!(project.running_services().is_empty());

    // A failing post_deploy: reported, the deploy stays a success (exit 0).
    project.write_config(&app);
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:v1", "--json"])
        .success();
    let summary = run.stdout_json();
    assert_eq!(summary["hooks"][0]["ok"], false);
    assert_eq!(summary["hooks"][0]["exit_code"], 5);
    assert_eq!(summary["hooks"][0]["tail"], json!(["webhook down"]));
    project.assert_serving("blue", "v1");
    let stderr = project.cutover(["deploy"]).success().stderr;
    assert!(
        stderr.contains("    post_deploy | webhook down"),
        "{stderr}"
    );
    assert!(
        stderr.contains("! warning: post_deploy hook `sh -c echo webhook down; exit 5` exited 5"),
        "{stderr}"
    );
    project.assert_serving("green", "v1");
}

#[test]
fn e2e_failing_pre_deploy_hook_changes_nothing() {
    if !ready() {
        return;
    }
    let app = App::compose();
    let project = Project::compose(app.clone());
    project.deploy_ok("cutover-demo:v1");
    let include = project.include();
    let state = std::fs::read_to_string(project.path().join(".cutover/state.json")).unwrap();
    // A secret key a hook asks for that no secrets file holds: refused before anything runs.
    project.write_config(&app.clone().hooks(json!({
        "post_deploy": { "command": ["true"], "env": ["SLACK_WEBHOOK_URL"] },
    })));
    let stderr = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .code(1)
        .stderr;
    assert!(
        stderr.contains("hooks.post_deploy.env asks for `SLACK_WEBHOOK_URL`, which is not a key of any secrets file"),
        "{stderr}"
    );
    assert_eq!(project.include(), include);
    project.write_config(&app.hooks(json!({
        "pre_deploy": ["sh", "-c", "echo not today; exit 7"],
        "on_failure": ["sh", "-c", "env > failure.env"],
    })));
    let stderr = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .code(1)
        .stderr;
    assert!(stderr.contains("pre_deploy | not today"), "{stderr}");
    assert!(
        stderr.contains("deploy aborted: pre_deploy hook `sh -c echo not today; exit 7` exited 7"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(project.include(), include);
    assert_eq!(
        std::fs::read_to_string(project.path().join(".cutover/state.json")).unwrap(),
        state
    );
    let colors: Vec<String> = project.running_services();
    assert_eq!(colors, ["web-blue"]);
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
    let failure = project.env_dump("failure.env");
    assert!(
        failure["CUTOVER_ERROR"].contains("pre_deploy hook"),
        "{failure:?}"
    );
    // Both refusals have their history lines (nothing changed, but history says why v2 is
    // not out).
    let history = project.history();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history[1]["reason"]
            .as_str()
            .unwrap()
            .contains("SLACK_WEBHOOK_URL"),
        "{history:?}"
    );
    let last = &history[2];
    assert_eq!(
        (&last["result"], &last["image"]),
        (&json!("failed"), &json!("cutover-demo:v2"))
    );
    assert!(
        last["reason"].as_str().unwrap().contains("pre_deploy hook"),
        "{last}"
    );
}

/// Issue #21: SIGTERM while `pre_deploy` runs is an interrupt (exit 130, history
/// `interrupted`, `on_failure` told `CUTOVER_RESULT=interrupted`), not a timeout.
#[test]
fn sigterm_during_pre_deploy_is_an_interrupt_not_a_timeout() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().hooks(json!({
        "timeout": "1m",
        "pre_deploy": ["sh", "-c", "echo waiting; touch pre_deploy.started; sleep 30"],
        "on_failure": ["sh", "-c", "echo \"$CUTOVER_RESULT\" > on_failure.result"],
    })));
    let child = project.spawn(["deploy", "--image", "cutover-demo:v1"]);
    // The signal must arrive while the hook runs: wait for the hook to say it started (on a
    // loaded machine lock, observe, budget and render can take seconds), then send it.
    let started = project.path().join("pre_deploy.started");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pre_deploy hook never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = crate::harness::common::sigterm_and_wait(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("was interrupted (SIGINT/SIGTERM)"),
        "{stderr}"
    );
    assert!(!stderr.contains("timed out"), "{stderr}");
    assert_eq!(project.history().pop().unwrap()["result"], "interrupted");
    let seen = std::fs::read_to_string(project.path().join("on_failure.result")).unwrap();
    assert_eq!(seen.trim(), "interrupted");
    assert!(project.running_services().is_empty());
}

/// Issue #21 (hostile run): a hook that leaves a process behind, in its process group
/// (`cmd &`) or as a daemon in a session of its own (`setsid`), does not outlive the deploy.
#[test]
fn nothing_a_hook_starts_outlives_the_deploy() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().hooks(json!({
        "timeout": "1m",
        "post_deploy": ["sh", "-c",
            "sleep 300 </dev/null >/dev/null 2>&1 & echo $! > left.pid; \
             setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1 & \
             sleep 0.5"],
    })));
    project.deploy_ok("cutover-demo:v1");
    for file in ["left.pid", "daemon.pid"] {
        let pid = std::fs::read_to_string(project.path().join(file)).unwrap();
        let pid = pid.trim();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next())
            .unwrap_or_default();
        assert!(
            matches!(state, None | Some('Z')),
            "{file}: pid {pid} outlived the deploy: {stat}"
        );
    }
}

/// A post_deploy hook that SIGKILLs cutover itself (its parent) after the switch: the
/// deploy record must not stay "in progress" forever, and the next deploy must go through.
#[test]
fn a_hook_that_kills_cutover_leaves_a_project_the_next_deploy_recovers() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().hooks(serde_json::json!({
        "timeout": "1m",
        "post_deploy": ["sh", "-c", "kill -KILL $PPID; sleep 1"],
    })));
    let run = project.cutover(["deploy", "--image", "cutover-demo:v1"]);
    assert!(!run.ok(), "{run}");
    let status = project.cutover(["status", "--json"]);
    eprintln!("status after the kill: {status}");
    project.write_config(&App::compose());
    let again = project.cutover(["deploy", "--image", "cutover-demo:v2"]);
    assert!(
        again.ok(),
        "the next deploy after cutover was killed by its hook: {again}"
    );
    project.assert_serving("green", "v2");
    let status = project.status_json();
    assert_eq!(status["active"], "green", "{status:#}");
}

/// A pre_deploy hook that sends SIGTERM to cutover: an interrupt, exit 130, nothing started.
#[test]
fn a_hook_that_sigterms_cutover_is_an_interrupt() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().hooks(serde_json::json!({
        "timeout": "1m",
        "pre_deploy": ["sh", "-c", "kill -TERM $PPID; sleep 20"],
    })));
    let started = Instant::now();
    let run = project.cutover(["deploy", "--image", "cutover-demo:v1"]);
    assert_eq!(run.status.code(), Some(130), "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(project.running_services().is_empty());
}
