//! `cutover tls issue` end to end with no internet: Debian's `pebble` (the ACME test CA) and
//! `pebble-challtestsrv` (its mock DNS, answering 127.0.0.1 for every name) on loopback,
//! certbot from Debian, the http-01 challenge answered by the project's own nginx (a temp
//! prefix on a loopback port) from the webroot, and the demo app fetched over HTTPS through
//! nginx with curl trusting pebble's root (from its management endpoint `/roots/0`).
//!
//! pebble and its DNS are harness/acme.rs's.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::free_port;
use crate::harness::acme::{ready, run, Acme};
use crate::harness::project::{App, Project, Run};

const DOMAIN: &str = "app.cutover.test";

/// The `nginx.tls` section pointing every certbot path into `dir`.
fn tls_section(acme: &Acme, dir: &Path, https_port: u16) -> serde_json::Value {
    json!({
        "domains": [DOMAIN],
        "email": "ops@cutover.test",
        "acme_server": acme.directory(),
        "listen": format!("127.0.0.1:{https_port}"),
        "webroot": dir.join("webroot"),
        "config_dir": dir.join("letsencrypt"),
        "work_dir": dir.join("letsencrypt-work"),
        "logs_dir": dir.join("letsencrypt-logs"),
        "renew_cron": dir.join("cron.d/cutover-certbot"),
    })
}

fn cutover_tls(project: &Project, acme: &Acme, args: &[&str]) -> Run {
    let mut cmd = project.command(["tls"].iter().chain(args));
    cmd.env("REQUESTS_CA_BUNDLE", acme.listener_ca());
    Run::of(cmd)
}

/// `curl` through nginx's HTTPS port with only pebble's root trusted: (status, body).
fn https_get(acme: &Acme, port: u16, path: &str) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(acme.issuer_root())
        .arg("--resolve")
        .arg(format!("{DOMAIN}:{port}:127.0.0.1"))
        .arg(format!("https://{DOMAIN}:{port}{path}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap(), body.to_string()))
}

/// `curl` over plain HTTP: (status, Location header).
fn http_head(port: u16, path: &str) -> (u16, String) {
    let out = run(
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
            ])
            .args(["-H", &format!("Host: {DOMAIN}")])
            .arg(format!("http://127.0.0.1:{port}{path}")),
        "curl over HTTP",
    );
    let (code, location) = out.split_once(' ').unwrap();
    (code.parse().unwrap(), location.to_string())
}

/// The serial of the certificate nginx presents on `port` right now.
fn served_serial(port: u16) -> String {
    run(
        Command::new("sh").arg("-c").arg(format!(
            "timeout 10 openssl s_client -connect 127.0.0.1:{port} -servername {DOMAIN} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial"
        )),
        "read the served certificate",
    )
    .trim()
    .to_string()
}

fn step_of(run: &Run) -> serde_json::Value {
    let report = run.stdout_json();
    crate::json_contract::validate("tls.schema.json", &report);
    report["steps"][0].clone()
}

#[test]
fn issues_serves_and_renews_a_certificate_through_nginx() {
    if !ready() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    // nginx's workers (nobody) read the webroot inside it.
    std::fs::set_permissions(
        certs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut app = App::compose().stop_grace("0s");
    let project = Project::compose(app.clone());
    project.deploy_ok("cutover-demo:v1");
    let acme = Acme::start(project.port);
    let https = free_port();
    app = app.tls(tls_section(&acme, certs.path(), https));
    project.write_config(&app);

    // A dry run plans certbot and changes nothing.
    let site_before = std::fs::read(project.prefix().join("site.conf")).unwrap();
    let plan = step_of(&cutover_tls(&project, &acme, &["issue", "--dry-run", "--json"]).success());
    assert_eq!(plan["status"], "changed", "{plan}");
    let planned = plan["changes"].to_string();
    assert!(planned.contains("certbot certonly --webroot"), "{planned}");
    assert_eq!(
        std::fs::read(project.prefix().join("site.conf")).unwrap(),
        site_before
    );
    assert!(!certs.path().join("webroot").exists());
    assert!(!certs.path().join("letsencrypt").exists());

    let issued = cutover_tls(&project, &acme, &["issue", "--json"]);
    assert!(issued.ok(), "{issued}\npebble log:\n{}", acme.log());
    assert_eq!(step_of(&issued)["status"], "changed");

    // The app over HTTPS, trusted through pebble's root only; TLS 1.1 is refused.
    let (code, body) = https_get(&acme, https, "/").expect("HTTPS through nginx");
    assert_eq!((code, body.trim()), (200, "version=v1 color=blue"));
    crate::common::loud("tls test: HTTPS answers");
    let old_tls = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--tls-max", "1.1", "--cacert"])
        .arg(acme.issuer_root())
        .arg("--resolve")
        .arg(format!("{DOMAIN}:{https}:127.0.0.1"))
        .arg(format!("https://{DOMAIN}:{https}/"))
        .output()
        .unwrap();
    assert!(!old_tls.status.success(), "TLS 1.1 was accepted");
    // No HSTS unless opted in.
    let headers = run(
        Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(acme.issuer_root())
            .arg("--resolve")
            .arg(format!("{DOMAIN}:{https}:127.0.0.1"))
            .arg(format!("https://{DOMAIN}:{https}/")),
        "headers over HTTPS",
    );
    assert!(
        !headers
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{headers}"
    );

    // HTTP redirects to HTTPS, except the challenge path and cutover's loopback probe.
    assert_eq!(
        http_head(project.port, "/some/page?x=1"),
        (301, format!("https://{DOMAIN}:{https}/some/page?x=1")),
        "{}\n{}",
        std::fs::read_to_string(project.prefix().join("site.conf")).unwrap(),
        std::fs::read_to_string(project.prefix().join("logs/error.log")).unwrap(),
    );
    let token_dir = certs.path().join("webroot/.well-known/acme-challenge");
    std::fs::write(token_dir.join("token-123"), "token-123.thumbprint").unwrap();
    assert_eq!(
        http_head(project.port, "/.well-known/acme-challenge/token-123").0,
        200
    );
    assert_eq!(project.get("/.cutover/active").unwrap().0, 200);

    // Renewal is installed: the deploy hook tests and reloads this nginx; cron runs renew.
    let hook = certs.path().join(format!(
        "letsencrypt/renewal-hooks/deploy/cutover-{}",
        project.name
    ));
    let hook_text = std::fs::read_to_string(&hook).unwrap();
    assert!(
        hook_text.contains(" -t\n") && hook_text.contains("-s reload"),
        "{hook_text}"
    );
    let cron = std::fs::read_to_string(certs.path().join("cron.d/cutover-certbot")).unwrap();
    assert!(cron.contains("certbot renew -q --config-dir"), "{cron}");

    // A second run with a valid certificate changes nothing.
    let site = std::fs::read(project.prefix().join("site.conf")).unwrap();
    let again = step_of(&cutover_tls(&project, &acme, &["issue", "--json"]).success());
    assert_eq!(again["status"], "ok", "{again}");
    assert_eq!(again["changes"], json!([]));
    assert_eq!(
        std::fs::read(project.prefix().join("site.conf")).unwrap(),
        site
    );

    // Deploys keep working behind the HTTPS site (the probe goes over HTTP on loopback).
    project.deploy_ok("cutover-demo:v2");
    let (_, body) = https_get(&acme, https, "/").unwrap();
    assert_eq!(body.trim(), "version=v2 color=green");

    // Maintenance on an HTTPS site: challenges are answered from the webroot on both
    // servers, and nothing under the challenge prefix reaches the app.
    project.cutover(["maintenance", "on"]).success();
    assert_eq!(https_get(&acme, https, "/").unwrap().0, 503);
    let challenge = "/.well-known/acme-challenge/token-123";
    let (code, body) = https_get(&acme, https, challenge).unwrap();
    assert_eq!((code, body.trim()), (200, "token-123.thumbprint"));
    assert_eq!(http_head(project.port, challenge).0, 200);
    let (code, body) = https_get(&acme, https, "/.well-known/acme-challenge/no-such").unwrap();
    assert_eq!(
        code, 404,
        "served by nginx from the webroot, not the app: {body}"
    );
    assert!(!body.contains("version="), "{body}");
    project.cutover(["maintenance", "off"]).success();

    // A forced renewal under HTTPS load: nginx serves the new certificate, no request fails.
    let before = served_serial(https);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let root = acme.issuer_root();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                sent.fetch_add(1, Ordering::SeqCst);
                let out = Command::new("curl")
                    .args([
                        "-sS",
                        "--max-time",
                        "10",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--cacert",
                    ])
                    .arg(&root)
                    .arg("--resolve")
                    .arg(format!("{DOMAIN}:{https}:127.0.0.1"))
                    .arg(format!("https://{DOMAIN}:{https}/"))
                    .output()
                    .unwrap();
                if !out.status.success() || out.stdout != b"200" {
                    failed.fetch_add(1, Ordering::SeqCst);
                    errors.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
            errors
        })
    };
    let wait_for_requests = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the load loop sent fewer than {n} requests in 30s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_requests(5);
    let le = certs.path().join("letsencrypt");
    run(
        Command::new("certbot")
            .args([
                "renew",
                "--force-renewal",
                "--no-random-sleep-on-renew",
                "--non-interactive",
            ])
            .arg("--config-dir")
            .arg(&le)
            .arg("--work-dir")
            .arg(certs.path().join("letsencrypt-work"))
            .arg("--logs-dir")
            .arg(certs.path().join("letsencrypt-logs"))
            .env("REQUESTS_CA_BUNDLE", acme.listener_ca()),
        "certbot renew --force-renewal",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = served_serial(https);
    while after == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = served_serial(https);
    }
    wait_for_requests(sent.load(Ordering::SeqCst) + 5);
    stop.store(true, Ordering::SeqCst);
    let errors = load.join().unwrap();
    assert_ne!(
        after, before,
        "nginx still serves the old certificate after the deploy hook"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed HTTPS requests during renewal ({} sent): {errors:?}",
        sent.load(Ordering::SeqCst)
    );
    crate::common::loud(&format!(
        "tls renewal: {} HTTPS requests, 0 failed, serial {before} -> {after}",
        sent.load(Ordering::SeqCst)
    ));
}

#[test]
fn an_unreachable_challenge_leaves_the_http_site_serving_and_says_why() {
    if !ready() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let mut app = App::compose().stop_grace("0s");
    let project = Project::compose(app.clone());
    project.deploy_ok("cutover-demo:v1");
    // pebble checks the challenge on a port nothing listens on.
    std::fs::set_permissions(
        certs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let acme = Acme::start(free_port());
    app = app.tls(tls_section(&acme, certs.path(), free_port()));
    project.write_config(&app);

    let failed = cutover_tls(&project, &acme, &["issue"]).code(1);
    let stderr = failed.stderr.clone();
    assert!(
        stderr.contains(&format!(
            "no certificate for {DOMAIN} from {}",
            acme.directory()
        )) && stderr.contains("the HTTP site keeps serving"),
        "{failed}"
    );
    // certbot's own reason reaches the operator.
    assert!(
        stderr.contains("Some challenges have failed")
            || stderr.contains("connection refused")
            || stderr.contains("Connection refused"),
        "{failed}"
    );
    let site = std::fs::read_to_string(project.prefix().join("site.conf")).unwrap();
    assert!(!site.contains("ssl_certificate"), "{site}");
    assert!(site.contains("/.well-known/acme-challenge/"), "{site}");
    assert!(!certs
        .path()
        .join(format!("letsencrypt/live/{DOMAIN}"))
        .exists());
    let (code, body) = project.get("/").expect("HTTP still answers");
    assert_eq!((code, body.trim()), (200, "version=v1 color=blue"));
}

/// Under `--root` nothing runs: certbot and nginx are listed as not run, the challenge dir,
/// site, deploy hook and cron file land under the root, and a second run changes nothing.
#[test]
fn under_root_certbot_is_listed_and_the_files_land_under_the_root() {
    let project = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    crate::common::project_from_fixture(project.path(), "minimal", |map| {
        crate::common::set_key(map, "nginx", "server_name", json!(DOMAIN));
        crate::common::set_key(
            map,
            "nginx",
            "tls",
            json!({ "domains": [DOMAIN], "email": "ops@cutover.test" }),
        );
    });
    let run = |args: &[&str]| {
        let out = crate::common::cutover(project.path())
            .args(["tls", "issue", "--json", "--root"])
            .arg(root.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        crate::json_contract::validate("tls.schema.json", &report);
        report["steps"][0].clone()
    };
    let first = run(&[]);
    assert_eq!(first["status"], "changed", "{first}");
    let not_run = first["not_run"].to_string();
    assert!(not_run.contains("certbot certonly --webroot -w /var/www/cutover-acme --cert-name app.cutover.test -d app.cutover.test --server https://acme-v02.api.letsencrypt.org/directory"), "{not_run}");
    assert!(
        not_run.contains("nginx -t") && not_run.contains("nginx -s reload"),
        "{not_run}"
    );
    let r = root.path();
    assert!(r
        .join("var/www/cutover-acme/.well-known/acme-challenge")
        .is_dir());
    let site = std::fs::read_to_string(r.join("etc/nginx/sites-enabled/cutover.conf")).unwrap();
    assert!(
        site.contains("location /.well-known/acme-challenge/") && !site.contains("ssl"),
        "{site}"
    );
    let hook = r.join("etc/letsencrypt/renewal-hooks/deploy/cutover-minimal");
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap().lines().last(),
        Some("nginx -s reload")
    );
    let cron = std::fs::read_to_string(r.join("etc/cron.d/cutover-certbot-minimal")).unwrap();
    assert!(
        cron.contains("root certbot renew -q --config-dir /etc/letsencrypt"),
        "{cron}"
    );

    let second = run(&[]);
    assert_eq!(second["status"], "ok", "{second}");
    assert_eq!(second["changes"], json!([]));
    // Still no certificate under the root: certbot is listed again, never run.
    assert!(second["not_run"].to_string().contains("certbot certonly"));
}

/// A project with `nginx.tls` at the given domain, in `dir` (the `minimal` fixture).
fn tls_project(dir: &Path, tls: bool) {
    crate::common::project_from_fixture(dir, "minimal", |map| {
        crate::common::set_key(map, "nginx", "server_name", json!(DOMAIN));
        if tls {
            crate::common::set_key(
                map,
                "nginx",
                "tls",
                json!({ "domains": [DOMAIN], "email": "ops@cutover.test" }),
            );
        }
    });
}

/// Bootstrap's packages step installs certbot exactly when `nginx.tls` is configured.
#[test]
fn bootstrap_installs_certbot_with_nginx_tls_only() {
    for tls in [true, false] {
        let project = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        tls_project(project.path(), tls);
        let r = root.path().to_str().unwrap();
        let (report, _, _) =
            crate::bootstrap::bootstrap(project.path(), &["--swap", "off", "--root", r]);
        let listed = crate::bootstrap::not_run(&report);
        let install = listed
            .iter()
            .find(|c| c.contains(" install ") && c.contains("nginx"))
            .unwrap_or_else(|| panic!("no install listed: {listed:?}"));
        assert_eq!(
            install.split_whitespace().any(|w| w == "certbot"),
            tls,
            "tls={tls}: {install}"
        );
    }
}

/// A custom site template that ignores `tls` is refused (naming the template and what it
/// must render) before anything is written; one with the built-in's `tls` blocks works.
#[test]
fn a_custom_site_template_must_render_the_tls_pieces() {
    let project = tempfile::tempdir().unwrap();
    tls_project(project.path(), true);
    let templates = project.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("nginx-site.conf.j2"),
        "server {\n    listen {{ nginx.listen }};\n    include {{ nginx.include }};\n    location / { proxy_pass $service_url; }\n}\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let issue = |root: &Path| {
        crate::common::cutover(project.path())
            .args(["tls", "issue", "--root"])
            .arg(root)
            .output()
            .unwrap()
    };
    let refused = |wanted: &str| {
        let out = issue(root.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("templates/nginx-site.conf.j2") && stderr.contains(wanted),
            "{stderr}"
        );
        assert!(
            std::fs::read_dir(root.path()).unwrap().next().is_none(),
            "something was written"
        );
    };
    refused("a `location /.well-known/acme-challenge/` with `root /var/www/cutover-acme`");
    // The challenge alone is not enough: once the certificate exists the site must use it.
    std::fs::write(
        templates.join("nginx-site.conf.j2"),
        "server {\n    listen {{ nginx.listen }};\n    include {{ nginx.include }};\n    location /.well-known/acme-challenge/ { root {{ tls.webroot }}; }\n    location / { proxy_pass $service_url; }\n}\n",
    )
    .unwrap();
    refused("a `listen … ssl` server with `ssl_certificate /etc/letsencrypt/live/app.cutover.test/fullchain.pem`");

    // The built-in template as the custom one: accepted.
    std::fs::write(
        templates.join("nginx-site.conf.j2"),
        std::fs::read_to_string(crate::common::repo_root().join("templates/nginx-site.conf.j2"))
            .unwrap(),
    )
    .unwrap();
    let out = issue(root.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
