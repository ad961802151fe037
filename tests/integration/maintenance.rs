//! `cutover maintenance on|off` against the real nginx and Docker engine: the public gets
//! 503 + the page + `Retry-After`, cutover's loopback probes still reach the app, a deploy
//! during maintenance keeps it on, and a load client sees no failure around either reload.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cutover::demo::{http_get_as, Load};

use crate::harness::project::ready;
use crate::harness::project::{App, Project};

/// `maintenance on` with a message that needs escaping and a Retry-After of 90 s.
const ON: [&str; 6] = [
    "maintenance",
    "on",
    "--message",
    "Upgrading <db> & 'cache', back at 14:00",
    "--retry-after",
    "90s",
];

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn maintenance_holds_everyone_but_the_probe_and_survives_a_deploy_under_load() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().stop_grace("0s"));
    project.deploy_ok("cutover-demo:v1");
    let include = project.include_path();
    let page = cutover::maintenance::page_path(&include);
    let flag = project.path().join(".cutover/maintenance.json");

    // A dry run and a bad message change nothing.
    let before = project.include();
    let plan = project
        .cutover(["maintenance", "on", "--dry-run", "--json"])
        .success()
        .stdout_json();
    assert_eq!(
        (plan["dry_run"].as_bool(), plan["changed"].as_bool()),
        (Some(true), Some(true))
    );
    crate::json_contract::validate("maintenance.schema.json", &plan);
    let bad = project
        .cutover(["maintenance", "on", "--message", " "])
        .code(1);
    assert!(
        bad.stderr.contains("--message: the message is empty"),
        "{}",
        bad.stderr
    );
    assert_eq!(project.include(), before);
    assert!(!flag.exists() && !page.exists());

    let load = Load::start(project.port, Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(300));
    let on = project.cutover(ON).success();
    assert!(
        on.stdout.contains("turned maintenance mode on"),
        "{}",
        on.stdout
    );
    assert_eq!((mode(&page), mode(&flag)), (0o644, 0o600));

    // The public: 503, the escaped page, Retry-After.
    let held = http_get_as(project.port, "localhost", "/anything").unwrap();
    assert_eq!(held.code, 503, "{held:?}");
    assert_eq!(held.header("Retry-After"), Some("90"));
    assert!(held
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        held.body
            .contains("Upgrading &lt;db&gt; &amp; &#39;cache&#39;, back at 14:00"),
        "{}",
        held.body
    );
    // cutover's probes from this box: the marker and the health path still reach the app.
    let marker = http_get_as(project.port, "localhost", "/.cutover/active").unwrap();
    assert_eq!(marker.code, 200);
    assert!(marker.body.starts_with("blue "), "{}", marker.body);
    assert_eq!(
        http_get_as(project.port, "localhost", "/health")
            .unwrap()
            .code,
        200
    );
    // Without nginx.tls there is no challenge location: an ACME-looking path is held like
    // every other, never let through to the app.
    assert_eq!(
        http_get_as(project.port, "localhost", "/.well-known/acme-challenge/x")
            .unwrap()
            .code,
        503
    );
    // The page's location is internal: asked for directly, it is not there.
    assert_eq!(
        http_get_as(project.port, "localhost", cutover::maintenance::PAGE_URI)
            .unwrap()
            .code,
        404
    );

    let status = project.cutover(["status"]).success();
    assert!(
        status.stdout.contains("maintenance mode is ON"),
        "{}",
        status.stdout
    );
    let json = project.status_json();
    assert_eq!(json["maintenance"]["retry_after_secs"], 90);
    let again = project.cutover(ON).success();
    assert!(again.stdout.contains("already on"), "{}", again.stdout);

    // A deploy during maintenance probes through nginx, switches, and keeps the 503.
    let deploy = project.deploy_ok("cutover-demo:v2");
    assert!(
        deploy.stderr.contains("maintenance mode is on"),
        "{}",
        deploy.stderr
    );
    assert!(
        deploy.stdout.contains("the deploy keeps it on"),
        "{}",
        deploy.stdout
    );
    assert!(project.include().contains(cutover::maintenance::PAGE_URI));
    let marker = http_get_as(project.port, "localhost", "/.cutover/active").unwrap();
    assert!(marker.body.starts_with("green "), "{}", marker.body);
    assert_eq!(
        http_get_as(project.port, "localhost", "/").unwrap().code,
        503
    );

    let off = project.cutover(["maintenance", "off"]).success();
    assert!(
        off.stdout.contains("turned maintenance mode off"),
        "{}",
        off.stdout
    );
    assert!(!flag.exists() && !page.exists());
    assert!(!project.include().contains("cutover_hold"));
    std::thread::sleep(Duration::from_millis(300));
    let tally = load.finish();
    let (code, body) = project.get("/").unwrap();
    assert_eq!((code, body.trim()), (200, "version=v2 color=green"));
    assert!(!project
        .cutover(["status"])
        .success()
        .stdout
        .contains("maintenance"));

    // Only 200s and intended 503s (with Retry-After), both on each side of the reloads.
    assert_eq!(
        tally.failed, 0,
        "{} failed of {}: {:?}",
        tally.failed, tally.sent, tally.failures
    );
    assert!(tally.held > 10 && tally.ok > 10, "{tally:?}");
}

/// A custom include template without the maintenance block is refused before nginx is
/// touched, naming the template.
#[test]
fn a_custom_include_without_the_maintenance_block_is_refused() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    std::fs::create_dir_all(project.path().join("templates")).unwrap();
    std::fs::write(
        project.path().join("templates/service-url.inc.j2"),
        "set $service_url {{ upstream }};\n",
    )
    .unwrap();
    refused_leaving_all_as_it_was(
        &project,
        &[
            "renders no maintenance block",
            "templates/service-url.inc.j2",
        ],
    );
}

/// `maintenance on` fails saying `needles`, and the include, the flag and the page are as
/// they were (off), the app still served.
fn refused_leaving_all_as_it_was(project: &Project, needles: &[&str]) {
    let before = project.include();
    let run = project.cutover(["maintenance", "on"]).code(1);
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "no {needle:?} in {}",
            run.stderr
        );
    }
    assert_eq!(project.include(), before);
    assert!(!project.path().join(".cutover/maintenance.json").exists());
    assert!(!cutover::maintenance::page_path(&project.include_path()).exists());
    assert_eq!(project.get("/").unwrap().0, 200);
}

/// A config nginx rejects (`nginx -t` fails) leaves everything as it was: the include, no
/// flag, no page, and the app still served.
#[test]
fn a_failing_nginx_test_leaves_maintenance_off_and_the_include_as_it_was() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    project.write_config(&App::compose().nginx_test(&["false"]));
    refused_leaving_all_as_it_was(
        &project,
        &[
            "could not turn maintenance mode on",
            "restored the previous one",
        ],
    );
}
