//! `cutover --host`: real SSH to a real sshd, deploying on this machine's Docker engine.
//!
//! Each test starts its own box (harness/ssh_box.rs: Debian's openssh-server on a free
//! loopback port, the box user `cutover-box`, its own nginx) and talks to it the way a laptop
//! would: an ssh_config of its own through `CUTOVER_SSH_CONFIG`, never the real ~/.ssh.
//!
//! Needs root (to create the box user and start sshd), sshd, ssh, docker, nginx, age and the
//! demo images; without them the tests are skipped loudly, and fail under CI.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::common::{files_containing, repo_root, sh, sh_ok, texts};
use crate::harness::ssh_box::{
    deploy_ready, shared_data, ssh_ready, test_identity, Auth, RemoteProject, Setup, SshBox,
    BOX_USER,
};

/// The demo secrets' values, decrypted with the `age` CLI (independent of cutover).
fn demo_secret_values() -> Vec<String> {
    let identity = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(identity.path(), test_identity()).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity.path())
        .arg(repo_root().join("secrets/demo.env.age"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let values: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| v.len() >= 6)
        .collect();
    assert!(!values.is_empty());
    values
}

/// A project scaffolded by `cutover init` in a fresh temp dir: the laptop's side.
fn init_local() -> tempfile::TempDir {
    let local = tempfile::tempdir().unwrap();
    crate::common::cutover(local.path())
        .args(["init", "."])
        .assert()
        .success();
    local
}

/// Sets `remote.dir` in the local cutover.yml to a dir under the box user's HOME; returns it.
fn point_at_box_dir(local: &Path, ssh: &SshBox) -> PathBuf {
    let remote_dir = ssh.box_dir("box").join("project");
    let config = std::fs::read_to_string(local.join("cutover.yml")).unwrap();
    std::fs::write(
        local.join("cutover.yml"),
        format!("{config}\nremote:\n  dir: {}\n", remote_dir.display()),
    )
    .unwrap();
    remote_dir
}

// ---- tests that need no Docker ----------------------------------------------------------

#[test]
fn remote_unknown_host_key_is_refused_with_the_pin_command() {
    if !ssh_ready() {
        return;
    }
    let ssh = SshBox::start(Auth::Accept, false, None);
    let local = init_local();
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .args(["--host", "box", "status"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let known = ssh.path().join("known_hosts");
    let pin = format!(
        "ssh-keyscan -p {} 127.0.0.1 >> {}",
        ssh.port,
        known.display()
    );
    assert!(stderr.contains(&pin), "{stderr}");
    assert!(stderr.contains("verify the fingerprint"), "{stderr}");
    // Refused before authenticating: nothing accepted, nothing written to known_hosts.
    assert_eq!(ssh.accepted(), 0);
    assert_eq!(std::fs::read_to_string(&known).unwrap(), "");
    // The printed command works: run it, and the same invocation gets through.
    sh_ok(&pin);
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .args(["--host", "box", "status"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(
        stderr.contains("nothing has been deployed to box yet"),
        "{stderr}"
    );
    assert_eq!(ssh.accepted(), 1);
}

#[test]
fn remote_a_box_that_refuses_the_key() {
    if !ssh_ready() {
        return;
    }
    let ssh = SshBox::start(Auth::RefuseKey, true, None);
    let local = init_local();
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .env_remove("SSH_AUTH_SOCK")
        .args(["--host", "box", "deploy", "--image", "x:1"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("box refused our SSH key for user `cutover-box`"),
        "{stderr}"
    );
    assert!(stderr.contains("authorized_keys"), "{stderr}");
    assert!(ssh.installed_binaries().is_empty());
}

#[test]
fn remote_a_box_of_another_architecture_names_the_artifact_to_install() {
    if !ssh_ready() {
        return;
    }
    let other = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let ssh = SshBox::start_with(Auth::Accept, true, None, Some(other));
    let local = init_local();
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .args(["--host", "box", "status"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("box is {other} and this cutover is built for")),
        "{stderr}"
    );
    // Where the laptop keeps the other architecture's release binary (none here), and the
    // artifact to put there.
    let artifact = format!(
        "cutover-{}-{other}-unknown-linux-gnu",
        env!("CARGO_PKG_VERSION")
    );
    let home = crate::common::shared_home();
    let kept = home.join(".local/share/cutover/bin").join(&artifact);
    assert!(
        stderr.contains(&format!(
            "put the {other} release binary of this version at {}",
            kept.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{artifact}.tar.gz")), "{stderr}");
    assert!(ssh.installed_binaries().is_empty(), "nothing uploaded");
}

#[test]
fn remote_an_aarch64_box_gets_the_aarch64_release_binary_from_the_laptops_data_dir() {
    if !ssh_ready() || !crate::common::require("unshare", "give the box a private binfmt_misc") {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        return; // the emulated box is aarch64: only an x86_64 laptop is a foreign one
    }
    let Some(arm) = crate::harness::artifact::Aarch64::unpack() else {
        return;
    };
    let ssh = SshBox::start_aarch64(Auth::Accept, None);
    let local = init_local();
    let remote_dir = point_at_box_dir(local.path(), &ssh);
    let data = tempfile::tempdir().unwrap();
    let artifact = format!(
        "cutover-{}-aarch64-unknown-linux-gnu",
        env!("CARGO_PKG_VERSION")
    );
    let kept = data.path().join("cutover/bin").join(&artifact);
    let run = || {
        crate::common::cutover(local.path())
            .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
            .env("XDG_DATA_HOME", data.path())
            .args(["--host", "box", "render", "--check"])
            .output()
            .unwrap()
    };

    // Not an aarch64 binary where the aarch64 one belongs: refused here, nothing sent.
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cutover"), &kept).unwrap();
    let out = run();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is not an aarch64 Linux binary",
            kept.display()
        )),
        "{stderr}"
    );
    assert!(ssh.installed_binaries().is_empty(), "nothing uploaded");

    // The aarch64 build: uploaded, checked on the box (it runs there, through qemu-user, and
    // says our version) and run there for the command.
    std::fs::copy(&arm.bin, &kept).unwrap();
    let out = run();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("uploaded cutover"), "{stderr}");
    // The box's answer: the aarch64 binary checked the synced release there.
    assert!(
        stdout.contains(&format!("{}/releases/", remote_dir.display()))
            && stdout.contains("is valid"),
        "{stdout}"
    );
    let installed = ssh.installed_binaries();
    assert_eq!(installed.len(), 1, "{installed:?}");
    let landed = ssh.data.join("cutover/bin").join(&installed[0]);
    assert_eq!(
        std::fs::read(&landed).unwrap(),
        std::fs::read(&arm.bin).unwrap(),
        "the box holds the aarch64 build, byte for byte"
    );
    let kind = sh_ok(&format!("file -b {}", landed.display()));
    assert!(kind.contains("ARM aarch64"), "{kind}");

    // Next time it is there already.
    let out = run();
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("already installed"), "{stderr}");
}

/// A `render --check` through `--host` of a project that `arrange` spoils, which the sync must
/// refuse: its stderr, the box (to search) and whether any release reached it.
fn refused_sync(arrange: impl FnOnce(&Path)) -> Option<(String, SshBox, bool)> {
    if !ssh_ready() {
        return None;
    }
    let ssh = SshBox::start(Auth::Accept, true, Some(shared_data()));
    let local = init_local();
    let remote_dir = point_at_box_dir(local.path(), &ssh);
    arrange(local.path());
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .args(["--host", "box", "render", "--check"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let released = remote_dir.join("releases").exists();
    Some((stderr, ssh, released))
}

#[test]
fn remote_deploy_to_an_include_the_ssh_user_cannot_write_is_refused_before_ship_and_sync() {
    if !ssh_ready() {
        return;
    }
    let ssh = SshBox::start(Auth::Accept, true, Some(shared_data()));
    let local = init_local();
    let remote_dir = point_at_box_dir(local.path(), &ssh);
    // Root's include directory, as Debian's /etc/nginx/conf.d: the box user may read it only.
    let nginx_dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(nginx_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(local.path().join("cutover.yml")).unwrap();
    let config = config.replace(
        "include: /etc/nginx/conf.d/",
        &format!("include: {}/", nginx_dir.path().display()),
    );
    std::fs::write(local.path().join("cutover.yml"), config).unwrap();
    for args in [
        &["deploy", "--image", "myapp:v1", "--ship"][..],
        &["rollback"],
    ] {
        let out = crate::common::cutover(local.path())
            .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
            .args(["--host", "box"])
            .args(args)
            .output()
            .unwrap();
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for needle in [
            format!("cannot create files in {}", nginx_dir.path().display()),
            "refused before anything was shipped or synced".to_string(),
            "cutover init --user <user>".to_string(),
            "sudo -n".to_string(),
        ] {
            assert!(stderr.contains(&needle), "{args:?}: {needle}: {stderr}");
        }
        // Connected and installed, then stopped: no ship, no sync, no release on the box.
        assert!(stderr.contains("connect"), "{stderr}");
        assert!(
            !stderr.contains("✓ ship") && !stderr.contains("✓ sync"),
            "{stderr}"
        );
        assert!(!remote_dir.join("releases").exists(), "{args:?}");
    }
}

#[test]
fn remote_plaintext_in_secrets_is_refused_and_never_sent() {
    let Some((stderr, ssh, released)) = refused_sync(|local| {
        std::fs::write(
            local.join("secrets/prod.env"),
            "DB_PASSWORD=plaintext-value-123\n",
        )
        .unwrap();
    }) else {
        return;
    };
    assert!(
        stderr.contains("prod.env is a plaintext dotenv file"),
        "{stderr}"
    );
    assert!(!stderr.contains("plaintext-value-123"), "{stderr}");
    assert!(files_containing(ssh.path(), "plaintext-value-123").is_empty());
    assert!(!released);
}

#[test]
fn remote_a_symlink_out_of_the_project_is_refused_and_its_target_never_sent() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("id_ed25519");
    std::fs::write(&secret, "PRIVATE-KEY-MARKER-77\n").unwrap();
    let Some((stderr, ssh, released)) = refused_sync(|local| {
        std::fs::create_dir_all(local.join("templates")).unwrap();
        std::os::unix::fs::symlink(&secret, local.join("templates/key.j2")).unwrap();
    }) else {
        return;
    };
    assert!(
        stderr.contains(&format!(
            "templates/key.j2 is a symlink to {}",
            secret.display()
        )),
        "{stderr}"
    );
    assert!(files_containing(ssh.path(), "PRIVATE-KEY-MARKER-77").is_empty());
    assert!(!released);
}

#[test]
fn remote_host_on_a_local_only_command_is_a_usage_error() {
    let local = tempfile::tempdir().unwrap();
    let out = crate::common::cutover(local.path())
        .args(["--host", "box", "secrets", "keygen", "--out", "k.txt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("works on this machine's files"));
    assert!(!local.path().join("k.txt").exists());
    // CUTOVER_HOST set for a whole CI job leaves local-only commands local.
    crate::common::cutover(local.path())
        .env("CUTOVER_HOST", "box")
        .args(["secrets", "keygen", "--out", "k.txt"])
        .assert()
        .success();
    assert!(local.path().join("k.txt").exists());
    let out = crate::common::cutover(local.path())
        .args(["--host", "-oProxyCommand=x", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn remote_secrets_decrypt_with_the_box_identity_by_default() {
    if !ssh_ready() {
        return;
    }
    let ssh = SshBox::start(Auth::Accept, true, Some(shared_data()));
    let local = init_local();
    for name in ["recipients.txt", "demo.env.age"] {
        std::fs::copy(
            repo_root().join("secrets").join(name),
            local.path().join("secrets").join(name),
        )
        .unwrap();
    }
    let remote_dir = ssh.box_dir("box").join("project");
    let config = std::fs::read_to_string(local.path().join("cutover.yml")).unwrap();
    let config = config.replacen("  secrets: []", "  secrets: [secrets/demo.env.age]", 1);
    assert!(
        config.contains("secrets: [secrets/demo.env.age]"),
        "{config}"
    );
    std::fs::write(
        local.path().join("cutover.yml"),
        format!("{config}\nremote:\n  dir: {}\n", remote_dir.display()),
    )
    .unwrap();
    let check = || {
        crate::common::cutover(local.path())
            .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
            .args(["--host", "box", "render", "--check"])
            .output()
            .unwrap()
    };
    // No identity here and none on the box: the box's own error.
    let out = check();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("box-config/cutover/identity.txt"),
        "{stderr}"
    );
    // The box's identity (0600, the box user's): decrypted there, nothing sent from here.
    let identity = ssh.path().join("box-config/cutover/identity.txt");
    std::fs::create_dir_all(identity.parent().unwrap()).unwrap();
    std::fs::write(&identity, test_identity()).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    sh_ok(&format!(
        "chown -R {BOX_USER} {}",
        ssh.path().join("box-config").display()
    ));
    let out = check();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn remote_bootstrap_as_a_non_root_user_goes_through_sudo_n() {
    if !ssh_ready() {
        return;
    }
    let ssh = SshBox::start(Auth::Accept, true, Some(shared_data()));
    let local = init_local();
    point_at_box_dir(local.path(), &ssh);
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .args(["--host", "box", "bootstrap", "--dry-run"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // This machine's box user has no sudo rights: either no sudo at all, or sudo -n refusing
    // to ask for a password. Never a prompt, never a bootstrap as the box user.
    let no_sudo = stderr.contains("needs root on the box and box has no sudo");
    let refused = stderr.contains("sudo: a password is required");
    assert!(no_sudo || refused, "{stderr}");
}

// ---- deploys through SSH -----------------------------------------------------------------

#[test]
fn remote_deploy_installs_once_syncs_files_and_keeps_plaintext_off_the_box() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup {
        secrets: true,
        shared_install: false,
        ..Setup::default()
    });
    std::fs::create_dir_all(p.path().join("templates")).unwrap();
    std::fs::write(p.path().join("templates/extra.txt"), "a template\n").unwrap();
    std::fs::create_dir_all(p.path().join(".cutover")).unwrap();
    std::fs::write(p.path().join(".cutover/local-only"), "not for the box").unwrap();
    // Earlier versions' installs, oldest first: the upload keeps the newest of them.
    let bin = p.ssh.data.join("cutover/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let old: Vec<String> = (1..=4)
        .map(|i| format!("cutover-0.0.{i}-0000000{i}"))
        .collect();
    for (age, name) in old.iter().rev().enumerate() {
        std::fs::write(bin.join(name), "#!/bin/sh\n").unwrap();
        sh_ok(&format!(
            "touch -d '{} hours ago' {}",
            age + 1,
            bin.join(name).display()
        ));
    }
    // An upload a kill -9 cut off an hour ago, and one that may be in flight right now.
    std::fs::write(bin.join(".upload.stale1"), "half a binary").unwrap();
    sh_ok(&format!(
        "touch -d '2 hours ago' {}",
        bin.join(".upload.stale1").display()
    ));
    std::fs::write(bin.join(".upload.recent"), "half a binary").unwrap();
    sh_ok(&format!(
        "chown -R {BOX_USER} {}",
        p.ssh.data.join("cutover").display()
    ));

    let (stdout, stderr) = p.remote_ok(&["deploy", "--image", "cutover-demo:v1", "--json"]);
    assert!(stderr.contains("uploaded cutover"), "{stderr}");
    assert!(!bin.join(".upload.stale1").exists(), "a stale upload stays");
    assert!(
        bin.join(".upload.recent").exists(),
        "a recent upload was swept"
    );
    std::fs::remove_file(bin.join(".upload.recent")).unwrap();
    let mut kept = p.ssh.installed_binaries();
    kept.sort();
    assert_eq!(
        kept.len(),
        cutover::remote::install::KEEP_BINARIES,
        "{kept:?}"
    );
    assert!(
        kept.contains(&old[3]) && kept.contains(&old[2]),
        "the two newest old ones stay: {kept:?}"
    );
    for name in old.iter().filter(|name| kept.contains(name)) {
        std::fs::remove_file(bin.join(name)).unwrap();
    }
    assert!(stderr.contains("sha256 verified"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(summary["to"], "blue");
    p.assert_serving("blue", "v1");
    assert_eq!(
        p.ssh.installed_binaries().len(),
        1,
        "{:?}",
        p.ssh.installed_binaries()
    );
    assert_eq!(p.ssh.accepted(), 1, "one TCP connection per deploy");

    let (_, stderr) = p.remote_ok(&["deploy", "--image", "cutover-demo:v2"]);
    assert!(stderr.contains("already installed"), "{stderr}");
    assert!(!stderr.contains("uploaded"), "{stderr}");
    assert!(
        stderr.contains("deploying"),
        "the box's own progress lines: {stderr}"
    );
    p.assert_serving("green", "v2");
    assert_eq!(p.ssh.accepted(), 2, "one TCP connection per deploy");

    // The files arrived; the box's state dir is its own.
    let current = p.remote_dir.join("current");
    assert_eq!(
        std::fs::read(current.join("cutover.yml")).unwrap(),
        std::fs::read(p.path().join("cutover.yml")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(current.join("templates/extra.txt")).unwrap(),
        "a template\n"
    );
    assert_eq!(
        std::fs::read(current.join("secrets/demo.env.age")).unwrap(),
        std::fs::read(p.path().join("secrets/demo.env.age")).unwrap()
    );
    assert!(p.state_dir().join("state.json").exists());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(p.state_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "the box's state dir, as README says");
    assert!(!p.state_dir().join("local-only").exists());
    assert!(!current.join(".cutover/local-only").exists());

    // No plaintext anywhere the box user wrote: not the values, not the identity.
    let key_line = test_identity()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    for needle in demo_secret_values().iter().chain([&key_line]) {
        // The binary itself embeds the public test identity for `cutover demo`.
        let hits: Vec<PathBuf> = files_containing(p.ssh.path(), needle)
            .into_iter()
            .filter(|f| !(needle == &key_line && f.starts_with(p.ssh.data.join("cutover/bin"))))
            .collect();
        assert!(hits.is_empty(), "a secret is on the box in {hits:?}");
    }

    // status --json over SSH is the document the box prints itself.
    let (remote_status, _) = p.remote_ok(&["status", "--json"]);
    let out = p.on_box(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote_status: serde_json::Value = serde_json::from_str(&remote_status).unwrap();
    let local_status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(remote_status, local_status);
    assert_eq!(remote_status["active"], "green");
}

#[test]
fn remote_failing_deploy_exits_1_with_the_box_message() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup {
        startup_delay_ms: 600_000,
        health_timeout: "2s",
        ..Setup::default()
    });
    let out = p.remote(&["deploy", "--image", "cutover-demo:v1"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: deploy failed: health gate timed out"),
        "{stderr}"
    );
    assert!(
        p.running_colors().is_empty(),
        "the failed color was removed"
    );
}

#[test]
fn remote_racing_deploys_the_loser_names_the_holder() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup {
        startup_delay_ms: 20_000,
        remote_host_in_config: true,
        ..Setup::default()
    });
    // remote.host in cutover.yml: no --host needed.
    let first = p.spawn(&["deploy", "--image", "cutover-demo:v1"], false);
    p.wait_for_step("health");
    let releases = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(p.remote_dir.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    let in_use = releases();
    assert_eq!(in_use.len(), 1, "{in_use:?}");
    // Six losers while the first deploy runs: each refused by the box's lock; none moves
    // `current` (there is none yet) or prunes the release the running deploy reads.
    for _ in 0..6 {
        let out = p.remote(&["deploy", "--image", "cutover-demo:v2"]);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(
                "another deploy is running: deploy cutover-demo:v1 by cutover-box via ssh from 127.0.0.1 (pid"
            ),
            "{stderr}"
        );
        assert!(!p.remote_dir.join("current").exists(), "{stderr}");
        assert!(
            releases().contains(&in_use[0]),
            "pruned the running deploy's release"
        );
    }
    let (code, _, stderr) = first.finish();
    assert_eq!(code, Some(0), "{stderr}");
    p.assert_serving("blue", "v1");
    // `current` names what was deployed; the refused releases are newer, kept for a day.
    assert_eq!(
        std::fs::read_link(p.remote_dir.join("current")).unwrap(),
        std::path::Path::new("releases").join(&in_use[0])
    );
    assert_eq!(releases().len(), 7, "{:?}", releases());
}

#[test]
fn remote_sigint_before_the_switch_tears_down_and_exits_130() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup::default());
    p.remote_ok(&["deploy", "--image", "cutover-demo:v1"]);
    let include_before = p.include();
    p.write_config(&Setup {
        startup_delay_ms: 8000,
        ..Setup::default()
    });
    let deploy = p.spawn(&["deploy", "--image", "cutover-demo:v2"], true);
    p.wait_for_step("health");
    deploy.signal("INT");
    let (code, _, stderr) = deploy.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains("deploy interrupted"),
        "the box's message: {stderr}"
    );
    assert_eq!(p.running_colors(), ["web-blue"]);
    assert_eq!(p.include(), include_before);
    let history = remote_history(&p);
    assert_eq!(history.last().unwrap()["result"], "interrupted");
}

#[test]
fn remote_sigint_after_the_switch_completes_the_deploy() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup {
        drain: "60s",
        ..Setup::default()
    });
    p.remote_ok(&["deploy", "--image", "cutover-demo:v1"]);
    let port = p.nginx_port;
    // Long enough that the deploy is still draining it when the step is seen, even on a loaded
    // machine where reaching the drain takes many seconds; the drain bound is well above it.
    let slow = std::thread::spawn(move || cutover::demo::http_get(port, "/slow?ms=25000"));
    std::thread::sleep(Duration::from_millis(200));
    let deploy = p.spawn(&["deploy", "--image", "cutover-demo:v2"], true);
    p.wait_for_step("drain");
    deploy.signal("INT");
    let (code, _, stderr) = deploy.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(slow.join().unwrap().map(|(c, _)| c), Some(200));
    p.assert_serving("green", "v2");
}

#[test]
fn remote_killing_the_local_ssh_client_mid_deploy_acts_as_sigterm() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup::default());
    p.remote_ok(&["deploy", "--image", "cutover-demo:v1"]);
    let include_before = p.include();
    p.write_config(&Setup {
        startup_delay_ms: 8000,
        ..Setup::default()
    });
    let deploy = p.spawn(&["deploy", "--image", "cutover-demo:v2"], true);
    p.wait_for_step("health");
    // The ssh client streaming the run: a child of our cutover.
    let ssh_pids = sh_ok(&format!("pgrep -P {} -x ssh", deploy.child.id()));
    let ssh_pid = ssh_pids.split_whitespace().next().expect("the ssh client");
    sh_ok(&format!("kill -9 {ssh_pid}"));
    let (code, _, stderr) = deploy.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("SSH connection to box was lost"),
        "{stderr}"
    );
    // The box noticed (stdin EOF) and tore the new color down, as on SIGTERM; its lock is
    // free once its cutover has exited.
    let lock = p.state_dir().join("lock");
    sh_ok(&format!("flock -w 60 {} true", lock.display()));
    let history = remote_history(&p);
    assert_eq!(
        history.last().unwrap()["result"],
        "interrupted",
        "{history:?}"
    );
    assert_eq!(p.running_colors(), ["web-blue"]);
    assert_eq!(p.include(), include_before);
    let (status, _) = p.remote_ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["active"], "blue");
    assert!(
        status["problems"].as_array().unwrap().is_empty(),
        "{status}"
    );
}

#[test]
fn remote_a_caller_gone_silent_counts_as_a_dropped_connection() {
    if !deploy_ready() {
        return;
    }
    let p = RemoteProject::new(Setup::default());
    p.remote_ok(&["deploy", "--image", "cutover-demo:v1"]);
    let include_before = p.include();
    p.write_config(&Setup {
        startup_delay_ms: 120_000,
        health_timeout: "110s",
        ..Setup::default()
    });
    let deploy = p.spawn(&["deploy", "--image", "cutover-demo:v2"], true);
    p.wait_for_step("health");
    // Stopped, our cutover sends no heartbeat while its ssh session stays up: the box must
    // give up on us after its silence limit (30 s), well before the 110 s health timeout.
    let stopped = Instant::now();
    deploy.signal("STOP");
    let lock = p.state_dir().join("lock");
    // The box's cutover holds the lock until it has torn the new color down and exited.
    let out = sh(&format!("flock -w 80 {} true", lock.display()));
    let waited = stopped.elapsed();
    deploy.signal("CONT");
    assert!(out.status.success(), "the box never let go of the lock");
    assert!(waited < Duration::from_secs(70), "took {waited:?}");
    let (code, _, stderr) = deploy.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(p.running_colors(), ["web-blue"]);
    assert_eq!(p.include(), include_before);
    let history = remote_history(&p);
    assert_eq!(history.last().unwrap()["result"], "interrupted");
}

#[test]
fn remote_logs_and_exec_run_on_the_box_without_a_tty() {
    if !deploy_ready() || !crate::harness::workers_app::ready() {
        return;
    }
    let p = RemoteProject::new(Setup {
        image: "cutover-demo-workers",
        ..Setup::default()
    });
    p.remote_ok(&["deploy", "--image", "cutover-demo-workers:v1"]);
    // The command's exit code and output come back through the relay and SSH.
    let out = p.remote(&["exec", "--", "/app", "exit", "7", "on", "the", "box"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_eq!(stdout.trim(), "on the box");
    let (stdout, _) = p.remote_ok(&["logs", "-n", "200"]);
    assert!(stdout.contains("listening on"), "{stdout}");
    let out = p.remote(&["logs", "nope"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("expected one of: blue, green"), "{stderr}");
    // -f follows on the box until the Ctrl-C forwarded over SSH, which ends it with 130.
    let follow = p.spawn(&["logs", "-f"], true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !follow.stderr_so_far().contains("blue (web-blue") {
        assert!(Instant::now() < deadline, "{}", follow.stderr_so_far());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    follow.signal("INT");
    let (code, stdout, stderr) = follow.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stdout.contains("listening on"), "{stdout}");
    // ... and the box's `docker logs --follow` went with it.
    let id = sh_ok(&format!(
        "docker ps -q --no-trunc --filter label=com.docker.compose.project={} \
         --filter label=com.docker.compose.service=web-blue",
        p.project
    ));
    // pgrep itself, not through `sh -c` (whose command line would match the pattern).
    let left = Command::new("pgrep")
        .args(["-af", &format!("docker logs --follow {}", id.trim())])
        .output()
        .unwrap();
    assert!(
        !left.status.success(),
        "a docker logs -f outlived cutover: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// `cutover --host box run`: a one-off of the serving image on the box, with the secrets
/// decrypted there, no TTY and no stdin (the session's stdin is the relay's control channel),
/// and the command's exit code back here.
#[test]
fn remote_run_executes_on_the_box_with_the_serving_image_and_its_exit_code() {
    if !deploy_ready() {
        return;
    }
    use crate::harness::lifecycle_app::{BUILD, H1};
    if !crate::common::require_images(&[H1], BUILD) {
        return;
    }
    let image = H1;
    let p = RemoteProject::new(Setup {
        secrets: true,
        image: "cutover-demo-lifecycle",
        ..Setup::default()
    });
    let out = p.remote(&["run", "--", "task", "say=hi"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nothing has been deployed to box yet"),
        "{stderr}"
    );

    p.remote_ok(&["deploy", "--image", image]);
    let secret = p
        .local_cutover()
        .args(["secrets", "show", "demo", "--json"])
        .output()
        .unwrap();
    let secret: serde_json::Value = serde_json::from_slice(&secret.stdout).unwrap();
    let secret = secret["values"]["DEMO_SECRET"]
        .as_str()
        .unwrap()
        .to_string();
    let out = p.remote(&[
        "run",
        "--",
        "task",
        "print=VERSION",
        "print=DEMO_SECRET",
        "exit=3",
    ]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("VERSION=v1"), "{stdout}");
    assert!(
        stdout.contains(&format!("DEMO_SECRET={secret}")),
        "{stdout}"
    );
    assert!(
        stderr.contains("one-off container of web-blue (cutover-demo-lifecycle:v1), no TTY"),
        "{stderr}"
    );
    // The command reads an empty stdin, never the relay's control lines.
    let (stdout, _) = p.remote_ok(&["run", "--", "task", "stdin", "say=done"]);
    assert_eq!(stdout, "done\n");
    p.assert_serving("blue", "v1");
}

/// Hostile run on #25: an aarch64 box, and a laptop whose kept aarch64 binary is `prepare`d
/// (from the real aarch64 build) before `cutover --host box render --check`: its output,
/// and what the box's binary directory holds afterwards (temp files included).
fn foreign_upload_of(
    prepare: impl FnOnce(&Path, &Path),
) -> Option<(std::process::Output, Vec<String>)> {
    if !ssh_ready() || !crate::common::require("unshare", "give the box a private binfmt_misc") {
        return None;
    }
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    let arm = crate::harness::artifact::Aarch64::unpack()?;
    let ssh = SshBox::start_aarch64(Auth::Accept, None);
    let local = init_local();
    point_at_box_dir(local.path(), &ssh);
    let data = tempfile::tempdir().unwrap();
    let kept = data.path().join("cutover/bin").join(format!(
        "cutover-{}-aarch64-unknown-linux-gnu",
        env!("CARGO_PKG_VERSION")
    ));
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    prepare(&arm.bin, &kept);
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .env("XDG_DATA_HOME", data.path())
        .args(["--host", "box", "render", "--check"])
        .output()
        .unwrap();
    Some((out, ssh.installed_binaries()))
}

#[test]
fn remote_a_truncated_aarch64_binary_is_refused_by_the_box_and_leaves_nothing() {
    // The ELF header is intact (the laptop's check passes): the box's `--version` must catch it.
    let Some((out, installed)) = foreign_upload_of(|arm, kept| {
        let bytes = std::fs::read(arm).unwrap();
        std::fs::write(kept, &bytes[..bytes.len() / 3]).unwrap();
    }) else {
        return;
    };
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not run on this box"), "{stderr}");
    // Hostile run #2: the laptop's file to replace is named.
    assert!(
        stderr.contains("the box refused /")
            && stderr.contains(&format!(
                "/cutover/bin/cutover-{}-aarch64-unknown-linux-gnu: replace it",
                env!("CARGO_PKG_VERSION")
            )),
        "{stderr}"
    );
    assert!(installed.is_empty(), "left on the box: {installed:?}");
}

#[test]
fn remote_a_world_writable_aarch64_binary_is_not_uploaded() {
    // Hostile run on #25 (fails today): any local user may replace a 0666 file with an aarch64
    // ELF that prints `cutover <version>`; the ELF and --version checks do not notice, and the
    // box then runs it as the deploy user. ssh refuses a group/world-writable config for the
    // same reason; the laptop should refuse (naming the file and its mode) before uploading.
    let Some((out, installed)) = foreign_upload_of(|arm, kept| {
        std::fs::copy(arm, kept).unwrap();
        std::fs::set_permissions(kept, std::fs::Permissions::from_mode(0o666)).unwrap();
    }) else {
        return;
    };
    let (_, stderr) = texts(&out);
    assert!(
        installed.is_empty(),
        "uploaded a world-writable binary ({installed:?}):\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writable"), "{stderr}");
}

/// The entries of the box's `history --json` (schema 2: `{schema, entries}`).
fn remote_history(p: &RemoteProject) -> Vec<serde_json::Value> {
    let (text, _) = p.remote_ok(&["history", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(doc["entries"].clone())
        .unwrap_or_else(|e| panic!("history --json has no entries list ({e}): {doc}"))
}
