//! A real three-node swarm for the swarm engine's cluster tests: scripts/cluster.sh brings
//! it up (three `dockerd`s, each in its own network namespace with its own address on a
//! bridge, one manager and two workers), [`Cluster`] holds it and brings it down on drop; the
//! script's `--owner` watcher brings it down even when this test process is killed first.
//!
//! The cutover under test talks to the manager through `DOCKER_HOST`
//! ([`Project::cluster`]); the front nginx is the project's [`cutover::nginx::LocalNginx`] on
//! the host, which reaches every node at its address. Images reach the nodes as `docker save
//! | docker load` per node (the cluster has no registry), so the stack uses
//! `resolve_image: never`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::common::{loud, repo_root, require};

/// A running cluster; `down` on drop.
pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    /// `unix://…` of node 1, the manager.
    pub(crate) manager: String,
    /// The nodes' addresses, node 1 first.
    pub(crate) addrs: Vec<String>,
}

/// Root, `ip`, `nsenter`, `dockerd`: without them the suite is skipped loudly (a failure
/// under CI).
pub(crate) fn cluster_ready() -> bool {
    let root = rustix::process::getuid().is_root();
    if !root {
        fail_or_skip("the cluster tests need root (network namespaces, dockerd)");
        return false;
    }
    require("ip", "give each cluster node its own network namespace")
        && require("nsenter", "start each node's dockerd in its namespace")
        && require("dockerd", "run the cluster's three Docker engines")
        && require("nginx", "run the front nginx")
}

fn fail_or_skip(msg: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure)");
    }
    loud(&format!("*** SKIPPED: {msg} ***"));
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("scripts/cluster.sh"))
        .args(args)
        .output()
        .unwrap()
}

fn script_ok(args: &[&str]) -> String {
    let out = script(args);
    assert!(
        out.status.success(),
        "scripts/cluster.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    /// `nodes` nodes (node 1 the manager), the demo images loaded on each.
    pub(crate) fn up(nodes: usize) -> Cluster {
        // One `up` at a time in this process: two could pick the same free id.
        static UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = UP.lock().unwrap_or_else(|p| p.into_inner());
        // An id (the node subnet 10.213.<id>.0/24) no other cluster on this machine uses.
        let id = (1..=250)
            .map(|i| (std::process::id() as usize + i) % 250 + 1)
            .find(|i| !Path::new(&format!("/run/netns/cutover-c{i}-sw")).exists())
            .expect("a free cluster id");
        // A short path: dockerd's sockets live under it (108-byte limit).
        let dir = PathBuf::from(format!("/tmp/cutover-cl-{}-{id}", std::process::id()));
        let started = Instant::now();
        script_ok(&[
            "up",
            &dir.display().to_string(),
            "--id",
            &id.to_string(),
            "--nodes",
            &nodes.to_string(),
            "--owner",
            &std::process::id().to_string(),
        ]);
        let cluster = Cluster {
            manager: format!("unix://{}/n1/docker.sock", dir.display()),
            addrs: (1..=nodes)
                .map(|n| format!("10.213.{id}.{}", 10 + n))
                .collect(),
            dir,
        };
        cluster.load(&cutover::demo::IMAGES);
        eprintln!(
            "cluster up ({nodes} nodes, demo images loaded) in {:.1?}",
            started.elapsed()
        );
        cluster
    }

    pub(crate) fn load(&self, images: &[&str]) {
        let mut args = vec!["load", self.dir.to_str().unwrap()];
        args.extend_from_slice(images);
        script_ok(&args);
    }

    /// Node `n` dies: its dockerd SIGKILLed, its containers gone, its link cut.
    pub(crate) fn kill(&self, n: usize) {
        script_ok(&["kill", self.dir.to_str().unwrap(), &n.to_string()]);
    }

    /// Node `n` comes back (link up, dockerd started: it rejoins with its old identity).
    pub(crate) fn revive(&self, n: usize) {
        let started = Instant::now();
        script_ok(&["revive", self.dir.to_str().unwrap(), &n.to_string()]);
        eprintln!("node {n} answered again after {:.1?}", started.elapsed());
    }

    /// `docker ARGS` against the manager.
    pub(crate) fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.manager)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} on the manager: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker ARGS` against node `n`'s own engine.
    pub(crate) fn node_docker(&self, n: usize, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}/n{n}/docker.sock", self.dir.display()),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} on node {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host's address on the cluster bridge: every node reaches it, and trusts a
    /// registry there as insecure (scripts/cluster.sh's `--insecure-registry`).
    pub(crate) fn host_addr(&self) -> String {
        let (net, _) = self.addrs[0].rsplit_once('.').unwrap();
        format!("{net}.1")
    }

    /// Pushes `from` (loaded on node 1) as `image` through node 1's engine, logged in with
    /// `docker_config`'s store (the password on stdin), then removes the tag: no node has
    /// `image` until it pulls it.
    pub(crate) fn push(
        &self,
        docker_config: &Path,
        user: &str,
        password: &str,
        from: &str,
        image: &str,
    ) {
        let server = image.split('/').next().unwrap();
        let run = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = Command::new("docker");
            cmd.args(args)
                .env("DOCKER_HOST", &self.manager)
                .env("DOCKER_CONFIG", docker_config)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            {
                use std::io::Write;
                let mut input = child.stdin.take().unwrap();
                input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "docker {args:?} on node 1: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            &["login", "--password-stdin", "-u", user, server],
            Some(password),
        );
        run(&["tag", from, image], None);
        run(&["push", "-q", image], None);
        run(&["rmi", image], None);
        run(&["logout", server], None);
    }

    /// Kills node `n`'s container of swarm service `service` (the node itself stays up).
    pub(crate) fn kill_task(&self, n: usize, service: &str) {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        let ids = self.node_docker(n, &["ps", "-q", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        assert_eq!(
            ids.len(),
            1,
            "one container of {service} on node {n}: {ids:?}"
        );
        self.node_docker(n, &["kill", ids[0]]);
    }

    /// Polls until `count` nodes are `ready` (bounded).
    pub(crate) fn wait_ready(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self
                .docker(&["node", "ls", "--format", "{{json .}}"])
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["Status"] == "Ready")
                .count();
            if ready == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{ready} nodes ready, {count} wanted, after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Files on disk under node `n`'s data root that contain `needle`: `find -xdev` stays on
    /// the data root's filesystem, so the tmpfs swarm mounts a task's secrets on (in memory)
    /// is not searched; [`Cluster::secret_tmpfs`] proves those mounts are tmpfs.
    pub(crate) fn grep_data_root(&self, n: usize, needle: &str) -> Vec<String> {
        let out = Command::new("sh")
            .args([
                "-c",
                "find \"$1\" -xdev -type f -print0 | xargs -0 -r grep -lF -- \"$2\"",
                "sh",
            ])
            .arg(self.dir.join(format!("n{n}/root")))
            .arg(needle)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The filesystem types of the secret mounts under node `n`'s data root.
    pub(crate) fn secret_mounts(&self, n: usize) -> Vec<String> {
        let root = self.dir.join(format!("n{n}/root"));
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() > 2
                    && f[1].starts_with(root.to_str().unwrap())
                    && f[1].ends_with("/secrets"))
                .then(|| f[2].to_string())
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = script(&["down", self.dir.to_str().unwrap()]);
        if !out.status.success() {
            eprintln!(
                "scripts/cluster.sh down: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
