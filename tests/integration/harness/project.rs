//! The one test-project builder (in the style of casey/just's `Test`), used by every suite
//! that deploys locally: a temp project dir with its own HOME, a cutover.yml written from
//! typed options ([`App`]), free ports, a compose project name, optionally a local nginx and
//! the demo secrets with a 0600 identity, and a runner, [`Project::cutover`], whose [`Run`]
//! asserts the exit status and parses the output. Dropping a project removes what it started:
//! nginx, containers and networks, or the swarm stack and its secrets.
//!
//! Beyond the builder, what the tests ask of a project is here too, one `impl` block per
//! kind (compose deploys, workers, one-offs and hooks, swarm), with [`ready`], the gate of the
//! compose deploy tests, and the helpers more than one feature file uses. (A project deployed
//! through SSH is another thing: harness/ssh_box.rs's `RemoteProject`.)
//!
//! ```ignore
//! let project = Project::compose(App::compose().stop_grace("0s"));
//! project.cutover(["deploy", "--image", "cutover-demo:v1"]).success();
//! let failure = project.cutover(["rollback"]).code(1);
//! project.assert_stderr_snapshot("e2e-rollback-nothing-to-roll-back", &failure);
//! ```

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::common::{
    cutover_command, fixture, free_port, json_to_yaml, regex_escape, repo_root, require,
    yaml_to_json,
};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The gate of the compose deploy tests: Docker, nginx and the demo images `cutover-demo:v1`
/// / `:v2` (what [`App::compose`] deploys) are required; without them the test is skipped
/// loudly (and fails under CI).
pub fn ready() -> bool {
    if !require("docker", "run end-to-end deploys") || !require("nginx", "run end-to-end deploys") {
        return false;
    }
    let images_ok = ["cutover-demo:v1", "cutover-demo:v2"]
        .iter()
        .all(|i| cutover::docker::images::exists(i));
    if !images_ok {
        let msg = "demo images cutover-demo:v1/v2 are missing (run scripts/demo-image.sh)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so this is a failure");
        }
        crate::harness::common::loud(&format!("*** SKIPPED: {msg} ***"));
        return false;
    }
    true
}

/// Which engine the generated cutover.yml targets (and so what Drop removes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Compose,
    Swarm,
}

/// The options of a generated cutover.yml: the demo app `web` (image `cutover-demo`).
#[derive(Clone, Debug)]
pub struct App {
    pub engine: Engine,
    pub image: String,
    /// The app's environment, in order (`STARTUP_DELAY_MS` first).
    pub env: Vec<(String, String)>,
    pub memory: String,
    pub restart: Option<String>,
    pub health_timeout: String,
    /// `app.health.interval` (compose).
    pub health_interval: String,
    pub drain: Option<String>,
    pub stop_grace: String,
    /// `app.settle`, the watch window after a switch (compose only; short, for speed).
    pub settle: String,
    /// `nginx.probe` (compose only).
    pub probe: Option<String>,
    /// `nginx.test` / `nginx.reload` instead of the local nginx's own commands (wrappers).
    pub nginx_test: Option<Vec<String>>,
    pub nginx_reload: Option<Vec<String>>,
    /// `state_dir` (default `.cutover`).
    pub state_dir: Option<PathBuf>,
    /// The bundled demo secrets (secrets/demo.env.age) and the test identity.
    pub secrets: bool,
    /// An accessory `cache` (the demo image) that the app depends on.
    pub accessory: bool,
    /// `nginx.tls` (compose only); with it, `nginx.site` is the local nginx's site.conf.
    pub tls: Option<serde_json::Value>,
    /// `app.release` and `app.release_timeout`.
    pub release: Option<(Vec<String>, String)>,
    /// `hooks:` as written.
    pub hooks: Option<serde_json::Value>,
    /// `nginx.server_name` (default: the config's `_`).
    pub server_name: Option<String>,
    /// `workers:` as written (tests/integration/workers.rs).
    pub workers: Option<serde_json::Value>,
    /// `app.secrets_delivery` (`env` when unset).
    pub secrets_delivery: Option<String>,
    /// `nginx.switch` (with the project's `nginx.switch_ports`); unset: the default.
    pub switch: Option<String>,
}

impl App {
    /// Compose blue/green behind nginx: a 1 s startup, a 30 s health gate, 10 s drain.
    pub fn compose() -> App {
        App {
            engine: Engine::Compose,
            image: "cutover-demo".into(),
            env: vec![("STARTUP_DELAY_MS".into(), "1000".into())],
            memory: "64M".into(),
            restart: Some("on-failure".into()),
            health_timeout: "30s".into(),
            health_interval: "100ms".into(),
            drain: Some("10s".into()),
            stop_grace: "10s".into(),
            settle: "1s".into(),
            probe: None,
            nginx_test: None,
            nginx_reload: None,
            state_dir: None,
            secrets: false,
            accessory: false,
            tls: None,
            release: None,
            hooks: None,
            server_name: None,
            workers: None,
            secrets_delivery: None,
            switch: None,
        }
    }

    /// A swarm service of two replicas with the demo secrets, gated on `/app healthcheck`.
    pub fn swarm() -> App {
        App {
            engine: Engine::Swarm,
            env: vec![("STARTUP_DELAY_MS".into(), "300".into())],
            restart: None,
            health_timeout: "20s".into(),
            health_interval: "100ms".into(),
            drain: None,
            secrets: true,
            ..App::compose()
        }
    }

    /// Sets an environment variable of the app (replacing an earlier value).
    pub fn env(mut self, key: &str, value: &str) -> App {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.into(),
            None => self.env.push((key.into(), value.into())),
        }
        self
    }

    /// How long the demo app waits before it listens (`STARTUP_DELAY_MS`).
    pub fn startup_delay_ms(self, ms: u64) -> App {
        self.env("STARTUP_DELAY_MS", &ms.to_string())
    }

    pub fn image(mut self, image: &str) -> App {
        self.image = image.into();
        self
    }

    pub fn memory(mut self, memory: &str) -> App {
        self.memory = memory.into();
        self
    }

    pub fn restart(mut self, policy: &str) -> App {
        self.restart = Some(policy.into());
        self
    }

    pub fn health_timeout(mut self, timeout: &str) -> App {
        self.health_timeout = timeout.into();
        self
    }

    pub fn health_interval(mut self, interval: &str) -> App {
        self.health_interval = interval.into();
        self
    }

    pub fn drain(mut self, drain: &str) -> App {
        self.drain = Some(drain.into());
        self
    }

    pub fn stop_grace(mut self, grace: &str) -> App {
        self.stop_grace = grace.into();
        self
    }

    pub fn settle(mut self, settle: &str) -> App {
        self.settle = settle.into();
        self
    }

    pub fn nginx_test(mut self, argv: &[&str]) -> App {
        self.nginx_test = Some(argv.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn nginx_reload(mut self, argv: &[&str]) -> App {
        self.nginx_reload = Some(argv.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn state_dir(mut self, dir: &Path) -> App {
        self.state_dir = Some(dir.to_owned());
        self
    }

    pub fn probe(mut self, url: &str) -> App {
        self.probe = Some(url.into());
        self
    }

    pub fn tls(mut self, tls: serde_json::Value) -> App {
        self.tls = Some(tls);
        self
    }

    pub fn server_name(mut self, name: &str) -> App {
        self.server_name = Some(name.into());
        self
    }

    pub fn secrets(mut self) -> App {
        self.secrets = true;
        self
    }

    pub fn accessory(mut self) -> App {
        self.accessory = true;
        self
    }

    pub fn workers(mut self, workers: serde_json::Value) -> App {
        self.workers = Some(workers);
        self
    }

    /// `app.release: argv` with `app.release_timeout: timeout`.
    pub fn release(mut self, argv: &[&str], timeout: &str) -> App {
        self.release = Some((argv.iter().map(|s| s.to_string()).collect(), timeout.into()));
        self
    }

    /// `app.secrets_delivery: env|files`.
    /// `nginx.switch: mode`, with the project's two `nginx.switch_ports`.
    pub fn switch(mut self, mode: &str) -> App {
        self.switch = Some(mode.into());
        self
    }

    pub fn secrets_delivery(mut self, mode: &str) -> App {
        self.secrets_delivery = Some(mode.into());
        self
    }

    pub fn hooks(mut self, hooks: serde_json::Value) -> App {
        self.hooks = Some(hooks);
        self
    }
}

/// A project in a temp dir: `<root>/project` (the working dir) and `<root>/home` (HOME and
/// the XDG dirs of every run).
pub struct Project {
    root: tempfile::TempDir,
    /// The compose project / swarm stack name, unique per test.
    pub name: String,
    pub blue: u16,
    pub green: u16,
    /// The local nginx's port (compose), or the published port (swarm).
    pub port: u16,
    /// `nginx.switch_ports` when the app sets `nginx.switch`.
    pub switch_ports: [u16; 2],
    engine: Option<Engine>,
    nginx: Option<cutover::nginx::LocalNginx>,
    /// Behind another project's nginx ([`Project::compose_behind`]): its prefix.
    shared_prefix: Option<PathBuf>,
    identity: Option<PathBuf>,
    /// Dropped after the project's own cleanup (e.g. the guard of a shared swarm).
    held: Vec<Box<dyn std::any::Any>>,
    /// `DOCKER_HOST` of every run (a cluster's manager, harness/cluster.rs).
    docker_host: Option<String>,
}

impl Project {
    /// An empty project dir (no cutover.yml), for commands that need none.
    pub fn new() -> Project {
        Project::named("cutover-t")
    }

    fn named(prefix: &str) -> Project {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("project")).unwrap();
        std::fs::create_dir_all(root.path().join("home")).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Project {
            root,
            name: format!("{prefix}-{}-{n}", std::process::id()),
            blue: free_port(),
            green: free_port(),
            port: free_port(),
            switch_ports: [free_port(), free_port()],
            engine: None,
            nginx: None,
            shared_prefix: None,
            identity: None,
            held: Vec::new(),
            docker_host: None,
        }
    }

    /// `fixtures/configs/good/<name>.yml` as cutover.yml; nothing started.
    pub fn fixture(name: &str) -> Project {
        let project = Project::named("cutover-fx");
        std::fs::copy(
            fixture(&format!("configs/good/{name}.yml")),
            project.path().join("cutover.yml"),
        )
        .unwrap();
        project
    }

    /// A compose project from `app`, with its own nginx (in a temp prefix on a loopback
    /// port) serving the rendered site.
    pub fn compose(app: App) -> Project {
        Project::compose_with_templates(app, &[])
    }

    /// [`Project::compose`] with the project's own `templates/<name>` files (overrides of the
    /// built-in templates), written before the first render.
    pub fn compose_with_templates(app: App, templates: &[(&str, &str)]) -> Project {
        assert_eq!(app.engine, Engine::Compose);
        let mut project = Project::named("cutover-e2e");
        project.engine = Some(Engine::Compose);
        project
            .held
            .push(Box::new(crate::harness::common::compose_hold()));
        if app.secrets {
            project = project.demo_secrets();
        }
        project.write_config(&app);
        if !templates.is_empty() {
            let dir = project.path().join("templates");
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in templates {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        // The site and an initial include must exist before nginx starts.
        project.cutover(["render", "--out", "rendered"]).success();
        let prefix = project.prefix();
        std::fs::create_dir_all(&prefix).unwrap();
        for (rendered, installed) in [
            ("nginx-site.conf", "site.conf"),
            ("service-url.inc", "service-url.inc"),
        ] {
            std::fs::copy(
                project.path().join("rendered").join(rendered),
                prefix.join(installed),
            )
            .unwrap();
        }
        project.nginx = Some(cutover::nginx::LocalNginx::start(&prefix).expect("start nginx"));
        project
    }

    /// A compose project from `app` behind `host`'s nginx (one nginx, one port, routed by
    /// `app.server_name`, which must differ from the host's): its site is
    /// `<host prefix>/sites/<name>.conf` and its include `<host prefix>/<name>-service-url.inc`,
    /// so no file is shared. Drop it before `host` (whose nginx it uses).
    pub fn compose_behind(app: App, host: &Project) -> Project {
        assert_eq!(app.engine, Engine::Compose);
        assert!(
            app.server_name.is_some(),
            "a project behind another's nginx needs a server_name"
        );
        let mut project = Project::named("cutover-e2e");
        project.engine = Some(Engine::Compose);
        project
            .held
            .push(Box::new(crate::harness::common::compose_hold()));
        project.port = host.port;
        project.shared_prefix = Some(host.prefix());
        project.write_config(&app);
        project.cutover(["render", "--out", "rendered"]).success();
        std::fs::create_dir_all(project.site_path().parent().unwrap()).unwrap();
        let rendered = project.path().join("rendered");
        std::fs::copy(rendered.join("nginx-site.conf"), project.site_path()).unwrap();
        std::fs::copy(rendered.join("service-url.inc"), project.include_path()).unwrap();
        let prefix = host.prefix();
        for extra in [&["-t"][..], &["-s", "reload"][..]] {
            let argv = cutover::nginx::LocalNginx::argv(&prefix, extra);
            let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
            assert!(
                out.status.success(),
                "{argv:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        project
    }

    /// The nginx site file this project's nginx loads.
    pub fn site_path(&self) -> PathBuf {
        match &self.shared_prefix {
            Some(prefix) => prefix.join("sites").join(format!("{}.conf", self.name)),
            None => self.prefix().join("site.conf"),
        }
    }

    /// The nginx include the deploys rewrite.
    pub fn include_path(&self) -> PathBuf {
        match &self.shared_prefix {
            Some(prefix) => prefix.join(format!("{}-service-url.inc", self.name)),
            None => self.prefix().join("service-url.inc"),
        }
    }

    /// A swarm stack from `app`, holding `guard` (the shared swarm) until it is removed.
    pub fn swarm(app: App, guard: impl std::any::Any) -> Project {
        assert_eq!(app.engine, Engine::Swarm);
        let mut project = Project::named("cutover-sw");
        project.engine = Some(Engine::Swarm);
        project.held.push(Box::new(guard));
        if app.secrets {
            project = project.demo_secrets();
        }
        project.write_config(&app);
        project
    }

    /// A swarm project on `cluster` with `swarm.routing: host`: blue and green as global
    /// services on the color ports of every node, behind its own nginx on the host (the
    /// compose site, whose include the deploys rewrite, plus the upstream file in
    /// `sites/`). Its stack goes with the cluster.
    pub fn cluster(app: App, cluster: &crate::harness::cluster::Cluster) -> Project {
        assert_eq!(app.engine, Engine::Swarm);
        let mut project = Project::named("cutover-cl");
        project.docker_host = Some(cluster.manager.clone());
        if app.secrets {
            project = project.demo_secrets();
        }
        project.write_config(&app);
        let prefix = project.prefix();
        let argv = |extra: &[&str]| cutover::nginx::LocalNginx::argv(&prefix, extra);
        let (include, site, port) = (project.include_path(), project.site_path(), project.port);
        let upstream = prefix.join("sites").join("upstream.conf");
        edit_config(&project, |c| {
            c["swarm"]["routing"] = serde_json::json!("host");
            c["swarm"]["upstream"] = serde_json::json!(upstream);
            c["app"]["settle"] = serde_json::json!(app.settle);
            c["app"]["drain"] = serde_json::json!(app.drain.clone().unwrap_or("5s".into()));
            c["nginx"] = serde_json::json!({
                "include": include,
                "site": site,
                "listen": format!("127.0.0.1:{port}"),
                "test": argv(&["-t"]),
                "reload": argv(&["-s", "reload"]),
            });
        });
        project.cutover(["render", "--out", "rendered"]).success();
        std::fs::create_dir_all(prefix.join("sites")).unwrap();
        std::fs::copy(
            project.path().join("rendered/nginx-site.conf"),
            project.site_path(),
        )
        .unwrap();
        // Until the first deploy switches it, the include routes nowhere useful.
        std::fs::write(
            project.include_path(),
            "set $service_url http://127.0.0.1:9;\n",
        )
        .unwrap();
        project.nginx = Some(cutover::nginx::LocalNginx::start(&prefix).expect("start nginx"));
        project
    }

    /// Copies the bundled demo secrets into secrets/ and a 0600 copy of the test identity
    /// next to the project; every run gets it as CUTOVER_IDENTITY.
    pub fn demo_secrets(mut self) -> Project {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.path().join("secrets")).unwrap();
        for name in ["recipients.txt", "demo.env.age"] {
            std::fs::copy(
                repo_root().join("secrets").join(name),
                self.path().join("secrets").join(name),
            )
            .unwrap();
        }
        let identity = self.root.path().join("identity.txt");
        std::fs::copy(fixture("secrets/test-identity.txt"), &identity).unwrap();
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.identity = Some(identity);
        self
    }

    /// The project dir (the working dir of every run).
    pub fn path(&self) -> PathBuf {
        self.root.path().join("project")
    }

    /// HOME of every run; XDG_CACHE_HOME is `home/.cache`, XDG_CONFIG_HOME `home/.config`.
    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    /// The local nginx's prefix (compose): another project's with [`Project::compose_behind`].
    pub fn prefix(&self) -> PathBuf {
        match &self.shared_prefix {
            Some(prefix) => prefix.clone(),
            None => self.path().join("nginx"),
        }
    }

    pub fn identity(&self) -> Option<&Path> {
        self.identity.as_deref()
    }

    /// (Re)writes cutover.yml from `app`.
    pub fn write_config(&self, app: &App) {
        use serde_json::{json, Map, Value};
        let environment: Map<String, Value> = app
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut web = json!({
            "name": "web",
            "image": app.image,
            "port": 8080,
            "memory": app.memory,
            "environment": environment,
            "stop_grace": app.stop_grace,
        });
        let mut config = json!({
            "project": self.name,
            "colors": { "blue": self.blue, "green": self.green },
        });
        if let Some(dir) = &app.state_dir {
            config["state_dir"] = json!(dir);
        }
        if let Some(restart) = &app.restart {
            web["restart"] = json!(restart);
        }
        if let Some(drain) = &app.drain {
            web["drain"] = json!(drain);
        }
        if app.secrets {
            web["secrets"] = json!(["secrets/demo.env.age"]);
        }
        if let Some(mode) = &app.secrets_delivery {
            web["secrets_delivery"] = json!(mode);
        }
        if let Some((argv, timeout)) = &app.release {
            web["release"] = json!(argv);
            web["release_timeout"] = json!(timeout);
        }
        if let Some(hooks) = &app.hooks {
            config["hooks"] = hooks.clone();
        }
        if app.accessory {
            web["depends_on"] = json!(["cache"]);
            config["accessories"] = json!({
                "cache": {
                    "image": "cutover-demo:v1",
                    "memory": "32M",
                    "environment": { "COLOR": "accessory" },
                },
            });
        }
        if let Some(workers) = &app.workers {
            config["workers"] = workers.clone();
        }
        match app.engine {
            Engine::Compose => {
                web["health"] = json!({ "path": "/health", "timeout": app.health_timeout, "interval": app.health_interval });
                web["settle"] = json!(app.settle);
                let prefix = self.prefix();
                let argv = |extra: &[&str]| cutover::nginx::LocalNginx::argv(&prefix, extra);
                let mut nginx = json!({
                    "include": self.include_path(),
                    "listen": format!("127.0.0.1:{}", self.port),
                    "test": app.nginx_test.clone().unwrap_or_else(|| argv(&["-t"])),
                    "reload": app.nginx_reload.clone().unwrap_or_else(|| argv(&["-s", "reload"])),
                });
                if let Some(name) = &app.server_name {
                    nginx["server_name"] = json!(name);
                }
                // The site this nginx loads (the default path is one per box: the box-wide
                // claims would refuse a second project on it).
                nginx["site"] = json!(self.site_path());
                if let Some(probe) = &app.probe {
                    nginx["probe"] = json!(probe);
                }
                if let Some(mode) = &app.switch {
                    nginx["switch"] = json!(mode);
                    nginx["switch_ports"] = json!(self.switch_ports);
                }
                if let Some(tls) = &app.tls {
                    nginx["tls"] = tls.clone();
                    nginx["site"] = json!(prefix.join("site.conf"));
                }
                config["nginx"] = nginx;
            }
            Engine::Swarm => {
                web["health"] = json!({
                    "path": "/health",
                    "timeout": app.health_timeout,
                    "interval": "1s",
                    "command": ["CMD", "/app", "healthcheck"],
                });
                config["swarm"] = json!({
                    "port": self.port,
                    "replicas": 2,
                    "monitor": "2s",
                    "timeout": "120s",
                    "resolve_image": "never",
                });
            }
        }
        config["app"] = web;
        std::fs::write(self.path().join("cutover.yml"), json_to_yaml(&config)).unwrap();
    }

    /// Where `app.secrets_delivery: files` writes this project's secret files: its own
    /// directory on /dev/shm (a tmpfs here, unlike /run), removed with the project.
    pub fn secrets_root(&self) -> PathBuf {
        PathBuf::from("/dev/shm/cutover-test-secrets").join(&self.name)
    }

    /// The id of `service`'s running container.
    pub fn running_container(&self, service: &str) -> String {
        cutover::docker::compose::containers_of(&self.name)
            .unwrap()
            .into_iter()
            .find(|c| c.service == service && c.running())
            .unwrap_or_else(|| panic!("no running {service}"))
            .id
    }

    /// `docker kill -s KILL` of `service`'s running container (a color dying).
    pub fn kill(&self, service: &str) {
        let id = self.running_container(service);
        let killed = Command::new("docker")
            .args(["kill", "-s", "KILL", &id])
            .output()
            .unwrap();
        assert!(killed.status.success(), "{killed:?}");
    }

    /// Where this project's nft switch saves its ruleset (`CUTOVER_SWITCH_DIR`).
    pub fn switch_saved_dir(&self) -> PathBuf {
        self.home().join("switch")
    }

    /// Where this project's deploys look for the boot unit's copy of cutover.
    pub fn boot_binary(&self) -> PathBuf {
        self.home().join("boot-unit-cutover")
    }

    /// `cutover ARGS` in the project, isolated, with the identity when the project has one.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = cutover_command(&self.path(), &self.home());
        cmd.env("CUTOVER_SECRETS_RUN_DIR", self.secrets_root());
        // The boot unit's copy a files-mode deploy keeps current: the project's own (none
        // unless a test makes it), never the host's.
        cmd.env("CUTOVER_BOOT_BINARY", self.boot_binary());
        // The nft switch's saved rulesets: the project's own, never the host's.
        cmd.env(cutover::nft::SAVED_DIR_ENV, self.switch_saved_dir());
        if let Some(identity) = &self.identity {
            cmd.env("CUTOVER_IDENTITY", identity);
        }
        if let Some(host) = &self.docker_host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs `cutover ARGS` to the end.
    pub fn cutover<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::of(self.command(args))
    }

    /// Runs `cutover ARGS` with `stdin` as its standard input.
    pub fn cutover_with_stdin<I, S>(&self, args: I, stdin: &str) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped());
        Run::with_stdin(cmd, stdin)
    }

    /// Starts `cutover ARGS` in the background, output captured.
    pub fn spawn<I, S>(&self, args: I) -> std::process::Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cutover")
    }

    /// `cutover deploy --image IMAGE`, which must succeed.
    pub fn deploy_ok(&self, image: &str) -> Run {
        self.cutover(["deploy", "--image", image]).success()
    }

    /// Waits until the in-progress record names `step`.
    pub fn wait_for_step(&self, step: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = std::fs::read_to_string(self.path().join(".cutover/state.json"))
                .unwrap_or_default();
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

    /// The deploy history (`history --json`'s entries).
    pub fn history(&self) -> Vec<serde_json::Value> {
        let doc = self.cutover(["history", "--json"]).success().stdout_json();
        serde_json::from_value(doc["entries"].clone())
            .unwrap_or_else(|e| panic!("history --json has no entries list ({e}): {doc}"))
    }

    /// `status --json`, valid against docs/json/status.schema.json (every test's status).
    pub fn status_json(&self) -> serde_json::Value {
        let status = self.cutover(["status", "--json"]).success().stdout_json();
        crate::json_contract::validate("status.schema.json", &status);
        status
    }

    /// The nginx include the deploys rewrite (compose).
    pub fn include(&self) -> String {
        std::fs::read_to_string(self.include_path()).unwrap()
    }

    /// `GET path` through the project's port on a new connection: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        cutover::demo::http_get(self.port, path)
    }

    /// A decrypted value of the demo secrets (`secrets show demo --json`).
    pub fn secret_value(&self, key: &str) -> String {
        let values = self
            .cutover(["secrets", "show", "demo", "--json"])
            .success()
            .stdout_json();
        values["values"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in the demo secrets"))
            .to_string()
    }

    /// Asserts a run's full stderr against the snapshot `name`, with what varies between
    /// runs (temp paths, the project name, ports, durations, times, pids, ids) filtered.
    pub fn assert_stderr_snapshot(&self, name: &str, run: &Run) {
        self.assert_stderr_snapshot_with(name, run, &[]);
    }

    /// [`Project::assert_stderr_snapshot`] with `extra` filters (regex, replacement) first.
    pub fn assert_stderr_snapshot_with(&self, name: &str, run: &Run, extra: &[(&str, &str)]) {
        // Colour and line-erase codes (compose v2 prefixes its log lines with ESC[2K).
        let mut filters: Vec<(String, String)> =
            vec![(r"\x1b\[[0-9;]*[A-Za-z]".into(), String::new())];
        filters.extend(
            extra
                .iter()
                .map(|(re, with)| (re.to_string(), with.to_string())),
        );
        for path in [
            self.root.path().to_path_buf(),
            self.root.path().canonicalize().unwrap(),
        ] {
            filters.push((regex_escape(&path.display().to_string()), "[ROOT]".into()));
        }
        filters.push((regex_escape(&self.name), "[PROJECT]".into()));
        for (port, label) in [
            (self.blue, "[BLUE_PORT]"),
            (self.green, "[GREEN_PORT]"),
            (self.port, "[PORT]"),
        ] {
            filters.push((format!(r"\b{port}\b"), label.into()));
        }
        filters.extend(
            [
                // The compose flavour and its version (the suite runs on v1 and v2).
                (
                    r"with (?:docker compose|docker-compose) \S+",
                    "with [COMPOSE]",
                ),
                // RFC 3339 times and clock times.
                (
                    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?",
                    "[TIME]",
                ),
                (r"\b\d\d:\d\d:\d\d\b", "[TIME]"),
                // Durations as cutover and the demo app print them: 1.2s, 350ms, 2m3s, 80µs.
                (r"\b\d+(\.\d+)?(ms|µs|us|s|m\d+s)\b", "[DURATION]"),
                // Step lines align durations in a column whose padding follows their width.
                (r"(?m)^  ✓ (\S+) +\[DURATION\] +", "  ✓ $1 [DURATION] "),
                // Progress while waiting is printed on a clock (every 5 s), not per event.
                (r"(?m)^  … .*\n", ""),
                (r"\(\d+ polls?\)", "([N] polls)"),
                (r"\bpid \d+", "pid [PID]"),
                // The lock holder's user: $USER where set, else the uid.
                (r" by (?:uid \d+|\S+) \(pid", " by [USER] (pid"),
                // Container log lines: v1 names containers web-green_1, v2 web-green-1.
                (r"(?m)^( +)(\S+?)[-_]\d+ +\| ", "$1$2 | "),
                (r"\b\d{1,3}(\.\d{1,3}){3}:\d{5}\b", "[CLIENT]"),
                // How many health polls the app logged before the tail depends on timing.
                (
                    r"(?m)^ +\S+ \| \[CLIENT\] GET /health \d{3} \[DURATION\]\n?",
                    "",
                ),
                // Container ids.
                (r"\b[0-9a-f]{12,64}\b", "[ID]"),
            ]
            .map(|(re, with)| (re.to_string(), with.to_string())),
        );
        let filters: Vec<(&str, &str)> = filters
            .iter()
            .map(|(re, with)| (re.as_str(), with.as_str()))
            .collect();
        insta::with_settings!({
            filters => filters,
            prepend_module_to_snapshot => false,
            // Beside the tests, not beside this file: tests/integration/snapshots/.
            snapshot_path => "../snapshots",
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, &run.stderr);
        });
    }
}

// ---- what the tests ask of a project beyond the builder ----------------------------------

/// The compose deploys: ports, running services, what serves.
impl Project {
    pub fn port_of(&self, color: &str) -> u16 {
        if color == "blue" {
            self.blue
        } else {
            self.green
        }
    }

    /// Services with a running container, by compose label.
    pub fn running_services(&self) -> Vec<String> {
        let mut services: Vec<String> = cutover::docker::compose::containers_of(&self.name)
            .unwrap()
            .into_iter()
            .filter(|c| c.running())
            .map(|c| c.service)
            .collect();
        services.sort();
        services
    }

    /// After a successful deploy to `color`: only that color runs, nginx points at it, it
    /// answers through nginx with `version`, and history's last entry says so.
    pub fn assert_serving(&self, color: &str, version: &str) {
        let colors: Vec<String> = self
            .running_services()
            .into_iter()
            .filter(|s| s.starts_with("web-"))
            .collect();
        assert_eq!(colors, vec![format!("web-{color}")]);
        assert!(
            self.include()
                .contains(&format!("127.0.0.1:{};", self.port_of(color))),
            "include: {}",
            self.include()
        );
        // The memory limit from deploy.resources is applied by this compose flavour.
        let id = cutover::docker::compose::containers_of(&self.name)
            .unwrap()
            .into_iter()
            .find(|c| c.service == format!("web-{color}") && c.running())
            .unwrap()
            .id;
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.HostConfig.Memory}}", &id])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (64u64 << 20).to_string()
        );
        let (code, body) = self.get("/").expect("nginx answers");
        assert_eq!(code, 200);
        assert_eq!(body.trim(), format!("version={version} color={color}"));
        let last = self.history().pop().expect("history entry");
        assert_eq!(last["result"], "ok");
        assert_eq!(last["to"], color);
    }
}

/// Workers (tests/integration/workers.rs, logs_exec_run.rs).
impl Project {
    /// Running containers of one worker (both colors), as (service, image).
    pub fn running_worker(&self, name: &str) -> Vec<(String, String)> {
        cutover::docker::compose::containers_of(&self.name)
            .unwrap()
            .into_iter()
            .filter(|c| c.running() && c.service.starts_with(&format!("web-{name}-")))
            .map(|c| (c.service, c.image))
            .collect()
    }

    pub fn running_worker_ids(&self, name: &str) -> Vec<String> {
        cutover::docker::compose::containers_of(&self.name)
            .unwrap()
            .into_iter()
            .filter(|c| c.running() && c.service.starts_with(&format!("web-{name}-")))
            .map(|c| c.id)
            .collect()
    }

    pub fn status_worker(&self, name: &str) -> serde_json::Value {
        let status = self.status_json();
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no worker {name} in status: {status}"))
    }
}

/// The release phase, the hooks and `cutover run`: one-offs, failed deploys, hook output.
impl Project {
    /// Containers of this project cutover's one-offs left behind (running or not).
    pub fn oneoff_containers(&self) -> Vec<String> {
        let out = std::process::Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
            .arg(format!("name={}-web-", self.name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.contains("-release-") || n.contains("-run-"))
            .map(str::to_string)
            .collect()
    }

    /// After a deploy that failed: `color` still serves `version`, alone, through nginx.
    pub fn assert_still_serving(&self, color: &str, version: &str) {
        let colors: Vec<String> = self
            .running_services()
            .into_iter()
            .filter(|s| s.starts_with("web-"))
            .collect();
        assert_eq!(colors, vec![format!("web-{color}")]);
        let (code, body) = self.get("/").expect("nginx answers");
        assert_eq!(
            (code, body.trim()),
            (200, format!("version={version} color={color}").as_str())
        );
        assert_eq!(self.history().pop().unwrap()["result"], "failed");
    }

    pub fn last_history_steps(&self) -> Vec<String> {
        let history = self.history();
        history.last().unwrap()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect()
    }

    /// A `KEY=value` file a hook wrote with `env > FILE`, as a map.
    pub fn env_dump(&self, file: &str) -> std::collections::BTreeMap<String, String> {
        let text = std::fs::read_to_string(self.path().join(file))
            .unwrap_or_else(|e| panic!("the hook wrote no {file}: {e}"));
        let mut map = std::collections::BTreeMap::new();
        let mut last: Option<String> = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some((k, v))
                    if !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    map.insert(k.to_string(), v.to_string());
                    last = Some(k.to_string());
                }
                // A multi-line value (CUTOVER_ERROR) continues on the next lines.
                _ => {
                    if let Some(k) = &last {
                        let v: &mut String = map.get_mut(k).unwrap();
                        v.push('\n');
                        v.push_str(line);
                    }
                }
            }
        }
        map
    }
}

/// The swarm deploys: the service, its tasks reached directly.
impl Project {
    pub fn service(&self) -> String {
        cutover::docker::swarm::service_name(&self.name, "web")
    }

    /// The docker_gwbridge address of every running task: each task reached directly,
    /// around the routing mesh.
    pub fn task_addrs(&self) -> Vec<String> {
        let out = std::process::Command::new("docker")
            .args([
                "network",
                "inspect",
                "docker_gwbridge",
                "--format",
                "{{json .Containers}}",
            ])
            .output()
            .unwrap();
        let containers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        cutover::docker::swarm::tasks(&self.service())
            .unwrap()
            .into_iter()
            .filter(|t| t.serving())
            .filter_map(|t| {
                let ip = containers[t.container.as_deref()?]["IPv4Address"].as_str()?;
                Some(ip.split('/').next()?.to_string())
            })
            .collect()
    }

    /// `GET path` on every running task, directly.
    pub fn ask_tasks(&self, path: &str) -> Vec<String> {
        self.task_addrs()
            .iter()
            .map(|ip| {
                crate::harness::swarm::direct_get(ip, path)
                    .map(|(_, b)| b)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// `cutover deploy --engine swarm ARGS`.
    pub fn swarm_deploy(&self, args: &[&str]) -> Run {
        self.cutover(["deploy", "--engine", "swarm"].iter().chain(args))
    }
}

// ---- helpers of more than one feature file ----------------------------------------------

/// Rewrites the project's cutover.yml through `edit` (as JSON).
pub fn edit_config(project: &Project, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = project.path().join("cutover.yml");
    let mut config = yaml_to_json(&std::fs::read_to_string(&path).unwrap());
    edit(&mut config);
    std::fs::write(&path, json_to_yaml(&config)).unwrap();
}

/// The values of `secrets show NAME --json` of the project.
pub fn shown(project: &Project, name: &str) -> serde_json::Value {
    project
        .cutover(["secrets", "show", name, "--json"])
        .success()
        .stdout_json()["values"]
        .clone()
}

/// Writes `script` (sh) into the project and returns its path.
pub fn script(project: &Project, name: &str, body: &str) -> String {
    let path = project.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// A shell word list of the local nginx's argv with `extra`.
pub fn nginx_words(project: &Project, extra: &[&str]) -> String {
    cutover::nginx::LocalNginx::argv(&project.prefix(), extra)
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(mut nginx) = self.nginx.take() {
            nginx.stop();
        }
        match self.engine {
            Some(Engine::Compose) => {
                remove_compose_project(&self.name);
                // nft mode's table lives in the host's netns: no leftovers.
                if cutover::process::which("nft").is_some() {
                    let _ =
                        cutover::nft::apply(&cutover::nft::removal(&self.name), "test teardown");
                }
            }
            Some(Engine::Swarm) => remove_swarm_stack(&self.name),
            None => {}
        }
        let _ = std::fs::remove_dir_all(self.secrets_root());
        // `held` drops after this: a shared swarm is left only once its stacks are gone.
    }
}

/// Removes every container of a compose project and its default network.
fn remove_compose_project(project: &str) {
    if let Ok(containers) = cutover::docker::compose::containers_of(project) {
        let ids: Vec<String> = containers.into_iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
    }
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{project}_default")])
        .output();
}

/// Removes a swarm stack, its external secrets and its network.
fn remove_swarm_stack(project: &str) {
    let _ = cutover::docker::swarm::stack_rm(project);
    // Services go at once; their external secrets can go as soon as no service uses them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let secrets = cutover::docker::swarm::secrets_of(project).unwrap_or_default();
        for s in &secrets {
            let _ = cutover::docker::swarm::remove_secret(&s.name);
        }
        let left = cutover::docker::swarm::secrets_of(project)
            .map(|l| l.len())
            .unwrap_or(0);
        let services = cutover::docker::swarm::services_of(project)
            .map(|l| l.len())
            .unwrap_or(0);
        if left == 0 && services == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The stack's network goes when its last task container is gone.
    let net = format!("{project}_default");
    while Instant::now() < deadline {
        let out = Command::new("docker")
            .args(["network", "inspect", &net])
            .output();
        if out.map(|o| !o.status.success()).unwrap_or(true) {
            break;
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &net])
            .output();
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A finished run of the binary: its status and output, with assertions that print all of
/// it when they fail.
pub struct Run {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(mut cmd: Command) -> Run {
        let output = cmd.output().expect("run cutover");
        Run::from_output(&cmd, output)
    }

    pub fn with_stdin(mut cmd: Command, stdin: &str) -> Run {
        use std::io::Write;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cutover");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        Run::from_output(&cmd, output)
    }

    fn from_output(cmd: &Command, output: std::process::Output) -> Run {
        let words: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Run {
            command: format!("cutover {}", words.join(" ")),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Asserts exit 0.
    #[track_caller]
    pub fn success(self) -> Run {
        assert!(self.ok(), "expected success:\n{self}");
        self
    }

    /// Asserts a non-zero exit.
    #[track_caller]
    pub fn failure(self) -> Run {
        assert!(!self.ok(), "expected a failure:\n{self}");
        self
    }

    /// Asserts exit `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit {code}:\n{self}"
        );
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {} -> {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

// ---- the builder's own promise: runs never touch the user's HOME ---------------------------

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn project_runs_cache_compose_detection_under_their_own_home_not_the_callers() {
    if !crate::common::require("docker", "detect compose (it writes the compose cache)") {
        return;
    }
    let project = Project::fixture("minimal");
    // Stands in for the user's HOME: what a run would see if isolation missed a variable.
    let outer = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.env("HOME", outer.path())
        .env("XDG_CACHE_HOME", outer.path().join(".cache"))
        .env("XDG_CONFIG_HOME", outer.path().join(".config"));
    crate::common::isolate(&mut cmd, &project.home());
    cmd.current_dir(project.path())
        .args(["deploy", "--image", "example/web:1", "--dry-run"]);
    Run::of(cmd).success();
    let cache = project.home().join(".cache/cutover/compose-tool.json");
    assert!(cache.is_file(), "no compose cache at {}", cache.display());
    assert_eq!(files_under(outer.path()), Vec::<PathBuf>::new());
    // The project's own runner is isolated the same way.
    std::fs::remove_file(&cache).unwrap();
    project
        .cutover(["deploy", "--image", "example/web:1", "--dry-run"])
        .success();
    assert!(cache.is_file());
}

#[test]
fn project_runs_keep_docker_config_path_and_ci_of_the_caller() {
    let project = Project::fixture("minimal");
    let cmd = project.command(["version"]);
    let env: std::collections::HashMap<String, Option<String>> = cmd
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let home = project.home().display().to_string();
    assert_eq!(env["HOME"].as_deref(), Some(home.as_str()));
    for (key, sub) in [("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config")] {
        let want = project.home().join(sub).display().to_string();
        assert_eq!(env[key].as_deref(), Some(want.as_str()), "{key}");
    }
    // Not overridden, so inherited: the caller's choice of compose and CI mode.
    for key in ["PATH", "CI", "CUTOVER_COMPOSE"] {
        assert!(!env.contains_key(key), "{key} is overridden: {env:?}");
    }
    // DOCKER_CONFIG: the caller's, or the real ~/.docker (not the fake HOME's).
    match std::env::var_os("DOCKER_CONFIG") {
        Some(_) => assert!(!env.contains_key("DOCKER_CONFIG"), "{env:?}"),
        None => {
            let real = PathBuf::from(std::env::var_os("HOME").unwrap()).join(".docker");
            assert_eq!(
                env["DOCKER_CONFIG"].as_deref(),
                Some(real.display().to_string().as_str())
            );
        }
    }
}
