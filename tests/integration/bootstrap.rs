//! `cutover bootstrap`: idempotent steps against a temp `--root`, dry runs that change no
//! byte, failures that say what was done, the box identity's hygiene, and `--cloud-init`
//! user-data that cloud-init itself accepts.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{cutover, fixture, require};

/// An fstab as a fresh cloud image has it: comments, entries, a blank line.
const FSTAB: &str = "# /etc/fstab: static file system information.\n#\n# <file system> <mount point> <type> <options> <dump> <pass>\nLABEL=cloudimg-rootfs\t/\text4\tdiscard,errors=remount-ro\t0 1\n\nLABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1\n";

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn statuses(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn not_run(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["not_run"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Runs `cutover bootstrap --json ARGS` in `project`; returns the report, stdout+stderr text
/// and the time it took.
pub fn bootstrap(project: &Path, args: &[&str]) -> (serde_json::Value, String, Duration) {
    let started = Instant::now();
    let out = cutover(project)
        .arg("bootstrap")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bootstrap failed:\n{text}");
    (json(&out), text, took)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `root` with its type, mode, owner and bytes (or link target).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).unwrap()
            };
            out.insert(path, (meta.mode(), meta.uid(), bytes));
        }
    }
    out
}

/// A root as a fresh Debian/Ubuntu box has it: an fstab, and nginx's stock default site.
fn fresh_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    std::fs::create_dir_all(etc.join("nginx/sites-available")).unwrap();
    std::fs::create_dir_all(etc.join("nginx/sites-enabled")).unwrap();
    std::fs::write(etc.join("fstab"), FSTAB).unwrap();
    std::fs::write(etc.join("nginx/sites-available/default"), "server {}\n").unwrap();
    std::os::unix::fs::symlink(
        "/etc/nginx/sites-available/default",
        etc.join("nginx/sites-enabled/default"),
    )
    .unwrap();
    root
}

fn parking_project() -> tempfile::TempDir {
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("configs/good/parking.yml"),
        project.path().join("cutover.yml"),
    )
    .unwrap();
    project
}

#[test]
fn root_run_twice_sets_up_swap_once_and_changes_nothing_the_second_time() {
    let root = fresh_root();
    let project = tempfile::tempdir().unwrap(); // no cutover.yml: nginx and state dir skip
    let r = root.path().to_str().unwrap();

    let (first, text, took_first) = bootstrap(project.path(), &["--root", r, "--swap", "16M"]);
    let s = statuses(&first);
    for step in ["swap file", "fstab", "swappiness", "identity"] {
        assert_eq!(s[step], "changed", "{step}: {text}");
    }
    for step in ["swapon", "packages", "services", "nginx site", "state dir"] {
        assert_eq!(s[step], "skipped", "{step}: {text}");
    }
    // Live-system commands are listed, not run.
    let listed = not_run(&first);
    for want in [
        "swapon /swapfile",
        "sysctl -p /etc/sysctl.d/99-cutover.conf",
        "systemctl enable --now docker nginx",
    ] {
        assert!(listed.iter().any(|c| c == want), "{want} not in {listed:?}");
    }
    assert!(
        listed
            .iter()
            .any(|c| c.contains(" install ") && c.contains("nginx")),
        "no package install listed: {listed:?}"
    );

    // The boot unit of files delivery: before docker, as the deploy user, from a binary
    // that stays; its tmpfs directory made at every boot; enabling it listed.
    let unit = std::fs::read_to_string(
        root.path()
            .join("etc/systemd/system/cutover-secrets.service"),
    )
    .unwrap();
    for want in [
        "Before=docker.service",
        "WantedBy=multi-user.target docker.service",
        "Type=oneshot",
        "ExecStart=/usr/local/lib/cutover/cutover --identity /etc/cutover/identity.txt secrets restore --all",
    ] {
        assert!(unit.contains(want), "{want} not in:\n{unit}");
    }
    let tmpfiles =
        std::fs::read_to_string(root.path().join("etc/tmpfiles.d/cutover.conf")).unwrap();
    assert!(
        tmpfiles.contains("d /run/cutover/secrets 0700 "),
        "{tmpfiles}"
    );
    assert_eq!(
        mode(&root.path().join("usr/local/lib/cutover/cutover")),
        0o755
    );
    assert!(
        listed
            .iter()
            .any(|c| c == "systemctl enable cutover-secrets.service"),
        "{listed:?}"
    );

    // The nft switch's boot restore (issue #26): root's oneshot, before nginx serves, after
    // nftables.service's flush; its script restores every saved ruleset; enabling listed.
    let unit = std::fs::read_to_string(
        root.path()
            .join("etc/systemd/system/cutover-switch.service"),
    )
    .unwrap();
    for want in [
        "\nBefore=nginx.service\n",
        "After=nftables.service",
        "WantedBy=multi-user.target nginx.service",
        "Type=oneshot",
        "ExecStart=/usr/local/lib/cutover-root/restore-switch\n",
    ] {
        assert!(unit.contains(want), "{want} not in:\n{unit}");
    }
    assert!(!unit.contains("User="), "{unit}");
    let script = root
        .path()
        .join("usr/local/lib/cutover-root/restore-switch");
    assert_eq!(mode(&script), 0o755);
    assert!(std::fs::read_to_string(&script)
        .unwrap()
        .contains("nft -f \"$f\""));
    assert!(
        listed
            .iter()
            .any(|c| c == "systemctl enable cutover-switch.service"),
        "{listed:?}"
    );

    // The swap file: 16 MiB, 0600, fully allocated, with mkswap's signature.
    let swapfile = root.path().join("swapfile");
    let meta = std::fs::metadata(&swapfile).unwrap();
    assert_eq!(meta.len(), 16 << 20);
    assert_eq!(mode(&swapfile), 0o600);
    assert!(meta.blocks() * 512 >= meta.len(), "the swap file has holes");
    let bytes = std::fs::read(&swapfile).unwrap();
    assert_eq!(&bytes[4086..4096], b"SWAPSPACE2", "no mkswap signature");
    if cutover::process::which("blkid").is_some() || Path::new("/usr/sbin/blkid").exists() {
        let blkid = std::process::Command::new("blkid")
            .args(["-o", "value", "-s", "TYPE"])
            .arg(&swapfile)
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "swap");
    }

    // fstab: byte-for-byte the old file plus one line.
    let fstab = std::fs::read_to_string(root.path().join("etc/fstab")).unwrap();
    assert_eq!(fstab, format!("{FSTAB}/swapfile none swap sw 0 0\n"));

    let sysctl = std::fs::read_to_string(root.path().join("etc/sysctl.d/99-cutover.conf")).unwrap();
    assert!(sysctl.contains("\nvm.swappiness = 10\n"), "{sysctl}");

    // The identity: 0600, its public key reported, its secret key never printed.
    let identity = root.path().join("etc/cutover/identity.txt");
    assert_eq!(mode(&identity), 0o600);
    let recipient = first["recipient"].as_str().unwrap().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    assert!(
        !text.contains("AGE-SECRET-KEY"),
        "secret key printed:\n{text}"
    );

    let before = tree(root.path());
    let (second, text2, took_second) = bootstrap(project.path(), &["--root", r, "--swap", "16M"]);
    let changed: Vec<_> = statuses(&second)
        .into_iter()
        .filter(|(_, st)| st != "ok" && st != "skipped")
        .collect();
    assert!(
        changed.is_empty(),
        "second run changed {changed:?}:\n{text2}"
    );
    assert_eq!(
        tree(root.path()),
        before,
        "the second run changed files under the root"
    );
    assert_eq!(second["recipient"].as_str().unwrap(), recipient);
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/fstab"))
            .unwrap()
            .matches("/swapfile")
            .count(),
        1
    );
    eprintln!("bootstrap --root --swap 16M: first run {took_first:?}, second run {took_second:?}");

    // The human report names the recipient and the one command that adds it, and rekeys.
    let out = cutover(project.path())
        .args(["bootstrap", "--root", r, "--swap", "16M"])
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains(&recipient), "{human}");
    assert!(
        human.contains(&format!(
            "'{recipient}' >> secrets/recipients.txt && cutover secrets rekey"
        )),
        "{human}"
    );
    assert!(human.contains("not run"), "{human}");
    assert!(!human.contains("AGE-SECRET-KEY"), "{human}");
}

#[test]
fn with_a_config_the_nginx_site_include_and_state_dir_are_installed() {
    let root = fresh_root();
    let project = parking_project();
    let r = root.path().to_str().unwrap();
    let (first, text, _) = bootstrap(
        project.path(),
        &["--root", r, "--swap", "off", "--no-install"],
    );
    let s = statuses(&first);
    assert_eq!(s["nginx site"], "changed", "{text}");
    assert_eq!(s["state dir"], "changed", "{text}");
    for step in ["swap file", "swapon", "fstab", "packages"] {
        assert_eq!(s[step], "skipped", "{step}: {text}");
    }
    assert!(!root.path().join("swapfile").exists());

    // The installed files are what `cutover render` renders.
    cutover(project.path())
        .args(["render", "--out", "out"])
        .assert()
        .success();
    let rendered =
        |name: &str| std::fs::read_to_string(project.path().join("out").join(name)).unwrap();
    let site = root.path().join("etc/nginx/sites-enabled/cutover.conf");
    let include = root.path().join("etc/nginx/conf.d/service-url.inc");
    assert_eq!(
        std::fs::read_to_string(&site).unwrap(),
        rendered("nginx-site.conf")
    );
    assert_eq!(
        std::fs::read_to_string(&include).unwrap(),
        rendered("service-url.inc")
    );
    // Debian's stock default site (default_server on :80) is disabled, not deleted.
    assert!(
        std::fs::symlink_metadata(root.path().join("etc/nginx/sites-enabled/default")).is_err()
    );
    assert!(root
        .path()
        .join("etc/nginx/sites-available/default")
        .exists());
    let listed = not_run(&first);
    assert!(listed.iter().any(|c| c == "nginx -t"), "{listed:?}");
    assert!(listed.iter().any(|c| c == "nginx -s reload"), "{listed:?}");

    let state = root
        .path()
        .join(
            project
                .path()
                .canonicalize()
                .unwrap()
                .strip_prefix("/")
                .unwrap(),
        )
        .join(".cutover");
    let state = if state.is_dir() {
        state
    } else {
        root.path()
            .join(project.path().strip_prefix("/").unwrap())
            .join(".cutover")
    };
    assert_eq!(mode(&state), 0o750, "{}", state.display());

    // The include belongs to deploys once it exists: a second run leaves it alone.
    std::fs::write(&include, "set $service_url http://127.0.0.1:8082;\n").unwrap();
    let (second, text2, _) = bootstrap(
        project.path(),
        &["--root", r, "--swap", "off", "--no-install"],
    );
    assert_eq!(statuses(&second)["nginx site"], "ok", "{text2}");
    assert_eq!(
        std::fs::read_to_string(&include).unwrap(),
        "set $service_url http://127.0.0.1:8082;\n"
    );
}

#[test]
fn dry_run_changes_no_byte_and_lists_every_change() {
    let root = fresh_root();
    let project = parking_project();
    let r = root.path().to_str().unwrap();
    let before = tree(root.path());
    let out = cutover(project.path())
        .args(["bootstrap", "--dry-run", "--root", r, "--swap", "16M"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree(root.path()),
        before,
        "a dry run changed the root:\n{text}"
    );
    for want in [
        "would change",
        &format!("would: create {r}/swapfile (16M"),
        "would: run `mkswap",
        &format!("would: update {r}/etc/fstab"),
        &format!("would: create {r}/etc/sysctl.d/99-cutover.conf"),
        &format!("would: create {r}/etc/nginx/sites-enabled/cutover.conf"),
        &format!("would: remove {r}/etc/nginx/sites-enabled/default"),
        &format!("would: create {r}/etc/cutover/identity.txt"),
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }

    // After a real run, a dry run plans nothing.
    bootstrap(project.path(), &["--root", r, "--swap", "16M"]);
    let (report, text, _) = bootstrap(project.path(), &["--dry-run", "--root", r, "--swap", "16M"]);
    assert!(
        statuses(&report)
            .values()
            .all(|s| s == "ok" || s == "skipped"),
        "{text}"
    );
}

#[test]
fn an_existing_identity_is_never_overwritten_only_tightened() {
    let root = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let identity = root.path().join("etc/cutover/identity.txt");
    std::fs::create_dir_all(identity.parent().unwrap()).unwrap();
    let key = age::x25519::Identity::generate();
    let secret = {
        use secrecy::ExposeSecret as _;
        key.to_string().expose_secret().to_string()
    };
    let contents = format!("# made elsewhere\n{secret}\n");
    std::fs::write(&identity, &contents).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (report, text, _) = bootstrap(
        project.path(),
        &["--root", r, "--swap", "off", "--no-install"],
    );
    assert_eq!(std::fs::read_to_string(&identity).unwrap(), contents);
    assert_eq!(mode(&identity), 0o600, "{text}");
    assert_eq!(
        report["recipient"].as_str().unwrap(),
        key.to_public().to_string()
    );
    assert!(!text.contains(&secret), "the secret key was printed");
    if require("age", "decrypt with the box identity through the age CLI") {
        // The file is one the age CLI reads as an identity.
        let mut enc = std::process::Command::new("age")
            .args(["-r", &key.to_public().to_string(), "-a"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        enc.stdin.take().unwrap().write_all(b"hello").unwrap();
        let ciphertext = enc.wait_with_output().unwrap().stdout;
        let mut dec = std::process::Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        dec.stdin.take().unwrap().write_all(&ciphertext).unwrap();
        assert_eq!(dec.wait_with_output().unwrap().stdout, b"hello");
    }
}

#[test]
fn a_failing_step_stops_the_run_and_says_what_was_done() {
    let root = fresh_root();
    let project = tempfile::tempdir().unwrap();
    // sysctl.d is a file: the swappiness step cannot write into it.
    std::fs::write(root.path().join("etc/sysctl.d"), "not a directory").unwrap();
    let r = root.path().to_str().unwrap();
    let out = cutover(project.path())
        .args(["bootstrap", "--json", "--root", r, "--swap", "16M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    let steps = report["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(last["name"], "swappiness");
    assert_eq!(last["status"], "failed");
    assert!(
        last["error"].as_str().unwrap().contains("sysctl.d"),
        "{last}"
    );
    assert_eq!(steps.len(), 4, "steps after the failure ran: {report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped at step `swappiness`")
            && stderr.contains("already changed: swap file, fstab"),
        "{stderr}"
    );
    assert!(
        !root.path().join("etc/cutover").exists(),
        "identity step ran after the failure"
    );
}

#[test]
fn a_live_run_as_non_root_is_refused_before_anything_changes() {
    let bin = assert_cmd::cargo::cargo_bin("cutover");
    let project = tempfile::tempdir().unwrap();
    let mut cmd = if cutover::bootstrap::effective_uid().unwrap() == 0 {
        if !require("setpriv", "run bootstrap as an unprivileged user") {
            return;
        }
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        std::process::Command::new(&bin)
    };
    let out = cmd
        .args(["bootstrap", "--swap", "16M"])
        .current_dir(project.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert!(
        stderr.contains("--dry-run") && stderr.contains("--root"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "a step ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A live bootstrap at a terminal asks first; `n` changes nothing. Run as an unprivileged user
/// (65534 under root): were the question ever skipped, the privilege check refuses the run
/// before any step, so this test can never bootstrap the machine it runs on.
#[test]
fn a_live_run_at_a_terminal_asks_first_and_no_changes_nothing() {
    if !require("script", "give bootstrap a terminal (util-linux `script`)") {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("cutover");
    let as_root = cutover::bootstrap::effective_uid().unwrap() == 0;
    if as_root && !require("setpriv", "run bootstrap as an unprivileged user") {
        return;
    }
    let project = tempfile::tempdir().unwrap();
    let run = |extra: &str, answer: &str| {
        let user = if as_root {
            "setpriv --reuid=65534 --regid=65534 --clear-groups "
        } else {
            ""
        };
        let line = format!(
            "{user}{} bootstrap --swap 16M --no-install {extra}",
            bin.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .current_dir(project.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, screen) = run("", "n\n");
    assert_eq!(code, Some(1), "{screen}");
    assert!(screen.contains("changes THIS machine"), "{screen}");
    assert!(screen.contains("Continue? [y/N]"), "{screen}");
    assert!(screen.contains("nothing changed"), "{screen}");
    assert!(
        !screen.contains("must run as root"),
        "asked before anything else: {screen}"
    );
    // --yes skips the question (and this user then meets the privilege check).
    let (code, screen) = run("--yes", "");
    assert_eq!(code, Some(1), "{screen}");
    assert!(!screen.contains("Continue?"), "{screen}");
    assert!(screen.contains("must run as root"), "{screen}");
}

#[test]
fn cloud_init_user_data_passes_cloud_init_schema_and_matches_the_snapshot() {
    let project = parking_project();
    let out = cutover(project.path())
        .args(["bootstrap", "--cloud-init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("#cloud-config\n"));

    // The nginx files in write_files are exactly what `cutover render` writes.
    let doc = crate::common::yaml_to_json(&text);
    cutover(project.path())
        .args(["render", "--out", "out"])
        .assert()
        .success();
    let content = |path: &str| -> String {
        doc["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in write_files"))["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let rendered =
        |name: &str| std::fs::read_to_string(project.path().join("out").join(name)).unwrap();
    assert_eq!(
        content("/etc/nginx/sites-enabled/cutover.conf"),
        rendered("nginx-site.conf")
    );
    assert_eq!(
        content("/etc/nginx/conf.d/service-url.inc"),
        rendered("service-url.inc")
    );
    assert_eq!(
        doc["swap"]["size"].as_u64(),
        Some(2 << 30),
        "t2.micro: 2 GiB"
    );

    insta::with_settings!({ prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("bootstrap-cloud-init-parking", text);
    });

    if !require(
        "cloud-init",
        "validate the user-data with `cloud-init schema`",
    ) {
        return;
    }
    let check = |text: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let out = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cloud-init schema rejected:\n{text}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&text);

    // Amazon Linux, no config: still valid, and it says how to get compose.
    let bare = tempfile::tempdir().unwrap();
    let out = cutover(bare.path())
        .args(["bootstrap", "--cloud-init", "--os", "amzn", "--swap", "1G"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let amzn = String::from_utf8(out.stdout).unwrap();
    assert!(amzn.contains("packages no docker compose"), "{amzn}");
    assert!(amzn.contains("cli-plugins/docker-compose"), "{amzn}");
    assert!(amzn.contains("size: 1073741824"), "{amzn}");
    check(&amzn);
}

/// `visudo -c -f` accepts the drop-in bootstrap wrote.
fn assert_visudo_accepts(drop_in: &Path) {
    let visudo = std::process::Command::new(cutover::bootstrap::sbin("visudo"))
        .args(["-c", "-f"])
        .arg(drop_in)
        .output()
        .unwrap();
    assert!(visudo.status.success(), "{visudo:?}");
}

/// A project `cutover init myapp --user admin` wrote, and a root whose passwd has admin.
fn sudo_user_project_and_root() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path())
        .args(["init", "myapp", "--user", "admin"])
        .assert()
        .success();
    let project = dir.path().join("myapp");
    let root = fresh_root();
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nadmin:x:4242:4243::/home/admin:/bin/sh\n",
    )
    .unwrap();
    (dir, project, root)
}

/// [`sudo_user_project_and_root`] in nft mode ([`switch_by_nft`]); None (said loudly, or a
/// failure under CI) without visudo to check the drop-ins.
fn sudo_user_nft_project() -> Option<(tempfile::TempDir, PathBuf, tempfile::TempDir)> {
    if !require("visudo", "check the sudoers drop-in bootstrap writes") {
        return None;
    }
    let (dir, project, root) = sudo_user_project_and_root();
    switch_by_nft(&project);
    Some((dir, project, root))
}

/// `bootstrap --json ARGS` exits 1 with its step "nft switch at boot" failed; its report
/// and stderr, for what they name.
fn refused_at_the_nft_step(project: &Path, args: &[&str]) -> String {
    let out = cutover(project)
        .arg("bootstrap")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(
        statuses(&report)["nft switch at boot"],
        "failed",
        "{report}"
    );
    format!("{report}{}", String::from_utf8_lossy(&out.stderr))
}

/// `nginx.switch: nft` with switch ports 9180 and 9181 in the project's cutover.yml.
fn switch_by_nft(project: &Path) {
    let config = std::fs::read_to_string(project.join("cutover.yml")).unwrap();
    let config = config.replacen(
        "\nnginx:\n",
        "\nnginx:\n  switch: nft\n  switch_ports: [9180, 9181]\n",
        1,
    );
    std::fs::write(project.join("cutover.yml"), config).unwrap();
}

/// Bootstrap's arguments for `root` with the deploy user admin: no swap, no packages.
fn admin_args(root: &tempfile::TempDir) -> Vec<String> {
    let r = root.path().to_str().unwrap();
    [
        "--root",
        r,
        "--swap",
        "off",
        "--no-install",
        "--user",
        "admin",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_sudo_user_gets_an_include_dir_it_owns_and_a_visudo_checked_drop_in_for_exactly_nginx() {
    if !require("visudo", "check the sudoers drop-in bootstrap writes") {
        return;
    }
    let (_dir, project, root) = sudo_user_project_and_root();
    let args = admin_args(&root);
    let args = args.iter().map(String::as_str).collect::<Vec<_>>();
    let (first, text, _) = bootstrap(&project, &args);
    assert_eq!(statuses(&first)["nginx access"], "changed", "{text}");

    // The include's directory is admin's; the first include is in it, where the site looks.
    let nginx_dir = root.path().join("home/admin/nginx");
    let meta = std::fs::metadata(&nginx_dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), mode(&nginx_dir)),
        (4242, 4243, 0o755)
    );
    assert!(nginx_dir.join("myapp.inc").is_file(), "{text}");
    // The boot unit's cutover (and its directory) are admin's: deploys as admin refresh it
    // after an upgrade (the unit runs it as admin anyway).
    for p in ["usr/local/lib/cutover", "usr/local/lib/cutover/cutover"] {
        let meta = std::fs::metadata(root.path().join(p)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243), "{p}: {text}");
    }
    let site = std::fs::read_to_string(root.path().join("etc/nginx/sites-enabled/myapp.conf"));
    assert!(site
        .unwrap()
        .contains("include /home/admin/nginx/myapp.inc;"));

    // The drop-in allows exactly the two commands, argv-exact, and sudo's parser accepts it.
    let drop_in = root.path().join("etc/sudoers.d/cutover-admin");
    let rules = std::fs::read_to_string(&drop_in).unwrap();
    let nginx = cutover::bootstrap::sbin("nginx");
    let nginx = if nginx.is_absolute() {
        nginx
    } else {
        cutover::process::which("nginx").unwrap()
    };
    let expected = format!(
        "admin ALL=(root) NOPASSWD: {n} -t, {n} -s reload",
        n = nginx.display()
    );
    let rule_lines: Vec<&str> = rules.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rule_lines, [expected.as_str()], "{rules}");
    assert_eq!(mode(&drop_in), 0o440);
    assert_visudo_accepts(&drop_in);

    // A rerun changes nothing.
    let (second, text2, _) = bootstrap(&project, &args);
    assert_eq!(statuses(&second)["nginx access"], "ok", "{text2}");
}

#[test]
fn a_sudo_user_with_the_root_include_gets_a_note_naming_the_fix() {
    let root = fresh_root();
    std::fs::create_dir_all(root.path().join("etc/nginx/conf.d")).unwrap();
    std::fs::write(
        root.path().join("etc/passwd"),
        "admin:x:4242:4243::/home/admin:/bin/sh\n",
    )
    .unwrap();
    let project = parking_project();
    let args = admin_args(&root);
    let args = args.iter().map(String::as_str).collect::<Vec<_>>();
    let (report, text, _) = bootstrap(project.path(), &args);
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "nginx access")
        .unwrap();
    let notes = step["notes"].to_string();
    for needle in [
        "/etc/nginx/conf.d, which admin cannot write",
        "cutover init --user admin",
        "include: /home/admin/nginx/<project>.inc",
    ] {
        assert!(notes.contains(needle), "{needle}: {text}");
    }
    // Root's nginx commands need no sudoers rule.
    assert!(!root.path().join("etc/sudoers.d").exists());
}

#[test]
fn a_rerun_does_not_ask_again_to_add_a_key_already_in_recipients() {
    let (_dir, project, root) = sudo_user_project_and_root();
    let r = root.path().to_str().unwrap();
    let args = ["bootstrap", "--root", r, "--swap", "off", "--no-install"];
    let first = cutover(&project).args(args).output().unwrap();
    let first = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(first.contains(">> secrets/recipients.txt"), "{first}");
    let key = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("public key: "))
        .unwrap()
        .to_string();
    std::fs::write(
        project.join("secrets/recipients.txt"),
        format!("# the box\n{key}\n"),
    )
    .unwrap();
    let second = cutover(&project).args(args).output().unwrap();
    let second = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(!second.contains(">> secrets/recipients.txt"), "{second}");
    assert!(
        second.contains(&format!(
            "public key: {key} (already in secrets/recipients.txt)"
        )),
        "{second}"
    );
}

// issue #26 item 5: nft mode on a box whose deploy user is not root. Bootstrap gives the
// user exactly its project's rule: the grant (root's, 0600), a root-owned copy of cutover in
// root's own directory, and a visudo-checked drop-in for exactly the project's argv.
#[test]
fn a_sudo_user_in_nft_mode_gets_the_grant_a_root_owned_copy_and_an_exact_drop_in() {
    let Some((_dir, project, root)) = sudo_user_nft_project() else {
        return;
    };
    let args = admin_args(&root);
    let args = args.iter().map(String::as_str).collect::<Vec<_>>();
    let (first, text, _) = bootstrap(&project, &args);
    assert_eq!(statuses(&first)["nft switch at boot"], "changed", "{text}");

    let switch_dir = root.path().join("var/lib/cutover/switch");
    assert_eq!(mode(&switch_dir), 0o700, "{text}");
    let grant_file = switch_dir.join("myapp.grant");
    assert_eq!(mode(&grant_file), 0o600);
    let grant: cutover::switch_rule::Grant =
        serde_json::from_str(&std::fs::read_to_string(&grant_file).unwrap()).unwrap();
    assert_eq!(
        grant,
        cutover::switch_rule::Grant {
            switch_ports: [9180, 9181],
            blue: 8081,
            green: 8082
        }
    );
    // Root's directory and copy, never the deploy user's (theirs is the boot unit's).
    let root_dir = root.path().join("usr/local/lib/cutover-root");
    let copy = root_dir.join("cutover");
    for p in [&root_dir, &copy, &switch_dir, &grant_file] {
        let meta = std::fs::metadata(p).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}: {text}", p.display());
    }
    assert_eq!(mode(&root_dir), 0o755);
    assert_eq!(mode(&copy), 0o755);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_cutover")).unwrap()
    );
    let restore = root_dir.join("restore-switch");
    assert!(restore.is_file(), "{text}");

    let drop_in = root.path().join("etc/sudoers.d/cutover-switch-myapp");
    assert_eq!(mode(&drop_in), 0o440);
    let rules = std::fs::read_to_string(&drop_in).unwrap();
    let rule_lines: Vec<&str> = rules.lines().filter(|l| !l.starts_with('#')).collect();
    let h = "/usr/local/lib/cutover-root/cutover switch-rule";
    assert_eq!(
        rule_lines,
        [format!(
            "admin ALL=(root) NOPASSWD: {h} read myapp, {h} remove myapp, \
             {h} set myapp blue blue, {h} set myapp blue green, {h} set myapp green blue, \
             {h} set myapp green green"
        )],
        "{rules}"
    );
    assert_visudo_accepts(&drop_in);

    // A rerun changes nothing.
    let (second, text2, _) = bootstrap(&project, &args);
    assert_eq!(statuses(&second)["nft switch at boot"], "ok", "{text2}");
}

// A deploy user who could write /usr/local/lib once (Debian's old `staff` group) made
// /usr/local/lib/cutover-root first and left in it a byte-identical copy of cutover they own
// (to rewrite it later, in place, and have sudo run it as root): bootstrap refuses the
// directory rather than take it over. A file of another user in root's directory (from an
// earlier bootstrap that chowned such a directory) is replaced, not kept for its bytes; a
// parent another user can write is refused.
#[test]
fn a_root_directory_someone_else_made_or_could_replace_is_refused_not_taken_over() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some((_dir, project, root)) = sudo_user_nft_project() else {
        return;
    };
    let args = admin_args(&root);
    let args = args.iter().map(String::as_str).collect::<Vec<_>>();
    let root_dir = root.path().join("usr/local/lib/cutover-root");
    let copy = root_dir.join("cutover");
    std::fs::create_dir_all(&root_dir).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cutover"), &copy).unwrap();
    std::os::unix::fs::chown(&root_dir, Some(4242), Some(4243)).unwrap();
    std::os::unix::fs::chown(&copy, Some(4242), Some(4243)).unwrap();
    let refused = || refused_at_the_nft_step(&project, &args);
    let text = refused();
    assert!(
        text.contains(&format!(
            "{} belongs to uid 4242, not root: someone else created it",
            root_dir.display()
        )),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&root_dir).unwrap().uid(), 4242);
    assert!(!root
        .path()
        .join("etc/sudoers.d/cutover-switch-myapp")
        .exists());

    // A symlink in its place (to a directory root owns) is refused as well.
    let aside = root.path().join("usr/local/lib/elsewhere");
    std::fs::rename(&root_dir, &aside).unwrap();
    std::os::unix::fs::chown(&aside, Some(0), Some(0)).unwrap();
    std::os::unix::fs::symlink(&aside, &root_dir).unwrap();
    let text = refused();
    assert!(
        text.contains(&format!(
            "{} is not a directory (a symlink?)",
            root_dir.display()
        )),
        "{text}"
    );
    std::fs::remove_file(&root_dir).unwrap();
    std::fs::rename(&aside, &root_dir).unwrap();

    // An earlier bootstrap took the directory over: the user's file in it is replaced.
    std::os::unix::fs::chown(&root_dir, Some(0), Some(0)).unwrap();
    let (second, text, _) = bootstrap(&project, &args);
    assert_eq!(statuses(&second)["nft switch at boot"], "changed", "{text}");
    let meta = std::fs::metadata(&copy).unwrap();
    assert_eq!((meta.uid(), meta.nlink()), (0, 1), "{text}");

    // A parent the deploy user's group can write.
    let lib = root.path().join("usr/local/lib");
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o775)).unwrap();
    let text = refused();
    assert!(
        text.contains(&format!("{} (a parent of", lib.display()))
            && text.contains("expected root's and writable by root only"),
        "{text}"
    );
}

// A deploy user named `switch-<project>` would have its nginx drop-in at the project's switch
// drop-in's path: each run would overwrite the other's rules, so bootstrap refuses, naming it.
#[test]
fn a_user_whose_nginx_drop_in_is_the_projects_switch_drop_in_is_refused() {
    let Some((_dir, project, root)) = sudo_user_nft_project() else {
        return;
    };
    let mut args = admin_args(&root);
    *args.last_mut().unwrap() = "switch-myapp".into();
    let args = args.iter().map(String::as_str).collect::<Vec<_>>();
    let text = refused_at_the_nft_step(&project, &args);
    assert!(
        text.contains("cutover-switch-myapp would hold both switch-myapp's nginx rules"),
        "{text}"
    );
}
