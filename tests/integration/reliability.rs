//! The edges of issue #11 that lie outside the deploy engine's step sequence: who may read
//! `/.cutover/active`, prune across projects, a torn history tail, state file modes, `$` in
//! values compose would interpolate, corrupt state, and secret values at the argv/env limit.
//! Each test runs the real binary against the real nginx / engine / age where the behaviour
//! lives there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{cutover, free_port, loud, project_from_fixture, require, set_key};

/// The minimal fixture with its include and listen address pointed into `prefix`, rendered
/// to `out/`, and a local nginx started on a site that listens on `listens` (each an nginx
/// `listen` argument) and includes the rendered include.
fn nginx_with_marker(dir: &Path, listens: &[String]) -> (cutover::nginx::LocalNginx, PathBuf) {
    let prefix = dir.join("nginx");
    let include = prefix.join("service-url.inc");
    project_from_fixture(dir, "minimal", |map| {
        set_key(
            map,
            "nginx",
            "include",
            include.display().to_string().into(),
        );
    });
    cutover(dir)
        .args(["render", "--out", "out"])
        .assert()
        .success();
    std::fs::create_dir_all(&prefix).unwrap();
    std::fs::copy(dir.join("out/service-url.inc"), &include).unwrap();
    let listen: String = listens
        .iter()
        .map(|l| format!("    listen {l};\n"))
        .collect();
    std::fs::write(
        prefix.join("site.conf"),
        format!(
            "server {{\n{listen}    include {};\n    location / {{ return 200 \"app\\n\"; }}\n}}\n",
            include.display()
        ),
    )
    .unwrap();
    let nginx = cutover::nginx::LocalNginx::start(&prefix).expect("start nginx");
    (nginx, prefix)
}

/// `curl` with `args`, returning the HTTP status it printed (0 when nothing answered).
fn curl_status(prefix_cmd: &[&str], args: &[&str]) -> u16 {
    let mut argv: Vec<&str> = prefix_cmd.to_vec();
    argv.extend([
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "5",
    ]);
    argv.extend(args);
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A network namespace joined to this one by a veth pair; removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_addr: String,
}

impl Netns {
    /// `None` (said loudly) when namespaces cannot be made here (not root, no `ip`).
    fn create() -> Option<Netns> {
        let id = std::process::id() % 100_000;
        let name = format!("cutover-t{id}");
        let host_if = format!("cvh{id}");
        let ns_if = format!("cvn{id}");
        // A /30 out of 10.213.0.0/16 per process, so parallel runs do not collide.
        let (a, b) = ((id / 64) % 256, (id % 64) * 4);
        let host_addr = format!("10.213.{a}.{}", b + 1);
        let ns_addr = format!("10.213.{a}.{}", b + 2);
        let netns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_addr: host_addr.clone(),
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            [
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ]
            .map(String::from)
            .to_vec(),
            ["link", "set", &ns_if, "netns", &name]
                .map(String::from)
                .to_vec(),
            ["addr", "add", &format!("{host_addr}/30"), "dev", &host_if]
                .map(String::from)
                .to_vec(),
            ["link", "set", &host_if, "up"].map(String::from).to_vec(),
            [
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ns_addr}/30"),
                "dev",
                &ns_if,
            ]
            .map(String::from)
            .to_vec(),
            ["-n", &name, "link", "set", &ns_if, "up"]
                .map(String::from)
                .to_vec(),
            ["-n", &name, "link", "set", "lo", "up"]
                .map(String::from)
                .to_vec(),
        ];
        for step in steps {
            let out = Command::new("ip").args(&step).output().ok()?;
            if !out.status.success() {
                loud(&format!(
                    "*** PARTIAL: `ip {}` failed ({}); the network-namespace check did not run ***",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                return None;
            }
        }
        Some(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and with it the peer; the explicit
        // `link del` covers a namespace that was made before the veth moved in.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Issue #11, defect 3: `return` runs in nginx's rewrite phase, before `allow`/`deny`, so the
/// marker must be refused by a rewrite-phase check: 200 for 127.0.0.1 (and ::1) and for the
/// box reaching its own listen address, 403 for any other client — a second loopback address
/// and a client in another network namespace.
#[test]
fn active_marker_answers_loopback_clients_only() {
    if !require("nginx", "serve the rendered include") || !require("curl", "send requests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let netns = if cutover::process::which("ip").is_some() {
        Netns::create()
    } else {
        loud("*** PARTIAL: `ip` is not installed; the network-namespace check did not run ***");
        None
    };
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut listens = vec![format!("127.0.0.1:{port}")];
    if ipv6 {
        listens.push(format!("[::1]:{port}"));
    }
    if let Some(ns) = &netns {
        listens.push(format!("{}:{port}", ns.host_addr));
    }
    let (_nginx, _prefix) = nginx_with_marker(dir.path(), &listens);
    let marker = format!("http://127.0.0.1:{port}/.cutover/active");

    assert_eq!(
        curl_status(&[], &[&marker]),
        200,
        "127.0.0.1 reads the marker"
    );
    if ipv6 {
        let v6 = format!("http://[::1]:{port}/.cutover/active");
        assert_eq!(curl_status(&[], &[&v6]), 200, "::1 reads the marker");
    }
    assert_eq!(
        curl_status(&[], &["--interface", "127.0.0.5", &marker]),
        403,
        "a client on 127.0.0.5 must be refused"
    );
    // The app behind the include still answers everyone.
    let root = format!("http://127.0.0.1:{port}/");
    assert_eq!(curl_status(&[], &["--interface", "127.0.0.5", &root]), 200);
    if let Some(ns) = &netns {
        let from_ns = ["ip", "netns", "exec", ns.name.as_str()];
        let url = format!("http://{}:{port}/.cutover/active", ns.host_addr);
        assert_eq!(
            curl_status(&from_ns, &[&url]),
            403,
            "a client in another network namespace must be refused"
        );
        let root = format!("http://{}:{port}/", ns.host_addr);
        assert_eq!(
            curl_status(&from_ns, &[&root]),
            200,
            "the namespace reaches nginx"
        );
        // The box itself, on its own non-loopback listen address (a site that listens on one
        // address only, probed there): the client address is the server address.
        assert_eq!(
            curl_status(&[], &["--interface", &ns.host_addr, &url]),
            200,
            "the box reaching its own listen address reads the marker"
        );
    }
}

/// Every file under the state dir, with its contents (lossy UTF-8).
fn state_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(state_files(&path));
        } else {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            files.push((path, text));
        }
    }
    files
}

/// The demo secrets' value that must never leak.
const DB_PASSWORD: &str = "demo-db-password-not-real";

/// Issue #11: compose interpolates `$` in `--image` and `app.command` from an environment
/// holding every decrypted secret. A `$` in an image is refused before anything runs, saying
/// what a reference may hold; a `$` in the command reaches the container literally. The value
/// appears in no output and no file under `.cutover/`.
#[test]
fn e2e_dollar_in_image_or_command_never_interpolates_a_secret() {
    use crate::e2e::{ready, Setup, Stage};
    if !ready() || !require("age", "decrypt the demo secrets") {
        return;
    }
    let stage = Stage::new(Setup {
        secrets: true,
        ..Setup::default()
    });
    let (ok, stdout, stderr) = stage.deploy(&["--image", "cutover-demo:${DB_PASSWORD}"]);
    assert!(!ok, "a `$` in --image must be refused:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("`$` at byte 13 is not allowed in an image reference"),
        "{stderr}"
    );
    assert!(
        !format!("{stdout}{stderr}").contains(DB_PASSWORD),
        "{stdout}\n{stderr}"
    );

    // `app.command` with `${DB_PASSWORD}`: the demo app ignores arguments after `serve`.
    let config = stage.path().join("cutover.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen(
        "app:\n",
        "app:\n  command: [serve, \"${DB_PASSWORD}\", \"$$HOME\"]\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let out = stage.deploy_ok("cutover-demo:v1");
    assert!(!out.contains(DB_PASSWORD), "{out}");
    let id = cutover::compose::containers_of(&stage.project)
        .unwrap()
        .into_iter()
        .find(|c| c.service == "web-blue" && c.running())
        .expect("web-blue runs")
        .id;
    let inspect = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Cmd}}", &id])
        .output()
        .unwrap();
    let cmd = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(cmd.trim(), r#"["serve","${DB_PASSWORD}","$$HOME"]"#);
    for (path, text) in state_files(&stage.path().join(".cutover")) {
        assert!(
            !text.contains(DB_PASSWORD),
            "{} holds the secret",
            path.display()
        );
    }
    let history = stage.cutover().arg("history").output().unwrap();
    assert!(!String::from_utf8_lossy(&history.stdout).contains(DB_PASSWORD));
}

/// A project dir with the test recipients and a 0600 copy of the test identity; returns the
/// identity's path. `cutover` runs in `dir` with that identity.
fn secrets_project(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = crate::common::repo_root();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::copy(
        root.join("secrets/recipients.txt"),
        dir.join("secrets/recipients.txt"),
    )
    .unwrap();
    let identity = dir.join("identity.txt");
    std::fs::copy(root.join("fixtures/secrets/test-identity.txt"), &identity).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    identity
}

fn with_identity(dir: &Path, identity: &Path) -> assert_cmd::Command {
    let mut cmd = cutover(dir);
    cmd.env("CUTOVER_IDENTITY", identity);
    cmd
}

fn shown(dir: &Path, identity: &Path, name: &str) -> serde_json::Value {
    let out = with_identity(dir, identity)
        .args(["secrets", "show", name, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `secrets set` drops exactly one trailing newline from stdin (what `echo` adds) and says so;
/// a second one is kept.
#[test]
fn secrets_set_says_when_it_drops_the_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let identity = secrets_project(dir.path());
    let set = |key: &str, stdin: &str| {
        let out = with_identity(dir.path(), &identity)
            .args(["secrets", "set", "prod", key])
            .write_stdin(stdin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = set("ECHOED", "pw\n");
    assert!(said.contains("without the one trailing newline"), "{said}");
    let said = set("CRLF", "pw\r\n");
    assert!(said.contains("without the one trailing CRLF"), "{said}");
    let said = set("KEPT", "pw\n\n");
    assert!(said.contains("without the one trailing newline"), "{said}");
    let said = set("EXACT", "pw");
    assert!(!said.contains("trailing"), "{said}");
    let values = shown(dir.path(), &identity, "prod");
    assert_eq!(values["ECHOED"], "pw");
    assert_eq!(values["CRLF"], "pw");
    assert_eq!(values["KEPT"], "pw\n");
    assert_eq!(values["EXACT"], "pw");
}

/// The longest value `KEY` can hold: `KEY=value` plus its NUL is MAX_ARG_STRLEN (128 KiB).
fn value_of_len(len: usize) -> String {
    "Zq9".repeat(len / 3 + 1)[..len].to_string()
}

const ENV_LIMIT: usize = 128 * 1024;

/// Issue #11: a value over the kernel's limit for one environment string made the deploy fail
/// with "could not run docker-compose". `set`, `encrypt` and `edit` refuse it naming the key
/// and the limit, and print no value; a value exactly at the limit is accepted.
#[test]
fn secret_over_the_env_limit_is_refused_at_set_encrypt_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    let identity = secrets_project(dir.path());
    let fits = ENV_LIMIT - "BIG=".len() - 1;
    with_identity(dir.path(), &identity)
        .args(["secrets", "set", "prod", "BIG"])
        .write_stdin(value_of_len(fits))
        .assert()
        .success();
    assert_eq!(
        shown(dir.path(), &identity, "prod")["BIG"]
            .as_str()
            .unwrap()
            .len(),
        fits
    );

    let refused = |out: std::process::Output, what: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} must refuse");
        assert!(
            stderr.contains("key `BIG`")
                && stderr.contains(&format!("{} bytes", ENV_LIMIT + 1))
                && stderr.contains(&format!("limit of {ENV_LIMIT} bytes")),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("Zq9Zq9"), "{what} printed the value");
    };
    refused(
        with_identity(dir.path(), &identity)
            .args(["secrets", "set", "prod", "BIG"])
            .write_stdin(value_of_len(fits + 1))
            .output()
            .unwrap(),
        "set",
    );
    assert_eq!(
        shown(dir.path(), &identity, "prod")["BIG"]
            .as_str()
            .unwrap()
            .len(),
        fits
    );

    let plain = dir.path().join("big.env");
    std::fs::write(&plain, format!("BIG={}\n", value_of_len(fits + 1))).unwrap();
    refused(
        with_identity(dir.path(), &identity)
            .args(["secrets", "encrypt", "big.env"])
            .output()
            .unwrap(),
        "encrypt",
    );
    assert!(!dir.path().join("secrets/big.env.age").exists());

    // An "editor" that replaces the file with the too-long value.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\ncp {} \"$1\"\n", plain.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(dir.path().join("secrets/prod.env.age")).unwrap();
    refused(
        with_identity(dir.path(), &identity)
            .env("EDITOR", &editor)
            .args(["secrets", "edit", "prod"])
            .output()
            .unwrap(),
        "edit",
    );
    assert_eq!(
        std::fs::read(dir.path().join("secrets/prod.env.age")).unwrap(),
        before
    );
}

/// A too-long value written with the `age` CLI behind cutover's back: the deploy says why
/// before it runs compose, and nothing is started.
#[test]
fn e2e_deploy_with_a_secret_over_the_env_limit_says_why_before_compose() {
    use crate::e2e::{ready, Setup, Stage};
    if !ready() || !require("age", "encrypt a secrets file") {
        return;
    }
    let stage = Stage::new(Setup {
        secrets: true,
        ..Setup::default()
    });
    let plain = stage.path().join("big.env");
    std::fs::write(&plain, format!("BIG={}\n", value_of_len(ENV_LIMIT))).unwrap();
    let out = Command::new("age")
        .args([
            "-a",
            "-R",
            "secrets/recipients.txt",
            "-o",
            "secrets/demo.env.age",
            "big.env",
        ])
        .current_dir(stage.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, stdout, stderr) = stage.deploy(&["--image", "cutover-demo:v1"]);
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("key `BIG`") && stderr.contains(&format!("limit of {ENV_LIMIT} bytes")),
        "{stderr}"
    );
    assert!(!stderr.contains("could not run"), "{stderr}");
    assert!(!stderr.contains("Zq9Zq9"), "printed the value: {stderr}");
    assert!(stage.running_services().is_empty(), "nothing may start");
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
fn e2e_a_torn_history_tail_is_set_aside_and_the_next_deploy_is_recorded() {
    use crate::e2e::{ready, Setup, Stage};
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let history = stage.path().join(".cutover/history.jsonl");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&history)
        .and_then(|mut f| std::io::Write::write_all(&mut f, br#"{"time":"2026"#))
        .unwrap();
    stage.deploy_ok("cutover-demo:v2");
    let entries = stage.history();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["image"], "cutover-demo:v1");
    assert_eq!(entries[1]["image"], "cutover-demo:v2");
    assert_eq!(entries[1]["result"], "ok");
    let text = stage.cutover().arg("history").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().last().unwrap().contains("cutover-demo:v2"),
        "{text}"
    );

    let torn: Vec<PathBuf> = std::fs::read_dir(stage.path().join(".cutover"))
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
    let status = stage.status_json();
    assert_eq!(status["last_deploy"]["image"], "cutover-demo:v2");
    let problems = status["problems"].to_string();
    assert!(problems.contains("history.jsonl.torn-"), "{status}");
    let out = stage.cutover().arg("status").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("history.jsonl.torn-"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // State files hold images, users and reasons: owner only.
    for name in ["state.json", "history.jsonl", "compose.yml"] {
        let path = stage.path().join(".cutover").join(name);
        assert_eq!(mode_of(&path), 0o600, "{name}");
    }
}

/// Issue #11: history stores the one-line reason of a failure, never the app's log lines
/// (which the terminal shows, and which may hold anything the app prints).
#[test]
fn e2e_history_keeps_the_reason_but_not_the_apps_log_lines() {
    use crate::e2e::{ready, Setup, Stage};
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let mut setup = Setup {
        health_timeout: "60s",
        restart: "\"no\"",
        ..Setup::default()
    };
    setup.startup_delay_ms = 0;
    stage.write_config(&setup);
    let config = stage.path().join("cutover.yml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("STARTUP_DELAY_MS: \"0\"", "STARTUP_DELAY_MS: \"soon\"");
    std::fs::write(&config, text).unwrap();
    let (ok, _, stderr) = stage.deploy(&["--image", "cutover-demo:v2"]);
    assert!(!ok);
    assert!(
        stderr.contains("cutover-demo-app:"),
        "the terminal shows the logs: {stderr}"
    );
    let last = stage.history().pop().unwrap();
    assert_eq!(last["result"], "failed");
    let reason = last["reason"].as_str().expect("a reason");
    assert!(reason.contains("the green container exited"), "{reason}");
    assert!(!reason.contains('\n'), "one line: {reason:?}");
    assert!(
        !reason.contains("cutover-demo-app"),
        "no app log lines: {reason:?}"
    );
    let raw = std::fs::read_to_string(stage.path().join(".cutover/history.jsonl")).unwrap();
    assert!(!raw.contains("cutover-demo-app"), "{raw}");
}

/// `docker tag SRC DST`.
fn tag(src: &str, dst: &str) {
    let ok = Command::new("docker")
        .args(["tag", src, dst])
        .status()
        .unwrap();
    assert!(ok.success(), "docker tag {src} {dst}");
}

/// Issue #11, defect 4: two projects on one box share an image repository (prod and staging).
/// Staging's auto-prune (`keep_images: 1`) and `cutover prune --keep 1` must not remove the
/// image prod needs for `rollback`; prod's rollback then works. `--image` from another
/// repository than `app.image` gets a warning.
#[test]
fn e2e_prune_never_removes_another_projects_rollback_image() {
    use crate::e2e::{ready, Setup, Stage};
    if !ready() {
        return;
    }
    let registry = tempfile::tempdir().unwrap();
    let prod = Stage::new(Setup::default());
    let staging = Stage::new(Setup::default());
    let repo = format!("cutover-shared-{}", prod.project);
    let (a, b, c) = (
        format!("{repo}:a"),
        format!("{repo}:b"),
        format!("{repo}:c"),
    );
    tag("cutover-demo:v1", &a);
    tag("cutover-demo:v2", &b);
    tag("cutover-demo:v2", &c);
    for (stage, keep) in [(&prod, 3), (&staging, 1)] {
        let config = stage.path().join("cutover.yml");
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "  image: cutover-demo\n",
            &format!("  image: {repo}\n  keep_images: {keep}\n"),
            1,
        );
        std::fs::write(&config, text).unwrap();
    }
    let run = |stage: &Stage, args: &[&str]| {
        let out = stage
            .cutover()
            .env("CUTOVER_REGISTRY_DIR", registry.path())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "cutover {args:?} failed:\n{text}");
        text
    };
    run(&prod, &["deploy", "--image", &a]);
    run(&prod, &["deploy", "--image", &b]);
    // prod: green runs b, a is the rollback target with no container left.
    assert!(cutover::images::exists(&a));
    let said = run(&staging, &["deploy", "--image", &c]);
    assert!(
        cutover::images::exists(&a),
        "staging's auto-prune removed prod's rollback image:\n{said}"
    );
    let pruned = run(&staging, &["prune", "--keep", "1", "--json"]);
    assert!(
        cutover::images::exists(&a),
        "prune --keep 1 removed it:\n{pruned}"
    );
    assert!(cutover::images::exists(&b) && cutover::images::exists(&c));
    run(&prod, &["rollback"]);
    prod.assert_serving("blue", "v1");

    // A deploy from another repository than app.image is allowed, with a warning.
    let said = run(&staging, &["deploy", "--image", "cutover-demo:v1"]);
    assert!(
        said.contains(&format!(
            "cutover-demo:v1 is not from app.image's repository {repo}"
        )),
        "{said}"
    );

    // Once prod is gone (its state dir vanishes), its images are fair game.
    drop(prod);
    let pruned = run(&staging, &["prune", "--keep", "1", "--json"]);
    let pruned: serde_json::Value = serde_json::from_str(pruned.lines().next().unwrap()).unwrap();
    assert!(pruned["removed"].to_string().contains(&a), "{pruned}");
    for image in [a, b, c] {
        let _ = Command::new("docker").args(["rmi", &image]).output();
    }
}

/// Issue #11: a damaged state.json made every command refuse with no hint. Now the error names
/// the file, line and column and the way out; following it (move the file aside, deploy)
/// rebuilds the record from what is observed, with nothing lost on the serving side.
#[test]
fn e2e_a_damaged_state_file_is_explained_and_the_next_deploy_rebuilds_it() {
    use crate::e2e::{ready, Setup, Stage};
    if !ready() {
        return;
    }
    let stage = Stage::new(Setup::default());
    stage.deploy_ok("cutover-demo:v1");
    let state = stage.path().join(".cutover/state.json");
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
        let out = stage.cutover().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(
            stderr.contains(&format!(
                "{}:4:1: the deploy record is damaged",
                state.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("mv {} {}.bad", state.display(), state.display()))
                && stderr.contains("rebuilds it from what it observes"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(stage.get("/").unwrap().1.trim(), "version=v1 color=blue");
    std::fs::rename(&state, stage.path().join(".cutover/state.json.bad")).unwrap();
    stage.deploy_ok("cutover-demo:v2");
    stage.assert_serving("green", "v2");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(record["active"], "green");
    assert_eq!(record["previous_image"], "cutover-demo:v1", "{record}");
    stage.cutover().arg("rollback").assert().success();
    stage.assert_serving("blue", "v1");
}
