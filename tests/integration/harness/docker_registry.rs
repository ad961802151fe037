//! A real image registry on loopback: Debian's `docker-registry` (the distribution
//! registry) on a free port with htpasswd (bcrypt) basic auth. Docker treats 127.0.0.0/8
//! registries as insecure, so plain HTTP works with auth (verified on Docker 20.10): no TLS,
//! no machine-global state. Each [`Registry`] has a `DOCKER_CONFIG` of its own (its
//! `cli-plugins` linked to the real one, so compose v2 stays reachable): the tests never log
//! the machine in.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::Path;

use crate::harness::common::{free_port, json_to_yaml, repo_root, require, sh_ok, yaml_to_json};
use crate::harness::project::Project;

pub(crate) const USER: &str = "deployer";

/// A registry on 127.0.0.1:<port>, killed on drop.
pub(crate) struct Registry {
    pub(crate) child: Option<std::process::Child>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: String,
    pub(crate) port: u16,
    /// A DOCKER_CONFIG of its own (credentials), plugins linked from the real one.
    pub(crate) docker_config: PathBuf,
}

impl Registry {
    pub(crate) fn ready() -> bool {
        require("docker-registry", "run a real registry for registry: tests")
            && require("htpasswd", "write the registry's bcrypt password file")
            && require("docker", "push and pull")
            && require("nginx", "serve the deploys")
            && require("age", "encrypt the registry password")
    }

    pub(crate) fn start(password: &str) -> Registry {
        Registry::start_on(password, "127.0.0.1")
    }

    /// A registry listening on `addr` (a cluster's bridge address, which its nodes trust as
    /// insecure: scripts/cluster.sh's `--insecure-registry`).
    pub(crate) fn start_on(password: &str, addr: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        sh_ok(&format!(
            "htpasswd -Bbn {USER} '{password}' > {}/htpasswd",
            d.display()
        ));
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n\
                 http:\n  addr: {addr}:{port}\nauth:\n  htpasswd:\n    realm: cutover-test\n    path: {d}/htpasswd\n",
                d = d.display()
            ),
        )
        .unwrap();
        let docker_config = d.join("docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        let real = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".docker"));
        if real.join("cli-plugins").exists() {
            std::os::unix::fs::symlink(real.join("cli-plugins"), docker_config.join("cli-plugins"))
                .unwrap();
        }
        let mut registry = Registry {
            child: None,
            dir,
            addr: addr.to_string(),
            port,
            docker_config,
        };
        registry.serve();
        registry
    }

    pub(crate) fn serve(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((self.addr.as_str(), self.port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn server(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    /// `docker` with this registry's credential store.
    fn docker(&self, script: &str) -> String {
        let out = Command::new("sh")
            .args(["-c", script])
            .env("DOCKER_CONFIG", &self.docker_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{script}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pushes `from` as `<server>/<repo>:<tag>` and removes the local tag, so a deploy must pull.
    pub(crate) fn push(&self, password: &str, from: &str, image: &str) {
        self.docker(&format!(
            "printf '%s' '{password}' | docker login --password-stdin -u {USER} {} >/dev/null 2>&1 && \
             docker tag {from} {image} && docker push -q {image} >/dev/null && docker rmi {image} >/dev/null && \
             docker logout {} >/dev/null",
            self.server(),
            self.server()
        ));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `secrets/registry.env.age` holding `REGISTRY_PASSWORD=<password>`, encrypted with `age`.
pub(crate) fn write_secret(project: &Path, password: &str) {
    let dir = project.join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("age")
        .arg("-a")
        .arg("-R")
        .arg(repo_root().join("secrets/recipients.txt"))
        .arg("-o")
        .arg(dir.join("registry.env.age"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("REGISTRY_PASSWORD={password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

pub(crate) fn configure(project: &Project, server: &str) {
    let path = project.path().join("cutover.yml");
    let mut config = yaml_to_json(&std::fs::read_to_string(&path).unwrap());
    let secrets = config["app"]["secrets"].as_array_mut().unwrap();
    secrets.push("secrets/registry.env.age".into());
    config["registry"] = serde_json::json!({
        "server": server,
        "username": USER,
        "password_secret": "REGISTRY_PASSWORD",
    });
    std::fs::write(&path, json_to_yaml(&config)).unwrap();
}
