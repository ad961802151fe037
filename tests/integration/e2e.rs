//! End-to-end deploys on the real Docker engine and a real nginx (in a temp prefix on a
//! loopback port), with the demo app images `cutover-demo:v1` / `:v2` built by
//! `scripts/demo-image.sh`. Every test uses its own compose project name and free ports, so
//! tests run in parallel, and removes its containers and nginx when it ends.
//!
//! The compose tool is whatever `cutover` detects (`CUTOVER_COMPOSE` selects v1 or v2);
//! `scripts/test.sh` runs these tests once per flavour.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cutover::demo::{http_get, Load};

use crate::common::{free_port, require};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A project in a temp dir, with its own nginx, ports and compose project name.
pub struct Stage {
    pub dir: tempfile::TempDir,
    pub project: String,
    pub blue: u16,
    pub green: u16,
    pub nginx_port: u16,
    nginx: Option<cutover::nginx::LocalNginx>,
    /// The age identity (a 0600 copy of the test identity) when the project has secrets.
    identity: Option<PathBuf>,
}

/// Options a test changes in the generated cutover.yml.
pub struct Setup {
    pub startup_delay_ms: u64,
    pub health_timeout: &'static str,
    pub extra_env: Vec<(&'static str, &'static str)>,
    pub restart: &'static str,
    pub drain: &'static str,
    pub stop_grace: &'static str,
    pub probe: Option<String>,
    /// Use the bundled demo secrets (secrets/demo.env.age).
    pub secrets: bool,
    pub memory: &'static str,
    /// Add an accessory (`cache`, the demo image) that the app depends on.
    pub accessory: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            startup_delay_ms: 1000,
            health_timeout: "30s",
            extra_env: Vec::new(),
            restart: "on-failure",
            drain: "10s",
            stop_grace: "10s",
            probe: None,
            secrets: false,
            memory: "64M",
            accessory: false,
        }
    }
}

/// Docker, nginx and the demo images are required; without them the test is skipped loudly
/// (and fails under CI).
pub fn ready() -> bool {
    if !require("docker", "run end-to-end deploys") || !require("nginx", "run end-to-end deploys") {
        return false;
    }
    let images_ok = ["cutover-demo:v1", "cutover-demo:v2"]
        .iter()
        .all(|i| cutover::images::exists(i));
    if !images_ok {
        let msg = "demo images cutover-demo:v1/v2 are missing (run scripts/demo-image.sh)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so this is a failure");
        }
        crate::common::loud(&format!("*** SKIPPED: {msg} ***"));
        return false;
    }
    true
}

impl Stage {
    pub fn new(setup: Setup) -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let project = format!("cutover-e2e-{}-{n}", std::process::id());
        let (blue, green, nginx_port) = (free_port(), free_port(), free_port());
        let mut stage = Stage {
            dir,
            project,
            blue,
            green,
            nginx_port,
            nginx: None,
            identity: None,
        };
        if setup.secrets {
            use std::os::unix::fs::PermissionsExt;
            let root = crate::common::repo_root();
            std::fs::create_dir_all(stage.path().join("secrets")).unwrap();
            for name in ["recipients.txt", "demo.env.age"] {
                std::fs::copy(
                    root.join("secrets").join(name),
                    stage.path().join("secrets").join(name),
                )
                .unwrap();
            }
            let identity = stage.path().join("identity.txt");
            std::fs::copy(root.join("fixtures/secrets/test-identity.txt"), &identity).unwrap();
            std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
            stage.identity = Some(identity);
        }
        stage.write_config(&setup);
        let prefix = stage.prefix();
        // The site and an initial include must exist before nginx starts.
        stage
            .cutover()
            .args(["render", "--out", "rendered"])
            .assert()
            .success();
        std::fs::create_dir_all(&prefix).unwrap();
        std::fs::copy(
            stage.path().join("rendered/nginx-site.conf"),
            prefix.join("site.conf"),
        )
        .unwrap();
        std::fs::copy(
            stage.path().join("rendered/service-url.inc"),
            prefix.join("service-url.inc"),
        )
        .unwrap();
        stage.nginx = Some(cutover::nginx::LocalNginx::start(&prefix).expect("start nginx"));
        stage
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn prefix(&self) -> PathBuf {
        self.path().join("nginx")
    }

    pub fn write_config(&self, setup: &Setup) {
        let prefix = self.prefix();
        let argv = |extra: &[&str]| cutover::nginx::LocalNginx::argv_yaml(&prefix, extra);
        let mut env = format!("    STARTUP_DELAY_MS: \"{}\"\n", setup.startup_delay_ms);
        for (k, v) in &setup.extra_env {
            env.push_str(&format!("    {k}: \"{v}\"\n"));
        }
        let secrets = if setup.secrets {
            "  secrets: [secrets/demo.env.age]\n"
        } else {
            ""
        };
        let (depends, accessories) = if setup.accessory {
            (
                "  depends_on: [cache]\n",
                "accessories:\n  cache:\n    image: cutover-demo:v1\n    memory: 32M\n    environment: { COLOR: accessory }\n",
            )
        } else {
            ("", "")
        };
        let probe = setup
            .probe
            .as_ref()
            .map(|p| format!("  probe: {p}\n"))
            .unwrap_or_default();
        let text = format!(
            "project: {project}\n\
             app:\n\
             \x20 name: web\n\
             \x20 image: cutover-demo\n\
             \x20 port: 8080\n\
             \x20 memory: {memory}\n\
             \x20 restart: {restart}\n\
             \x20 environment:\n{env}\
             {secrets}\
             {depends}\
             \x20 health: {{ path: /health, timeout: {timeout}, interval: 100ms }}\n\
             \x20 drain: {drain}\n\
             \x20 stop_grace: {stop_grace}\n\
             colors: {{ blue: {blue}, green: {green} }}\n\
             {accessories}\
             nginx:\n\
             \x20 include: {include}\n\
             \x20 listen: \"127.0.0.1:{nginx_port}\"\n\
             {probe}\
             \x20 test: {test}\n\
             \x20 reload: {reload}\n",
            project = self.project,
            restart = setup.restart,
            timeout = setup.health_timeout,
            drain = setup.drain,
            stop_grace = setup.stop_grace,
            memory = setup.memory,
            blue = self.blue,
            green = self.green,
            include = prefix.join("service-url.inc").display(),
            nginx_port = self.nginx_port,
            test = argv(&["-t"]),
            reload = argv(&["-s", "reload"]),
        );
        std::fs::write(self.path().join("cutover.yml"), text).unwrap();
    }

    pub fn cutover(&self) -> assert_cmd::Command {
        let mut cmd = crate::common::cutover(self.path());
        if let Some(identity) = &self.identity {
            cmd.env("CUTOVER_IDENTITY", identity);
        }
        cmd
    }

    /// Runs `cutover deploy --image IMAGE` and returns (success, stdout, stderr).
    pub fn deploy(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cutover().arg("deploy").args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn deploy_ok(&self, image: &str) -> String {
        let (ok, stdout, stderr) = self.deploy(&["--image", image]);
        assert!(ok, "deploy {image} failed:\n{stdout}\n{stderr}");
        stdout
    }

    pub fn include(&self) -> String {
        std::fs::read_to_string(self.prefix().join("service-url.inc")).unwrap()
    }

    pub fn port_of(&self, color: &str) -> u16 {
        if color == "blue" {
            self.blue
        } else {
            self.green
        }
    }

    /// Services with a running container, by compose label.
    pub fn running_services(&self) -> Vec<String> {
        let mut services: Vec<String> = cutover::compose::containers_of(&self.project)
            .unwrap()
            .into_iter()
            .filter(|c| c.running())
            .map(|c| c.service)
            .collect();
        services.sort();
        services
    }

    /// `GET path` through nginx on a new connection: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.nginx_port, path)
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cutover().args(["status", "--json"]).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        let out = self
            .cutover()
            .args(["history", "--json"])
            .assert()
            .success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }

    /// After a successful deploy to `color`: only that color runs, nginx points at it, it
    /// answers through nginx with `version`, and history's last entry says so.
    pub fn assert_serving(&self, color: &str, version: &str) {
        let colors: Vec<String> = self
            .running_services()
            .into_iter()
            .filter(|s| s.starts_with("web-"))
            .collect();
        assert_eq!(colors, vec![format!("web-{color}")]);
        assert!(
            self.include()
                .contains(&format!("127.0.0.1:{};", self.port_of(color))),
            "include: {}",
            self.include()
        );
        // The memory limit from deploy.resources is applied by this compose flavour.
        let id = cutover::compose::containers_of(&self.project)
            .unwrap()
            .into_iter()
            .find(|c| c.service == format!("web-{color}") && c.running())
            .unwrap()
            .id;
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.HostConfig.Memory}}", &id])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (64u64 << 20).to_string()
        );
        let (code, body) = self.get("/").expect("nginx answers");
        assert_eq!(code, 200);
        assert_eq!(body.trim(), format!("version={version} color={color}"));
        let last = self.history().pop().expect("history entry");
        assert_eq!(last["result"], "ok");
        assert_eq!(last["to"], color);
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(mut nginx) = self.nginx.take() {
            nginx.stop();
        }
        if let Ok(containers) = cutover::compose::containers_of(&self.project) {
            let ids: Vec<String> = containers.into_iter().map(|c| c.id).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &format!("{}_default", self.project)])
            .output();
    }
}

#[test]
fn e2e_full_cycle_under_load_has_zero_failed_requests() {
    if !ready() {
        return;
    }
    // No stop grace: docker kills the old color at once, so the slow requests below complete
    // only because cutover drains the old color before stopping it.
    let stage = Stage::new(Setup {
        stop_grace: "0s",
        ..Setup::default()
    });
    stage.deploy_ok("cutover-demo:v1");
    stage.assert_serving("blue", "v1");

    let load = Load::start(stage.nginx_port, Duration::from_secs(300));
    for (image, color, version) in [
        ("cutover-demo:v2", "green", "v2"),
        ("cutover-demo:v1", "blue", "v1"),
    ] {
        let child = spawn_deploy(&stage, image);
        // Slow requests on the old color, started while the new one is being health-gated
        // (about a second before the switch), must all complete.
        wait_for_step(&stage, "health");
        let port = stage.nginx_port;
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
        stage.assert_serving(color, version);
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
    let history = stage.history();
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
        ["lock", "observe", "up", "health", "switch", "probe", "drain", "stop"]
    );
}

#[test]
fn e2e_health_never_passing_leaves_old_color_serving() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let include_before = stage.include();
    stage.write_config(&Setup {
        health_timeout: "3s",
        extra_env: vec![("FAIL_HEALTH", "1")],
        ..Setup::default()
    });
    let (ok, _stdout, stderr) = stage.deploy(&["--image", "cutover-demo:v2"]);
    assert!(!ok);
    assert!(stderr.contains("health gate timed out"), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(stderr.contains("last log lines of web-green"), "{stderr}");
    assert!(
        stderr.contains("web-green was stopped and removed; nginx still serves blue"),
        "{stderr}"
    );
    assert_eq!(stage.running_services(), ["web-blue"]);
    assert_eq!(stage.include(), include_before, "nginx untouched");
    assert_eq!(stage.get("/").unwrap().1.trim(), "version=v1 color=blue");
    assert_eq!(stage.history().pop().unwrap()["result"], "failed");
}

#[test]
fn e2e_container_exiting_during_the_gate_fails_fast() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    // The demo app refuses a non-numeric delay and exits 2 at once.
    let mut setup = Setup {
        health_timeout: "120s",
        restart: "\"no\"",
        ..Setup::default()
    };
    setup.startup_delay_ms = 0;
    stage.write_config(&setup);
    let text = std::fs::read_to_string(stage.path().join("cutover.yml"))
        .unwrap()
        .replace("STARTUP_DELAY_MS: \"0\"", "STARTUP_DELAY_MS: \"soon\"");
    std::fs::write(stage.path().join("cutover.yml"), text).unwrap();
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v2"]);
    assert!(!ok);
    assert!(stderr.contains("the green container exited"), "{stderr}");
    assert!(
        !stderr.contains("timed out"),
        "must fail fast, not wait out the timeout: {stderr}"
    );
    assert!(
        stderr.contains("STARTUP_DELAY_MS"),
        "the app's own error is shown: {stderr}"
    );
    assert_eq!(stage.running_services(), ["web-blue"]);
}

#[test]
fn e2e_failing_nginx_test_restores_the_include_without_reload() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let include_before = stage.include();
    std::fs::create_dir_all(stage.path().join("templates")).unwrap();
    std::fs::write(
        stage.path().join("templates/service-url.inc.j2"),
        "set $service_url {{ upstream }}\n",
    )
    .unwrap();
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v2"]);
    assert!(!ok);
    assert!(
        stderr.contains("failed to test the nginx config"),
        "{stderr}"
    );
    assert!(
        stderr.contains("restored the previous one, nginx not reloaded"),
        "{stderr}"
    );
    assert_eq!(stage.include(), include_before);
    assert_eq!(stage.running_services(), ["web-blue"]);
    assert_eq!(stage.get("/").unwrap().1.trim(), "version=v1 color=blue");
}

#[test]
fn e2e_probe_not_seeing_the_new_color_restores_and_reloads() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let include_before = stage.include();
    // A probe URL where nothing answers: the switch cannot be proven.
    stage.write_config(&Setup {
        probe: Some(format!("http://127.0.0.1:{}", free_port())),
        ..Setup::default()
    });
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v2"]);
    assert!(!ok);
    assert!(
        stderr.contains("nginx did not serve green after the reload"),
        "{stderr}"
    );
    assert!(
        stderr.contains("restored the previous nginx include"),
        "{stderr}"
    );
    assert_eq!(stage.include(), include_before);
    assert_eq!(stage.running_services(), ["web-blue"]);
    assert_eq!(stage.get("/").unwrap().1.trim(), "version=v1 color=blue");
}

#[test]
fn e2e_concurrent_deploy_fails_naming_the_holder_or_waits() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup {
        startup_delay_ms: 3000,
        ..Setup::default()
    });
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("cutover"));
    first
        .current_dir(stage.path())
        .args(["deploy", "--image", "cutover-demo:v1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = first.spawn().unwrap();
    // Wait until the first deploy holds the lock (its holder line is written).
    let lock = stage.path().join(".cutover/lock");
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
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v2"]);
    assert!(!ok);
    assert!(
        stderr.contains("another deploy is running: deploy cutover-demo:v1 by"),
        "{stderr}"
    );
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v2", "--lock-wait", "60s"]);
    assert!(ok, "{stderr}");
    assert!(child.wait().unwrap().success());
    stage.assert_serving("green", "v2");
}

fn spawn_deploy(stage: &Stage, image: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("cutover"));
    if let Some(identity) = &stage.identity {
        cmd.env("CUTOVER_IDENTITY", identity);
    }
    cmd.current_dir(stage.path())
        .args(["deploy", "--image", image])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the in-progress record names `step`.
fn wait_for_step(stage: &Stage, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state =
            std::fs::read_to_string(stage.path().join(".cutover/state.json")).unwrap_or_default();
        if state.contains(&format!("\"step\": \"{step}\"")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deploy never reached {step}: {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn e2e_sigterm_before_the_switch_tears_the_new_color_down() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup {
        startup_delay_ms: 1000,
        ..Setup::default()
    });
    stage.deploy_ok("cutover-demo:v1");
    let include_before = stage.include();
    stage.write_config(&Setup {
        startup_delay_ms: 8000,
        ..Setup::default()
    });
    let child = spawn_deploy(&stage, "cutover-demo:v2");
    wait_for_step(&stage, "health");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("deploy interrupted"), "{stderr}");
    assert_eq!(stage.running_services(), ["web-blue"]);
    assert_eq!(stage.include(), include_before);
    assert_eq!(stage.history().pop().unwrap()["result"], "interrupted");
    assert!(stage.status_json()["problems"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn e2e_sigterm_after_the_switch_completes_the_deploy() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup {
        drain: "20s",
        ..Setup::default()
    });
    stage.deploy_ok("cutover-demo:v1");
    // A slow request keeps the old color draining while the signal arrives.
    let port = stage.nginx_port;
    let slow = std::thread::spawn(move || http_get(port, "/slow?ms=6000"));
    std::thread::sleep(Duration::from_millis(200));
    let child = spawn_deploy(&stage, "cutover-demo:v2");
    wait_for_step(&stage, "drain");
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
    stage.assert_serving("green", "v2");
}

#[test]
fn e2e_kill_9_mid_deploy_is_explained_and_recovered() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    stage.write_config(&Setup {
        startup_delay_ms: 8000,
        ..Setup::default()
    });
    let mut child = spawn_deploy(&stage, "cutover-demo:v2");
    wait_for_step(&stage, "health");
    child.kill().unwrap();
    child.wait().unwrap();
    let status = stage.status_json();
    let problems = status["problems"].to_string();
    assert!(problems.contains("did not finish"), "{problems}");
    assert!(problems.contains("at step `health`"), "{problems}");
    assert_eq!(status["active"], "blue");
    stage.write_config(&Setup::default());
    stage.deploy_ok("cutover-demo:v2");
    stage.assert_serving("green", "v2");
    assert!(stage.status_json()["problems"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn e2e_redeploy_without_image_and_rollback() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup {
        accessory: true,
        ..Setup::default()
    });
    let stdout = stage.deploy_ok("cutover-demo:v1");
    assert!(stdout.contains("to blue"), "{stdout}");
    // The first deploy starts the accessory (before the app); later deploys leave it alone.
    let accessory_id = || {
        let containers = cutover::compose::containers_of(&stage.project).unwrap();
        let cache: Vec<_> = containers
            .into_iter()
            .filter(|c| c.service == "cache" && c.running())
            .collect();
        assert_eq!(cache.len(), 1, "one running accessory");
        cache[0].id.clone()
    };
    let first_id = accessory_id();
    let steps: Vec<String> = stage.history()[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    let pos = |name: &str| steps.iter().position(|s| s == name).unwrap();
    assert!(pos("accessories") < pos("up"), "{steps:?}");
    stage.deploy_ok("cutover-demo:v2");
    assert_eq!(accessory_id(), first_id, "the accessory was not recreated");
    let running = stage.running_services();
    assert_eq!(running, ["cache", "web-green"]);
    // No --image: the active image moves to the other color (a config or secret change).
    let (ok, stdout, stderr) = stage.deploy(&[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("deployed cutover-demo:v2 to blue"),
        "{stdout}"
    );
    stage.assert_serving("blue", "v2");
    let out = stage.cutover().arg("rollback").assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("rolled back to cutover-demo:v1"),
        "{stdout}"
    );
    stage.assert_serving("green", "v1");
    assert_eq!(stage.history().pop().unwrap()["action"], "rollback");
}

#[test]
fn e2e_dry_run_changes_nothing() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let include_before = stage.include();
    let out = stage
        .cutover()
        .args(["deploy", "--image", "cutover-demo:v2", "--dry-run"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("plan: deploy cutover-demo:v2 to green"),
        "{stdout}"
    );
    assert!(
        stdout.contains("up -d --no-deps --force-recreate web-green"),
        "{stdout}"
    );
    assert_eq!(stage.include(), include_before);
    assert_eq!(stage.running_services(), ["web-blue"]);
    assert_eq!(stage.history().len(), 1);
    // --json summary for scripts.
    let out = stage
        .cutover()
        .args([
            "deploy",
            "--image",
            "cutover-demo:v2",
            "--dry-run",
            "--json",
        ])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(summary["to"], "green");
    assert_eq!(summary["dry_run"], true);
}

#[test]
fn e2e_demo_runs_a_clean_cycle_and_leaves_nothing_behind() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::cutover(dir.path())
        .args(["demo", "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["load"]["failed"], 0, "{report}");
    assert!(report["load"]["ok"].as_u64().unwrap() > 20, "{report}");
    assert_eq!(report["slow_requests"], 3);
    assert_eq!(report["slow_ok"], 3);
    assert_eq!(report["first"]["to"], "blue");
    assert_eq!(report["second"]["to"], "green");
    let project = report["project"].as_str().unwrap();
    assert!(
        cutover::compose::containers_of(project).unwrap().is_empty(),
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
    let stage = Stage::new(Setup {
        secrets: true,
        ..Setup::default()
    });
    let out = stage
        .cutover()
        .args(["secrets", "show", "demo", "--json"])
        .assert()
        .success();
    let plain: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let demo_secret = plain["DEMO_SECRET"].as_str().unwrap().to_string();
    assert!(
        demo_secret.len() >= 8,
        "the fixture's value is distinctive enough to search for"
    );

    let (ok, stdout, stderr) = stage.deploy(&["--image", "cutover-demo:v1"]);
    assert!(ok, "{stderr}");
    assert!(
        !stdout.contains(&demo_secret) && !stderr.contains(&demo_secret),
        "value printed"
    );
    assert_eq!(
        stage.get("/env?key=DEMO_SECRET").unwrap(),
        (200, demo_secret.clone())
    );
    // The compose file names the key and never holds the value; nor does any state file.
    let compose = std::fs::read_to_string(stage.path().join(".cutover/compose.yml")).unwrap();
    assert!(compose.contains("DEMO_SECRET"), "{compose}");
    for entry in std::fs::read_dir(stage.path().join(".cutover")).unwrap() {
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
    stage
        .cutover()
        .args(["secrets", "set", "demo", "DB_PASSWORD"])
        .write_stdin("rotated-e2e-value-7f3a\n")
        .assert()
        .success();
    let (ok, stdout, stderr) = stage.deploy(&[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("deployed cutover-demo:v1 to green"),
        "{stdout}"
    );
    assert_eq!(
        stage.get("/env?key=DB_PASSWORD").unwrap(),
        (200, "rotated-e2e-value-7f3a".to_string())
    );
    stage.assert_serving("green", "v1");

    // No identity: deploy fails before touching anything.
    let mut cmd = crate::common::cutover(stage.path());
    cmd.env("HOME", stage.path())
        .env("XDG_CONFIG_HOME", stage.path().join("nothing"));
    let out = cmd
        .args(["deploy", "--image", "cutover-demo:v2"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("cannot decrypt the secrets files named in cutover.yml"),
        "{stderr}"
    );
    stage.assert_serving("green", "v1");
}

#[test]
fn e2e_memory_budget_refuses_a_second_color_that_cannot_fit() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup {
        memory: "4096G",
        ..Setup::default()
    });
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v1"]);
    assert!(!ok);
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
    assert!(stage.running_services().is_empty(), "nothing started");
}

#[test]
fn e2e_prune_keeps_the_newest_and_removes_the_rest() {
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    // A private repository (tags of the demo image), so other tests' images are never touched.
    let repo = format!("cutover-prune-{}", stage.project);
    let tag = |t: &str| format!("{repo}:{t}");
    for t in ["a", "b", "c"] {
        let ok = std::process::Command::new("docker")
            .args(["tag", "cutover-demo:v1", &tag(t)])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let text = std::fs::read_to_string(stage.path().join("cutover.yml")).unwrap();
    std::fs::write(
        stage.path().join("cutover.yml"),
        text.replace("image: cutover-demo\n", &format!("image: {repo}\n")),
    )
    .unwrap();
    let out = stage
        .cutover()
        .args(["prune", "--keep", "1", "--dry-run", "--json"])
        .assert()
        .success();
    let plan: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        plan["removed"],
        serde_json::json!([tag("b"), tag("a")]),
        "{plan}"
    );
    assert!(
        cutover::images::exists(&tag("a")),
        "dry run removes nothing"
    );
    stage
        .cutover()
        .args(["prune", "--keep", "1"])
        .assert()
        .success();
    assert!(cutover::images::exists(&tag("c")));
    assert!(!cutover::images::exists(&tag("b")) && !cutover::images::exists(&tag("a")));
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag("c")])
        .output();
}
