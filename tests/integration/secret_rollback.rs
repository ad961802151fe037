//! Rotation and rollback on the real engine (issue #24, item 5): after `secrets set` and a
//! deploy, the new color answers with the new value while the old one, still running, answers
//! with its own; `rollback` brings the old color back with the value it was deployed with
//! (the ciphertext kept when it stopped), not the store's; `secrets restore` then writes what
//! runs. The app answers with a hash of its secret (`/secret-hash`), so no value crosses the
//! wire. Then what a hostile user would do to the kept copy: damage it, encrypt it to a key
//! the box does not hold, remove it.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::harness::project::{edit_config, ready, App, Project};

/// FNV-1a 64, as the demo's `/secret-hash` computes it.
fn fnv1a(value: &str) -> String {
    let h = value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}\n")
}

/// What the color on `port` answers, directly (not through nginx).
fn hash_on(port: u16) -> Option<String> {
    match cutover::demo::http_get(port, "/secret-hash?key=DB_PASSWORD") {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig}");
}

/// A kept copy of the right shape whose ciphertext is for a key this box does not hold.
fn foreign_copy(project: &Project, path: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("other.txt");
    let out = Command::new("age-keygen")
        .args(["-o", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    let mut age = Command::new("age")
        .args(["-r", &public])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    age.stdin
        .take()
        .unwrap()
        .write_all(b"DB_PASSWORD=h24-foreign\n")
        .unwrap();
    let out = age.wait_with_output().unwrap();
    assert!(out.status.success());
    let hex: String = out.stdout.iter().map(|b| format!("{b:02x}")).collect();
    let file = project.path().join("secrets/demo.env.age");
    let json = serde_json::json!({ "files": [{ "path": file, "age_hex": hex }] });
    fs::write(path, json.to_string()).unwrap();
}

#[test]
fn e2e_rollback_brings_back_the_values_the_color_was_deployed_with() {
    if !ready() {
        return;
    }
    // The delay keeps the new color in its health gate long enough to catch the deploy there.
    let project = Project::compose(
        App::compose()
            .secrets()
            .secrets_delivery("files")
            .startup_delay_ms(1500),
    );
    project.deploy_ok("cutover-demo:v1");
    let a = project.secret_value("DB_PASSWORD");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&a))
    );
    let b = format!("h24-rotated-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{b}\n"))
        .success();

    // The overlap: the deploy is held (SIGSTOP) inside green's health gate, where blue must
    // still run; green answers with b, blue with a.
    let mut deploy = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("health");
    signal(&deploy, "-STOP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let green = loop {
        if let Some(hash) = hash_on(project.port_of("green")) {
            break hash;
        }
        assert!(std::time::Instant::now() < deadline, "green never answered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let blue = hash_on(project.port_of("blue"));
    signal(&deploy, "-CONT");
    let status = deploy.wait().unwrap();
    assert_eq!(green, fnv1a(&b), "the new color has the rotated value");
    assert_eq!(blue, Some(fnv1a(&a)), "the old color kept its value");
    assert!(status.success(), "the deploy failed");
    project.assert_serving("green", "v2");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&b))
    );
    let kept = project.path().join(".cutover/deployed-secrets");
    assert!(kept.join("stopped/web-blue.json").is_file());
    assert!(!project
        .secrets_root()
        .join(&project.name)
        .join("web-blue")
        .exists());

    // A rollback killed (-9) while blue is in its health gate reads nothing it would lose:
    // the next one finds the same kept copy.
    let mut killed = project.spawn(["rollback"]);
    project.wait_for_step("health");
    signal(&killed, "-KILL");
    killed.wait().unwrap();

    // Rollback: blue comes back with a, from the kept ciphertext, and says so.
    let out = project.cutover(["rollback", "--json"]).success();
    let json = out.stdout_json();
    assert_eq!(json["secrets_from"]["from"], "kept", "{json}");
    assert_eq!(json["secrets_from"]["service"], "web-blue", "{json}");
    assert!(!out.stdout.contains(&a) && !out.stderr.contains(&a));
    project.assert_serving("blue", "v1");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&a)),
        "the rolled-back color got today's store value"
    );

    // A reboot restores what runs: a.
    fs::remove_dir_all(project.secrets_root().join(&project.name)).unwrap();
    project.cutover(["secrets", "restore"]).success();
    let file = project
        .secrets_root()
        .join(&project.name)
        .join("web-blue/DB_PASSWORD");
    assert_eq!(fs::read_to_string(&file).unwrap(), a);

    // Env mode does the same: green gets c, the rollback gives blue a again.
    edit_config(&project, |c| {
        c["app"]["secrets_delivery"] = serde_json::json!("env")
    });
    let c = format!("h24-env-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{c}\n"))
        .success();
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&c))
    );
    let out = project.cutover(["rollback"]).success();
    assert!(
        out.stderr
            .contains("the values web-blue was deployed with, kept when it stopped"),
        "{}",
        out.stderr
    );
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&a)),
        "env mode: the rolled-back color got today's store value"
    );

    // Hostile: green's kept copy damaged, then encrypted to a key this box does not hold.
    // Either refuses the rollback, naming the file and the way out; blue keeps serving.
    let green_copy = kept.join("stopped/web-green.json");
    assert!(green_copy.is_file());
    for damage in ["damaged", "foreign"] {
        match damage {
            "damaged" => fs::write(&green_copy, "{\"files\": [").unwrap(),
            _ => foreign_copy(&project, &green_copy),
        }
        let out = project.cutover(["rollback"]).failure();
        assert!(
            out.stderr.contains("web-green.json") && out.stderr.contains("remove it"),
            "{damage}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains(&a) && !out.stderr.contains(&c));
        project.assert_still_serving("blue", "v1");
    }
    // Removed: the rollback uses the store (c) and says so.
    fs::remove_file(&green_copy).unwrap();
    let out = project.cutover(["rollback", "--json"]).success();
    let json = out.stdout_json();
    assert_eq!(json["secrets_from"]["from"], "store", "{json}");
    assert!(
        json["secrets_from"]["why"]
            .as_str()
            .unwrap()
            .contains("web-green.json"),
        "{json}"
    );
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&c))
    );

    // A kept copy of another image is not taken: blue's says v0 now, the rollback deploys v1.
    let blue_copy = kept.join("stopped/web-blue.json");
    let mut copy: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&blue_copy).unwrap()).unwrap();
    assert_eq!(copy["image"], "cutover-demo:v1", "{copy}");
    copy["image"] = serde_json::json!("cutover-demo:v0");
    fs::write(&blue_copy, copy.to_string()).unwrap();
    let out = project.cutover(["rollback", "--json"]).success();
    let json = out.stdout_json();
    assert_eq!(json["secrets_from"]["from"], "store", "{json}");
    let why = json["secrets_from"]["why"].as_str().unwrap();
    assert!(why.contains("is for cutover-demo:v0"), "{json}");
    project.assert_serving("blue", "v1");

    // Nothing runs (a crash, a `docker rm`): the rollback recovers onto the recorded color
    // (blue) with the previous image (v2), whose values were kept when green stopped (c),
    // not blue's copy nor the store (d).
    let d = format!("h24-store-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{d}\n"))
        .success();
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=com.docker.compose.project={}", project.name))
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!ids.is_empty());
    assert!(Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .output()
        .unwrap()
        .status
        .success());
    let out = project.cutover(["rollback", "--json"]).success();
    let json = out.stdout_json();
    assert_eq!(json["to"], "blue", "{json}");
    assert_eq!(json["secrets_from"]["from"], "kept", "{json}");
    assert_eq!(json["secrets_from"]["service"], "web-green", "{json}");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&c)),
        "the recovered rollback did not get the values its image ran with"
    );
}

/// Two rollbacks at once: the lock orders them, and each decides its values under it, for
/// the color it brings back. The first gives blue its first value; the second, seeing blue
/// serve, takes green back with b (kept when the first stopped it), not the store's.
#[test]
fn e2e_two_rollbacks_racing_each_give_their_color_its_own_values() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let b = format!("h24-race-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{b}\n"))
        .success();
    project.deploy_ok("cutover-demo:v2");
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            "h24-race-store\n",
        )
        .success();
    let racers: Vec<_> = (0..2)
        .map(|_| project.spawn(["rollback", "--json", "--lock-wait", "120s"]))
        .collect();
    let mut kept = Vec::new();
    for racer in racers {
        let out = racer.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["secrets_from"]["from"], "kept", "{json}");
        kept.push(
            json["secrets_from"]["service"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    kept.sort();
    assert_eq!(kept, ["web-blue", "web-green"]);
    project.assert_serving("green", "v2");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&b))
    );
}

/// Every kept copy under `dir` and its bytes, temp files included (a rekey must leave none).
fn kept_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("stopped")] {
        for e in fs::read_dir(&sub).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                found.push((e.path().display().to_string(), fs::read(e.path()).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// `secrets rotate-identity` (and `rekey`) on the box re-encrypt the kept copies with the
/// store: left to the retired key, the rollback is refused and a reboot's restore fails until
/// the next deploy. A copy the identity cannot read stops the rotation before anything is
/// written, naming it; nothing plaintext is left in `.cutover/`, and no temp file.
#[test]
fn rotating_the_identity_re_encrypts_the_kept_copies() {
    use std::os::unix::fs::MetadataExt as _;
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let a = project.secret_value("DB_PASSWORD");
    let b = format!("h24-rekey-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{b}\n"))
        .success();
    project.deploy_ok("cutover-demo:v2");
    let kept = project.path().join(".cutover/deployed-secrets");
    let identity = project.identity().unwrap().to_path_buf();

    // A copy this identity cannot read: the rotation is refused, naming it; nothing changes.
    let planted = kept.join("stopped/web-green.json");
    foreign_copy(&project, &planted);
    let before = (
        kept_files(&kept),
        fs::read(project.path().join("secrets/demo.env.age")).unwrap(),
        fs::read(&identity).unwrap(),
    );
    let out = project
        .cutover([
            "secrets",
            "rotate-identity",
            "--out",
            identity.to_str().unwrap(),
        ])
        .failure();
    assert!(
        out.stderr.contains("web-green.json") && out.stderr.contains("remove it"),
        "{}",
        out.stderr
    );
    let after = (
        kept_files(&kept),
        fs::read(project.path().join("secrets/demo.env.age")).unwrap(),
        fs::read(&identity).unwrap(),
    );
    assert!(before == after, "a refused rotation changed a file");
    fs::remove_file(&planted).unwrap();

    let old = kept_files(&kept);
    let out = project
        .cutover([
            "secrets",
            "rotate-identity",
            "--out",
            identity.to_str().unwrap(),
        ])
        .success();
    assert!(
        out.stderr.contains("stopped/web-blue.json"),
        "{}",
        out.stderr
    );
    let new = kept_files(&kept);
    assert_eq!(
        new.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        old.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        "a copy added or left behind (a temp file?)"
    );
    for ((path, was), (_, now)) in old.iter().zip(&new) {
        assert_ne!(was, now, "{path} was not re-encrypted");
        assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0o600, "{path}");
        let text = String::from_utf8_lossy(now);
        assert!(
            !text.contains(&a) && !text.contains(&b),
            "{path}: plaintext"
        );
    }
    let copy: serde_json::Value =
        serde_json::from_slice(&fs::read(kept.join("stopped/web-blue.json")).unwrap()).unwrap();
    assert_eq!(copy["image"], "cutover-demo:v1", "{copy}");

    // With the new identity (the old one is now identity.txt.old): the rollback still brings
    // blue back with a, and a reboot's restore writes what runs.
    let out = project.cutover(["rollback", "--json"]).success();
    assert_eq!(out.stdout_json()["secrets_from"]["from"], "kept");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&a))
    );
    // `rekey`: fresh file keys for the copies too (green's, stopped now, included).
    let old = kept_files(&kept);
    project.cutover(["secrets", "rekey"]).success();
    for ((path, was), (_, now)) in old.iter().zip(&kept_files(&kept)) {
        assert_ne!(was, now, "{path} was not re-encrypted by rekey");
    }
    fs::remove_dir_all(project.secrets_root().join(&project.name)).unwrap();
    project.cutover(["secrets", "restore"]).success();
    let file = project
        .secrets_root()
        .join(&project.name)
        .join("web-blue/DB_PASSWORD");
    assert_eq!(fs::read_to_string(&file).unwrap(), a);
    let out = project.cutover(["rollback", "--json"]).success();
    assert_eq!(out.stdout_json()["secrets_from"]["from"], "kept");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&b))
    );
}

/// A deploy killed (-9) after its switch (here in the settle window), then a reboot: nginx
/// serves the new color, but the record still names the old one, the last deploy having
/// never finished. The boot unit's restore must write the files of every color that may
/// come back, the new one first of all: Docker refuses to start a container whose secrets
/// mount is missing, and nginx points at it.
#[test]
fn a_reboot_after_a_deploy_killed_past_its_switch_restores_the_serving_color() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let a = project.secret_value("DB_PASSWORD");
    let b = format!("h24-killed-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{b}\n"))
        .success();
    let mut deploy = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("settle");
    signal(&deploy, "-KILL");
    deploy.wait().unwrap();
    assert!(project
        .include()
        .contains(&project.port_of("green").to_string()));

    // The reboot: the tmpfs is empty, the boot unit restores.
    let dir = project.secrets_root().join(&project.name);
    fs::remove_dir_all(&dir).unwrap();
    let out = project.cutover(["secrets", "restore", "--json"]).success();
    assert!(!out.stdout.contains(&a) && !out.stderr.contains(&b));
    assert_eq!(
        fs::read_to_string(dir.join("web-green/DB_PASSWORD")).ok(),
        Some(b.clone()),
        "the color nginx serves gets no secrets after the reboot: {}",
        out.stdout
    );
    assert_eq!(
        fs::read_to_string(dir.join("web-blue/DB_PASSWORD")).unwrap(),
        a
    );
}

/// A deploy killed (-9) in its stop step, after the old color's copy moved aside, then a
/// reboot: the old color is still the recorded one and may come back; it must get the values
/// it ran with (its copy, now in `stopped/`), never the store's undeployed ones.
#[test]
fn a_deploy_killed_in_its_stop_step_leaves_the_old_colors_values_usable() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let a = project.secret_value("DB_PASSWORD");
    let b = format!("h24-stopkill-{}", std::process::id());
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{b}\n"))
        .success();
    let kept = project.path().join(".cutover/deployed-secrets");
    let mut deploy = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("stop");
    signal(&deploy, "-STOP");
    // The copy moves first thing in the step: a stop that lands before it proves nothing.
    let moved = kept.join("stopped/web-blue.json").is_file();
    signal(&deploy, "-KILL");
    deploy.wait().unwrap();
    if !moved {
        eprintln!("the deploy was stopped before it moved blue's copy: nothing to check");
        return;
    }
    let undeployed = format!("h24-undeployed-{}", std::process::id());
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            &format!("{undeployed}\n"),
        )
        .success();

    let dir = project.secrets_root().join(&project.name);
    fs::remove_dir_all(&dir).unwrap();
    let out = project.cutover(["secrets", "restore", "--json"]).success();
    let json = out.stdout_json();
    assert_eq!(
        fs::read_to_string(dir.join("web-blue/DB_PASSWORD")).unwrap(),
        a,
        "the old color would come back with a value it never ran: {json}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("web-green/DB_PASSWORD")).unwrap(),
        b
    );
    assert!(json["projects"][0].get("from_store").is_none(), "{json}");
}

/// Every regular file under `dir` (symlinks not followed) whose bytes contain `needle`.
fn files_with(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = e.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_with(&e.path(), needle));
        } else if kind.is_file()
            && String::from_utf8_lossy(&fs::read(e.path()).unwrap_or_default()).contains(needle)
        {
            found.push(e.path().display().to_string());
        }
    }
    found
}

/// Values a shell or a dotenv parser would mangle (quotes, `$(…)`, backticks, a newline, a
/// backslash) go through a rotation and a rollback in both deliveries byte for byte, run
/// nothing, and land on no persistent disk (the project, its `.cutover/`).
#[test]
fn e2e_a_rollback_gives_back_values_with_shell_and_dotenv_metacharacters() {
    if !ready() {
        return;
    }
    let pwned = std::env::temp_dir().join(format!("h24-pwned-{}", std::process::id()));
    let weird = |tag: &str| {
        format!(
            "h24{tag}'\"$(touch {p})`touch {p}`;|&\\n\\\\ ${{HOME}} line2\nend",
            p = pwned.display()
        )
    };
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    let (a, b) = (weird("mA"), weird("mB"));
    // Two trailing newlines: `set` drops one (what echo adds).
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{a}\n"))
        .success();
    project.deploy_ok("cutover-demo:v1");
    project
        .cutover_with_stdin(["secrets", "set", "demo", "DB_PASSWORD"], &format!("{b}\n"))
        .success();
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&b))
    );
    let out = project.cutover(["rollback"]).success();
    assert!(!out.stderr.contains("h24mA") && !out.stdout.contains("h24mA"));
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&a)),
        "files mode"
    );
    edit_config(&project, |c| {
        c["app"]["secrets_delivery"] = serde_json::json!("env")
    });
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&b))
    );
    let out = project.cutover(["rollback"]).success();
    assert!(!out.stderr.contains("h24mA") && !out.stdout.contains("h24mA"));
    assert_eq!(
        project.get("/secret-hash?key=DB_PASSWORD").unwrap(),
        (200, fnv1a(&a)),
        "env mode"
    );
    assert!(!pwned.exists(), "a value was run by a shell");
    for marker in ["h24mA", "h24mB"] {
        let found = files_with(&project.path(), marker);
        assert!(found.is_empty(), "plaintext on disk: {found:?}");
    }
}
