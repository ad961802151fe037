//! The box of the `--host` tests: a real sshd per test on a free loopback port, with its own
//! sshd_config, host key and authorized_keys in a temp dir (`UsePAM no`), logging the
//! connections it accepts ([`SshBox`]), and a project here deployed through it
//! ([`RemoteProject`]). The box is the user `cutover-box` (created once, in the docker
//! group; its HOME has no cutover): its binary goes to the per-test `XDG_DATA_HOME` that sshd
//! sets, its project to a per-test `remote.dir`, and it runs its own nginx in a prefix it owns
//! so its `nginx -s reload` works. The client side is an ssh_config file passed through
//! `CUTOVER_SSH_CONFIG` (`ssh -F`), with its own key and known_hosts, so the real ~/.ssh is
//! never read or written.
//!
//! Needs root (to create the box user and start sshd), sshd and ssh; [`deploy_ready`] also
//! docker, nginx, age and the demo images. Without them the tests skip loudly, and fail
//! under CI.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::harness::common::{free_port, loud, repo_root, require, sh, sh_ok, texts};

pub(crate) const BOX_USER: &str = "cutover-box";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// sshd and the OpenSSH client, and root to run them as a box: else skipped loudly (a
/// failure under CI).
pub(crate) fn ssh_ready() -> bool {
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
pub(crate) enum Auth {
    Accept,
    RefuseKey,
}

/// One sshd for one test, its box-side dirs, and the client's ssh_config.
pub(crate) struct SshBox {
    pub(crate) root: tempfile::TempDir,
    pub(crate) port: u16,
    /// `XDG_DATA_HOME` on the box: where cutover installs itself.
    pub(crate) data: PathBuf,
}

impl SshBox {
    pub(crate) fn start(auth: Auth, pin_host_key: bool, data: Option<PathBuf>) -> SshBox {
        Self::start_with(auth, pin_host_key, data, None)
    }

    /// `fake_machine`: what `uname -m` says on the box (a script first on its PATH).
    pub(crate) fn start_with(
        auth: Auth,
        pin_host_key: bool,
        data: Option<PathBuf>,
        fake_machine: Option<&str>,
    ) -> SshBox {
        Self::start_inner(auth, pin_host_key, data, fake_machine, false)
    }

    /// An aarch64 box: `uname -m` says aarch64, and its sshd (so every session) lives in a
    /// user namespace of its own (identity-mapped, so the box user is itself) whose private
    /// binfmt_misc runs aarch64 ELFs through qemu-user: the aarch64 release binary uploaded
    /// there runs. This machine's binfmt_misc is not touched.
    pub(crate) fn start_aarch64(auth: Auth, data: Option<PathBuf>) -> SshBox {
        Self::start_inner(auth, true, data, Some("aarch64"), true)
    }

    fn start_inner(
        auth: Auth,
        pin_host_key: bool,
        data: Option<PathBuf>,
        fake_machine: Option<&str>,
        emulate_aarch64: bool,
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
        let sshd = format!(
            "/usr/sbin/sshd -f {r}/sshd_config -E {r}/sshd.log",
            r = r.display()
        );
        if emulate_aarch64 {
            crate::harness::artifact::aarch64_binfmt_daemon(&sshd);
        } else {
            sh_ok(&sshd);
        }
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
    pub(crate) fn box_dir(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        sh_ok(&format!("chown -R {BOX_USER} {}", dir.display()));
        dir
    }

    pub(crate) fn ssh_config(&self) -> PathBuf {
        self.path().join("ssh_config")
    }

    /// How many connections sshd accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        std::fs::read_to_string(self.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey for")
            .count()
    }

    pub(crate) fn installed_binaries(&self) -> Vec<String> {
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
pub(crate) fn shared_data() -> PathBuf {
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

/// A project here, deployed through SSH to the box's dir, nginx and compose project: not a
/// [`crate::harness::project::Project`] (whose runs are local), so a name of its own.
pub(crate) struct RemoteProject {
    pub(crate) ssh: SshBox,
    pub(crate) local: tempfile::TempDir,
    pub(crate) project: String,
    pub(crate) remote_dir: PathBuf,
    pub(crate) blue: u16,
    pub(crate) green: u16,
    pub(crate) nginx_port: u16,
    pub(crate) prefix: PathBuf,
    pub(crate) secrets: bool,
}

#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) startup_delay_ms: u64,
    pub(crate) health_timeout: &'static str,
    pub(crate) drain: &'static str,
    pub(crate) secrets: bool,
    /// How the project names the box: `--host box` (None) or `remote.host` in the config.
    pub(crate) remote_host_in_config: bool,
    pub(crate) shared_install: bool,
    /// `app.image`'s repository (the workers and lifecycle tests use their own).
    pub(crate) image: &'static str,
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

pub(crate) fn test_identity() -> String {
    std::fs::read_to_string(repo_root().join("fixtures/secrets/test-identity.txt")).unwrap()
}

impl RemoteProject {
    pub(crate) fn new(setup: Setup) -> RemoteProject {
        let ssh = SshBox::start(Auth::Accept, true, setup.shared_install.then(shared_data));
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let project = format!("cutover-remote-{}-{n}", std::process::id());
        let local = tempfile::tempdir().unwrap();
        let remote_dir = ssh.path().join("box/project");
        let prefix = ssh.path().join("box/nginx");
        let p = RemoteProject {
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

    pub(crate) fn write_config(&self, setup: &Setup) {
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
    pub(crate) fn spawn(&self, args: &[&str], host_flag: bool) -> Background {
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
    pub(crate) fn wait_for_step(&self, step: &str) {
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

    pub(crate) fn include(&self) -> String {
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
    pub(crate) fn on_box(&self, args: &[&str]) -> std::process::Output {
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

impl Drop for RemoteProject {
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

pub(crate) struct Background {
    pub(crate) child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub(crate) fn stderr_so_far(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub(crate) fn signal(&self, signal: &str) {
        sh_ok(&format!("kill -{signal} {}", self.child.id()));
    }

    /// (exit code, stdout, stderr)
    pub(crate) fn finish(mut self) -> (Option<i32>, String, String) {
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
