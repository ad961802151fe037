//! The "laptop" of the `--ship` tests: a second `dockerd`, so the box (harness/ssh_box.rs,
//! deploying on this machine's engine) lacks the laptop's images.
//!
//! It runs with vfs storage, no bridge and no iptables, in its own network namespace
//! (`unshare --net`, so its `--bridge=none` cannot touch the host's docker0), its socket and
//! data in a temp dir, stopped when this test process exits. The cutover under test talks
//! to it through `DOCKER_HOST`; `ssh` never passes that on, so the box uses its own engine.
//!
//! [`Images`] builds images there without a registry: a `docker import` of the demo binary
//! plus a random marker (a base no engine has), then `docker build` layers of random bytes
//! on top.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::common::{loud, require, sh, sh_ok, texts};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The laptop's engine: `unix://…` for DOCKER_HOST, or None (skipped loudly / CI failure).
pub(crate) fn laptop_engine() -> Option<String> {
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
pub(crate) struct Images {
    pub(crate) host: String,
    pub(crate) repo: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Images {
    pub(crate) fn new(host: &str) -> Images {
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

    pub(crate) fn tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repo)
    }

    /// `:s1`: the demo binary and a random marker, imported (one layer nobody has).
    pub(crate) fn base(&self) -> String {
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
    pub(crate) fn layer_on(&self, from: &str, tag: &str, size: usize) -> String {
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
    pub(crate) fn top_layer_bytes(&self, image: &str) -> u64 {
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

    pub(crate) fn on_box(&self, tag: &str) -> bool {
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
