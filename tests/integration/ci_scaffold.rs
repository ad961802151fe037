//! `cutover init --ci github`: the generated workflow passes actionlint (with shellcheck on
//! its `run:` scripts), and its steps, run as GitHub would run them (bash -eo pipefail, the
//! workflow's and the step's `env:`, `RUNNER_TEMP`, `GITHUB_ENV`, `GITHUB_STEP_SUMMARY`),
//! with the repository secrets replaced by the test box's values, install cutover from
//! scripts/release.sh's tarball (served over local HTTP as the GitHub release would), build
//! the image, set up SSH with the host key pinned, deploy it with `--ship` to the real-sshd
//! box of harness/ssh_box.rs using the installed binary, and write the job summary. Also: this
//! repository's own workflows pass actionlint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{cutover, repo_root, require, yaml_to_json, ImageGuard};
use crate::harness::ssh_box::{deploy_ready, RemoteProject, Setup, BOX_USER};

/// A fake commit id for `${{ github.sha }}`.
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn actionlint(dir: &Path, files: &[&Path]) {
    let out = Command::new("actionlint")
        .arg("-no-color")
        .args(files)
        .current_dir(dir)
        .output()
        .expect("run actionlint");
    assert!(
        out.status.success(),
        "actionlint rejected {files:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `${{ … }}` expressions replaced the way GitHub would, from `secrets`; an expression the
/// test does not know fails it, so a new one in the template gets a value here too.
fn substitute(text: &str, secrets: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .expect("an expression ends with }}")
            + start;
        let expr = rest[start + 3..end].trim();
        let value = match expr.strip_prefix("secrets.") {
            Some(name) => secrets
                .get(name)
                .unwrap_or_else(|| panic!("the test has no value for the secret {name}"))
                .clone(),
            None if expr == "github.sha" => SHA.to_string(),
            None => panic!("the test cannot evaluate the expression `{expr}`"),
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The workflow's runner: its `env:`, the job's scratch dirs and what earlier steps exported.
struct Runner {
    workflow: Value,
    secrets: BTreeMap<&'static str, String>,
    project: PathBuf,
    temp: tempfile::TempDir,
    /// Workflow `env:` values replaced for the test (the release server's URL).
    overrides: BTreeMap<&'static str, String>,
}

impl Runner {
    fn github_env(&self) -> PathBuf {
        self.temp.path().join("github_env")
    }

    fn github_path(&self) -> PathBuf {
        self.temp.path().join("github_path")
    }

    fn summary(&self) -> PathBuf {
        self.temp.path().join("step_summary")
    }

    fn step(&self, name: &str) -> &Value {
        self.workflow["jobs"]["deploy"]["steps"]
            .as_array()
            .expect("the deploy job has steps")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step named {name:?}"))
    }

    /// Runs the step `name` as GitHub's `bash` shell does; returns its output.
    fn run(&self, name: &str) -> std::process::Output {
        let step = self.step(name);
        let script = step["run"].as_str().expect("a run step");
        let home = self.temp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = Command::new("bash");
        crate::common::isolate(&mut cmd, &home);
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(&self.project)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CUTOVER_HOST")
            .env_remove("CUTOVER_SSH_CONFIG")
            .env("RUNNER_TEMP", self.temp.path())
            .env("GITHUB_ENV", self.github_env())
            .env("GITHUB_PATH", self.github_path())
            .env("GITHUB_STEP_SUMMARY", self.summary())
            .env("GITHUB_SHA", SHA);
        // What earlier steps appended to $GITHUB_PATH goes first, newest first.
        let added = std::fs::read_to_string(self.github_path()).unwrap_or_default();
        let mut path: Vec<&str> = added.lines().rev().collect();
        let system = std::env::var("PATH").unwrap_or_default();
        path.push(&system);
        cmd.env("PATH", path.join(":"));
        let envs = [&self.workflow["env"], &step["env"]];
        for env in envs.into_iter().filter_map(Value::as_object) {
            for (key, value) in env {
                let value = value.as_str().expect("env values are strings");
                let value = match self.overrides.get(key.as_str()) {
                    Some(over) => over.clone(),
                    None => substitute(value, &self.secrets),
                };
                cmd.env(key, value);
            }
        }
        // What earlier steps appended to $GITHUB_ENV (KEY=VALUE lines).
        let exported = std::fs::read_to_string(self.github_env()).unwrap_or_default();
        for line in exported.lines() {
            let (key, value) = line
                .split_once('=')
                .expect("GITHUB_ENV lines are KEY=VALUE");
            cmd.env(key, value);
        }
        cmd.output().unwrap()
    }

    fn run_ok(&self, name: &str) -> String {
        let out = self.run(name);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "step {name:?} failed ({:?}):\n{stdout}\n{stderr}",
            out.status
        );
        format!("{stdout}{stderr}")
    }
}

/// Running (not gone, not a zombie).
fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) STATE …`: the state follows the last `)`.
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !stat.is_empty() && !state.starts_with('Z')
}

#[test]
fn ci_github_workflow_lints_and_its_deploy_step_deploys_to_the_box() {
    if !deploy_ready()
        || !require(
            "actionlint",
            "lint the generated workflow (scripts/test.sh installs it)",
        )
        || !require(
            "shellcheck",
            "check the workflow's run: scripts (actionlint uses it)",
        )
        || !require("ssh-agent", "hold the workflow's SSH key in memory")
        || !require("jq", "write the workflow's job summary")
        || !require("file", "check that the installed cutover is static")
        || !require("python3", "serve the release the install step downloads")
    {
        return;
    }
    let Some(dist) = crate::harness::artifact::artifacts() else {
        return;
    };
    // The workflow builds `app.image:<sha>`: a repository of this test's own, so the box's
    // prune never weighs the shared demo images against it.
    let repo = format!("cutover-ci-{}", std::process::id());
    let image = format!("{repo}:{SHA}");
    let _image = ImageGuard(image.clone());
    let p = RemoteProject::new(Setup::default());
    let config = p.path().join("cutover.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("  image: cutover-demo\n"), "{text}");
    std::fs::write(
        &config,
        text.replace("  image: cutover-demo\n", &format!("  image: {repo}\n")),
    )
    .unwrap();

    // --dry-run prints what a real run writes; a second run refuses to overwrite.
    let dry = cutover(p.path())
        .args(["init", "--ci", "github", "--dry-run"])
        .assert()
        .success();
    let dry = String::from_utf8(dry.get_output().stdout.clone()).unwrap();
    let workflow_path = p.path().join(".github/workflows/deploy.yml");
    assert!(!workflow_path.exists(), "--dry-run wrote the workflow");
    cutover(p.path())
        .args(["init", "--ci", "github"])
        .assert()
        .success();
    let text = std::fs::read_to_string(&workflow_path).unwrap();
    assert_eq!(text, dry, "--dry-run prints the file it would write");
    let again = cutover(p.path())
        .args(["init", "--ci", "github"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&again.get_output().stderr).into_owned();
    assert!(stderr.contains("already exists; pass --force"), "{stderr}");
    cutover(p.path())
        .args(["init", "--ci", "github", "--force"])
        .assert()
        .success();

    actionlint(p.path(), &[Path::new(".github/workflows/deploy.yml")]);
    let workflow = yaml_to_json(&text);
    assert_eq!(workflow["concurrency"]["cancel-in-progress"], false);
    let config_text = std::fs::read_to_string(&config).unwrap();
    let project = yaml_to_json(&config_text)["project"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        workflow["concurrency"]["group"],
        format!("cutover-deploy-{project}")
    );
    let scripts: Vec<&str> = workflow["jobs"]["deploy"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(
        scripts.iter().all(|s| !s.contains("ssh-keyscan")),
        "CI never scans host keys"
    );
    assert!(scripts
        .iter()
        .any(|s| s.contains("StrictHostKeyChecking yes")));

    let ssh = &p.ssh;
    let secrets = BTreeMap::from([
        ("DEPLOY_HOST", format!("{BOX_USER}@127.0.0.1:{}", ssh.port)),
        (
            "DEPLOY_SSH_KEY",
            std::fs::read_to_string(ssh.path().join("client_key")).unwrap(),
        ),
        (
            "DEPLOY_KNOWN_HOSTS",
            std::fs::read_to_string(ssh.path().join("known_hosts")).unwrap(),
        ),
        // Unset in the repository: the box would decrypt with its own identity.
        ("CUTOVER_AGE_KEY", String::new()),
    ]);
    // The release the install step downloads: scripts/release.sh's artifacts, served here
    // the way the GitHub release serves them (<url>/v<version>/…).
    let srv = tempfile::tempdir().unwrap();
    let version_dir = srv.path().join(format!("v{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&version_dir).unwrap();
    for entry in std::fs::read_dir(&dist).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), version_dir.join(entry.file_name())).unwrap();
    }
    let server = crate::harness::artifact::Server::start(srv.path());
    let runner = Runner {
        workflow,
        secrets,
        project: p.path().to_path_buf(),
        temp: tempfile::tempdir().unwrap(),
        overrides: BTreeMap::from([(
            "CUTOVER_RELEASE_URL",
            format!("http://127.0.0.1:{}", server.port),
        )]),
    };

    runner.run_ok("install cutover");
    let installed = runner.temp.path().join("cutover/bin/cutover");
    let kind = String::from_utf8(
        Command::new("file")
            .arg("-b")
            .arg(&installed)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(kind.contains("static"), "the installed cutover: {kind}");

    // The build step, on this project's Dockerfile.
    std::fs::write(
        p.path().join("Dockerfile"),
        "FROM cutover-demo:v1\nENV VERSION=ci\n",
    )
    .unwrap();
    runner.run_ok("build the image");
    let env = Command::new("docker")
        .args(["image", "inspect", "-f", "{{json .Config.Env}}", &image])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&env.stdout).contains("VERSION=ci"),
        "the build step did not build {image}"
    );

    runner.run_ok("ssh to the box (key in an agent, host key pinned)");
    let exported = std::fs::read_to_string(runner.github_env()).unwrap();
    assert!(exported.contains("CUTOVER_SSH_CONFIG="), "{exported}");
    let agent_pid: u32 = exported
        .lines()
        .find_map(|l| l.strip_prefix("SSH_AGENT_PID="))
        .expect("the ssh step exports the agent")
        .parse()
        .unwrap();
    // The key is held by the agent only: nothing under RUNNER_TEMP holds it.
    let key = &runner.secrets["DEPLOY_SSH_KEY"];
    let key_line = key.lines().nth(1).expect("a key body line");
    let holding = crate::common::files_containing(runner.temp.path(), key_line);
    assert!(holding.is_empty(), "the SSH key was written to {holding:?}");

    // The deploy step's command line against the box, then the job summary.
    let out = runner.run_ok("deploy");
    let summary_json = std::fs::read_to_string(runner.temp.path().join("deploy.json")).unwrap();
    let summary_json: Value = serde_json::from_str(&summary_json)
        .unwrap_or_else(|e| panic!("deploy --json printed no JSON ({e}):\n{out}"));
    assert_eq!(summary_json["image"], image.as_str(), "{summary_json}");
    assert_eq!(summary_json["to"], "blue");
    runner.run_ok("summary");
    let summary = std::fs::read_to_string(runner.summary()).unwrap();
    assert!(
        summary.contains(&format!("### cutover deploy: `{image}` on blue")),
        "{summary}"
    );
    assert!(summary.contains("| step | ms |"), "{summary}");
    runner.run_ok("stop the ssh agent");
    // `ssh-agent -k` signals it and returns: gone (or a zombie nobody reaps) soon after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while process_alive(agent_pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the ssh agent {agent_pid} outlived its job"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The box serves the image the workflow built.
    let (status, _) = p.remote_ok(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["active"], "blue", "{status}");
    assert!(status.to_string().contains(&image), "{status}");
}

#[test]
fn ci_this_repository_workflows_pass_actionlint() {
    if !require(
        "actionlint",
        "lint .github/workflows (scripts/test.sh installs it)",
    ) || !require(
        "shellcheck",
        "check the workflows' run: scripts (actionlint uses it)",
    ) {
        return;
    }
    let root = repo_root();
    let files = ["ci.yml", "release.yml"].map(|f| root.join(".github/workflows").join(f));
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    actionlint(&root, &refs);

    // The release builds both arches with the script the tests build them with
    // (scripts/test.sh: scripts/release.sh, aarch64 in the cross root).
    let release = yaml_to_json(&std::fs::read_to_string(&files[1]).unwrap());
    let build = &release["jobs"]["build"];
    assert_eq!(
        build["strategy"]["matrix"]["target"],
        serde_json::json!(["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"])
    );
    let runs: String = build["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(
        runs.contains("sudo bash scripts/release.sh --target \"$TARGET\" --out dist")
            && runs.contains("\n  bash scripts/release.sh --target \"$TARGET\" --out dist"),
        "{runs}"
    );
    assert!(
        !runs.contains("rustup target add"),
        "no rustup download: {runs}"
    );
}

#[test]
fn ci_init_without_a_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path())
        .args(["init", "--ci", "github"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("cutover.yml: no such file"), "{stderr}");
    assert!(!dir.path().join(".github").exists());
}

#[test]
fn ci_with_a_registry_the_workflow_pushes_and_passes_actionlint() {
    if !require(
        "actionlint",
        "lint the generated workflow (scripts/test.sh installs it)",
    ) || !require(
        "shellcheck",
        "check the workflow's run: scripts (actionlint uses it)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = "project: shop\n\
                  app: { name: web, image: registry.example.com:5000/shop, port: 8080, memory: 128M }\n\
                  colors: { blue: 9001, green: 9002 }\n\
                  registry: { server: \"registry.example.com:5000\", username: ci, password_secret: REGISTRY_PASSWORD }\n";
    std::fs::write(dir.path().join("cutover.yml"), config).unwrap();
    cutover(dir.path())
        .args(["init", "--ci", "github"])
        .assert()
        .success();
    actionlint(dir.path(), &[Path::new(".github/workflows/deploy.yml")]);
    let text = std::fs::read_to_string(dir.path().join(".github/workflows/deploy.yml")).unwrap();
    let workflow = yaml_to_json(&text);
    let steps = workflow["jobs"]["deploy"]["steps"].as_array().unwrap();
    let push = steps
        .iter()
        .find(|s| s["name"] == "push the image to the registry")
        .expect("a push step");
    let script = push["run"].as_str().unwrap();
    assert!(script.contains("--password-stdin"), "{script}");
    assert!(script.contains("docker push \"$IMAGE\""), "{script}");
    assert_eq!(
        push["env"]["REGISTRY_PASSWORD"],
        "${{ secrets.REGISTRY_PASSWORD }}"
    );
    let deploy = steps.iter().find(|s| s["name"] == "deploy").unwrap();
    assert!(
        !deploy["run"].as_str().unwrap().contains("--ship"),
        "the box pulls from the registry"
    );
    assert_eq!(
        workflow["env"]["IMAGE"],
        "registry.example.com:5000/shop:${{ github.sha }}"
    );

    // An image that is not on the server would be pushed elsewhere: refused.
    std::fs::write(
        dir.path().join("cutover.yml"),
        config.replace("registry.example.com:5000/shop", "shop"),
    )
    .unwrap();
    let out = cutover(dir.path())
        .args(["init", "--ci", "github", "--dry-run"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("app.image `shop` is not on registry.server `registry.example.com:5000`"),
        "{stderr}"
    );
}
