//! The edges of issue #11 that lie outside the deploy engine's step sequence: who may read
//! `/.cutover/active`, prune across projects, a torn history tail, state file modes, `$` in
//! values compose would interpolate, corrupt state, secret values at the argv/env limit, and
//! a deploy user who cannot write the include's directory.
//! Each test runs the real binary against the real nginx / engine / age where the behaviour
//! lives there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{cutover, free_port, loud, project_from_fixture, require, set_key};
use crate::harness::project::{edit_config, ready, shown, App, Project, Run};

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
    if !ready() || !require("age", "decrypt the demo secrets") {
        return;
    }
    let project = Project::compose(App::compose().secrets());
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:${DB_PASSWORD}"])
        .failure();
    assert!(
        run.stderr
            .contains("`$` at byte 13 is not allowed in an image reference"),
        "{run}"
    );
    assert!(
        !format!("{}{}", run.stdout, run.stderr).contains(DB_PASSWORD),
        "{run}"
    );

    // `app.command` with `${DB_PASSWORD}`: the demo app ignores arguments after `serve`.
    edit_config(&project, |c| {
        c["app"]["command"] = serde_json::json!(["serve", "${DB_PASSWORD}", "$$HOME"]);
    });
    let run = project.deploy_ok("cutover-demo:v1");
    assert!(
        !format!("{}{}", run.stdout, run.stderr).contains(DB_PASSWORD),
        "{run}"
    );
    let id = cutover::docker::compose::containers_of(&project.name)
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
    for (path, text) in state_files(&project.path().join(".cutover")) {
        assert!(
            !text.contains(DB_PASSWORD),
            "{} holds the secret",
            path.display()
        );
    }
    let history = project.cutover(["history"]).success();
    assert!(!history.stdout.contains(DB_PASSWORD), "{history}");
}

/// `secrets set` drops exactly one trailing newline from stdin (what `echo` adds) and says so;
/// a second one is kept.
#[test]
fn secrets_set_says_when_it_drops_the_trailing_newline() {
    let project = Project::new().demo_secrets();
    let set = |key: &str, stdin: &str| {
        project
            .cutover_with_stdin(["secrets", "set", "prod", key], stdin)
            .success()
            .stderr
    };
    let said = set("ECHOED", "pw\n");
    assert!(said.contains("without the one trailing newline"), "{said}");
    let said = set("CRLF", "pw\r\n");
    assert!(said.contains("without the one trailing CRLF"), "{said}");
    let said = set("KEPT", "pw\n\n");
    assert!(said.contains("without the one trailing newline"), "{said}");
    let said = set("EXACT", "pw");
    assert!(!said.contains("trailing"), "{said}");
    let values = shown(&project, "prod");
    assert_eq!(values["ECHOED"], "pw");
    assert_eq!(values["CRLF"], "pw");
    assert_eq!(values["KEPT"], "pw\n");
    assert_eq!(values["EXACT"], "pw");
}

/// A value of `len` bytes that is easy to spot in output.
fn value_of_len(len: usize) -> String {
    "Zq9".repeat(len / 3 + 1)[..len].to_string()
}

/// MAX_ARG_STRLEN: `KEY=value` plus its NUL.
const ENV_LIMIT: usize = 128 * 1024;

/// Asserts that `run` refused a `BIG` one byte over the limit, naming the key and the limit
/// and printing no value.
#[track_caller]
fn refused_over_the_limit(run: Run, what: &str) {
    let run = run.failure();
    assert!(
        run.stderr.contains("key `BIG`")
            && run.stderr.contains(&format!("{} bytes", ENV_LIMIT + 1))
            && run.stderr.contains(&format!("limit of {ENV_LIMIT} bytes")),
        "{what}: {run}"
    );
    assert!(!run.stderr.contains("Zq9Zq9"), "{what} printed the value");
}

/// Issue #11: a value over the kernel's limit for one environment string made the deploy fail
/// with "could not run docker-compose". `set`, `encrypt` and `edit` refuse it naming the key
/// and the limit, and print no value; a value exactly at the limit is accepted.
#[test]
fn secret_over_the_env_limit_is_refused_at_set_encrypt_and_edit() {
    let project = Project::new().demo_secrets();
    let dir = project.path();
    let fits = ENV_LIMIT - "BIG=".len() - 1;
    let len_of_big = || shown(&project, "prod")["BIG"].as_str().unwrap().len();
    project
        .cutover_with_stdin(["secrets", "set", "prod", "BIG"], &value_of_len(fits))
        .success();
    assert_eq!(len_of_big(), fits);
    refused_over_the_limit(
        project.cutover_with_stdin(["secrets", "set", "prod", "BIG"], &value_of_len(fits + 1)),
        "set",
    );
    assert_eq!(len_of_big(), fits);

    let plain = dir.join("big.env");
    std::fs::write(&plain, format!("BIG={}\n", value_of_len(fits + 1))).unwrap();
    refused_over_the_limit(
        project.cutover(["secrets", "encrypt", "big.env"]),
        "encrypt",
    );
    assert!(!dir.join("secrets/big.env.age").exists());

    // An "editor" that replaces the file with the too-long value.
    use std::os::unix::fs::PermissionsExt;
    let editor = dir.join("editor.sh");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\ncp {} \"$1\"\n", plain.display()),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(dir.join("secrets/prod.env.age")).unwrap();
    let mut edit = project.command(["secrets", "edit", "prod"]);
    edit.env("EDITOR", &editor);
    refused_over_the_limit(Run::of(edit), "edit");
    assert_eq!(
        std::fs::read(dir.join("secrets/prod.env.age")).unwrap(),
        before
    );
}

/// A too-long value written with the `age` CLI behind cutover's back: the deploy says why
/// before it runs compose, and nothing is started.
#[test]
fn e2e_deploy_with_a_secret_over_the_env_limit_says_why_before_compose() {
    if !ready() || !require("age", "encrypt a secrets file") {
        return;
    }
    let project = Project::compose(App::compose().secrets());
    std::fs::write(
        project.path().join("big.env"),
        format!("BIG={}\n", value_of_len(ENV_LIMIT)),
    )
    .unwrap();
    let out = Command::new("age")
        .args([
            "-a",
            "-R",
            "secrets/recipients.txt",
            "-o",
            "secrets/demo.env.age",
            "big.env",
        ])
        .current_dir(project.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:v1"])
        .failure();
    assert!(
        run.stderr.contains("key `BIG`")
            && run.stderr.contains(&format!("limit of {ENV_LIMIT} bytes")),
        "{run}"
    );
    assert!(!run.stderr.contains("could not run"), "{run}");
    assert!(!run.stderr.contains("Zq9Zq9"), "printed the value: {run}");
    assert!(project.running_services().is_empty(), "nothing may start");
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

/// Issue #11: history stores the one-line reason of a failure, never the app's log lines
/// (which the terminal shows, and which may hold anything the app prints).
#[test]
fn e2e_history_keeps_the_reason_but_not_the_apps_log_lines() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    // The demo app refuses a non-numeric delay and exits 2 at once, saying why in its log.
    project.write_config(
        &App::compose()
            .health_timeout("60s")
            .restart("no")
            .env("STARTUP_DELAY_MS", "soon"),
    );
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:v2"])
        .failure();
    assert!(
        run.stderr.contains("cutover-demo-app:"),
        "the terminal shows the logs: {run}"
    );
    let last = project.history().pop().unwrap();
    assert_eq!(last["result"], "failed");
    let reason = last["reason"].as_str().expect("a reason");
    assert!(reason.contains("the green container exited"), "{reason}");
    assert!(!reason.contains('\n'), "one line: {reason:?}");
    assert!(
        !reason.contains("cutover-demo-app"),
        "no app log lines: {reason:?}"
    );
    let raw = std::fs::read_to_string(project.path().join(".cutover/history.jsonl")).unwrap();
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
    if !ready() {
        return;
    }
    let registry = tempfile::tempdir().unwrap();
    let prod = Project::compose(App::compose());
    let repo = format!("cutover-shared-{}", prod.name);
    let (a, b, c) = (
        format!("{repo}:a"),
        format!("{repo}:b"),
        format!("{repo}:c"),
    );
    tag("cutover-demo:v1", &a);
    tag("cutover-demo:v2", &b);
    tag("cutover-demo:v2", &c);
    prod.write_config(&App::compose().image(&repo));
    let staging = Project::compose(App::compose().image(&repo));
    edit_config(&staging, |c| c["app"]["keep_images"] = serde_json::json!(1));
    let run = |project: &Project, args: &[&str]| {
        let mut cmd = project.command(args);
        cmd.env("CUTOVER_REGISTRY_DIR", registry.path());
        Run::of(cmd).success()
    };
    run(&prod, &["deploy", "--image", &a]);
    run(&prod, &["deploy", "--image", &b]);
    // prod: green runs b, a is the rollback target with no container left.
    assert!(cutover::docker::images::exists(&a));
    let said = run(&staging, &["deploy", "--image", &c]);
    assert!(
        cutover::docker::images::exists(&a),
        "staging's auto-prune removed prod's rollback image:\n{said}"
    );
    let pruned = run(&staging, &["prune", "--keep", "1", "--json"]);
    assert!(
        cutover::docker::images::exists(&a),
        "prune --keep 1 removed it:\n{pruned}"
    );
    assert!(cutover::docker::images::exists(&b) && cutover::docker::images::exists(&c));
    run(&prod, &["rollback"]);
    assert_eq!(prod.get("/").unwrap().1.trim(), "version=v1 color=blue");

    // A deploy from another repository than app.image is allowed, with a warning.
    let said = run(&staging, &["deploy", "--image", "cutover-demo:v1"]);
    assert!(
        said.stderr.contains(&format!(
            "warning: cutover-demo:v1 is not from app.image's repository {repo}"
        )),
        "{said}"
    );

    // Once prod is gone (its state dir vanishes), its images are fair game.
    drop(prod);
    let pruned = run(&staging, &["prune", "--keep", "1", "--json"]).stdout_json();
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

/// `cutover` run by a user other than root: uid/gid 65534 through `setpriv` when the tests
/// run as root (root passes access(2) whatever a directory's mode), else this user.
struct DeployUser {
    uid: u32,
    through_setpriv: bool,
}

impl DeployUser {
    fn pick() -> Option<DeployUser> {
        if !rustix::process::geteuid().is_root() {
            return Some(DeployUser {
                uid: rustix::process::getuid().as_raw(),
                through_setpriv: false,
            });
        }
        require("setpriv", "run cutover as another user").then_some(DeployUser {
            uid: 65534,
            through_setpriv: true,
        })
    }

    /// Gives `path` to this user (a no-op when it is the test's own user).
    fn own(&self, path: &Path) {
        if self.through_setpriv {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.uid)).unwrap();
        }
    }

    /// Makes `dir` a directory this user cannot create files in (`writable: false`), or can.
    fn set_writable(&self, dir: &Path, writable: bool) {
        use std::os::unix::fs::PermissionsExt;
        if self.through_setpriv {
            let owner = if writable { self.uid } else { 0 };
            std::os::unix::fs::chown(dir, Some(owner), Some(owner)).unwrap();
        } else {
            let mode = if writable { 0o755 } else { 0o555 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    fn cutover(&self, project: &Path, home: &Path, args: &[&str]) -> std::process::Output {
        let inner = crate::common::cutover_command(project, home);
        // A copy beside the project: the build's own path may sit under a directory (a CI
        // runner's home) that uid 65534 cannot enter.
        let binary = project.parent().unwrap().join("cutover");
        if !binary.exists() {
            std::fs::copy(inner.get_program(), &binary).expect("copy the cutover binary");
        }
        let mut cmd = if self.through_setpriv {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        cmd.args(args).current_dir(project);
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        // The tests' project registry may be root's; this user registers in its own.
        cmd.env("CUTOVER_REGISTRY_DIR", home.join("project-registry"));
        cmd.output().expect("run cutover")
    }
}

#[test]
fn a_deploy_as_a_user_who_cannot_write_the_includes_directory_is_refused_before_anything() {
    let Some(user) = DeployUser::pick() else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    // Under /tmp (world-traversable) whatever TMPDIR says.
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // An include directory the deploy user cannot write, as Debian's root-owned
    // /etc/nginx/conf.d; the project and HOME are the deploy user's.
    let nginx_dir = dir.path().join("conf.d");
    std::fs::create_dir(&nginx_dir).unwrap();
    let include = nginx_dir.join("service-url.inc");
    std::fs::write(&include, "set $service_url http://127.0.0.1:9001;\n").unwrap();
    user.set_writable(&nginx_dir, false);
    let (project, home) = (dir.path().join("project"), dir.path().join("home"));
    for d in [&project, &home] {
        std::fs::create_dir(d).unwrap();
        user.own(d);
    }
    project_from_fixture(&project, "minimal", |map| {
        set_key(
            map,
            "nginx",
            "include",
            include.display().to_string().into(),
        );
    });

    for args in [
        &["deploy", "--image", "example/web:v2"][..],
        &["deploy", "--image", "example/web:v2", "--dry-run"],
        &["rollback"],
        &["maintenance", "on"],
    ] {
        let out = user.cutover(&project, &home, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for needle in [
            format!("nginx.include {}", include.display()),
            format!(
                "uid {} cannot create files in {}",
                user.uid,
                nginx_dir.display()
            ),
            "Permission denied".into(),
            "sudo -n".into(),
        ] {
            assert!(stderr.contains(&needle), "{args:?}: {needle}: {stderr}");
        }
        // Refused before observe: no container was looked at, nothing written or recorded.
        assert!(!stderr.contains("observe"), "{args:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(&nginx_dir).unwrap().count(),
        1,
        "only the include"
    );
    assert!(!project.join(".cutover/history.jsonl").exists());

    // A directory the deploy user may write gets past the check (and on to observe, where
    // a user outside the docker group cannot reach the engine).
    user.set_writable(&nginx_dir, true);
    let out = user.cutover(
        &project,
        &home,
        &["deploy", "--image", "example/web:v2", "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("cannot create files in"), "{stderr}");
    assert!(
        out.status.success() || stderr.contains("failed to list the containers of minimal"),
        "{stderr}"
    );
}
