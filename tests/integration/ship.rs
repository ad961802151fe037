//! `cutover --host box deploy --image REF --ship`: a local image sent over the SSH
//! connection, only the layers the box lacks, then deployed.
//!
//! The box (remote.rs's real sshd) deploys on this machine's Docker engine, so the "laptop"
//! needs an engine of its own, or the box would already have every image: a second `dockerd`
//! (vfs storage, no bridge, no iptables) in its own network namespace (`unshare --net`, so
//! its `--bridge=none` cannot touch the host's docker0), its socket and data in a temp dir,
//! stopped when this test process exits. The cutover under test talks to it through
//! `DOCKER_HOST`; `ssh` never passes that on, so the box uses its own engine.
//!
//! The images are built there without a registry: a `docker import` of the demo binary plus a
//! random marker (a base no engine has), then `docker build` layers of random bytes on top.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{loud, require};
use crate::remote::{deploy_ready, sh, sh_ok, texts, Project, Setup};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The laptop's engine: `unix://…` for DOCKER_HOST, or None (skipped loudly / CI failure).
fn laptop_engine() -> Option<String> {
    static ENGINE: OnceLock<Option<String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            if !require("dockerd", "run the laptop's own Docker engine for --ship")
                || !require(
                    "unshare",
                    "keep the laptop engine's network apart from the host's",
                )
            {
                return None;
            }
            let dir =
                std::env::temp_dir().join(format!("cutover-ship-laptop-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("daemon.json"), "{}").unwrap();
            let sock = dir.join("docker.sock");
            let d = dir.display();
            // The watcher stops dockerd, and removes its data, once this test process is gone.
            let script = format!(
                "/usr/sbin/dockerd --config-file {d}/daemon.json --data-root {d}/root \
                 --exec-root {d}/exec --pidfile {d}/dockerd.pid -H unix://{d}/docker.sock \
                 --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
                 --storage-driver=vfs >{d}/dockerd.log 2>&1 & pid=$!; \
                 while kill -0 {parent} 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; \
                 kill $pid 2>/dev/null; wait $pid; rm -rf {d}",
                parent = std::process::id()
            );
            // Not waited for: it outlives every test, and ends with this process.
            #[allow(clippy::zombie_processes)]
            let _watcher = Command::new("unshare")
                .args(["--net", "--", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let host = format!("unix://{}", sock.display());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !laptop(&host, "docker info >/dev/null 2>&1")
                .status
                .success()
            {
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
                    if std::env::var_os("CI").is_some() {
                        panic!("the laptop dockerd did not start: {log}");
                    }
                    loud(&format!(
                        "*** SKIPPED: the laptop dockerd did not start: {log} ***"
                    ));
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // The demo binary, from the host engine's demo image.
            sh_ok(&format!(
                "docker save cutover-demo:v1 | DOCKER_HOST={host} docker load -q >/dev/null"
            ));
            Some(host)
        })
        .clone()
}

/// A shell command against the laptop's engine.
fn laptop(host: &str, script: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", script])
        .env("DOCKER_HOST", host)
        .output()
        .unwrap()
}

fn laptop_ok(host: &str, script: &str) -> String {
    let out = laptop(host, script);
    assert!(
        out.status.success(),
        "`{script}` on the laptop engine: {:?}",
        texts(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The project's images: built on the laptop, removed from the box's engine at the end.
struct Images {
    host: String,
    repo: String,
    dir: tempfile::TempDir,
}

impl Images {
    fn new(host: &str) -> Images {
        let repo = format!(
            "cutover-ship-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Images {
            host: host.to_string(),
            repo,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repo)
    }

    /// `:s1`: the demo binary and a random marker, imported (one layer nobody has).
    fn base(&self) -> String {
        let d = self.dir.path().join("base");
        std::fs::create_dir_all(&d).unwrap();
        let image = self.tag("s1");
        laptop_ok(
            &self.host,
            &format!(
                "set -e; cd {d}; cid=$(docker create cutover-demo:v1); docker cp $cid:/app app; \
                 docker rm $cid >/dev/null; head -c 65536 /dev/urandom > marker; \
                 tar -c app marker | docker import --change 'ENTRYPOINT [\"/app\"]' \
                 --change 'EXPOSE 8080' --change 'ENV PORT=8080 VERSION=s1' - {image} >/dev/null",
                d = d.display()
            ),
        );
        image
    }

    /// `:<tag>` = `from` + one layer of `size` random bytes, answering `version=<tag>`.
    fn layer_on(&self, from: &str, tag: &str, size: usize) -> String {
        let d = self.dir.path().join(tag);
        std::fs::create_dir_all(&d).unwrap();
        let image = self.tag(tag);
        laptop_ok(
            &self.host,
            &format!(
                "set -e; cd {d}; head -c {size} /dev/urandom > blob; \
                 printf 'FROM {from}\\nENV VERSION={tag}\\nCOPY blob /blob-{tag}\\n' > Dockerfile; \
                 DOCKER_BUILDKIT=0 docker build -q -t {image} . >/dev/null",
                d = d.display()
            ),
        );
        image
    }

    /// The size of the image's top layer file in a full `docker save` (the changed layer).
    fn top_layer_bytes(&self, image: &str) -> u64 {
        let tar = self.dir.path().join("top.tar");
        laptop_ok(
            &self.host,
            &format!("docker save -o {} {image}", tar.display()),
        );
        let mut manifest = String::new();
        let mut sizes = std::collections::HashMap::new();
        let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            sizes.insert(name.clone(), entry.header().size().unwrap());
            if name == "manifest.json" {
                use std::io::Read;
                entry.read_to_string(&mut manifest).unwrap();
            }
        }
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let top = manifest[0]["Layers"].as_array().unwrap().last().unwrap();
        sizes[top.as_str().unwrap()]
    }

    fn on_box(&self, tag: &str) -> bool {
        sh(&format!(
            "docker image inspect {} >/dev/null 2>&1",
            self.tag(tag)
        ))
        .status
        .success()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let _ = sh(&format!(
            // By tag, never by ID with -f: an ID can carry other tests' tags too.
            "docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {} | xargs -r docker rmi >/dev/null 2>&1",
            self.repo
        ));
    }
}

/// Bytes the `ship` step line reports: `sent 1.0 MB (1000960 bytes) of …`.
fn sent_bytes(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("✓ ship"))
        .unwrap_or_else(|| panic!("no ship step line in:\n{stderr}"));
    let (_, rest) = line.split_once(" (").expect("sent N (M bytes)");
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn ship_project(images: &Images) -> Project {
    let p = Project::new(Setup::default());
    let config = std::fs::read_to_string(p.path().join("cutover.yml")).unwrap();
    let config = config.replace(
        "image: cutover-demo\n",
        &format!("image: {}\n", images.repo),
    );
    std::fs::write(p.path().join("cutover.yml"), format!("{config}ship: ssh\n")).unwrap();
    p
}

fn ship_deploy(p: &Project, host: &str, image: &str) -> String {
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
fn slow_ship(p: &Project, host: &str, image: &str, tmp: &Path) -> std::process::Child {
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
