//! `app.secrets_delivery: files` on the real engine: the values reach the app, its workers and
//! the hooks as files on a tmpfs (`/run/secrets/<KEY>`, `<KEY>_FILE`), one directory per
//! service, and never Docker's own state (`config.v2.json`), `docker inspect` or the compose
//! file; a rotation reaches only the new color, and a stopped color's files are gone.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::project::Project;
use crate::harness::workers_app::{self, W1};

/// The `config.v2.json` of every container of `project` (Docker's state on disk), and the
/// JSON `docker inspect` prints for them: the texts a leak would be in.
fn docker_state_of(project: &Project) -> Vec<(String, String)> {
    let containers = cutover::docker::compose::containers_of(&project.name).unwrap();
    assert!(!containers.is_empty(), "the project runs containers");
    let mut texts = Vec::new();
    for c in containers {
        let inspect = Command::new("docker")
            .args(["inspect", &c.id])
            .output()
            .unwrap();
        assert!(inspect.status.success());
        texts.push((
            format!("docker inspect {}", c.service),
            String::from_utf8_lossy(&inspect.stdout).into_owned(),
        ));
        let full: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let id = full[0]["Id"].as_str().unwrap().to_string();
        let config = PathBuf::from("/var/lib/docker/containers")
            .join(&id)
            .join("config.v2.json");
        texts.push((
            config.display().to_string(),
            fs::read_to_string(&config)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display())),
        ));
    }
    texts
}

/// Every container's `config.v2.json` on this engine (small files: bounded), one-off and
/// stopped containers included.
fn every_config_v2() -> Vec<(String, String)> {
    fs::read_dir("/var/lib/docker/containers")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("config.v2.json"))
        .filter_map(|p| Some((p.display().to_string(), fs::read_to_string(&p).ok()?)))
        .collect()
}

fn hits<'a>(texts: &'a [(String, String)], needle: &str) -> Vec<&'a str> {
    texts
        .iter()
        .filter(|(_, text)| text.contains(needle))
        .map(|(what, _)| what.as_str())
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn e2e_files_delivery_keeps_secrets_out_of_dockers_state_and_rotates_per_color() {
    if !workers_app::ready() || !Path::new("/var/lib/docker/containers").is_dir() {
        return;
    }
    let app = workers_app::app(json!({ "jobs": { "command": ["worker"], "memory": "32M" } }))
        .secrets()
        .secrets_delivery("files")
        .release(
            &["task", "print=DB_PASSWORD", "print=DB_PASSWORD_FILE"],
            "60s",
        )
        .hooks(json!({
            "post_deploy": {
                "command": ["sh", "-c", "env > post.env; sha256sum < \"$DEMO_SECRET_FILE\" > post.sha; ls \"$(dirname \"$DEMO_SECRET_FILE\")\" > post.ls"],
                "env": ["DEMO_SECRET"],
            },
        }));
    let project = Project::compose(app);
    // The fixture's values are in every env-mode test container on this engine: a marker of
    // this run's own is what the search of every container's state looks for.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("MARKfiles{}x{nanos}", std::process::id());
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "FILES_MARKER"],
            &format!("{marker}\n"),
        )
        .success();
    let demo_secret = project.secret_value("DEMO_SECRET");
    let db_password = project.secret_value("DB_PASSWORD");
    let run = project.deploy_ok(W1);
    assert!(!run.stdout.contains(&demo_secret) && !run.stderr.contains(&demo_secret));
    // The release phase's one-off container: the file, not the value, in its environment
    // (compose refuses to start it when a mount's source is missing).
    assert!(
        run.stderr.contains("DB_PASSWORD=\n")
            && run
                .stderr
                .contains("DB_PASSWORD_FILE=/run/secrets/DB_PASSWORD"),
        "{}",
        run.stderr
    );

    // The app reads its secret from /run/secrets (the demo's `/env` falls back to that file).
    assert_eq!(
        project.get("/env?key=DEMO_SECRET").unwrap(),
        (200, demo_secret.clone())
    );
    // Each service its own 0700 directory of 0444 files, on the tmpfs root.
    let dir = project.secrets_root().join(&project.name);
    let blue = dir.join("web-blue");
    assert_eq!(
        fs::read_to_string(blue.join("DEMO_SECRET")).unwrap(),
        demo_secret
    );
    assert_eq!(
        (mode(&dir), mode(&blue), mode(&blue.join("DB_PASSWORD"))),
        (0o700, 0o700, 0o444)
    );
    assert!(
        dir.join("web-jobs-blue").join("DEMO_SECRET").is_file(),
        "the worker's own files"
    );

    // Nothing secret in Docker's state, `docker inspect` or the compose file; the search
    // itself finds what is there (the `_FILE` names, the read-only mount).
    let mut texts = docker_state_of(&project);
    let compose = project.path().join(".cutover/compose.yml");
    texts.push((
        compose.display().to_string(),
        fs::read_to_string(&compose).unwrap(),
    ));
    for value in [&demo_secret, &db_password, &marker] {
        assert_eq!(hits(&texts, value), Vec::<&str>::new(), "a plaintext copy");
    }
    let everything = every_config_v2();
    assert_eq!(
        hits(&everything, &marker),
        Vec::<&str>::new(),
        "a plaintext copy"
    );
    assert!(!hits(&everything, "DEMO_SECRET_FILE=/run/secrets/DEMO_SECRET").is_empty());
    assert_eq!(
        hits(&texts, "DEMO_SECRET_FILE=/run/secrets/DEMO_SECRET").len(),
        4,
        "docker inspect and config.v2.json of the web color and the worker: {:?}",
        texts.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert!(
        texts
            .iter()
            .any(|(_, t)| t.contains("\"Destination\":\"/run/secrets/DB_PASSWORD\"")),
        "the file is a mount"
    );

    // The hook got the key it asked for as a file, not a value, in a directory removed after.
    let env = project.env_dump("post.env");
    assert!(
        !env.contains_key("DEMO_SECRET"),
        "a value in the hook's env"
    );
    let file = PathBuf::from(&env["DEMO_SECRET_FILE"]);
    let sha = fs::read_to_string(project.path().join("post.sha")).unwrap();
    assert_eq!(
        sha.split_whitespace().next().unwrap(),
        format!("{:x}", Sha256::digest(demo_secret.as_bytes()))
    );
    assert_eq!(
        fs::read_to_string(project.path().join("post.ls")).unwrap(),
        "DEMO_SECRET\n",
        "only the key it asked for"
    );
    assert!(!file.exists(), "the hook's files outlive it");

    // `cutover run`: a one-off of the serving color, with its files.
    let out = project
        .cutover(["run", "--", "task", "print=DEMO_SECRET_FILE"])
        .success();
    assert!(
        out.stdout
            .contains("DEMO_SECRET_FILE=/run/secrets/DEMO_SECRET"),
        "{}",
        out.stdout
    );

    // Rotation: the new value reaches the new color only; the old color's files go with it.
    let rotated = format!("rotated-files-{}x{nanos}", std::process::id());
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            &format!("{rotated}\n"),
        )
        .success();
    project.cutover(["deploy"]).success();
    assert_eq!(
        project.get("/env?key=DB_PASSWORD").unwrap(),
        (200, rotated.clone())
    );
    let green = dir.join("web-green");
    assert_eq!(
        fs::read_to_string(green.join("DB_PASSWORD")).unwrap(),
        rotated
    );
    assert!(!blue.exists(), "the stopped color's files are removed");
    assert!(
        !dir.join("web-jobs-blue").exists(),
        "the old worker's files"
    );
    assert!(dir.join("web-jobs-green").join("DB_PASSWORD").is_file());
    let mut texts = docker_state_of(&project);
    texts.extend(every_config_v2());
    assert_eq!(
        hits(&texts, &rotated),
        Vec::<&str>::new(),
        "a plaintext copy"
    );

    // A reboot empties the tmpfs: a container Docker restarts then does not start with empty
    // secrets (a mount whose source is missing is an error, not an empty directory)…
    let web = cutover::docker::compose::containers_of(&project.name)
        .unwrap()
        .into_iter()
        .find(|c| c.service == "web-green")
        .unwrap();
    fs::remove_dir_all(project.secrets_root()).unwrap();
    let restart = |what: &str| {
        Command::new("docker")
            .args(["restart", "-t", "1", what])
            .output()
            .unwrap()
    };
    let refused = restart(&web.id);
    assert!(
        !refused.status.success(),
        "a container started without its secret files"
    );
    assert!(
        !green.exists(),
        "docker made the missing source: {}",
        green.display()
    );
    // …and `secrets restore` (what the boot unit runs) writes the serving color's and the
    // workers' files again from the ciphertext they were deployed from, after which it starts.
    let out = project.cutover(["secrets", "restore", "--json"]).success();
    let json = out.stdout_json();
    crate::json_contract::validate("secrets-restore.schema.json", &json);
    assert_eq!(json["projects"][0]["services"][0][0], "web-green", "{json}");
    assert!(!out.stdout.contains(&rotated) && !out.stderr.contains(&rotated));
    assert_eq!(
        fs::read_to_string(green.join("DB_PASSWORD")).unwrap(),
        rotated
    );
    assert!(dir.join("web-jobs-green").join("DEMO_SECRET").is_file());
    assert!(!blue.exists(), "only what Docker brings back");
    assert!(restart(&web.id).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while project.get("/env?key=DB_PASSWORD") != Some((200, rotated.clone())) {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted app never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The control: the same project in env mode puts the marker into Docker's state on disk,
    // where the search above finds it.
    crate::harness::project::edit_config(&project, |c| c["app"]["secrets_delivery"] = json!("env"));
    project.cutover(["deploy"]).success();
    assert!(
        !hits(&every_config_v2(), &marker).is_empty(),
        "env mode should leave the marker in config.v2.json (the search is blind)"
    );
}
