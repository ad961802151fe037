//! `registry: { server, username, password_secret }`: `docker login --password-stdin` with the
//! password from the encrypted secrets, then a `pull` step before anything starts, against a
//! REAL registry: Debian's `docker-registry` (the distribution registry) on a loopback port
//! with htpasswd (bcrypt) basic auth. Docker treats 127.0.0.0/8 registries as insecure, so
//! plain HTTP works with auth (verified on Docker 20.10): no TLS, no machine-global state
//! (the registry is harness/docker_registry.rs).
//!
//! The docker credential store is a temp `DOCKER_CONFIG` per test (its `cli-plugins` linked
//! to the real one, so compose v2 stays reachable): the tests never log the machine in.

use std::path::Path;

use crate::harness::common::{files_containing, sh, sh_ok, texts};
use crate::harness::docker_registry::{configure, write_secret, Registry, USER};
use crate::harness::project::{App, Project, Run};

fn deploy(project: &Project, registry: &Registry, image: &str) -> Run {
    let mut cmd = project.command(["deploy", "--image", image]);
    cmd.env("DOCKER_CONFIG", &registry.docker_config);
    Run::of(cmd)
}

fn app_containers(project: &Project) -> Vec<String> {
    let out = sh_ok(&format!(
        "docker ps -a --filter label=com.docker.compose.project={} --format '{{{{.Label \"com.docker.compose.service\"}}}}'",
        project.name
    ));
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

fn assert_blue_v1(project: &Project) {
    assert_eq!(app_containers(project), ["web-blue"]);
    let (code, body) = project.get("/").expect("nginx answers");
    assert_eq!((code, body.trim()), (200, "version=v1 color=blue"));
}

fn assert_never_shown(password: &str, runs: &[&Run], dirs: &[&Path]) {
    for run in runs {
        assert!(!run.stdout.contains(password) && !run.stderr.contains(password));
        assert!(!run.command.contains(password), "in argv: {}", run.command);
    }
    for dir in dirs {
        let hits = files_containing(dir, password);
        assert!(hits.is_empty(), "the registry password is in {hits:?}");
    }
}

#[test]
fn registry_login_pull_and_each_failure_named_before_anything_changes() {
    if !Registry::ready() {
        return;
    }
    let password = format!("pw-{}-Zq9x", std::process::id());
    let mut registry = Registry::start(&password);
    let server = registry.server();
    let repo = format!("{server}/cutover-reg-{}", std::process::id());
    let _untag = Untag(repo.clone());
    registry.push(&password, "cutover-demo:v1", &format!("{repo}:v1"));
    registry.push(&password, "cutover-demo:v2", &format!("{repo}:v2"));
    let project = Project::compose(App::compose().image(&repo).secrets());
    write_secret(&project.path(), &password);
    configure(&project, &server);

    // Good credentials: login, pull, deploy.
    let good = deploy(&project, &registry, &format!("{repo}:v1")).success();
    assert!(
        good.stderr.contains(&format!("{repo}:v1 from {server}")),
        "{}",
        good.stderr
    );
    assert_blue_v1(&project);
    let pull_line = good
        .stderr
        .lines()
        .position(|l| l.contains("✓ pull"))
        .unwrap();
    let up_line = good
        .stderr
        .lines()
        .position(|l| l.contains("✓ up"))
        .unwrap();
    assert!(pull_line < up_line, "{}", good.stderr);

    // Wrong password: fails at login, naming auth; nothing changed.
    write_secret(&project.path(), "not-the-password");
    let wrong = deploy(&project, &registry, &format!("{repo}:v2")).code(1);
    assert!(
        wrong.stderr.contains("authentication failed"),
        "{}",
        wrong.stderr
    );
    assert!(wrong.stderr.contains(&server), "{}", wrong.stderr);
    assert_blue_v1(&project);
    let last = project.history().pop().unwrap();
    assert_eq!(last["result"], "failed");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{last}"
    );

    // A tag that is not there: names the tag.
    write_secret(&project.path(), &password);
    let missing = deploy(&project, &registry, &format!("{repo}:nope")).code(1);
    assert!(
        missing.stderr.contains("no tag `nope`"),
        "{}",
        missing.stderr
    );
    assert!(
        missing.stderr.contains(&format!("{repo}:nope")),
        "{}",
        missing.stderr
    );
    assert_blue_v1(&project);

    // The registry down: names the network.
    registry.stop();
    let down = deploy(&project, &registry, &format!("{repo}:v2")).code(1);
    assert!(down.stderr.contains("network"), "{}", down.stderr);
    assert!(down.stderr.contains(&server), "{}", down.stderr);
    assert_blue_v1(&project);

    // Up again: the next deploy pulls v2 and goes green.
    registry.serve();
    let v2 = deploy(&project, &registry, &format!("{repo}:v2")).success();
    let (code, body) = project.get("/").expect("nginx answers");
    assert_eq!((code, body.trim()), (200, "version=v2 color=green"));

    // The registry password is the box's, not the app's: the serving container's environment
    // holds the app's other secret but not REGISTRY_PASSWORD.
    let env = sh_ok(&format!(
        "docker inspect --format '{{{{json .Config.Env}}}}' $(docker ps -q --filter label=com.docker.compose.project={} --filter label=com.docker.compose.service=web-green)",
        project.name
    ));
    let env: Vec<String> = serde_json::from_str(env.trim()).expect("docker inspect's JSON");
    assert!(
        env.iter().any(|e| e.starts_with("DEMO_SECRET=")),
        "the app's own secret is there: {env:?}"
    );
    assert!(
        !env.iter().any(|e| e.starts_with("REGISTRY_PASSWORD=")),
        "the registry password reached the app's container"
    );

    // The password never showed: not in any output or argv, nor in the project's state and
    // history (docker's own store holds it, base64, as `docker login` always does).
    for run in [&good, &wrong, &missing, &down] {
        eprintln!("{}", run.stderr);
    }
    assert_never_shown(
        &password,
        &[&good, &wrong, &missing, &down, &v2],
        &[&project.path(), &project.home()],
    );
}

/// Untags the test's registry images once the project (its containers) is gone; by tag,
/// never by ID with -f: the pushed images share their IDs with the demo images.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {} | xargs -r docker rmi >/dev/null 2>&1",
            self.0
        ));
    }
}

/// With `--host`, the login and pull run on the box, in the box user's docker credential
/// store; the password travels inside the encrypted file only.
#[test]
fn registry_login_and_pull_happen_on_the_box_with_host() {
    if !Registry::ready() || !crate::harness::ssh_box::deploy_ready() {
        return;
    }
    let password = format!("pw-box-{}-Zq9x", std::process::id());
    let registry = Registry::start(&password);
    let server = registry.server();
    let repo = format!("{server}/cutover-reg-box-{}", std::process::id());
    let _untag = Untag(repo.clone());
    registry.push(&password, "cutover-demo:v1", &format!("{repo}:v1"));
    let p =
        crate::harness::ssh_box::RemoteProject::new(crate::harness::ssh_box::Setup::with_secrets());
    write_secret(p.path(), &password);
    let config = std::fs::read_to_string(p.path().join("cutover.yml")).unwrap();
    let config = config
        .replace("image: cutover-demo\n", &format!("image: {repo}\n"))
        .replace(
            "secrets: [secrets/demo.env.age]",
            "secrets: [secrets/demo.env.age, secrets/registry.env.age]",
        );
    std::fs::write(
        p.path().join("cutover.yml"),
        format!(
            "{config}registry:\n  server: \"{server}\"\n  username: {USER}\n  password_secret: REGISTRY_PASSWORD\n"
        ),
    )
    .unwrap();
    let out = p.remote(&["deploy", "--image", &format!("{repo}:v1")]);
    let (stdout, stderr) = texts(&out);
    // The box user's credential store is shared by the tests: log it out again.
    let _ = sh(&format!(
        "runuser -u {} -- env DOCKER_CONFIG=$(getent passwd {} | cut -d: -f6)/.docker docker logout {server} >/dev/null 2>&1",
        crate::harness::ssh_box::BOX_USER,
        crate::harness::ssh_box::BOX_USER
    ));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("{repo}:v1 from {server}")),
        "{stderr}"
    );
    p.assert_serving("blue", "v1");
    assert!(!stdout.contains(&password) && !stderr.contains(&password));
    let hits = files_containing(&p.ssh.path().join("box"), &password);
    assert!(
        hits.is_empty(),
        "the registry password is on the box in {hits:?}"
    );
}
