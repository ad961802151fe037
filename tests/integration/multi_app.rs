//! Two cutover projects behind ONE nginx on one port, routed by `nginx.server_name`: each
//! deploy, rollback and prune of one, under load on both hosts, leaves the other's files,
//! containers, images and ports exactly as they were; a third project that would collide
//! (a color port, a server name) is refused with both projects named, before anything changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cutover::demo::{http_get_as, Load};

use crate::harness::project::ready;
use crate::harness::project::{App, Project};

/// What one project owns on the box, to compare before and after the other's commands.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    files: BTreeMap<String, Vec<u8>>,
    /// `id state image` of every container of its compose project.
    containers: Vec<String>,
    /// The image ids of what it records (each color's image, its rollback target).
    images: Vec<String>,
    /// What its site answers for `/` (by Host).
    answer: String,
}

fn files_of(dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_of(&path, out);
        } else {
            out.insert(path.display().to_string(), std::fs::read(&path).unwrap());
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshot(project: &Project, host: &str) -> Snapshot {
    let mut files = BTreeMap::new();
    for file in [
        project.include_path(),
        project.site_path(),
        project.path().join("cutover.yml"),
    ] {
        files.insert(file.display().to_string(), std::fs::read(&file).unwrap());
    }
    files_of(&project.path().join(".cutover"), &mut files);
    let containers = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", project.name),
        "--format",
        "{{.ID}} {{.State}} {{.Image}}",
    ]);
    let mut containers: Vec<String> = containers.lines().map(str::to_string).collect();
    containers.sort();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.path().join(".cutover/state.json")).unwrap())
            .unwrap();
    let mut images: Vec<String> = state["images"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, image)| image.as_str())
        .chain(state["previous_image"].as_str())
        .map(|image| {
            docker(&["image", "inspect", "--format", "{{.Id}}", image])
                .trim()
                .to_string()
        })
        .collect();
    images.sort();
    let answer = http_get_as(project.port, host, "/")
        .map(|r| r.body)
        .unwrap_or_default();
    Snapshot {
        files,
        containers,
        images,
        answer,
    }
}

#[test]
fn two_projects_behind_one_nginx_never_touch_each_other_under_load() {
    if !ready() {
        return;
    }
    let a = Project::compose(
        App::compose()
            .stop_grace("0s")
            .server_name("a.cutover.test"),
    );
    let b = Project::compose_behind(
        App::compose()
            .stop_grace("0s")
            .server_name("b.cutover.test"),
        &a,
    );
    assert_eq!(a.port, b.port, "one nginx, one port");
    assert_ne!(a.include_path(), b.include_path());
    assert_ne!(a.site_path(), b.site_path());
    a.deploy_ok("cutover-demo:v1");
    b.deploy_ok("cutover-demo:v1");

    let load_a = Load::start_as(a.port, "a.cutover.test", Duration::from_secs(300));
    let load_b = Load::start_as(b.port, "b.cutover.test", Duration::from_secs(300));
    let hosts = [(&a, "a.cutover.test"), (&b, "b.cutover.test")];
    let steps: [(usize, &[&str]); 6] = [
        (0, &["deploy", "--image", "cutover-demo:v2"]),
        (1, &["deploy", "--image", "cutover-demo:v2"]),
        (0, &["rollback"]),
        (1, &["rollback"]),
        (0, &["prune"]),
        (1, &["prune"]),
    ];
    for (who, args) in steps {
        let (project, _) = hosts[who];
        let (other, other_host) = hosts[1 - who];
        let before = snapshot(other, other_host);
        project.cutover(args).success();
        let after = snapshot(other, other_host);
        assert_eq!(
            before,
            after,
            "`cutover {}` of {} changed {}",
            args.join(" "),
            project.name,
            other.name
        );
        if who == 0 && args[0] == "deploy" {
            // Routed by Host: a serves v2 while b still serves v1 on the same port.
            let body = |host| http_get_as(a.port, host, "/").unwrap().body;
            assert_eq!(body("a.cutover.test").trim(), "version=v2 color=green");
            assert_eq!(body("b.cutover.test").trim(), "version=v1 color=blue");
        }
    }
    let (tally_a, tally_b) = (load_a.finish(), load_b.finish());
    for (name, tally) in [("a", &tally_a), ("b", &tally_b)] {
        assert_eq!(
            tally.failed, 0,
            "{name}: {} failed of {}: {:?}",
            tally.failed, tally.sent, tally.failures
        );
        assert!(tally.ok > 20, "{name}: {tally:?}");
        assert!(
            tally.by_answer.keys().any(|k| k.contains("version=v2")),
            "{name} never served v2: {:?}",
            tally.by_answer
        );
    }

    // A third project claiming a's blue port and a's server name is refused, both named,
    // by deploy and by bootstrap, and nothing of a's or c's changes.
    let mut c = Project::compose_behind(
        App::compose()
            .stop_grace("0s")
            .server_name("a.cutover.test"),
        &a,
    );
    c.blue = a.blue;
    c.write_config(
        &App::compose()
            .stop_grace("0s")
            .server_name("a.cutover.test"),
    );
    let before = snapshot(&a, "a.cutover.test");
    for args in [
        &["deploy", "--image", "cutover-demo:v2"][..],
        &["bootstrap", "--dry-run", "--no-install"][..],
    ] {
        let refused = c.cutover(args).code(1);
        for needle in [
            format!("project {}", a.name),
            format!("project {}", c.name),
            format!("port {}: colors.blue", a.blue),
            "server name a.cutover.test".to_string(),
            // The way out when the other project is gone: its registry entry, by path.
            "remove its registry entry:".to_string(),
            format!("project {} in ", a.name),
        ] {
            assert!(
                refused.stderr.contains(&needle),
                "{args:?}: no {needle:?} in\n{}",
                refused.stderr
            );
        }
    }
    assert_eq!(snapshot(&a, "a.cutover.test"), before);
    assert!(cutover::docker::compose::containers_of(&c.name)
        .unwrap()
        .is_empty());
    assert!(!c.path().join(".cutover/claims.json").exists());
    // Like every file in the state dir, the claims are the owner's only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(a.path().join(".cutover/claims.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Issue #21, defect 5: nginx compares server names without case and without a trailing
/// dot, so `APP.Cutover.TEST.` is `app.cutover.test`. The claims check compares them the same
/// way; and when the check cannot see the other project (another registry), the probe after
/// the reload still notices that nginx answers with the other project's include: the marker
/// names the project and the address, not only the color.
#[test]
fn a_server_name_differing_only_in_case_and_trailing_dot_is_the_same_name() {
    if !ready() {
        return;
    }
    let a = Project::compose(
        App::compose()
            .stop_grace("0s")
            .server_name("app.cutover.test"),
    );
    a.deploy_ok("cutover-demo:v1");
    let c_app = App::compose()
        .stop_grace("0s")
        .server_name("APP.Cutover.TEST.");
    let c = Project::compose_behind(c_app, &a);
    let before = snapshot(&a, "app.cutover.test");

    let refused = c.cutover(["deploy", "--image", "cutover-demo:v2"]).code(1);
    for needle in [
        format!("project {}", a.name),
        "server name APP.Cutover.TEST. (to nginx app.cutover.test, the same as app.cutover.test)"
            .to_string(),
    ] {
        assert!(
            refused.stderr.contains(&needle),
            "no {needle:?} in\n{}",
            refused.stderr
        );
    }
    assert!(cutover::docker::compose::containers_of(&c.name)
        .unwrap()
        .is_empty());

    // A registry that does not list a: the claims check passes, c's color starts and passes
    // its gate, but nginx routes c's name to a's site, whose marker names project a.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = c.command(["deploy", "--image", "cutover-demo:v2"]);
    cmd.env("CUTOVER_REGISTRY_DIR", elsewhere.path());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nginx did not serve"),
        "the probe must refuse a's marker: {stderr}"
    );
    assert!(stderr.contains(&a.name), "name what answered: {stderr}");
    let status = c.status_json();
    assert_eq!(status["last_deploy"]["result"], "failed", "{status:#}");
    assert!(
        cutover::docker::compose::containers_of(&c.name)
            .unwrap()
            .iter()
            .all(|container| !container.running()),
        "c's color is torn down"
    );
    assert_eq!(snapshot(&a, "app.cutover.test"), before);
}

/// Project `a` named `a_names`, deployed, and project `c` named `c_names` behind a's nginx.
fn a_deployed_and_c_behind_it(a_names: &str, c_names: &str) -> (Project, Project) {
    let a = Project::compose(App::compose().stop_grace("0s").server_name(a_names));
    a.deploy_ok("cutover-demo:v1");
    let c = Project::compose_behind(App::compose().stop_grace("0s").server_name(c_names), &a);
    (a, c)
}

/// nginx takes `.wild.cutover.test` as `wild.cutover.test *.wild.cutover.test`: a second
/// project naming `*.wild.cutover.test` on the same port is "conflicting server name …,
/// ignored" to nginx. The claims check must refuse it as it refuses `WILD.cutover.test.`.
#[test]
fn a_wildcard_server_name_inside_another_projects_dot_name_is_refused() {
    if !ready() {
        return;
    }
    let (_a, c) = a_deployed_and_c_behind_it(".wild.cutover.test", "*.wild.cutover.test");
    let run = c.cutover(["deploy", "--image", "cutover-demo:v2"]);
    assert!(
        run.stderr.contains("collides with another cutover project"),
        "the claims check let *.wild.cutover.test beside .wild.cutover.test: {run}"
    );
}

/// A project whose server_name is a wildcard, beside another project on one nginx port:
/// its probe must carry a Host the wildcard matches (`cutover-probe.c.cutover.test`), or it
/// reaches the port's default server, the other project's site, and can never pass.
#[test]
fn a_wildcard_project_beside_another_project_can_deploy() {
    if !ready() {
        return;
    }
    let (_a, c) = a_deployed_and_c_behind_it("a.cutover.test", "*.c.cutover.test");
    let run = c.cutover(["deploy", "--image", "cutover-demo:v2"]);
    assert!(
        run.ok(),
        "a wildcard project cannot deploy beside another: {run}"
    );
}
