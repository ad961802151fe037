//! No child cutover starts ever sees `CUTOVER_AGE_KEY` or `CUTOVER_IDENTITY`.
//!
//! The real binary runs with both set, the key being the one that decrypts the project's
//! secrets. `docker`, `docker-compose` and `nginx` on PATH are stand-ins that dump their
//! environment to a file: this test is about the arguments and environment cutover hands to
//! a child, not about what docker does with them (the e2e tests run the real engine).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::common::{cutover, fixture, repo_root};

const WITHHELD: [&str; 2] = ["CUTOVER_AGE_KEY", "CUTOVER_IDENTITY"];

/// The test identity's private key line (the key that decrypts secrets/demo.env.age).
fn test_age_key() -> String {
    fs::read_to_string(fixture("secrets/test-identity.txt"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("a key line in the test identity")
        .to_string()
}

/// A project with the demo secrets, and a bin dir of tools that dump their environment.
struct Setup {
    _tmp: tempfile::TempDir,
    project: PathBuf,
    bin: PathBuf,
    dumps: PathBuf,
    /// A 0600 copy of the test identity, for CUTOVER_IDENTITY.
    identity: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        let bin = tmp.path().join("bin");
        let dumps = tmp.path().join("dumps");
        for dir in [&project, &bin, &dumps, &project.join("secrets")] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::copy(
            repo_root().join("secrets/demo.env.age"),
            project.join("secrets/demo.env.age"),
        )
        .unwrap();
        fs::write(
            project.join("cutover.yml"),
            "project: childenv\n\
             app: { name: web, image: example/web, port: 3000, memory: 128M, secrets: [secrets/demo.env.age] }\n\
             colors: { blue: 9001, green: 9002 }\n",
        )
        .unwrap();
        for tool in ["docker", "docker-compose", "nginx"] {
            // `compose version --short` / `version --short` answer like compose v2, so the
            // compose detection settles; everything else prints nothing and succeeds.
            let script = format!(
                "#!/bin/sh\n\
                 env > \"{dumps}/{tool}.$$.env\"\n\
                 case \"$*\" in *version*) echo 2.24.0 ;; esac\n\
                 exit 0\n",
                dumps = dumps.display()
            );
            let path = bin.join(tool);
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let identity = tmp.path().join("identity.txt");
        fs::copy(fixture("secrets/test-identity.txt"), &identity).unwrap();
        fs::set_permissions(&identity, fs::Permissions::from_mode(0o600)).unwrap();
        Setup {
            _tmp: tmp,
            project,
            bin,
            dumps,
            identity,
        }
    }

    /// Runs cutover with both withheld variables set and the stand-ins first on PATH.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cutover(&self.project)
            .env("CUTOVER_AGE_KEY", test_age_key())
            .env("CUTOVER_IDENTITY", &self.identity)
            .env("PATH", path)
            .env("XDG_CACHE_HOME", self.project.join("cache"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Every environment dump a child wrote, as (file name, text).
    fn dumps(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = fs::read_dir(&self.dumps)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    }
}

fn assert_nothing_withheld_in(env_text: &str, identity: &Path, what: &str) {
    let key = test_age_key();
    for name in WITHHELD {
        assert!(
            !env_text.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name} reached {what}:\n{env_text}"
        );
    }
    assert!(
        !env_text.contains(&key["AGE-SECRET-KEY-".len()..]),
        "the age key's value reached {what}"
    );
    assert!(
        !env_text.contains(&*identity.to_string_lossy()),
        "the identity path reached {what}"
    );
}

fn assert_ran(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_and_compose_children_never_get_the_age_key_or_identity() {
    let setup = Setup::new();
    assert_ran(&setup.run(&["status"]), "status");
    let out = setup.run(&["deploy", "--image", "example/web:1", "--dry-run"]);
    assert_ran(&out, "deploy --dry-run");
    // The dry run decrypted the secrets with the key it was given: the key was really there.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumps = setup.dumps();
    assert!(
        dumps.iter().any(|(name, _)| name.starts_with("docker.")),
        "no docker child ran, so nothing was checked: {dumps:?}"
    );
    for (name, text) in &dumps {
        // The dump is a real environment (the check is not vacuous)...
        assert!(text.contains("PATH="), "{name} is not an env dump:\n{text}");
        // ...without cutover's secrets.
        assert_nothing_withheld_in(text, &setup.identity, name);
    }
}

/// `secrets exec` hands the decrypted variables on, and still not the key that decrypted them.
#[test]
fn secrets_exec_passes_the_secrets_but_not_the_key() {
    let setup = Setup::new();
    let dump: &Path = &setup.dumps.join("exec.env");
    let out = setup.run(&[
        "secrets",
        "exec",
        "demo",
        "--",
        "sh",
        "-c",
        &format!("env > '{}'", dump.display()),
    ]);
    assert_ran(&out, "secrets exec");
    let text = fs::read_to_string(dump).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("DEMO_SECRET=")),
        "the decrypted variable did not reach the command:\n{text}"
    );
    assert_nothing_withheld_in(&text, &setup.identity, "the `secrets exec` command");
}
