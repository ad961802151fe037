//! `cutover --host box deploy --image REF --ship`: a local image sent over the SSH
//! connection, only the layers the box lacks, then deployed.
//!
//! The box is harness/ssh_box.rs's real sshd, deploying on this machine's Docker engine; the
//! "laptop" is harness/laptop.rs's second `dockerd`, where the images are built, so the box
//! does not already have them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::common::{sh_ok, texts};
use crate::harness::laptop::{laptop_engine, Images};
use crate::harness::ssh_box::{deploy_ready, RemoteProject, Setup};

/// Bytes the `ship` step line reports: `sent 1.0 MB (1000960 bytes) of …`.
fn sent_bytes(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("✓ ship"))
        .unwrap_or_else(|| panic!("no ship step line in:\n{stderr}"));
    let (_, rest) = line.split_once(" (").expect("sent N (M bytes)");
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn ship_project(images: &Images) -> RemoteProject {
    let p = RemoteProject::new(Setup::default());
    let config = std::fs::read_to_string(p.path().join("cutover.yml")).unwrap();
    let config = config.replace(
        "image: cutover-demo\n",
        &format!("image: {}\n", images.repo),
    );
    std::fs::write(p.path().join("cutover.yml"), format!("{config}ship: ssh\n")).unwrap();
    p
}

fn ship_deploy(p: &RemoteProject, host: &str, image: &str) -> String {
    let out = p
        .local_cutover()
        .env("DOCKER_HOST", host)
        .args(["--host", "box", "deploy", "--image", image])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "ship deploy {image} failed:\n{stdout}\n{stderr}"
    );
    stderr
}

fn ship_temp_files(state_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".ship-")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `--host box deploy --image IMAGE` at 1 MB/s in the background (to be cut off).
/// Its TMPDIR is `tmp`: a client killed with -9 leaves its local archive there.
fn slow_ship(p: &RemoteProject, host: &str, image: &str, tmp: &Path) -> std::process::Child {
    crate::common::cutover_command(p.path(), &crate::common::shared_home())
        .env("TMPDIR", tmp)
        .env_remove("CUTOVER_HOST")
        .env_remove("SSH_AUTH_SOCK")
        .env("CUTOVER_SSH_CONFIG", p.ssh.ssh_config())
        .env("DOCKER_HOST", host)
        .env("CUTOVER_SHIP_BWLIMIT", "1000000")
        .args(["--host", "box", "deploy", "--image", image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the box holds a partial transfer of over 500 kB.
fn wait_for_partial(state: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = ship_temp_files(state).iter().any(|f| {
            std::fs::metadata(f)
                .map(|m| m.len() > 500_000)
                .unwrap_or(false)
        });
        if partial {
            use std::os::unix::fs::PermissionsExt;
            for f in ship_temp_files(state) {
                let mode = std::fs::metadata(&f).map(|m| m.permissions().mode() & 0o777);
                assert!(
                    matches!(mode, Ok(0o600) | Err(_)),
                    "{} is {mode:?}",
                    f.display()
                );
            }
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the ship ended before it could be cut off"
        );
        assert!(
            Instant::now() < deadline,
            "no partial transfer appeared in {}",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ship_sends_only_missing_layers_survives_an_interrupt_and_deploys() {
    if !deploy_ready() {
        return;
    }
    let Some(host) = laptop_engine() else { return };
    let images = Images::new(&host);
    let s1 = images.base();
    let s2 = images.layer_on(&s1, "s2", 1_000_000);
    let s3 = images.layer_on(&s2, "s3", 6_000_000);
    let p = ship_project(&images);

    // A dry run sends nothing.
    let out = p
        .local_cutover()
        .env("DOCKER_HOST", &host)
        .args(["--host", "box", "deploy", "--image", &s1, "--dry-run"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("would send {s1} (dry run)")),
        "{stderr}"
    );
    assert!(!images.on_box("s1"));

    // First ship: the box has none of s1's layers, so all of it crosses.
    let stderr = ship_deploy(&p, &host, &s1);
    let full = sent_bytes(&stderr);
    eprintln!(
        "ship s1 (first, full): {full} bytes; {}",
        stderr.lines().find(|l| l.contains("✓ ship")).unwrap()
    );
    assert!(full >= images.top_layer_bytes(&s1), "{stderr}");
    p.assert_serving("blue", "s1");

    // One changed layer: only it crosses (≤ 1.1 × the layer), not the base again.
    let stderr = ship_deploy(&p, &host, &s2);
    let sent = sent_bytes(&stderr);
    let layer = images.top_layer_bytes(&s2);
    eprintln!(
        "ship s2 (one 1 MB layer changed): {sent} bytes sent, changed layer {layer} bytes; {}",
        stderr.lines().find(|l| l.contains("✓ ship")).unwrap()
    );
    assert!(sent >= layer, "the new layer must cross: {sent} < {layer}");
    assert!(
        sent * 10 <= layer * 11,
        "sent {sent} bytes for a {layer}-byte layer"
    );
    assert!(stderr.contains("1 of 2 layers"), "{stderr}");
    // Not a terminal: plain progress lines with bytes and rate.
    assert!(stderr.contains("ship  50%"), "{stderr}");
    assert!(stderr.contains("/s"), "{stderr}");
    p.assert_serving("green", "s2");

    // Cut off mid-stream, by kill -9 of the client and by SIGTERM (forwarded: exit 130): the
    // box discards the partial transfer, nothing is loaded.
    let state = p.state_dir();
    for signal in ["KILL", "TERM"] {
        let mut child = slow_ship(&p, &host, &s3, images.dir.path());
        wait_for_partial(&state, &mut child);
        sh_ok(&format!("kill -{signal} {}", child.id()));
        let status = child.wait().unwrap();
        if signal == "TERM" {
            assert_eq!(status.code(), Some(130), "SIGTERM mid-ship");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ship_temp_files(&state).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the box kept {:?} after SIG{signal}",
                ship_temp_files(&state)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(!images.on_box("s3"), "a cut-off transfer must load nothing");
    p.assert_serving("green", "s2");

    // The same image again: only the config and manifest cross.
    let stderr = ship_deploy(&p, &host, &s2);
    let again = sent_bytes(&stderr);
    eprintln!("ship s2 again (box has every layer): {again} bytes");
    assert!(
        again < 20_000,
        "sent {again} bytes for an image the box has:\n{stderr}"
    );
    assert!(stderr.contains("0 of 2 layers"), "{stderr}");
    p.assert_serving("blue", "s2");
    assert!(ship_temp_files(&state).is_empty());
}

#[test]
fn ship_without_a_host_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::cutover(dir.path())
        .args(["init", "."])
        .assert()
        .success();
    let out = crate::common::cutover(dir.path())
        .env_remove("CUTOVER_HOST")
        .args(["deploy", "--image", "app:v2", "--ship"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = texts(&out);
    assert!(
        stderr.contains("--ship sends a local image to a box over SSH"),
        "{stderr}"
    );
}
