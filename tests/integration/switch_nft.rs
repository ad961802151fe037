//! `nginx.switch: nft` (issue #26): colors switch by an nftables DNAT of two stable loopback
//! ports, never by an nginx reload. On the real engine, nginx and nft: 20 deploys, a rollback
//! and a forced switch back keep nginx's master and worker PIDs under a keep-alive load with
//! no failed request; `status` reads the color from the rule and reports a rule tampered
//! with; without `nft` the deploy falls back (and says so once) or, with `nft`, refuses. In a
//! fresh netns: the DNAT beside Docker-like iptables (nft and legacy) and ufw-like rules, two
//! projects side by side, and the boot restore from the saved rulesets.

use std::path::Path;
use std::time::Duration;

use crate::common::{loud, require, sh_ok};
use crate::harness::netns::Netns;
use crate::harness::project::{ready, App, Project};
use cutover::demo::keepalive::{self, KeepAlive};

fn nft_ready() -> bool {
    ready() && require("nft", "the nft switch (nginx.switch: nft) tests")
}

/// A project in nft mode (no watch window) with v1 deployed to blue; None where the nft
/// tests cannot run (said loudly by `nft_ready`).
fn deployed_in_nft_mode() -> Option<Project> {
    if !nft_ready() {
        return None;
    }
    let project = Project::compose(App::compose().switch("nft").settle("0s"));
    project.deploy_ok("cutover-demo:v1");
    Some(project)
}

/// The nginx master of the project's prefix and its workers (the master's children).
fn nginx_pids(project: &Project) -> (u32, Vec<u32>) {
    let master: u32 = std::fs::read_to_string(project.prefix().join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut workers: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid …: the comm may hold spaces, so split after its `)`.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(master)
        })
        .collect();
    workers.sort();
    assert!(!workers.is_empty(), "nginx {master} has no workers");
    (master, workers)
}

/// The project's rule, read back from the kernel.
fn rule(project: &Project) -> cutover::nft::Mapping {
    let [p, b] = project.switch_ports;
    cutover::nft::read(&project.name, p, b)
        .unwrap()
        .unwrap_or_else(|| panic!("no nft table for {}", project.name))
}

fn deploy_json(project: &Project, args: &[&str]) -> serde_json::Value {
    let out = project.command(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    crate::json_contract::validate("deploy.schema.json", &doc);
    doc
}

// Not in the compose matrix (`e2e_*`): the rule, not compose, switches here, and the other
// nft tests run again under compose v1; twenty deploys once is what the suite's time allows.
#[test]
fn twenty_deploys_a_rollback_and_a_switch_back_never_reload_nginx() {
    if !nft_ready() {
        return;
    }
    let app = || App::compose().switch("nft").settle("1s").drain("5s");
    let project = Project::compose(app());
    // The first deploy sets the mode up: the include naming the switch group, one reload.
    let first = deploy_json(
        &project,
        &["deploy", "--image", "cutover-demo:v1", "--json"],
    );
    assert_eq!(first["switch"], "nft", "{first:#}");
    let include = project.include();
    assert!(
        include.contains(&format!(
            "set $service_url http://cutover_{}_switch;",
            project.name
        )),
        "{include}"
    );
    assert_eq!(rule(&project).primary_to, project.blue);
    let pids = nginx_pids(&project);
    let load = KeepAlive::start(keepalive::Options::new(
        project.port,
        4,
        Duration::from_secs(900),
    ));
    while load.answered() < 40 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut colors = Vec::new();
    let mut switch_ms = Vec::new();
    for i in 0..20 {
        let image = if i % 2 == 0 {
            "cutover-demo:v2"
        } else {
            "cutover-demo:v1"
        };
        let doc = deploy_json(&project, &["deploy", "--image", image, "--json"]);
        assert_eq!(doc["switch"], "nft", "deploy {i}: {doc:#}");
        assert_eq!(
            nginx_pids(&project),
            pids,
            "deploy {i} changed nginx's processes"
        );
        let to = doc["to"].as_str().unwrap().to_string();
        let port = if to == "blue" {
            project.blue
        } else {
            project.green
        };
        let m = rule(&project);
        // Settled: both ports lead to the new color (the old one is stopped).
        assert_eq!((m.primary_to, m.backup_to), (port, port), "deploy {i}");
        colors.push(to);
        switch_ms.push(doc["switch_ms"].as_u64().unwrap());
    }
    // The rules each switch led with first are gone: the table holds its two rules.
    let listing = sh_ok(&format!("nft -j list table ip cutover_{}", project.name));
    assert_eq!(listing.matches("\"dnat\"").count(), 2, "{listing}");
    // Said, never asserted (timings belong to bench/): health pass → nginx answering.
    eprintln!("switch_ms of the 20 nft deploys: {switch_ms:?}");
    assert_eq!(
        colors.iter().filter(|c| *c == "green").count(),
        10,
        "{colors:?}"
    );
    // A rollback: the same rule rewrite.
    let back = deploy_json(&project, &["rollback", "--json"]);
    assert_eq!(back["switch"], "nft");
    assert_eq!(
        nginx_pids(&project),
        pids,
        "the rollback changed nginx's processes"
    );
    // POSTs too up to here; a POST in flight on a color killed mid-request is lost whatever
    // the switch (nginx passes no non-idempotent request on to the backup:
    // proxy_next_upstream), so the kill below runs under GETs, which the backup takes.
    let tally = load.finish();
    eprintln!("keep-alive load over 20 deploys and a rollback: {tally:?}");
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.posts_answered > 100, "{tally:?}");
    // 4 clients, reconnecting only at nginx's keepalive_requests (1000).
    assert!(
        tally.connections <= 4 + tally.answered / 1000 + 4,
        "{tally:?}"
    );
    let load = KeepAlive::start(keepalive::Options {
        post_every: 0,
        ..keepalive::Options::new(project.port, 4, Duration::from_secs(300))
    });
    while load.answered() < 40 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A forced switch back: the new color dies in the watch window.
    project.write_config(&app().settle("8s"));
    let before = rule(&project).primary_to;
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("settle");
    let m = rule(&project);
    assert_ne!(m.primary_to, before, "the window opened on the new color");
    assert_eq!(
        m.backup_to, before,
        "the old color is the backup in the window"
    );
    let new_service = if m.primary_to == project.blue {
        "web-blue"
    } else {
        "web-green"
    };
    project.kill(new_service);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("switched back to"), "{stderr}");
    assert_eq!(
        rule(&project).primary_to,
        before,
        "the rule is back on the old color"
    );
    assert_eq!(
        nginx_pids(&project),
        pids,
        "the switch back changed nginx's processes"
    );
    // The include was never rewritten after the set-up.
    assert_eq!(project.include(), include);
    std::thread::sleep(Duration::from_millis(500));
    let tally = load.finish();
    eprintln!("keep-alive GETs through the new color's death and the switch back: {tally:?}");
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.answered > 40, "{tally:?}");
}

#[test]
fn status_reads_the_color_from_the_rule_and_reports_a_rule_changed_by_hand() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    project.deploy_ok("cutover-demo:v2");
    let status = project.status_json();
    assert_eq!(status["active"], "green", "{status:#}");
    assert_eq!(status["nginx_serves"], "green", "{status:#}");
    assert_eq!(status["nginx_points_at"], "green", "{status:#}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status:#}");
    // By hand: the primary port to blue, which is stopped. The rule wins over the record.
    let [p, b] = project.switch_ports;
    let tampered = cutover::nft::Mapping {
        primary: p,
        primary_to: project.blue,
        backup: b,
        backup_to: project.blue,
    };
    cutover::nft::apply(&cutover::nft::ruleset(&project.name, &tampered), "tamper").unwrap();
    // The site is down now (the rule leads to a stopped color): status says so, exit 1.
    let out = project.command(["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::json_contract::validate("status.schema.json", &status);
    assert_eq!(status["nginx_points_at"], "blue", "{status:#}");
    assert_eq!(status["nginx_serves"], "blue", "{status:#}");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("nginx points at blue, but no blue container is running"),
        "{status:#}"
    );
    // A rule that leads to neither color is said as such.
    let elsewhere = cutover::nft::Mapping {
        primary_to: 1,
        ..tampered
    };
    cutover::nft::apply(&cutover::nft::ruleset(&project.name, &elsewhere), "tamper").unwrap();
    let out = project.command(["status"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("neither color's"), "{text}");
    // The next deploy rewrites it.
    project.deploy_ok("cutover-demo:v1");
    assert!([project.blue, project.green].contains(&rule(&project).primary_to));
}

/// A PATH with everything this box has but `nft` (a box without nftables).
fn path_without_nft(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir("/usr/sbin").unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "nft" {
            let _ = std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name()));
        }
    }
    format!("{}:/usr/local/bin:/usr/bin", bin.display())
}

#[test]
fn without_nft_auto_falls_back_to_reload_saying_so_once_and_nft_refuses() {
    if !nft_ready() {
        return;
    }
    let project = Project::compose(App::compose().switch("auto").settle("0s"));
    let tmp = tempfile::tempdir().unwrap();
    let path = path_without_nft(tmp.path());
    let run = |args: &[&str]| project.command(args).env("PATH", &path).output().unwrap();
    let out = run(&["deploy", "--image", "cutover-demo:v1", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::json_contract::validate("deploy.schema.json", &doc);
    assert_eq!(doc["switch"], "reload", "{doc:#}");
    let said =
        "nginx.switch: auto: switching with the include + nginx reload, since `nft` is not on PATH";
    let out = run(&["deploy", "--image", "cutover-demo:v2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    // The include names the color: today's reload mode.
    assert!(project.include().contains(&format!(":{};", project.green)));
    assert!(cutover::nft::read(&project.name, 1, 2).unwrap().is_none());
    // `nft` asked for, where it cannot work: a refusal naming why, nothing changed.
    project.write_config(&App::compose().switch("nft").settle("0s"));
    let out = run(&["deploy", "--image", "cutover-demo:v1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nginx.switch: nft cannot work on this box: `nft` is not on PATH"),
        "{stderr}"
    );
    project.assert_serving("green", "v2");
}

/// `cmd` run by `setpriv` without CAP_NET_ADMIN in its bounding set: root in a container, or
/// a unit with a restricted `CapabilityBoundingSet`, where nfnetlink refuses every request.
fn without_net_admin(cmd: &std::process::Command) -> std::process::Command {
    let mut out = std::process::Command::new("setpriv");
    out.args(["--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(std::process::Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => out.env(key, value),
            None => out.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    out
}

/// A PATH whose `nft` (a script in `dir/<name>`) runs the shell line `guard` first, which
/// may answer for it, and otherwise hands every run to the real nft.
fn path_with_an_nft(dir: &Path, name: &str, guard: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let real = cutover::process::which("nft").unwrap();
    let bin = dir.join(name);
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nft");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n{guard}\nexec {} \"$@\"\n", real.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A PATH whose `nft` answers every `list` as an older nft does when its cache cannot dump
/// the ruleset (no capability, no nf_tables): "No such file or directory", the words of a
/// missing table; anything else goes to the real nft.
fn path_with_an_nft_that_says_enoent(dir: &Path) -> String {
    path_with_an_nft(
        dir,
        "old-nft",
        "for a in \"$@\"; do [ \"$a\" = list ] && { echo 'Error: No such file or directory' \
         >&2; exit 1; }; done",
    )
}

/// Root without CAP_NET_ADMIN: nft cannot change a rule, whatever its listing says (nft
/// 1.0.6 says EPERM; an older one "No such file or directory", as if the table were only
/// missing, which the check-only probe then disproves). `auto` falls back to reload naming
/// why, `nft` refuses, and no table is written.
#[test]
fn root_without_cap_net_admin_is_told_nft_is_unusable_even_when_the_listing_says_enoent() {
    if !nft_ready() || !require("setpriv", "run cutover without CAP_NET_ADMIN") {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let project = Project::compose(App::compose().switch("nft").settle("0s"));
    let [primary, backup] = project.switch_ports;
    let tmp = tempfile::tempdir().unwrap();
    let old_nft = path_with_an_nft_that_says_enoent(tmp.path());
    for (path, image) in [
        (None, "cutover-demo:v1"),
        (Some(&old_nft), "cutover-demo:v2"),
    ] {
        let run = |args: &[&str]| {
            let mut cmd = project.command(args);
            if let Some(path) = path {
                cmd.env("PATH", path);
            }
            without_net_admin(&cmd).output().unwrap()
        };
        project.write_config(&App::compose().switch("nft").settle("0s"));
        let out = run(&["deploy", "--image", image]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path:?}: {stderr}");
        assert!(
            stderr.contains(
                "nginx.switch: nft cannot work on this box: `nft` cannot change rules here"
            ),
            "{path:?}: {stderr}"
        );
        assert!(
            stderr.contains("Operation not permitted"),
            "{path:?}: {stderr}"
        );
        assert_eq!(
            cutover::nft::read(&project.name, primary, backup).unwrap(),
            None
        );
        project.write_config(&App::compose().switch("auto").settle("0s"));
        let out = run(&["deploy", "--image", image]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{path:?}: {stderr}");
        assert!(
            stderr.contains("nginx.switch: auto: switching with the include + nginx reload, since `nft` cannot change rules here"),
            "{path:?}: {stderr}"
        );
        assert_eq!(
            cutover::nft::read(&project.name, primary, backup).unwrap(),
            None
        );
    }
    project.assert_serving("green", "v2");
}

/// Docker's nat rules as Docker writes them (userland-proxy on: loopback excluded; and a
/// `userland-proxy: false`-style DNAT of a color port), a ufw-like filter chain with a
/// default-deny for another port, in the given iptables flavour.
fn docker_and_ufw_like_rules(iptables: &str) {
    for rule in [
        "-t nat -N DOCKER",
        "-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
        "-t nat -A DOCKER -d 172.17.0.2/32 -p tcp --dport 80 -j RETURN",
        "-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
        "-N ufw-user-output",
        "-A OUTPUT -j ufw-user-output",
        "-A ufw-user-output -p tcp --dport 9 -j REJECT",
        "-A ufw-user-output -o lo -j ACCEPT",
    ] {
        sh_ok(&format!("{iptables} {rule}"));
    }
}

/// Accepts one connection on 127.0.0.1:`port` and answers `name`.
fn listener(port: u16, name: &'static str) -> std::thread::JoinHandle<()> {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming().take(64) {
            use std::io::Write;
            let Ok(mut s) = stream else { return };
            let _ = s.write_all(name.as_bytes());
        }
    })
}

fn who_answers(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_dnat_on_loopback_works_beside_docker_and_ufw_rules_and_two_projects() {
    if !require("nft", "the nft switch tests") || !require("ip", "the netns tests") {
        return;
    }
    let legacy = cutover::process::which("iptables-legacy").is_some();
    if !legacy {
        loud("iptables-legacy is not installed: Docker's legacy-backend rules are not tried");
    }
    let ns = Netns::new("s26-coexist");
    let saved = tempfile::tempdir().unwrap();
    let saved = saved.path().to_path_buf();
    ns.run(move || {
        docker_and_ufw_like_rules("iptables-nft");
        if legacy {
            docker_and_ufw_like_rules("iptables-legacy");
        }
        // Two projects: their colors and their switch ports.
        let (a_blue, a_green, b_blue, b_green) = (18081, 18082, 18091, 18092);
        let _l = [
            listener(a_blue, "a-blue"),
            listener(a_green, "a-green"),
            listener(b_blue, "b-blue"),
            listener(b_green, "b-green"),
        ];
        let map = |primary, to, backup, backup_to| cutover::nft::Mapping {
            primary,
            primary_to: to,
            backup,
            backup_to,
        };
        cutover::nft::switch("a", &map(18000, a_blue, 18001, a_blue), &saved).unwrap();
        cutover::nft::switch("b-x", &map(18010, b_green, 18011, b_blue), &saved).unwrap();
        assert_eq!(who_answers(18000), "a-blue");
        assert_eq!(who_answers(18010), "b-green");
        assert_eq!(who_answers(18011), "b-blue");
        // A switch of one project: the other is untouched.
        cutover::nft::switch("a", &map(18000, a_green, 18001, a_blue), &saved).unwrap();
        assert_eq!(who_answers(18000), "a-green");
        assert_eq!(who_answers(18001), "a-blue");
        assert_eq!(who_answers(18010), "b-green");
        assert_eq!(
            cutover::nft::read("b-x", 18010, 18011).unwrap(),
            Some(map(18010, b_green, 18011, b_blue))
        );
        // The color ports themselves are reached as before (our rule only names our ports).
        assert_eq!(who_answers(a_blue), "a-blue");
        // Docker's and ufw's rules are still there, ours beside them.
        let tables = sh_ok("nft list tables");
        assert!(tables.contains("table ip cutover_a\n"), "{tables}");
        assert!(sh_ok("iptables-nft -t nat -S OUTPUT").contains("-j DOCKER"));
        // Removing one project's table leaves the other's.
        cutover::nft::remove("a", &saved).unwrap();
        assert_eq!(cutover::nft::read("a", 18000, 18001).unwrap(), None);
        assert!(!cutover::nft::saved(&saved, "a").exists());
        assert_eq!(who_answers(18010), "b-green");
        // Existing connections keep their mapping across a switch.
        let held = std::net::TcpStream::connect(("127.0.0.1", 18010)).unwrap();
        cutover::nft::switch("b-x", &map(18010, b_blue, 18011, b_blue), &saved).unwrap();
        assert_eq!(who_answers(18010), "b-blue");
        assert_eq!(
            held.peer_addr().unwrap().port(),
            18010,
            "the held connection still names the stable port"
        );
        let mut held = held;
        let mut first = String::new();
        use std::io::Read;
        held.read_to_string(&mut first).unwrap();
        assert_eq!(first, "b-green", "an established connection kept its color");
    });
}

/// In a fresh netns: the boot script written to a temp dir, project `one`'s mapping `m`
/// switched (so saved in `saved`); then `f(saved, script, m)`.
fn boot_script_in_netns(
    name: &'static str,
    f: impl FnOnce(&Path, &Path, cutover::nft::Mapping) + Send + 'static,
) {
    if !require("nft", "the nft switch tests") || !require("ip", "the netns tests") {
        return;
    }
    let ns = Netns::new(name);
    let dir = tempfile::tempdir().unwrap();
    let (saved, script) = (dir.path().join("switch"), dir.path().join("restore-switch"));
    std::fs::write(&script, cutover::bootstrap::boot_switch::script()).unwrap();
    ns.run(move || {
        let m = cutover::nft::Mapping {
            primary: 19000,
            primary_to: 19002,
            backup: 19001,
            backup_to: 19003,
        };
        cutover::nft::switch("one", &m, &saved).unwrap();
        f(&saved, &script, m);
    });
}

#[test]
fn the_boot_script_restores_every_saved_table_after_they_are_gone() {
    boot_script_in_netns("s26-boot", |saved, script, m| {
        cutover::nft::switch(
            "two",
            &cutover::nft::Mapping {
                primary: 19010,
                ..m
            },
            saved,
        )
        .unwrap();
        // A reboot: the kernel's rules are gone, the saved files stay.
        sh_ok("nft flush ruleset");
        assert_eq!(cutover::nft::read("one", 19000, 19001).unwrap(), None);
        sh_ok(&format!("sh {} {}", script.display(), saved.display()));
        assert_eq!(cutover::nft::read("one", 19000, 19001).unwrap(), Some(m));
        assert!(cutover::nft::read("two", 19010, 19001).unwrap().is_some());
        // Run again (a restart of the unit): the same tables, replaced, not doubled.
        sh_ok(&format!("sh {} {}", script.display(), saved.display()));
        let listing = sh_ok("nft list tables");
        assert_eq!(listing.matches("cutover_one").count(), 1, "{listing}");
        // A damaged file fails the script, and the others are still restored.
        std::fs::write(cutover::nft::saved(saved, "bad"), "table ip {").unwrap();
        sh_ok("nft flush ruleset");
        let out = std::process::Command::new("sh")
            .arg(script)
            .arg(saved)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("could not restore the nft switch saved in"));
        assert_eq!(cutover::nft::read("one", 19000, 19001).unwrap(), Some(m));
    });
}

#[test]
fn dry_run_maintenance_and_a_move_back_to_reload_in_nft_mode() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    // The dry run describes the rule, not a reload.
    let out = project
        .command(["deploy", "--image", "cutover-demo:v2", "--dry-run"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("nft -f - (table ip cutover_{})", project.name)),
        "{text}"
    );
    assert!(text.contains("nginx is not reloaded"), "{text}");
    assert_eq!(
        rule(&project).primary_to,
        project.blue,
        "a dry run changed the rule"
    );
    // Maintenance mode: the nft include with the 503 block, the rule untouched.
    project.cutover(["maintenance", "on"]).success();
    let (code, _) = project.get("/").unwrap();
    assert_eq!(code, 503);
    assert!(project
        .include()
        .contains(&format!("http://cutover_{}_switch;", project.name)));
    project.cutover(["maintenance", "off"]).success();
    assert_eq!(project.get("/").unwrap().0, 200);
    assert_eq!(rule(&project).primary_to, project.blue);
    // A deploy killed in its watch window left the backup port on the other color: led
    // back to the active one before the new color starts.
    let [p, b] = project.switch_ports;
    let open = cutover::nft::Mapping {
        primary: p,
        primary_to: project.blue,
        backup: b,
        backup_to: project.green,
    };
    cutover::nft::apply(
        &cutover::nft::ruleset(&project.name, &open),
        "leave the window open",
    )
    .unwrap();
    let run = project.deploy_ok("cutover-demo:v2");
    assert!(
        run.stderr
            .contains("the nft rule leads both ports to blue now"),
        "{}",
        run.stderr
    );
    assert_eq!(rule(&project).primary_to, project.green);
    // Back to reload: the include names the color again and the table is gone.
    project.write_config(&App::compose().switch("reload").settle("0s"));
    project.deploy_ok("cutover-demo:v1");
    assert_eq!(cutover::nft::read(&project.name, p, b).unwrap(), None);
    assert!(!cutover::nft::saved(&project.switch_saved_dir(), &project.name).exists());
    project.assert_serving("blue", "v1");
}

/// The boot script runs `nft -f` as root: a ruleset another user could have planted (a file
/// not root's, one writable by others, a symlink, or any file in a directory others can
/// write) is never applied, and the unit fails saying which.
#[test]
fn the_boot_script_applies_nothing_another_user_could_have_planted() {
    use std::os::unix::fs::PermissionsExt as _;
    boot_script_in_netns("s26-plant", |saved, script, m| {
        let planted = |name: &str| {
            let text = cutover::nft::ruleset(name, &m);
            let path = cutover::nft::saved(saved, name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let world = planted("world");
        std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o666)).unwrap();
        let nobody = planted("nobody");
        sh_ok(&format!("chown 65534 {}", nobody.display()));
        let elsewhere = saved.parent().unwrap().join("elsewhere.nft");
        std::fs::write(&elsewhere, cutover::nft::ruleset("link", &m)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cutover::nft::saved(saved, "link")).unwrap();
        sh_ok("nft flush ruleset");
        let run = || {
            std::process::Command::new("sh")
                .arg(script)
                .arg(saved)
                .output()
                .unwrap()
        };
        let out = run();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        for name in ["world", "nobody", "link"] {
            assert!(
                stderr.contains(&format!(
                    "skipped {}",
                    cutover::nft::saved(saved, name).display()
                )),
                "{stderr}"
            );
            assert_eq!(
                cutover::nft::read(name, 19000, 19001).unwrap(),
                None,
                "{name}"
            );
        }
        assert_eq!(cutover::nft::read("one", 19000, 19001).unwrap(), Some(m));
        // A directory others can write: nothing from it, not even root's own file.
        std::fs::set_permissions(saved, std::fs::Permissions::from_mode(0o777)).unwrap();
        sh_ok("nft flush ruleset");
        let out = run();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not a directory only root can write"),
            "{out:?}"
        );
        assert_eq!(cutover::nft::read("one", 19000, 19001).unwrap(), None);
        // And cutover refuses to save into it.
        let e = cutover::nft::switch("one", &m, saved).unwrap_err();
        assert!(
            format!("{e:#}").contains("is writable by other users"),
            "{e:#}"
        );
    });
}

/// A saved ruleset that cannot be written (a directory at its path) fails the switch before
/// the kernel changes, with no watch window (the lead then the replacement) and into one (the
/// replacement beside the window): the rule stays on the serving color, with its two rules
/// and no copy led in front of them, blue keeps serving, and the error names the path.
#[test]
fn a_switch_whose_ruleset_cannot_be_saved_leaves_the_rule_on_the_serving_color() {
    if !nft_ready() {
        return;
    }
    for settle in ["0s", "1s"] {
        let project = Project::compose(App::compose().switch("nft").settle(settle));
        project.deploy_ok("cutover-demo:v1");
        let saved = cutover::nft::saved(&project.switch_saved_dir(), &project.name);
        std::fs::remove_file(&saved).unwrap();
        std::fs::create_dir(&saved).unwrap();
        let stderr = project
            .cutover(["deploy", "--image", "cutover-demo:v2"])
            .code(1)
            .stderr;
        assert!(
            stderr.contains(&format!("{} is a directory", saved.display())),
            "settle {settle}: {stderr}"
        );
        assert!(!stderr.contains("inserted in front"), "{stderr}");
        let m = rule(&project);
        assert_eq!((m.primary_to, m.backup_to), (project.blue, project.blue));
        assert_eq!(dnat_rules(&project), 2, "settle {settle}");
        project.assert_still_serving("blue", "v1");
        let status = project.status_json();
        assert_eq!(status["nginx_serves"], "blue", "{status:#}");
        // Once the path is free again, the next deploy switches.
        std::fs::remove_dir(&saved).unwrap();
        project.deploy_ok("cutover-demo:v2");
        assert_eq!(rule(&project).primary_to, project.green);
        assert!(saved.is_file());
    }
}

/// A switch port something already listens on (a database, ssh): the rule would hand that
/// service's local clients to the app. `nft` refuses, naming the key and the port; `auto`
/// falls back to reload; the service keeps its clients either way.
#[test]
fn a_switch_port_something_listens_on_is_never_taken() {
    if !nft_ready() {
        return;
    }
    let project = Project::compose(App::compose().switch("nft").settle("0s"));
    let [primary, _] = project.switch_ports;
    let _db = listener(primary, "db");
    let stderr = project
        .cutover(["deploy", "--image", "cutover-demo:v1"])
        .code(1)
        .stderr;
    assert!(
        stderr.contains(&format!(
            "nginx.switch: nft cannot work on this box: something listens on port {primary}, \
             the primary of nginx.switch_ports"
        )),
        "{stderr}"
    );
    assert_eq!(cutover::nft::read(&project.name, primary, 1).unwrap(), None);
    assert_eq!(who_answers(primary), "db");
    project.write_config(&App::compose().switch("auto").settle("0s"));
    let doc = deploy_json(
        &project,
        &["deploy", "--image", "cutover-demo:v1", "--json"],
    );
    assert_eq!(doc["switch"], "reload", "{doc:#}");
    assert_eq!(cutover::nft::read(&project.name, primary, 1).unwrap(), None);
    assert_eq!(who_answers(primary), "db");
    project.assert_serving("blue", "v1");
}

/// nft removed after an nft deploy: the rule still routes and only it knows the serving
/// color. `status` and the next deploy (even under `auto`) fail closed, saying why and what
/// to do; the site keeps serving; with nft back the deploy goes on.
#[test]
fn nft_gone_after_an_nft_deploy_fails_closed_saying_what_to_do() {
    if !nft_ready() {
        return;
    }
    let project = Project::compose(App::compose().switch("auto").settle("0s"));
    project.deploy_ok("cutover-demo:v1");
    let tmp = tempfile::tempdir().unwrap();
    let path = path_without_nft(tmp.path());
    let run = |args: &[&str]| project.command(args).env("PATH", &path).output().unwrap();
    let said = "without `nft` it cannot be read; cutover does not guess it from its record: \
                install nftables again to deploy";
    for args in [&["status"][..], &["deploy", "--image", "cutover-demo:v2"]] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(stderr.contains("`nft` was not found on PATH"), "{stderr}");
    }
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(rule(&project).primary_to, project.green);
}

/// A deploy killed once the rule leads to the new color (before its record): `status` says
/// what is true and the next deploy recovers. The table deleted by hand (or by `nft flush
/// ruleset`, an nftables.service restart): nginx reaches nothing, so `status` says the site
/// is down (exit 1); the next deploy writes the rule again.
#[test]
fn e2e_a_deploy_killed_after_the_rule_and_a_table_deleted_by_hand_are_told_and_recovered() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let [p, b] = project.switch_ports;
    let mut child = project
        .command(["deploy", "--image", "cutover-demo:v2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while cutover::nft::read(&project.name, p, b)
        .unwrap()
        .map(|m| m.primary_to)
        != Some(project.green)
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the deploy ended first"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let status = project.status_json();
    assert_eq!(status["nginx_serves"], "green", "{status:#}");
    assert_eq!(status["nginx_points_at"], "green", "{status:#}");
    assert!(
        status["problems"].to_string().contains("green serves"),
        "{status:#}"
    );
    project.deploy_ok("cutover-demo:v1");
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
    // The kill may have come between the lead and the table's replacement: the rules it
    // led with are gone once the next deploy has switched.
    let listing = sh_ok(&format!("nft -j list table ip cutover_{}", project.name));
    assert_eq!(listing.matches("\"dnat\"").count(), 2, "{listing}");
    sh_ok(&format!("nft delete table ip cutover_{}", project.name));
    let out = project.command(["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::json_contract::validate("status.schema.json", &status);
    assert!(
        status["down"]
            .as_str()
            .is_some_and(|d| d.contains("the site is down")
                && d.contains(&format!("table ip cutover_{} does not exist", project.name))),
        "{status:#}"
    );
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(rule(&project).primary_to, project.green);
    assert!(project
        .command(["status"])
        .output()
        .unwrap()
        .status
        .success());
}

/// The drain counts what the rule's established mappings still carry to the old color: a
/// connection opened through the switch's primary port before the switch (as nginx's are)
/// keeps its mapping to blue, and the drain waits its whole bound for it before stopping blue.
#[test]
fn e2e_the_drain_waits_for_a_connection_the_rule_mapped_to_the_old_color() {
    if !nft_ready() {
        return;
    }
    let app = || App::compose().switch("nft").settle("0s").drain("2s");
    let project = Project::compose(app());
    project.deploy_ok("cutover-demo:v1");
    let [primary, _] = project.switch_ports;
    let held = std::net::TcpStream::connect(("127.0.0.1", primary)).unwrap();
    let run = project.deploy_ok("cutover-demo:v2");
    assert!(
        run.stderr.contains(
            "1 connections to blue and 0 old nginx workers were left after \
             the drain limit (2s)"
        ),
        "{}",
        run.stderr
    );
    drop(held);
    assert_eq!(rule(&project).primary_to, project.green);
}

/// The table edited by hand so it maps only one port: `status` reports it (the site still
/// answers through the primary port: not down) and the next deploy rewrites it, rather than
/// both stopping at "changed by hand; the next deploy rewrites it".
#[test]
fn a_table_edited_by_hand_is_reported_and_the_next_deploy_rewrites_it() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let [p, b] = project.switch_ports;
    let t = format!("cutover_{}", project.name);
    let edited = format!(
        "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n chain output {{\n  type nat \
         hook output priority -101; policy accept;\n  ip daddr 127.0.0.1 tcp dport {p} dnat to \
         127.0.0.1:{}\n }}\n}}\n",
        project.blue
    );
    cutover::nft::apply(&edited, "edit by hand").unwrap();
    let out = project.command(["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["problems"]
            .to_string()
            .contains(&format!("table ip {t} does not map ports {p} and {b}")),
        "{status:#}"
    );
    assert_eq!(status["down"], serde_json::Value::Null, "{status:#}");
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(rule(&project).primary_to, project.green);
    assert_eq!(rule(&project).backup_to, project.green);
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v2 color=green");
}

/// How many processes the `-v` trace in `stderr` shows ending with exit 0 whose line holds
/// `needle`.
fn traced_ok(stderr: &str, needle: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with("    $ ") && l.contains(needle) && l.ends_with(", exit 0)"))
        .count()
}

/// `-v` lists every process of an nft deploy with how it ended, and the socket looks cutover
/// makes itself, those run on a thread beside another step too: the switch ports' look beside
/// the rule's listing, the new color's look beside the health gate, and the `nft` that
/// switches.
#[test]
fn verbose_traces_the_processes_run_beside_other_steps() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let run = project
        .cutover(["-v", "deploy", "--image", "cutover-demo:v2"])
        .success();
    let traced = |needle: &str| traced_ok(&run.stderr, needle);
    let looked = |needle: &str, sockets: usize| {
        run.stderr
            .lines()
            .filter(|l| {
                l.starts_with("    $ ")
                    && l.contains(needle)
                    && l.ends_with(&format!(", {sockets} socket(s))"))
            })
            .count()
    };
    let [p, b] = project.switch_ports;
    let sockets = "sock_diag: TCP sockets";
    assert_eq!(
        looked(&format!("{sockets} listening on port(s) [{p}, {b}]"), 0),
        1,
        "{}",
        run.stderr
    );
    // Docker's proxy listens on the new color's port, on IPv4 and perhaps IPv6.
    let green = format!("{sockets} listening on port(s) [{}]", project.green);
    assert_eq!(looked(&green, 1) + looked(&green, 2), 1, "{}", run.stderr);
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("    $ ss ")),
        "no `ss` process: {}",
        run.stderr
    );
    assert_eq!(traced("nft -e -j -f "), 1, "{}", run.stderr);
    // The lead went to the `nft` started as the gate began: fed its rules, not started anew,
    // and the trace line shows them (the primary's port to green's).
    let lead = format!(
        "nft -f - <<< 'insert rule ip cutover_{} output ",
        project.name
    );
    assert_eq!(traced(&lead), 1, "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.contains(&lead)
            && l.contains(&format!(
                "tcp dport {p} dnat to 127.0.0.1:{}'  [primed]",
                project.green
            ))),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("never fed"), "{}", run.stderr);
    assert_eq!(traced("nft 'insert rule "), 0, "{}", run.stderr);
    // While the app boots (1 s), the gate looks at its listeners inside the container rather
    // than connecting: it enters the namespace once, ends its looks once (traced once: on the
    // app's listener, or, rarely, on a poll made anyway in the ms after the app listened), and
    // polls over HTTP only a few times (before the engine gave the container's process, one
    // every 250 ms anyway, then the pass), where 5 ms polls would be ~200.
    let lines = |starts: &str, ends: &str| {
        run.stderr
            .lines()
            .filter(|l| l.starts_with(starts) && l.ends_with(ends))
            .count()
    };
    let entered = lines(
        "    $ sock_diag: enter the network namespace of pid ",
        ", entered)",
    );
    assert_eq!(entered, 1, "{}", run.stderr);
    let ended = run
        .stderr
        .lines()
        .filter(|l| {
            l.starts_with("    $ sock_diag: ")
                && l.contains(" look(s) for a listener on port 8080 in the container  (")
                && (l.ends_with(" socket(s) listening: the gate polls)")
                    || l.ends_with(" while no listener was seen: the gate polls)"))
        })
        .count();
    assert_eq!(ended, 1, "{}", run.stderr);
    let output = format!("{}{}", run.stdout, run.stderr);
    let polls: u32 = output
        .lines()
        .find_map(|l| {
            let l = l.trim_end();
            let head = l.strip_suffix(" polls)")?;
            l.contains("health").then_some(())?;
            head.rsplit('(').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no health step with its polls: {output}"));
    assert!((1..=30).contains(&polls), "{polls} polls: {output}");
}

/// nft mode with an app whose health check never passes, the gate bounded by `timeout`.
fn never_healthy_in_nft_mode(timeout: &str) -> App {
    App::compose()
        .switch("nft")
        .settle("0s")
        .health_timeout(timeout)
        .env("FAIL_HEALTH", "1")
}

/// A health gate that never passes in nft mode: the new color's socket look (beside the gate)
/// is waited for and traced, the rule never moves, and the new color is gone.
#[test]
fn a_failed_gate_in_nft_mode_leaves_the_rule_and_traces_its_listener_look() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let before = rule(&project);
    project.write_config(&never_healthy_in_nft_mode("3s"));
    let failure = project
        .cutover(["-v", "deploy", "--image", "cutover-demo:v2"])
        .failure();
    let stderr = &failure.stderr;
    assert!(stderr.contains("health gate timed out"), "{stderr}");
    let look = format!(
        "sock_diag: TCP sockets listening on port(s) [{}]",
        project.green
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("    $ ") && l.contains(&look))
            .count(),
        1,
        "{stderr}"
    );
    // The `nft` primed for the lead was never fed (and `-v` says so): it read nothing and
    // changed nothing.
    assert!(!stderr.contains("  [primed]"), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("    $ nft -f -  [primed; never fed]  (")
                && l.ends_with(", stdin closed empty)"))
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(rule(&project), before);
    let listing = sh_ok(&format!("nft -j list table ip cutover_{}", project.name));
    assert_eq!(listing.matches("\"dnat\"").count(), 2, "{listing}");
    assert_eq!(project.running_services(), ["web-blue"]);
    project.assert_still_serving("blue", "v1");
}

/// The `nft -f -` a deploy primed for its lead (a child of `cutover`, cmdline `nft -f -`),
/// waited for up to 60 s.
fn primed_nft_of(cutover: u32) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let parent = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                parent == Some(cutover)
                    && std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
                        == b"nft\0-f\0-\0"
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no primed nft under cutover {cutover}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `pid`'s descriptors above stderr point at.
fn descriptors_above_stderr(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            (fd > 2).then(|| std::fs::read_link(e.path()).ok())?
        })
        .map(|target| target.display().to_string())
        .collect()
}

/// Whether `pid` is gone (or a zombie no one reaped: it exited), within 5 s.
fn exits(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
        if state.is_none() || state.as_deref() == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A deploy killed (SIGKILL) or stopped (SIGTERM) in its health gate, with the lead's `nft -f
/// -` primed and waiting: that nft holds none of cutover's own descriptors (the deploy lock, its
/// pipes) but its stdio, so cutover's end is its stdin's end: it reads an empty ruleset, applies
/// nothing and exits, and the next deploy takes the lock and switches.
#[test]
fn a_deploy_ended_with_its_lead_primed_leaves_no_nft_and_the_rule_as_it_was() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let before = rule(&project);
    project.write_config(&never_healthy_in_nft_mode("60s"));
    // What this test process hands every child: the rest must be cutover's, and none is.
    let ours: Vec<String> = descriptors_above_stderr(std::process::id());
    for signal in ["KILL", "TERM"] {
        let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
        let nft = primed_nft_of(child.id());
        // nft's own (its netlink socket) are not cutover's.
        let held = descriptors_above_stderr(nft);
        let cutovers = descriptors_above_stderr(child.id());
        assert!(
            held.iter()
                .all(|d| ours.contains(d) || !cutovers.contains(d)),
            "the primed nft holds {held:?}, cutover {cutovers:?} (this test's: {ours:?})"
        );
        assert!(
            cutovers.iter().any(|d| d.ends_with("/.cutover/lock")),
            "cutover holds no deploy lock? {cutovers:?}"
        );
        sh_ok(&format!("kill -{signal} {}", child.id()));
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if signal == "TERM" {
            assert_eq!(out.status.code(), Some(130), "{stderr}");
        }
        assert!(
            exits(nft),
            "SIG{signal}: the primed nft {nft} is still running"
        );
        assert_eq!(rule(&project), before, "SIG{signal}");
        let listing = sh_ok(&format!("nft -j list table ip cutover_{}", project.name));
        assert_eq!(
            listing.matches("\"dnat\"").count(),
            2,
            "SIG{signal}: {listing}"
        );
    }
    project.write_config(&App::compose().switch("nft").settle("0s"));
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(rule(&project).primary_to, project.green);
}

/// SIGTERM in nft mode's watch window (the rule's backup port still on the old color): the
/// deploy switches back by the rule, both ports to blue, no reload, exit 130; status and the
/// next deploy agree.
#[test]
fn sigterm_in_the_nft_watch_window_switches_back_by_the_rule() {
    if !nft_ready() {
        return;
    }
    let project = Project::compose(App::compose().switch("nft").stop_grace("0s").settle("30s"));
    project.deploy_ok("cutover-demo:v1");
    let pids = nginx_pids(&project);
    let child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("settle");
    let open = rule_once_replaced(&project);
    assert_eq!(
        (open.primary_to, open.backup_to),
        (project.green, project.blue),
        "the window's rule"
    );
    let out = crate::harness::common::sigterm_and_wait(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("switched back to blue"), "{stderr}");
    let back = rule(&project);
    assert_eq!(
        (back.primary_to, back.backup_to),
        (project.blue, project.blue)
    );
    assert_eq!(nginx_pids(&project), pids, "nginx was reloaded");
    assert_eq!(project.get("/").unwrap().1.trim(), "version=v1 color=blue");
    assert_eq!(project.running_services(), ["web-blue"]);
    let status = project.status_json();
    assert_eq!(status["nginx_serves"], "blue", "{status:#}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status:#}");
    project.write_config(&App::compose().switch("nft").settle("0s"));
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(rule(&project).primary_to, project.green);
}

/// Two projects deploying at once write their own tables (and saved rulesets) at the same
/// time: each ends with its own rule, saved, and neither touched the other's.
#[test]
fn two_projects_deploying_at_once_each_keep_their_own_rule() {
    let (Some(one), Some(two)) = (deployed_in_nft_mode(), deployed_in_nft_mode()) else {
        return;
    };
    let children: Vec<_> = [&one, &two]
        .iter()
        .map(|p| p.spawn(["deploy", "--image", "cutover-demo:v2"]))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for p in [&one, &two] {
        let m = rule(p);
        assert_eq!(
            (m.primary_to, m.backup_to),
            (p.green, p.green),
            "{}",
            p.name
        );
        let saved = cutover::nft::saved(&p.switch_saved_dir(), &p.name);
        let text = std::fs::read_to_string(&saved).unwrap();
        assert_eq!(text, cutover::nft::ruleset(&p.name, &m));
        assert_eq!(p.get("/").unwrap().1.trim(), "version=v2 color=green");
    }
}

/// A switch that fails after the kernel took the new rule (here the include cannot be read
/// when the switch looks whether nginx needs the set-up): the rule goes back to blue before
/// green is removed, so the site is never routed to a stopped color.
#[test]
fn a_switch_failing_after_the_rule_was_written_puts_the_rule_back() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let include = project.include_path();
    let text = project.include();
    let child = project
        .command(["deploy", "--image", "cutover-demo:v2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Inside green's 1 s startup: the include becomes unreadable before the switch reads it.
    project.wait_for_step("health");
    std::fs::remove_file(&include).unwrap();
    std::fs::create_dir(&include).unwrap();
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir(&include).unwrap();
    std::fs::write(&include, &text).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("could not read {}", include.display())),
        "{stderr}"
    );
    let m = rule(&project);
    assert_eq!((m.primary_to, m.backup_to), (project.blue, project.blue));
    project.assert_still_serving("blue", "v1");
}

/// A PATH whose `nft` refuses every table replacement (`nft -e -j -f FILE`: a switch and its
/// undo) as the kernel refuses a transaction it cannot allocate; anything else (the lead's
/// `insert rule`s, listings, the check-only probe) goes to the real nft.
fn path_with_an_nft_that_cannot_replace(dir: &Path) -> String {
    path_with_an_nft(
        dir,
        "nft-no-replace",
        "[ \"$1\" = -e ] && { echo 'Error: Could not process rule: Cannot allocate memory' \
         >&2; exit 1; }",
    )
}

/// A switch whose lead took (the new rules inserted at the chain's head) but whose table
/// replacement failed, and the undo's replacement too: the lead's rules must not keep
/// routing to green, which the failed deploy removes. Blue keeps serving, and the next
/// deploy leaves the table with its two rules.
#[test]
fn a_lead_whose_replacement_and_undo_fail_leaves_the_rule_on_the_serving_color() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = path_with_an_nft_that_cannot_replace(tmp.path());
    let out = project
        .command(["deploy", "--image", "cutover-demo:v2"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Cannot allocate memory"), "{stderr}");
    let m = rule(&project);
    assert_eq!(
        (m.primary_to, m.backup_to),
        (project.blue, project.blue),
        "{stderr}"
    );
    project.assert_still_serving("blue", "v1");
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(rule(&project).primary_to, project.green);
    let listing = sh_ok(&format!("nft -j list table ip cutover_{}", project.name));
    assert_eq!(listing.matches("\"dnat\"").count(), 2, "{listing}");
}

/// A PATH whose `nft` refuses the table replacements (`nft -e -j -f FILE`) numbered in
/// `refused` (counting from 1, in `dir`), and hands everything else to the real nft.
fn path_with_an_nft_that_refuses_replacements(dir: &Path, refused: &[u32]) -> String {
    let count = dir.join("replacements");
    let cases: Vec<String> = refused.iter().map(u32::to_string).collect();
    path_with_an_nft(
        dir,
        "nft-refusing-replacements",
        &format!(
            "if [ \"$1\" = -e ]; then n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); \
             echo $n >{c}; case $n in {cases}) echo 'Error: Could not process rule: Cannot \
             allocate memory' >&2; exit 1;; esac; fi",
            c = count.display(),
            cases = cases.join("|")
        ),
    )
}

/// The project's saved ruleset (the boot restore's) is the one of `primary`, `backup`.
fn assert_saved(project: &Project, primary: u16, backup: u16) {
    let [p, b] = project.switch_ports;
    let saved = cutover::nft::saved(&project.switch_saved_dir(), &project.name);
    let m = cutover::nft::Mapping {
        primary: p,
        primary_to: primary,
        backup: b,
        backup_to: backup,
    };
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        cutover::nft::ruleset(&project.name, &m)
    );
}

/// The table's dnat rules, as the kernel lists them.
fn dnat_rules(project: &Project) -> usize {
    sh_ok(&format!("nft -j list table ip cutover_{}", project.name))
        .matches("\"dnat\"")
        .count()
}

/// After an nft deploy to `color`: only it runs, answering with `version` through nginx, and
/// the rule leads both ports to it with its two rules, saved as the kernel has them.
fn assert_nft_serving(project: &Project, color: &str, version: &str) {
    let port = project.port_of(color);
    let m = rule(project);
    assert_eq!((m.primary_to, m.backup_to), (port, port));
    assert_eq!(dnat_rules(project), 2);
    assert_saved(project, port, port);
    assert_eq!(project.running_services(), [format!("web-{color}")]);
    assert_eq!(
        project.get("/").unwrap().1.trim(),
        format!("version={version} color={color}")
    );
}

/// The project's rule once a replacement running beside a step has ended: until then the
/// table holds four rules, the led two in front (which `nft::read` takes, as the kernel
/// does: the first rule for a port is the one applied).
fn rule_once_replaced(project: &Project) -> cutover::nft::Mapping {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dnat_rules(project) != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "table ip cutover_{} never got back to two rules",
            project.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    rule(project)
}

/// A project in nft mode with a 1 s watch window and v1 deployed to blue; None where the nft
/// tests cannot run (said loudly by `nft_ready`).
fn deployed_with_a_window() -> Option<Project> {
    if !nft_ready() {
        return None;
    }
    let project = Project::compose(App::compose().switch("nft").settle("1s"));
    project.deploy_ok("cutover-demo:v1");
    Some(project)
}

/// `cutover deploy --image IMAGE` with an `nft` that refuses the replacements numbered in
/// `refused` ([`path_with_an_nft_that_refuses_replacements`]).
fn deploy_refusing(project: &Project, image: &str, refused: &[u32]) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap();
    let path = path_with_an_nft_that_refuses_replacements(tmp.path(), refused);
    project
        .command(["deploy", "--image", image])
        .env("PATH", &path)
        .output()
        .unwrap()
}

/// nft mode with a watch window: the switch and the window's close each lead with an `nft`
/// primed ahead (fed, never started then), and each replaces the table beside the wait that
/// follows (the window; the drain and stop). The deploy ends with the table's two rules on
/// green and the same ruleset saved for the boot restore.
#[test]
fn a_watch_window_leads_both_routes_and_replaces_the_table_beside_the_waits() {
    let Some(project) = deployed_with_a_window() else {
        return;
    };
    let run = project
        .cutover(["-v", "deploy", "--image", "cutover-demo:v2"])
        .success();
    let traced = |needle: &str| traced_ok(&run.stderr, needle);
    let [p, b] = project.switch_ports;
    let lead = |primary: u16, backup: u16| {
        format!(
            "nft -f - <<< 'insert rule ip cutover_{name} output ip daddr 127.0.0.1 tcp dport {b} \
             dnat to 127.0.0.1:{backup}; insert rule ip cutover_{name} output ip daddr 127.0.0.1 \
             tcp dport {p} dnat to 127.0.0.1:{primary}'  [primed]",
            name = project.name
        )
    };
    assert_eq!(
        traced(&lead(project.green, project.blue)),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(
        traced(&lead(project.green, project.green)),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(traced("nft -e -j -f "), 2, "{}", run.stderr);
    assert_eq!(traced("nft 'insert rule "), 0, "{}", run.stderr);
    assert!(!run.stderr.contains("never fed"), "{}", run.stderr);
    assert_nft_serving(&project, "green", "v2");
}

/// The switch's table replacement, running beside the watch window, fails (the lead took).
/// Once, it is tried again at the window's end and the deploy goes on, saying so; failing
/// again, it fails the window while the old color still runs, and the deploy switches back
/// by the rule. Either way the table ends with two rules, saved as the kernel has them.
#[test]
fn a_replacement_failing_beside_the_window_is_tried_again_then_switches_back() {
    let Some(project) = deployed_with_a_window() else {
        return;
    };
    let out = deploy_refusing(&project, "cutover-demo:v2", &[1]);
    let (stdout, stderr) = crate::common::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains(
            "replacing the nft rule's table beside the watch window failed (apply table ip"
        ),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("it was replaced at the window's end"),
        "{stderr}"
    );
    assert_nft_serving(&project, "green", "v2");

    let out = deploy_refusing(&project, "cutover-demo:v1", &[1, 2]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the nft rule's table could not be replaced after the switch"),
        "{stderr}"
    );
    assert!(stderr.contains("and again at the window's end"), "{stderr}");
    assert!(stderr.contains("Cannot allocate memory"), "{stderr}");
    assert!(stderr.contains("switched back to green"), "{stderr}");
    assert_nft_serving(&project, "green", "v2");
}

/// The window's close led both ports to green, then its table replacement (beside the drain
/// and the stop) failed: blue is gone by then, and the led rules route both ports to green,
/// so the deploy succeeds, saying what is left; the next deploy replaces the table.
#[test]
fn a_replacement_failing_beside_the_stop_is_a_note_and_the_next_deploy_replaces_the_table() {
    let Some(project) = deployed_with_a_window() else {
        return;
    };
    let out = deploy_refusing(&project, "cutover-demo:v2", &[2]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!(
            "replacing table ip cutover_{} after the watch window's close failed (apply table",
            project.name
        )),
        "{said}"
    );
    assert!(
        said.contains(
            "the kernel leads both switch ports to green (read back), as the window's close led \
             them"
        ),
        "{said}"
    );
    assert!(said.contains("Cannot allocate memory"), "{said}");
    assert_eq!(project.running_services(), ["web-green"]);
    let [p, b] = project.switch_ports;
    for port in [p, b] {
        let answer = cutover::demo::http_get(port, "/");
        assert!(
            answer
                .as_ref()
                .is_some_and(|(_, body)| body.contains("color=green")),
            "port {port}: {answer:?}"
        );
    }
    assert_eq!(dnat_rules(&project), 4);
    // The switch's replacement was saved; the close's was not.
    assert_saved(&project, project.green, project.blue);
    project.deploy_ok("cutover-demo:v1");
    assert_nft_serving(&project, "blue", "v1");
}

/// A new color that crashes on start (a bad setting) in `nginx.switch: nft`: the listener
/// check runs right after `up`, when Docker may already have torn the dead container's proxy
/// down. That is the container dying, not a box without a userland proxy: the deploy fails
/// as the health gate says (the container exited), never "nft cannot work on this box", and
/// the rule stays on blue. Three tries, since the proxy's teardown races the check (under
/// compose v1, the `::e2e_` matrix, whose `up` returns later, the proxy is gone every time).
#[test]
fn e2e_a_new_color_that_crashes_on_start_is_reported_as_dead_not_as_a_box_without_nft() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let crashing = App::compose()
        .switch("nft")
        .settle("0s")
        .restart("no")
        .env("ALLOCATE_MB", "not-a-number");
    project.write_config(&crashing);
    for _ in 0..3 {
        let stderr = project
            .cutover(["deploy", "--image", "cutover-demo:v2"])
            .code(1)
            .stderr;
        assert!(!stderr.contains("nft cannot work on this box"), "{stderr}");
        assert!(stderr.contains("the green container exited"), "{stderr}");
        assert_eq!(rule(&project).primary_to, project.blue);
        project.assert_still_serving("blue", "v1");
    }
}

/// A throwaway system user (no home, no shell; `userdel`ed on drop) and a sudoers drop-in allowing it exactly
/// `project`'s `switch-rule` argv, as bootstrap writes it for the deploy user, for this
/// build's binary. One test-only line more: `env_keep` of `CUTOVER_SWITCH_DIR`, so the root
/// side uses the project's own switch directory (in production sudo's `env_reset` drops it
/// and the root side uses /var/lib/cutover/switch), and of `PATH` without `secure_path`
/// (a distro whose sudoers sets none: the caller's PATH reaches the root side). The
/// drop-in goes on drop.
struct DeployUser {
    name: &'static str,
    dropin: std::path::PathBuf,
}

impl DeployUser {
    fn new(project: &str) -> Option<DeployUser> {
        if !require(
            "sudo",
            "the nft switch's root path for a deploy user who is not root",
        ) || !require(
            "runuser",
            "the nft switch's root path (runs the binary as another user)",
        ) || !require(
            "useradd",
            "the nft switch's root path (makes a throwaway user)",
        ) || !require(
            "visudo",
            "the nft switch's root path (checks the sudoers drop-in)",
        ) {
            return None;
        }
        let name = "cutover-swtest";
        sh_ok(&format!(
            "id -u {name} >/dev/null 2>&1 || useradd --system --no-create-home \
             --shell /usr/sbin/nologin {name} || id -u {name}"
        ));
        let bin = Path::new(env!("CARGO_BIN_EXE_cutover"));
        let text = format!(
            "Defaults:{name} env_keep += \"CUTOVER_SWITCH_DIR PATH\", !secure_path\n{}",
            cutover::switch_rule::sudoers(name, project, bin)
        );
        let dropin = std::path::PathBuf::from(format!(
            "/etc/sudoers.d/cutover-test-{}",
            project.replace('.', "_")
        ));
        let staged = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(staged.path(), &text).unwrap();
        sh_ok(&format!("visudo -c -q -f {}", staged.path().display()));
        sh_ok(&format!(
            "install -m 0440 -o root -g root {} {}",
            staged.path().display(),
            dropin.display()
        ));
        Some(DeployUser { name, dropin })
    }

    /// `cutover ARGS` as this user, `sudo -n` first when `sudo` is set.
    fn run(&self, project: &Project, sudo: bool, args: &[&str]) -> std::process::Output {
        self.run_with_path(project, sudo, args, "/usr/sbin:/usr/bin:/sbin:/bin")
    }

    /// [`DeployUser::run`] with the caller's `PATH`.
    fn run_with_path(
        &self,
        project: &Project,
        sudo: bool,
        args: &[&str],
        path: &str,
    ) -> std::process::Output {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", self.name, "--", "env"])
            .arg(format!(
                "{}={}",
                cutover::nft::SAVED_DIR_ENV,
                project.switch_saved_dir().display()
            ))
            .arg(format!("PATH={path}"));
        if sudo {
            cmd.args(["sudo", "-n"]);
        }
        cmd.arg(env!("CARGO_BIN_EXE_cutover"))
            .arg("switch-rule")
            .args(args)
            .current_dir("/")
            .output()
            .unwrap()
    }
}

impl Drop for DeployUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.dropin);
        let _ = std::process::Command::new("userdel")
            .arg(self.name)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Answers every request on 127.0.0.1:`port` with `body` (a color that is not a container).
fn http_listener(port: u16, body: &'static str) {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            use std::io::{Read, Write};
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

fn reply(out: &std::process::Output) -> cutover::switch_rule::Reply {
    assert!(
        out.status.success(),
        "switch-rule failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

fn refused(out: &std::process::Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "not refused: {stderr}");
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// The README's box deploys as a user who is not root: the rule changes through `sudo -n
// cutover switch-rule`, with the ports of the root-owned grant only.
#[test]
fn a_deploy_user_who_is_not_root_switches_through_sudo_and_nothing_else() {
    let Some(project) = deployed_in_nft_mode() else {
        return;
    };
    let Some(user) = DeployUser::new(&project.name) else {
        return;
    };
    let name = project.name.as_str();
    let dir = project.switch_saved_dir();
    // The grant bootstrap writes as root from cutover.yml.
    let grant = cutover::switch_rule::Grant {
        switch_ports: project.switch_ports,
        blue: project.blue,
        green: project.green,
    };
    let grant_file = cutover::switch_rule::grant_path(&dir, name);
    std::fs::write(&grant_file, cutover::switch_rule::grant_text(&grant)).unwrap();
    sh_ok(&format!("chmod 0600 {}", grant_file.display()));
    // Green is idle: a listener stands in for it.
    http_listener(project.green, "green-listener");
    let pids = nginx_pids(&project);
    let (_, before) = project.get("/").unwrap();
    assert!(before.contains("blue"), "{before}");

    let set = reply(&user.run(&project, true, &["set", name, "green", "blue"]));
    let to_green = grant.mapping(cutover::config::Color::Green, cutover::config::Color::Blue);
    assert_eq!(set.mapping, Some(to_green));
    assert_eq!(rule(&project), to_green);
    assert_eq!(project.get("/").unwrap().1, "green-listener");
    let read = reply(&user.run(&project, true, &["read", name]));
    assert_eq!(read.mapping, Some(to_green));
    assert_eq!(read.grant, grant);
    let saved = cutover::nft::saved(&dir, name);
    let mode = sh_ok(&format!("stat -c '%a %u' {}", saved.display()));
    assert_eq!(mode.trim(), "600 0", "{}", saved.display());
    assert!(std::fs::read_to_string(&saved).unwrap().contains(&format!(
        "dport {} dnat to 127.0.0.1:{}",
        grant.switch_ports[0], project.green
    )));
    reply(&user.run(&project, true, &["set", name, "blue", "blue"]));
    let (_, back) = project.get("/").unwrap();
    assert!(back.contains("blue"), "{back}");
    assert_eq!(
        nginx_pids(&project),
        pids,
        "nginx was reloaded or restarted"
    );

    // The caller's PATH (kept by a sudoers without `secure_path`) names an `nft` of its own:
    // the root side runs root's, never that one.
    let fake = tempfile::tempdir().unwrap();
    let planted = fake.path().join("ran-as-root");
    std::fs::write(
        fake.path().join("nft"),
        format!("#!/bin/sh\ntouch {}\n", planted.display()),
    )
    .unwrap();
    sh_ok(&format!("chmod 0755 {0} {0}/nft", fake.path().display()));
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.path().display());
    let set = reply(&user.run_with_path(&project, true, &["set", name, "green", "blue"], &path));
    assert_eq!(set.mapping, Some(to_green));
    assert!(!planted.exists(), "the caller's nft ran as root");
    assert_eq!(rule(&project), to_green, "the kernel's rule did not change");
    reply(&user.run(&project, true, &["set", name, "blue", "blue"]));

    // sudo's rule is exact: another project's name, an extra flag.
    let other = format!("{name}x");
    refused(&user.run(&project, true, &["read", &other]), "sudo");
    refused(
        &user.run(
            &project,
            true,
            &["set", name, "green", "blue", "-C", "/tmp"],
        ),
        "sudo",
    );
    // Without sudo the user cannot change the kernel's rules, and is told how it is meant.
    refused(
        &user.run(&project, false, &["set", name, "green", "blue"]),
        "runs as root",
    );
    // The root side's own wall (as root, its own checks only): a name without a grant, a
    // name that is no project name, a color that is not one, a grant that is a symlink or
    // that names absurd ports.
    let as_root = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("switch-rule")
            .args(args)
            .env(cutover::nft::SAVED_DIR_ENV, &dir)
            .current_dir("/")
            .output()
            .unwrap()
    };
    refused(
        &as_root(&["set", &other, "green", "blue"]),
        "has no switch grant",
    );
    refused(
        &as_root(&["set", "x; flush ruleset", "green", "blue"]),
        "project name: invalid name",
    );
    let bad_color = as_root(&["set", name, "purple", "blue"]);
    assert_eq!(bad_color.status.code(), Some(2), "{bad_color:?}");
    std::os::unix::fs::symlink(&grant_file, cutover::switch_rule::grant_path(&dir, &other))
        .unwrap();
    refused(
        &as_root(&["set", &other, "green", "blue"]),
        "a symlink is refused",
    );
    std::fs::remove_file(cutover::switch_rule::grant_path(&dir, &other)).unwrap();
    // Root sides of one project take turns on the grant's lock, and a SIGTERM (sudo relays
    // it when the caller gives up) neither kills one nor lets it change the rule afterwards
    // (the caller's undo may already have run): while this test holds the lock, a `set`
    // waits; SIGTERMed there, it ends saying nothing was done, and the kernel and the saved
    // file still agree on blue.
    {
        let held = std::fs::File::open(&grant_file).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["switch-rule", "set", name, "green", "blue"])
            .env(cutover::nft::SAVED_DIR_ENV, &dir)
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let waiting = |pid: u32| {
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| l.contains("->") && l.split_whitespace().any(|w| w == pid.to_string()))
        };
        let mut polls = 0;
        while !waiting(pid) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "switch-rule did not wait for the held lock: {:?}",
                child.wait_with_output()
            );
            polls += 1;
            assert!(polls < 3000, "switch-rule never waited on the grant's lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        sh_ok(&format!("kill -TERM {pid}"));
        drop(held);
        let out = child.wait_with_output().unwrap();
        refused(&out, "the caller gave up");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nothing done"),
            "{out:?}"
        );
        assert_eq!(rule(&project).primary_to, project.blue);
        assert!(std::fs::read_to_string(&saved).unwrap().contains(&format!(
            "dport {} dnat to 127.0.0.1:{}",
            grant.switch_ports[0], project.blue
        )));
    }
    // A grant naming a port something listens on (a local database): the root side itself
    // refuses to take it, whoever calls.
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_port = db.local_addr().unwrap().port();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    let taken = cutover::switch_rule::Grant {
        switch_ports: [db_port, free_port],
        ..grant
    };
    let other_grant = cutover::switch_rule::grant_path(&dir, &other);
    std::fs::write(&other_grant, cutover::switch_rule::grant_text(&taken)).unwrap();
    sh_ok(&format!("chmod 0600 {}", other_grant.display()));
    refused(
        &as_root(&["set", &other, "green", "blue"]),
        &format!("something listens on port {db_port}, a switch port of"),
    );
    std::fs::remove_file(&other_grant).unwrap();
    drop(db);
    let absurd = cutover::switch_rule::Grant { green: 22, ..grant };
    std::fs::write(&grant_file, cutover::switch_rule::grant_text(&absurd)).unwrap();
    refused(
        &user.run(&project, true, &["set", name, "green", "blue"]),
        "port 22 is below 1024",
    );
    // Nothing refused touched the kernel: the rule still leads to blue, no other table.
    assert_eq!(rule(&project).primary_to, project.blue);
    let tables = sh_ok("nft list tables");
    assert!(!tables.contains(&format!("cutover_{other}")), "{tables}");
    assert_eq!(nginx_pids(&project), pids);
}

// `cutover switch-rule --help` is read by whoever finds the sudoers rule: it says what the
// command trusts, how a deploy calls it, what each color argument means and how a project's
// root path is retired.
#[test]
fn switch_rule_help_teaches_the_call_the_trust_and_the_retirement() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let help = run(&["switch-rule", "--help"]);
    for want in [
        "sudo -n /usr/local/lib/cutover-root/cutover switch-rule set web green blue",
        "/var/lib/cutover/switch/<project>.grant",
        "/etc/sudoers.d/cutover-switch-<project>",
        "is refused (exit 1",
        "Retiring a project",
        "run `cutover bootstrap` again",
    ] {
        assert!(help.contains(want), "{want:?} not in:\n{help}");
    }
    let set = run(&["switch-rule", "set", "--help"]);
    assert!(
        set.contains("<PRIMARY>  The color nginx's primary"),
        "{set}"
    );
    assert!(set.contains("<BACKUP>   The color nginx's backup"), "{set}");
}
