//! What cutover asks of nginx beyond rendering its files: the `/.cutover/active` marker
//! answers loopback clients only (issue #11), the drain waits for the workers of the nginx it
//! reloads (found by the config path in the reload command, a reload wrapper included) and
//! never for another nginx's.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{cutover, free_port, loud, project_from_fixture, require, set_key};
use crate::harness::project::{nginx_words, ready, script, App, Project};

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

#[test]
fn a_reload_wrapper_drains_only_the_workers_of_the_nginx_it_reloads() {
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

/// The drain waits for the nginx workers that predate a reload: they are found by the
/// config path in the reload command, and they are gone (replaced) once the reload is done.
#[test]
fn nginx_workers_of_this_prefix_are_found_and_replaced_by_a_reload() {
    if !require("nginx", "run a local nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let port = free_port();
    std::fs::write(
        prefix.join("site.conf"),
        format!("server {{ listen 127.0.0.1:{port}; return 200 ok; }}\n"),
    )
    .unwrap();
    let mut nginx = cutover::nginx::LocalNginx::start(&prefix).unwrap();
    let reload = cutover::nginx::LocalNginx::argv(&prefix, &["-s", "reload"]);
    let before = cutover::nginx::worker_pids(&reload);
    assert_eq!(before.len(), 1, "worker_processes 1: {before:?}");
    assert!(before.iter().all(|p| cutover::nginx::process_alive(*p)));
    let other = cutover::nginx::worker_pids(&[
        "nginx".into(),
        "-c".into(),
        "/nonexistent/nginx.conf".into(),
        "-s".into(),
        "reload".into(),
    ]);
    assert!(
        other.iter().all(|p| !before.contains(p)),
        "another config's masters do not match"
    );
    let status = std::process::Command::new(&reload[0])
        .args(&reload[1..])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while before.iter().any(|p| cutover::nginx::process_alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "old worker never exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = cutover::nginx::worker_pids(&reload);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new worker serves after the reload");
    nginx.stop();
}
