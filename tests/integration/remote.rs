//! `cutover --host`: real SSH to a real sshd, deploying on this machine's Docker engine.
//!
//! Each test starts its own sshd (Debian's openssh-server) on a free loopback port with its
//! own sshd_config, host key and authorized_keys in a temp dir (`UsePAM no`), logging the
//! connections it accepts. The box is the user `cutover-box` (created once, in the docker
//! group; its HOME has no cutover): its binary goes to the per-test `XDG_DATA_HOME` that sshd
//! sets, its project to a per-test `remote.dir`, and it runs its own nginx in a prefix it owns
//! so its `nginx -s reload` works. The client side is an ssh_config file passed through
//! `CUTOVER_SSH_CONFIG` (`ssh -F`), with its own key and known_hosts, so the real ~/.ssh is
//! never read or written.
//!
//! Needs root (to create the box user and start sshd), sshd, ssh, docker, nginx, age and the
//! demo images; without them the tests are skipped loudly, and fail under CI.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::{free_port, loud, repo_root, require};

pub(crate) const BOX_USER: &str = "cutover-box";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn sh(script: &str) -> std::process::Output {
    Command::new("sh").args(["-c", script]).output().unwrap()
}

pub(crate) fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// sshd and the OpenSSH client, and root to run them as a box: else skipped loudly (a
/// failure under CI).
fn ssh_ready() -> bool {
    if !require("sshd", "run a real SSH server for the --host tests")
        || !require("ssh", "run cutover --host")
        || !require("ssh-keygen", "make the test's SSH keys")
        || !require("runuser", "start the box user's nginx")
    {
        return false;
    }
    if sh_ok("id -u").trim() != "0" {
        let msg = "the --host tests need root (to create the box user and run sshd)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so this is a failure");
        }
        loud(&format!("*** SKIPPED: {msg} ***"));
        return false;
    }
    true
}

/// Also docker, nginx, age and the demo images (end-to-end deploys through SSH).
pub(crate) fn deploy_ready() -> bool {
    if !ssh_ready()
        || !require("docker", "deploy through SSH")
        || !require("nginx", "run the box's nginx")
        || !require("age", "decrypt the demo secrets independently")
        || !require("flock", "wait for the box's deploy lock")
    {
        return false;
    }
    let images_ok = ["cutover-demo:v1", "cutover-demo:v2"].iter().all(|i| {
        sh(&format!("docker image inspect {i} >/dev/null 2>&1"))
            .status
            .success()
    });
    if !images_ok {
        let msg = "demo images cutover-demo:v1/v2 are missing (run scripts/demo-image.sh)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so this is a failure");
        }
        loud(&format!("*** SKIPPED: {msg} ***"));
        return false;
    }
    true
}

/// Creates the box user once per test run (idempotent across runs), with docker access and a
/// compose v2 plugin in its own ~/.docker when this run has one.
fn box_user() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if !sh(&format!("id {BOX_USER}")).status.success() {
            sh_ok(&format!("useradd -m -s /bin/sh {BOX_USER}"));
        }
        // `*`: no password, but not locked (sshd without PAM refuses locked accounts).
        sh_ok(&format!("usermod -p '*' -aG docker {BOX_USER}"));
        let home = sh_ok(&format!("getent passwd {BOX_USER} | cut -d: -f6"));
        let home = home.trim();
        let plugin = std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("cli-plugins/docker-compose"))
            .filter(|p| p.exists());
        if let Some(plugin) = plugin {
            let dest = format!("{home}/.docker/cli-plugins/docker-compose");
            let same = std::fs::metadata(&dest)
                .ok()
                .zip(std::fs::metadata(&plugin).ok())
                .is_some_and(|(a, b)| a.len() == b.len());
            if !same {
                sh_ok(&format!(
                    "mkdir -p {home}/.docker/cli-plugins && cp -L {} {dest}.tmp && mv {dest}.tmp {dest} && chown -R {BOX_USER} {home}/.docker",
                    plugin.display()
                ));
            }
        }
        assert!(
            !Path::new(home).join(".local/share/cutover").exists()
                || std::env::var_os("CUTOVER_TEST_KEEP_BOX").is_some(),
            "the box user's HOME must not hold a cutover (tests install into XDG_DATA_HOME)"
        );
    });
}

/// How the box's sshd should treat our key.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    Accept,
    RefuseKey,
}

/// One sshd for one test, its box-side dirs, and the client's ssh_config.
pub(crate) struct SshBox {
    root: tempfile::TempDir,
    pub(crate) port: u16,
    /// `XDG_DATA_HOME` on the box: where cutover installs itself.
    data: PathBuf,
}

impl SshBox {
    fn start(auth: Auth, pin_host_key: bool, data: Option<PathBuf>) -> SshBox {
        Self::start_with(auth, pin_host_key, data, None)
    }

    /// `fake_machine`: what `uname -m` says on the box (a script first on its PATH).
    fn start_with(
        auth: Auth,
        pin_host_key: bool,
        data: Option<PathBuf>,
        fake_machine: Option<&str>,
    ) -> SshBox {
        box_user();
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_path_buf();
        std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        sh_ok(&format!(
            "cd {r} && ssh-keygen -q -t ed25519 -N '' -f host_key && ssh-keygen -q -t ed25519 -N '' -f client_key && ssh-keygen -q -t ed25519 -N '' -f other_key",
            r = r.display()
        ));
        let authorized = match auth {
            Auth::Accept => "client_key.pub",
            Auth::RefuseKey => "other_key.pub",
        };
        std::fs::copy(r.join(authorized), r.join("authorized_keys")).unwrap();
        let data = data.unwrap_or_else(|| {
            let d = r.join("box-data");
            std::fs::create_dir_all(&d).unwrap();
            sh_ok(&format!("chown {BOX_USER} {}", d.display()));
            d
        });
        let home = sh_ok(&format!("getent passwd {BOX_USER} | cut -d: -f6"));
        // The box's own identity, if a test puts one there, is found where a real box keeps
        // it (~/.config/cutover/identity.txt), here under XDG_CONFIG_HOME.
        let config_home = r.join("box-config");
        // The box's registry of projects (src/registry.rs) stays in this test's dir too.
        let state_home = r.join("box-state");
        for dir in [&config_home, &state_home] {
            std::fs::create_dir_all(dir).unwrap();
            sh_ok(&format!("chown {BOX_USER} {}", dir.display()));
        }
        let mut path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".to_string();
        if let Some(machine) = fake_machine {
            let bin = r.join("fake-bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(
                bin.join("uname"),
                format!("#!/bin/sh\nif [ \"$1\" = -m ]; then echo {machine}; else exec /bin/uname \"$@\"; fi\n"),
            )
            .unwrap();
            std::fs::set_permissions(bin.join("uname"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            path = format!("{}:{path}", bin.display());
        }
        let mut setenv = format!(
            "XDG_DATA_HOME={} XDG_CONFIG_HOME={} XDG_STATE_HOME={} PATH={path} DOCKER_CONFIG={}/.docker",
            data.display(),
            config_home.display(),
            state_home.display(),
            home.trim()
        );
        if let Ok(compose) = std::env::var("CUTOVER_COMPOSE") {
            if !compose.contains(' ') {
                setenv.push_str(&format!(" CUTOVER_COMPOSE={compose}"));
            }
        }
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {r}/host_key\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AuthorizedKeysFile {r}/authorized_keys\nPidFile {r}/sshd.pid\nAllowUsers {BOX_USER}\n\
             LogLevel INFO\nSetEnv {setenv}\n",
            r = r.display()
        );
        std::fs::write(r.join("sshd_config"), config).unwrap();
        let known = if pin_host_key {
            let key = std::fs::read_to_string(r.join("host_key.pub")).unwrap();
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            format!("[127.0.0.1]:{port} {}\n", key.join(" "))
        } else {
            String::new()
        };
        std::fs::write(r.join("known_hosts"), known).unwrap();
        let client = format!(
            "Host box\n  HostName 127.0.0.1\n  Port {port}\n  User {BOX_USER}\n  IdentityFile {r}/client_key\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {r}/known_hosts\n  GlobalKnownHostsFile /dev/null\n",
            r = r.display()
        );
        std::fs::write(r.join("ssh_config"), client).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        sh_ok(&format!(
            "/usr/sbin/sshd -f {r}/sshd_config -E {r}/sshd.log",
            r = r.display()
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        SshBox { root, port, data }
    }

    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }

    /// A box-owned directory under this box's root.
    fn box_dir(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        sh_ok(&format!("chown -R {BOX_USER} {}", dir.display()));
        dir
    }

    pub(crate) fn ssh_config(&self) -> PathBuf {
        self.path().join("ssh_config")
    }

    /// How many connections sshd accepted so far.
    fn accepted(&self) -> usize {
        std::fs::read_to_string(self.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey for")
            .count()
    }

    fn installed_binaries(&self) -> Vec<String> {
        std::fs::read_dir(self.data.join("cutover/bin"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for SshBox {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.path().join("sshd.pid")) {
            let _ = sh(&format!("kill {}", pid.trim()));
        }
    }
}

/// One binary install shared by the tests that are not about installing (uploading a debug
/// build per test would only cost time).
fn shared_data() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        box_user();
        // Earlier runs' installs (a debug binary is ~100 MB) go once their run has exited.
        for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("cutover-box-data-")
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = std::env::temp_dir().join(format!("cutover-box-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        sh_ok(&format!("chown {BOX_USER} {}", dir.display()));
        dir
    })
    .clone()
}

/// A project here, deployed through SSH to the box's dir, nginx and compose project.
pub(crate) struct Project {
    pub(crate) ssh: SshBox,
    local: tempfile::TempDir,
    project: String,
    pub(crate) remote_dir: PathBuf,
    blue: u16,
    green: u16,
    nginx_port: u16,
    prefix: PathBuf,
    secrets: bool,
}

#[derive(Clone)]
pub(crate) struct Setup {
    startup_delay_ms: u64,
    health_timeout: &'static str,
    drain: &'static str,
    secrets: bool,
    /// How the project names the box: `--host box` (None) or `remote.host` in the config.
    remote_host_in_config: bool,
    shared_install: bool,
    /// `app.image`'s repository (the workers and lifecycle tests use their own).
    image: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            startup_delay_ms: 500,
            health_timeout: "30s",
            drain: "10s",
            secrets: false,
            remote_host_in_config: false,
            shared_install: true,
            image: "cutover-demo",
        }
    }
}

impl Setup {
    /// The defaults, with the demo secrets (for other suites' boxes).
    pub(crate) fn with_secrets() -> Setup {
        Setup {
            secrets: true,
            ..Setup::default()
        }
    }
}

fn test_identity() -> String {
    std::fs::read_to_string(repo_root().join("fixtures/secrets/test-identity.txt")).unwrap()
}

impl Project {
    pub(crate) fn new(setup: Setup) -> Project {
        let ssh = SshBox::start(Auth::Accept, true, setup.shared_install.then(shared_data));
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let project = format!("cutover-remote-{}-{n}", std::process::id());
        let local = tempfile::tempdir().unwrap();
        let remote_dir = ssh.path().join("box/project");
        let prefix = ssh.path().join("box/nginx");
        let p = Project {
            local,
            project,
            remote_dir,
            blue: free_port(),
            green: free_port(),
            nginx_port: free_port(),
            prefix,
            secrets: setup.secrets,
            ssh,
        };
        if setup.secrets {
            std::fs::create_dir_all(p.path().join("secrets")).unwrap();
            for name in ["recipients.txt", "demo.env.age"] {
                std::fs::copy(
                    repo_root().join("secrets").join(name),
                    p.path().join("secrets").join(name),
                )
                .unwrap();
            }
        }
        p.write_config(&setup);
        p.ssh.box_dir("box");
        // The site and an initial include must exist before nginx starts; rendered here.
        p.local_cutover()
            .args(["render", "--out", "rendered"])
            .assert()
            .success();
        std::fs::create_dir_all(&p.prefix).unwrap();
        std::fs::copy(
            p.path().join("rendered/nginx-site.conf"),
            p.prefix.join("site.conf"),
        )
        .unwrap();
        std::fs::copy(
            p.path().join("rendered/service-url.inc"),
            p.prefix.join("service-url.inc"),
        )
        .unwrap();
        cutover::nginx::LocalNginx::write_config(&p.prefix).unwrap();
        sh_ok(&format!(
            "chown -R {BOX_USER} {}",
            p.ssh.path().join("box").display()
        ));
        let argv = cutover::nginx::LocalNginx::argv(&p.prefix, &[]);
        let status = Command::new("runuser")
            .args(["-u", BOX_USER, "--"])
            .arg("/usr/sbin/nginx")
            .args(&argv[1..])
            .status()
            .unwrap();
        assert!(status.success(), "the box user's nginx did not start");
        p
    }

    pub(crate) fn path(&self) -> &Path {
        self.local.path()
    }

    fn write_config(&self, setup: &Setup) {
        let argv = |extra: &[&str]| cutover::nginx::LocalNginx::argv_yaml(&self.prefix, extra);
        let secrets = if setup.secrets {
            "  secrets: [secrets/demo.env.age]\n"
        } else {
            ""
        };
        let host = if setup.remote_host_in_config {
            "  host: box\n"
        } else {
            ""
        };
        let text = format!(
            "project: {project}\n\
             app:\n\
             \x20 name: web\n\
             \x20 image: {image}\n\
             \x20 port: 8080\n\
             \x20 memory: 64M\n\
             \x20 environment:\n\
             \x20   STARTUP_DELAY_MS: \"{delay}\"\n\
             {secrets}\
             \x20 health: {{ path: /health, timeout: {timeout}, interval: 100ms }}\n\
             \x20 drain: {drain}\n\
             \x20 stop_grace: 5s\n\
             colors: {{ blue: {blue}, green: {green} }}\n\
             nginx:\n\
             \x20 include: {include}\n\
             \x20 site: {site}\n\
             \x20 listen: \"127.0.0.1:{nginx_port}\"\n\
             \x20 test: {test}\n\
             \x20 reload: {reload}\n\
             remote:\n\
             {host}\
             \x20 dir: {remote_dir}\n",
            project = self.project,
            image = setup.image,
            delay = setup.startup_delay_ms,
            timeout = setup.health_timeout,
            drain = setup.drain,
            blue = self.blue,
            green = self.green,
            include = self.prefix.join("service-url.inc").display(),
            site = self.prefix.join("site.conf").display(),
            nginx_port = self.nginx_port,
            test = argv(&["-t"]),
            reload = argv(&["-s", "reload"]),
            remote_dir = self.remote_dir.display(),
        );
        std::fs::write(self.path().join("cutover.yml"), text).unwrap();
    }

    /// `cutover` run here, without a host (local commands).
    pub(crate) fn local_cutover(&self) -> assert_cmd::Command {
        let mut cmd = crate::common::cutover(self.path());
        cmd.env_remove("CUTOVER_HOST")
            .env("CUTOVER_SSH_CONFIG", self.ssh.ssh_config())
            .env_remove("SSH_AUTH_SOCK");
        if self.secrets {
            cmd.env("CUTOVER_AGE_KEY", test_identity());
        }
        cmd
    }

    /// `cutover --host box …` (the identity travels when the project has secrets).
    pub(crate) fn remote(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.local_cutover();
        cmd.args(["--host", "box"]).args(args);
        cmd.output().unwrap()
    }

    pub(crate) fn remote_ok(&self, args: &[&str]) -> (String, String) {
        let out = self.remote(args);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "cutover --host box {args:?} failed ({:?}):\n{stdout}\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// A deploy through SSH running in the background, its stderr collected line by line.
    fn spawn(&self, args: &[&str], host_flag: bool) -> Background {
        let mut cmd = crate::common::cutover_command(self.path(), &crate::common::shared_home());
        cmd.env_remove("CUTOVER_HOST")
            .env_remove("SSH_AUTH_SOCK")
            .env("CUTOVER_SSH_CONFIG", self.ssh.ssh_config())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.secrets {
            cmd.env("CUTOVER_AGE_KEY", test_identity());
        }
        if host_flag {
            cmd.args(["--host", "box"]);
        }
        let mut child = cmd.args(args).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Background {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.remote_dir.join(".cutover")
    }

    /// Waits until the box's in-progress record names `step`.
    fn wait_for_step(&self, step: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state =
                std::fs::read_to_string(self.state_dir().join("state.json")).unwrap_or_default();
            if state.contains(&format!("\"step\": \"{step}\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "deploy never reached {step}: {state}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn include(&self) -> String {
        std::fs::read_to_string(self.prefix.join("service-url.inc")).unwrap()
    }

    /// Running app colors, by compose label (read here with docker, not through cutover).
    pub(crate) fn running_colors(&self) -> Vec<String> {
        let out = sh_ok(&format!(
            "docker ps --filter label=com.docker.compose.project={} --format '{{{{.Label \"com.docker.compose.service\"}}}}'",
            self.project
        ));
        let mut services: Vec<String> = out
            .lines()
            .filter(|s| s.starts_with("web-"))
            .map(str::to_string)
            .collect();
        services.sort();
        services
    }

    pub(crate) fn assert_serving(&self, color: &str, version: &str) {
        assert_eq!(self.running_colors(), vec![format!("web-{color}")]);
        let port = if color == "blue" {
            self.blue
        } else {
            self.green
        };
        assert!(
            self.include().contains(&format!("127.0.0.1:{port};")),
            "{}",
            self.include()
        );
        let (code, body) = cutover::demo::http_get(self.nginx_port, "/").expect("nginx answers");
        assert_eq!(code, 200);
        assert_eq!(body.trim(), format!("version={version} color={color}"));
    }

    /// The box's installed binary, run on the box as the box user (not through SSH).
    fn on_box(&self, args: &[&str]) -> std::process::Output {
        let bin = self
            .ssh
            .installed_binaries()
            .into_iter()
            .find(|n| !n.starts_with('.'))
            .expect("an installed binary");
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", BOX_USER, "--", "env", "-i"])
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .arg(format!(
                "HOME={}",
                sh_ok(&format!("getent passwd {BOX_USER} | cut -d: -f6")).trim()
            ))
            .arg(format!(
                "DOCKER_CONFIG={}/.docker",
                sh_ok(&format!("getent passwd {BOX_USER} | cut -d: -f6")).trim()
            ));
        if let Ok(compose) = std::env::var("CUTOVER_COMPOSE") {
            cmd.arg(format!("CUTOVER_COMPOSE={compose}"));
        }
        cmd.arg(format!(
            "XDG_STATE_HOME={}",
            self.ssh.path().join("box-state").display()
        ))
        .arg(format!(
            "XDG_CONFIG_HOME={}",
            self.ssh.path().join("box-config").display()
        ));
        cmd.arg(self.ssh.data.join("cutover/bin").join(bin))
            .arg("-C")
            .arg(self.remote_dir.join("current"))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.prefix.join("nginx.pid")) {
            let _ = sh(&format!("kill -QUIT {}", pid.trim()));
        }
        let _ = sh(&format!(
            "docker ps -aq --filter label=com.docker.compose.project={} | xargs -r docker rm -f",
            self.project
        ));
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}_default", self.project)])
            .output();
    }
}

struct Background {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn stderr_so_far(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, signal: &str) {
        sh_ok(&format!("kill -{signal} {}", self.child.id()));
    }

    /// (exit code, stdout, stderr)
    fn finish(mut self) -> (Option<i32>, String, String) {
        let out = self.child.wait_timeout_or_kill(Duration::from_secs(120));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut stdout = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            use std::io::Read;
            let _ = s.read_to_string(&mut stdout);
        }
        (out, stdout, self.stderr_so_far())
    }
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> Option<i32>;
}

impl WaitOrKill for std::process::Child {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                panic!("cutover did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub(crate) fn texts(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` whose bytes contain `needle` (followed as root; symlinks skipped).
pub(crate) fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path);
            }
        }
    }
    hits
}

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
    assert!(
        stderr.contains(&format!(
            "install the release artifact cutover-{}-{other}-unknown-linux-gnu",
            env!("CARGO_PKG_VERSION")
        )),
        "{stderr}"
    );
    assert!(ssh.installed_binaries().is_empty(), "nothing uploaded");
}

#[test]
fn remote_plaintext_in_secrets_is_refused_and_never_sent() {
    if !ssh_ready() {
        return;
    }
    let ssh = SshBox::start(Auth::Accept, true, Some(shared_data()));
    let local = init_local();
    let remote_dir = point_at_box_dir(local.path(), &ssh);
    std::fs::write(
        local.path().join("secrets/prod.env"),
        "DB_PASSWORD=plaintext-value-123\n",
    )
    .unwrap();
    let out = crate::common::cutover(local.path())
        .env("CUTOVER_SSH_CONFIG", ssh.ssh_config())
        .args(["--host", "box", "render", "--check"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("prod.env is a plaintext dotenv file"),
        "{stderr}"
    );
    assert!(!stderr.contains("plaintext-value-123"), "{stderr}");
    assert!(files_containing(ssh.path(), "plaintext-value-123").is_empty());
    assert!(!remote_dir.join("releases").exists());
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
    let p = Project::new(Setup {
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
    sh_ok(&format!(
        "chown -R {BOX_USER} {}",
        p.ssh.data.join("cutover").display()
    ));

    let (stdout, stderr) = p.remote_ok(&["deploy", "--image", "cutover-demo:v1", "--json"]);
    assert!(stderr.contains("uploaded cutover"), "{stderr}");
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
    let p = Project::new(Setup {
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
    let p = Project::new(Setup {
        startup_delay_ms: 20_000,
        remote_host_in_config: true,
        ..Setup::default()
    });
    // remote.host in cutover.yml: no --host needed.
    let first = p.spawn(&["deploy", "--image", "cutover-demo:v1"], false);
    p.wait_for_step("health");
    let out = p.remote(&["deploy", "--image", "cutover-demo:v2"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "another deploy is running: deploy cutover-demo:v1 by cutover-box via ssh from 127.0.0.1 (pid"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = first.finish();
    assert_eq!(code, Some(0), "{stderr}");
    p.assert_serving("blue", "v1");
}

#[test]
fn remote_sigint_before_the_switch_tears_down_and_exits_130() {
    if !deploy_ready() {
        return;
    }
    let p = Project::new(Setup::default());
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
    let (history, _) = p.remote_ok(&["history", "--json"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.last().unwrap()["result"], "interrupted");
}

#[test]
fn remote_sigint_after_the_switch_completes_the_deploy() {
    if !deploy_ready() {
        return;
    }
    let p = Project::new(Setup {
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
    let p = Project::new(Setup::default());
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
    let (history, _) = p.remote_ok(&["history", "--json"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
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
    let p = Project::new(Setup::default());
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
    let (history, _) = p.remote_ok(&["history", "--json"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.last().unwrap()["result"], "interrupted");
}

#[test]
fn remote_logs_and_exec_run_on_the_box_without_a_tty() {
    if !deploy_ready() || !crate::workers::ready() {
        return;
    }
    let p = Project::new(Setup {
        image: "cutover-demo-workers",
        ..Setup::default()
    });
    p.remote_ok(&["deploy", "--image", "cutover-demo-workers:v1"]);
    // The command's exit code and output come back through the relay and SSH.
    let out = p.remote(&["exec", "--", "/app", "exit", "7", "on", "the", "box"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_eq!(stdout.trim(), "on the box");
    let (stdout, _) = p.remote_ok(&["logs", "-n", "20"]);
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
    use crate::e2e_lifecycle::{BUILD, H1};
    if !crate::common::require_images(&[H1], BUILD) {
        return;
    }
    let image = H1;
    let p = Project::new(Setup {
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
    let secret = secret["DEMO_SECRET"].as_str().unwrap().to_string();
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
