//! Unit tests only: a box with a stand-in docker, compose and nginx behind the process seam
//! (`process::fake`), and the apps and nginx as tiny HTTP servers on loopback, so the compose
//! engine's state machine can be walked through its failure branches in milliseconds. The
//! real-engine tests (tests/integration/deploy*.rs and friends) remain the proof that deploys work; this is
//! the proof that every branch does what the state machine says.
//!
//! The stand-in keeps a small world: containers (service, image, running), the include that
//! nginx "serves" (taken from disk at each reload, as nginx does), and a script of what goes
//! wrong. It claims only commands that name its own project, container ids, image or
//! programs, so tests run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Color, Loaded};
use crate::docker::compose::Compose;
use crate::process::fake::{self, exited, Fake};
use crate::process::{Cmd, Output, ProcessError};

/// What goes wrong on this box.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// `compose up` of these services exits 1.
    pub up_fails: BTreeSet<String>,
    /// These colors' apps answer their health path with 503.
    pub unhealthy: BTreeSet<Color>,
    /// These colors' containers exit (code 1) as soon as they start.
    pub dies_on_start: BTreeSet<Color>,
    /// `nginx -t` fails.
    pub nginx_test_fails: bool,
    /// `nginx -s reload` exits 0 but nginx keeps serving what it served (a reload that could
    /// not be applied, as real nginx does).
    pub reload_ignored: bool,
    /// This color's container restarts (and answers again at once) this long after a reload
    /// makes nginx serve it: a crash under a restart policy.
    pub restarts_once_serving: Option<(Color, Duration)>,
    /// This color's container exits 300 ms after a reload makes nginx serve the other color.
    pub dies_once_other_serves: Option<Color>,
    /// Reloads from this one on (1 = the first) exit 0 but are not applied.
    pub reloads_ignored_from: Option<usize>,
    /// This color turns unhealthy 300 ms after a reload makes nginx serve it: past the probe,
    /// inside the settle window (it dies under load).
    pub sick_once_serving: Option<Color>,
    /// This color's container is counted as restarted (still answering) from its first
    /// healthy answer on: a restart after the gate's watcher last looked at the engine, back
    /// and answering before the gate's answers began (none can fall between two of them:
    /// see `health_gate::Watcher::look_beside`).
    pub restarts_during_gate: Option<Color>,
    /// `compose up` leaves the project's state.json unreadable (a disk gone bad).
    pub up_breaks_the_state_file: bool,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub service: String,
    pub image: String,
    pub running: bool,
    pub restarts: u32,
}

#[derive(Default)]
struct World {
    containers: Vec<Container>,
    /// The include nginx serves: the file as it was at the last applied reload.
    live_include: Option<String>,
    script: Script,
    /// Every command the stand-in answered, as argv joined by spaces.
    commands: Vec<String>,
    reloads: usize,
    /// Health answers each color's app gave.
    health_answers: BTreeMap<Color, u32>,
}

pub struct FakeBox {
    pub dir: tempfile::TempDir,
    pub loaded: Loaded,
    image_repo: String,
    compose_program: String,
    world: Arc<Mutex<World>>,
    ports: BTreeMap<Color, u16>,
    stop: Arc<AtomicBool>,
    _installed: Option<fake::Installed>,
}

/// The stand-in itself, shared with the process seam.
struct Answerer {
    name: String,
    image_repo: String,
    compose_program: String,
    nginx_program: String,
    include: PathBuf,
    compose_file: PathBuf,
    state_file: PathBuf,
    app: String,
    ports: BTreeMap<Color, u16>,
    world: Arc<Mutex<World>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl FakeBox {
    /// A project on a fresh box; `app_yaml` lines (indented by two) are added to `app:`.
    pub fn new(app_yaml: &str, script: Script) -> FakeBox {
        FakeBox::with_sections(app_yaml, "", script)
    }

    /// [`FakeBox::new`] with top-level sections (`hooks:` …) added to cutover.yml.
    pub fn with_sections(app_yaml: &str, sections: &str, script: Script) -> FakeBox {
        // Registered projects go to a test directory, never the machine's registry.
        static REGISTRY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let registry = REGISTRY.get_or_init(|| tempfile::tempdir().unwrap());
        std::env::set_var(crate::registry::DIR_ENV, registry.path());

        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("cutoverfake{}x{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let ports: BTreeMap<Color, u16> = Color::ALL
            .into_iter()
            .map(|c| (c, crate::demo::free_port().unwrap()))
            .collect();
        let nginx_port = crate::demo::free_port().unwrap();
        let image_repo = format!("{name}/web");
        let compose_program = format!("fake-compose-{name}");
        let nginx_program = format!("fake-nginx-{name}");
        let conf = format!("/nonexistent/{name}/nginx.conf");
        let yaml = format!(
            "project: {name}\n\
             app:\n  name: web\n  image: {image_repo}\n  port: 3000\n  memory: 16M\n  \
             drain: 1s\n  stop_grace: 1s\n{settle}{health}{app_yaml}\
             colors: {{ blue: {}, green: {} }}\n\
             nginx:\n  listen: \"127.0.0.1:{nginx_port}\"\n  include: {include}\n  site: {site}\n  \
             test: [{nginx_program}, -t, -c, {conf}]\n  reload: [{nginx_program}, -c, {conf}, -s, reload]\n\
             {sections}",
            ports[&Color::Blue],
            ports[&Color::Green],
            settle = if app_yaml.contains("settle:") { "" } else { "  settle: 0s\n" },
            health = if app_yaml.contains("health:") {
                ""
            } else {
                "  health: { path: /up, interval: 100ms, timeout: 2s, healthy_checks: 2 }\n"
            },
            include = dir.path().join("app.inc").display(),
            site = dir.path().join("site.conf").display(),
        );
        let config_path = dir.path().join("cutover.yml");
        std::fs::write(&config_path, yaml).unwrap();
        let loaded =
            crate::config::load(&config_path, dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        let world = Arc::new(Mutex::new(World {
            script,
            ..World::default()
        }));
        let answerer = Answerer {
            name: name.clone(),
            image_repo: image_repo.clone(),
            compose_program: compose_program.clone(),
            nginx_program: nginx_program.clone(),
            include: loaded.config.nginx.include.clone(),
            compose_file: loaded.state_dir().join("compose.yml"),
            state_file: loaded.state_dir().join("state.json"),
            app: "web".into(),
            ports: ports.clone(),
            world: Arc::clone(&world),
        };
        let installed = fake::install(Arc::new(answerer));
        let mut fake_box = FakeBox {
            dir,
            loaded,
            image_repo,
            compose_program,
            world,
            ports,
            stop: Arc::new(AtomicBool::new(false)),
            _installed: Some(installed),
        };
        fake_box.serve(nginx_port);
        fake_box
    }

    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.image_repo)
    }

    pub fn compose(&self) -> Compose {
        Compose::fake(&self.compose_program)
    }

    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.world.lock().unwrap().script);
    }

    /// The services whose containers run, sorted.
    pub fn running(&self) -> Vec<String> {
        let world = self.world.lock().unwrap();
        let mut running: Vec<String> = world
            .containers
            .iter()
            .filter(|c| c.running)
            .map(|c| format!("{} {}", c.service, c.image))
            .collect();
        running.sort();
        running
    }

    /// A reboot after which nothing came back: every container exited (an app that exits 0
    /// on SIGTERM under `restart: on-failure`), nginx serves what its include says.
    pub fn reboot_with_nothing_restarted(&self) {
        let mut world = self.world.lock().unwrap();
        for c in &mut world.containers {
            c.running = false;
        }
        world.live_include = std::fs::read_to_string(&self.loaded.config.nginx.include).ok();
    }

    /// The color nginx serves now.
    pub fn serving(&self) -> Option<Color> {
        let world = self.world.lock().unwrap();
        served_color(world.live_include.as_deref()?, &self.ports)
    }

    /// The color the include on disk points at.
    pub fn include_on_disk(&self) -> Option<Color> {
        let text = std::fs::read_to_string(&self.loaded.config.nginx.include).ok()?;
        served_color(&text, &self.ports)
    }

    /// The commands the stand-in answered whose argv contains `word`.
    pub fn commands_with(&self, word: &str) -> Vec<String> {
        let world = self.world.lock().unwrap();
        world
            .commands
            .iter()
            .filter(|c| c.contains(word))
            .cloned()
            .collect()
    }

    /// The apps on the color ports and nginx on its port, as HTTP servers on loopback.
    fn serve(&mut self, nginx_port: u16) {
        for (color, port) in self.ports.clone() {
            let world = Arc::clone(&self.world);
            let service = self.loaded.config.service(color);
            let health = self.loaded.config.app.health.path.clone();
            http_server(port, Arc::clone(&self.stop), move |path| {
                let mut world = world.lock().unwrap();
                let answer = app_answer(&world, color, &service, path, &health);
                if answer.is_some() && path == health {
                    let n = world.health_answers.entry(color).or_default();
                    *n += 1;
                    if world.script.restarts_during_gate == Some(color) {
                        for c in world.containers.iter_mut().filter(|c| c.service == service) {
                            c.restarts = c.restarts.max(1);
                        }
                    }
                }
                answer.map(|(code, body)| (code, body, String::new()))
            });
        }
        let world = Arc::clone(&self.world);
        let ports = self.ports.clone();
        let config = self.loaded.config.clone();
        http_server(nginx_port, Arc::clone(&self.stop), move |path| {
            let world = world.lock().unwrap();
            let color = world
                .live_include
                .as_deref()
                .and_then(|t| served_color(t, &ports));
            // As the built-in include renders its marker.
            let marker = |c: Color| {
                format!(
                    "{c} {} {}",
                    crate::render::upstream_url(&config, c),
                    config.project
                )
            };
            match (path, color) {
                ("/.cutover/active", Some(c)) => {
                    Some((200, format!("{}\n", marker(c)), String::new()))
                }
                // The route probe: the health path, with the include's marker and the address
                // that answered.
                ("/.cutover/health", Some(c)) => {
                    let health = &config.app.health.path;
                    let (code, body) = app_answer(&world, c, &config.service(c), health, health)
                        .unwrap_or((502, "bad gateway".into()));
                    let addr = crate::render::upstream_address(&config, c);
                    Some((
                        code,
                        body,
                        format!(
                            "X-Cutover-Active: {}\r\nX-Cutover-Upstream: {addr}\r\n",
                            marker(c)
                        ),
                    ))
                }
                (_, None) => Some((404, "no include".into(), String::new())),
                (path, Some(c)) => {
                    app_answer(&world, c, &config.service(c), path, &config.app.health.path)
                        .or(Some((502, "bad gateway".into())))
                        .map(|(code, body)| (code, body, String::new()))
                }
            }
        });
    }
}

impl Drop for FakeBox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What a color's app answers: its health path, 200 or 503 as scripted; no answer when its
/// container does not run.
fn app_answer(
    world: &World,
    color: Color,
    service: &str,
    path: &str,
    health: &str,
) -> Option<(u16, String)> {
    world
        .containers
        .iter()
        .find(|c| c.service == service && c.running)?;
    if path == health && world.script.unhealthy.contains(&color) {
        return Some((503, "unhealthy".into()));
    }
    Some((200, format!("{color} ok")))
}

fn served_color(include: &str, ports: &BTreeMap<Color, u16>) -> Option<Color> {
    let port = crate::nginx::include_port(include)?;
    ports.iter().find(|(_, p)| **p == port).map(|(c, _)| *c)
}

/// A one-request-per-connection HTTP server; `answer(path)` None closes the connection
/// without a response (nothing listening behind it).
fn http_server(
    port: u16,
    stop: Arc<AtomicBool>,
    answer: impl Fn(&str) -> Option<(u16, String, String)> + Send + 'static,
) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            if let Some((code, body, headers)) = answer(&path) {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
}

impl Answerer {
    fn ours(&self, id: &str) -> bool {
        id.starts_with(&format!("{}c", self.name))
    }

    fn compose(&self, args: &[String], world: &mut World) -> Output {
        // `-p NAME -f FILE --project-directory DIR <subcommand> …`
        let sub = &args[6..];
        match sub.first().map(String::as_str) {
            Some("up") => {
                let services: Vec<&String> =
                    sub.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
                if let Some(s) = services
                    .iter()
                    .find(|s| world.script.up_fails.contains(**s))
                {
                    return exited(
                        1,
                        "",
                        format!("Error response from daemon: {s} failed (scripted)"),
                    );
                }
                if world.script.up_breaks_the_state_file {
                    std::fs::write(&self.state_file, "{ not json").unwrap();
                }
                let images = self.images_in_compose_file();
                for service in services {
                    world.containers.retain(|c| &c.service != service);
                    let dies = Color::ALL.into_iter().any(|c| {
                        world.script.dies_on_start.contains(&c)
                            && *service == format!("{}-{c}", self.app)
                    });
                    let n = NEXT.fetch_add(1, Ordering::SeqCst);
                    world.containers.push(Container {
                        id: format!("{}c{n}", self.name),
                        service: service.clone(),
                        image: images.get(service).cloned().unwrap_or_default(),
                        running: !dies,
                        restarts: 0,
                    });
                }
                exited(0, "", "")
            }
            Some("logs") => exited(0, "a log line of the app\n", ""),
            _ => exited(1, "", format!("fake compose: unknown {sub:?}")),
        }
    }

    /// `services.<name>.image` of the compose file the engine wrote.
    fn images_in_compose_file(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(&self.compose_file).unwrap_or_default();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        doc["services"]
            .as_object()
            .map(|services| {
                services
                    .iter()
                    .map(|(name, s)| {
                        (
                            name.clone(),
                            s["image"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn docker(&self, args: &[String], world: &mut World) -> Option<Output> {
        let ids = |from: usize| -> Option<Vec<&String>> {
            let ids: Vec<&String> = args[from..]
                .iter()
                .filter(|a| !a.starts_with('-'))
                .collect();
            (!ids.is_empty() && ids.iter().all(|id| self.ours(id))).then_some(ids)
        };
        match args.first().map(String::as_str)? {
            "ps" if args
                .iter()
                .any(|a| a == &format!("label=com.docker.compose.project={}", self.name)) =>
            {
                let ids: Vec<&str> = world.containers.iter().map(|c| c.id.as_str()).collect();
                Some(exited(0, ids.join("\n"), ""))
            }
            "inspect" => {
                let ids = ids(1)?;
                let objects: Vec<serde_json::Value> = world
                    .containers
                    .iter()
                    .filter(|c| ids.contains(&&c.id))
                    .map(|c| {
                        serde_json::json!({
                            "Id": c.id,
                            "Config": {
                                "Image": c.image,
                                "Labels": {
                                    "com.docker.compose.project": self.name,
                                    "com.docker.compose.service": c.service,
                                },
                            },
                            "State": {
                                "Status": if c.running { "running" } else { "exited" },
                                "ExitCode": if c.running { 0 } else { 1 },
                            },
                            "RestartCount": c.restarts,
                        })
                    })
                    .collect();
                Some(exited(0, serde_json::to_string(&objects).unwrap(), ""))
            }
            "stop" => {
                let ids = ids(3)?;
                for c in world.containers.iter_mut().filter(|c| ids.contains(&&c.id)) {
                    c.running = false;
                }
                Some(exited(0, "", ""))
            }
            "rm" => {
                let ids = ids(2)?.into_iter().cloned().collect::<Vec<_>>();
                world.containers.retain(|c| !ids.contains(&c.id));
                Some(exited(0, "", ""))
            }
            "start" => {
                let ids = ids(1)?;
                for c in world.containers.iter_mut().filter(|c| ids.contains(&&c.id)) {
                    c.running = true;
                }
                Some(exited(0, "", ""))
            }
            "logs" => {
                ids(3)?;
                Some(exited(0, "a log line of the container\n", ""))
            }
            "images" if args.last() == Some(&self.image_repo) => Some(exited(0, "", "")),
            _ => None,
        }
    }

    fn nginx(&self, args: &[String], world: &mut World) -> Output {
        if args.iter().any(|a| a == "-t") {
            if world.script.nginx_test_fails {
                return exited(1, "", "nginx: [emerg] unexpected \"}\" (scripted)");
            }
            return exited(0, "", "nginx: configuration file test is successful");
        }
        world.reloads += 1;
        let ignored = world.script.reload_ignored
            || world
                .script
                .reloads_ignored_from
                .is_some_and(|from| world.reloads >= from);
        if !ignored {
            world.live_include = std::fs::read_to_string(&self.include).ok();
        }
        let serving = world
            .live_include
            .as_deref()
            .and_then(|t| served_color(t, &self.ports));
        if let (Some((color, after)), Some(serving)) = (world.script.restarts_once_serving, serving)
        {
            if color == serving {
                let world = Arc::clone(&self.world);
                let service = format!("{}-{color}", self.app);
                std::thread::spawn(move || {
                    std::thread::sleep(after);
                    let mut world = world.lock().unwrap();
                    for c in world.containers.iter_mut().filter(|c| c.service == service) {
                        c.restarts += 1;
                    }
                });
            }
        }
        if let (Some(dies), Some(serving)) = (world.script.dies_once_other_serves, serving) {
            if dies != serving {
                let world = Arc::clone(&self.world);
                let service = format!("{}-{dies}", self.app);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let mut world = world.lock().unwrap();
                    for c in world.containers.iter_mut().filter(|c| c.service == service) {
                        c.running = false;
                    }
                });
            }
        }
        if let (Some(sick), Some(serving)) = (world.script.sick_once_serving, serving) {
            if sick == serving {
                let world = Arc::clone(&self.world);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    world.lock().unwrap().script.unhealthy.insert(sick);
                });
            }
        }
        exited(0, "", "")
    }
}

impl Fake for Answerer {
    fn answer(&self, argv: &[String], _cmd: &Cmd) -> Option<Result<Output, ProcessError>> {
        let (program, args) = argv.split_first()?;
        let mut world = self.world.lock().unwrap();
        let out = if program == &self.compose_program {
            self.compose(args, &mut world)
        } else if program == &self.nginx_program {
            self.nginx(args, &mut world)
        } else if program == "docker" {
            self.docker(args, &mut world)?
        } else {
            return None;
        };
        world.commands.push(argv.join(" "));
        Some(Ok(out))
    }
}
