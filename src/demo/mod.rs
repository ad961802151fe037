//! The pieces of `cutover demo`: a throwaway project around the bundled demo app, and a load
//! client that counts what users would have seen during a deploy.
//!
//! The load client opens one connection per request on purpose: nginx closes idle
//! keep-alive client connections on reload, which is nginx's own floor, not the deploy's, so
//! zero-downtime is measured without keep-alive (docs/ARCHITECTURE.md, "Known pitfalls").
//! What a switch costs clients that do reuse connections is measured by the other two
//! clients, shared by the tests and bench/: `keepalive.rs` (keep-alive HTTP/1.1 clients, GETs
//! and POSTs, failures by kind) and `websocket.rs` (WebSockets and how each one ended).

pub mod keepalive;
pub mod websocket;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::process::Cmd;

/// The demo images, built from `fixtures/demo-app` by `scripts/demo-image.sh`.
pub const IMAGES: [&str; 2] = ["cutover-demo:v1", "cutover-demo:v2"];

/// What the keep-alive and WebSocket clients count as a reset: the peer's RST (ECONNRESET,
/// ECONNABORTED) or a write after it (EPIPE). One definition, so both tables count alike.
pub(crate) fn is_reset(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(kind, ConnectionReset | BrokenPipe | ConnectionAborted)
}

/// One HTTP/1.1 GET on a fresh connection (`Connection: close`): (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_as(port, "localhost", path).map(|r| (r.code, r.body))
}

/// An answer of [`http_get_as`].
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    /// The header lines, as sent.
    pub headers: String,
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One GET with `Host: host` on a fresh connection (several sites behind one nginx port).
pub fn http_get_as(port: u16, host: &str, path: &str) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Some(Response {
        code,
        headers: headers.to_string(),
        body: body.to_string(),
    })
}

/// What the load client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    /// 503s with a `Retry-After` (maintenance mode): intended, so not failures.
    pub held: usize,
    /// Successful answers per `version=… color=…` body, to show the switch.
    pub by_answer: BTreeMap<String, usize>,
    /// The first few failures, described.
    pub failures: Vec<String>,
    /// When each failed request was sent and when it failed: a test tells a request in flight
    /// at a node's death (allowed by issue #22) from one sent after it (a defect).
    #[serde(skip)]
    pub failed_spans: Vec<(Instant, Instant)>,
}

/// A load client sending `GET /` through nginx in a loop until finished.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Successful answers so far, for a caller waiting until the load is under way.
    ok: Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<std::thread::JoinHandle<Tally>>,
}

impl Load {
    /// How many requests the client has in flight at once: one thread, one request at a time.
    pub const IN_FLIGHT: usize = 1;

    /// Starts sending; it stops when finished, or after `max` whatever happens.
    pub fn start(port: u16, max: Duration) -> Load {
        Load::start_as(port, "localhost", max)
    }

    /// [`Load::start`] with `Host: host`.
    pub fn start_as(port: u16, host: &str, max: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ok_seen = ok.clone();
        let host = host.to_string();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut tally = Tally::default();
            while !flag.load(Ordering::SeqCst) && started.elapsed() < max {
                tally.sent += 1;
                let sent_at = Instant::now();
                match http_get_as(port, &host, "/") {
                    Some(r) if r.code == 200 => {
                        tally.ok += 1;
                        ok_seen.fetch_add(1, Ordering::SeqCst);
                        *tally
                            .by_answer
                            .entry(r.body.trim().to_string())
                            .or_default() += 1;
                    }
                    Some(r) if r.code == 503 && r.header("Retry-After").is_some() => {
                        tally.held += 1;
                    }
                    other => {
                        tally.failed += 1;
                        tally.failed_spans.push((sent_at, Instant::now()));
                        if tally.failures.len() < 10 {
                            tally.failures.push(match other {
                                Some(r) => {
                                    format!(
                                        "HTTP {}: {}",
                                        r.code,
                                        r.body.chars().take(60).collect::<String>()
                                    )
                                }
                                None => "no answer (connection refused or reset)".to_string(),
                            });
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            tally
        });
        Load {
            stop,
            ok,
            handle: Some(handle),
        }
    }

    /// Successful answers so far.
    pub fn answered(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Checks the tools the demo needs, with how to get each one.
pub fn check_tools() -> anyhow::Result<()> {
    if crate::process::which("docker").is_none() {
        bail!("the demo needs Docker: install it (Debian/Ubuntu: `apt-get install docker.io docker-compose`) and start the engine");
    }
    crate::docker::server_version()
        .context("the demo needs a running Docker engine (start it: `systemctl start docker`)")?;
    if crate::process::which("nginx").is_none() && !Path::new("/usr/sbin/nginx").exists() {
        bail!("the demo needs nginx: install it (Debian/Ubuntu: `apt-get install nginx`); the demo runs its own nginx on a loopback port, the system one is not touched");
    }
    Ok(())
}

/// Makes sure the demo images exist: builds them with the source tree's script when this
/// binary was built from a checkout, else explains.
pub fn ensure_images(source_dir: &Path) -> anyhow::Result<bool> {
    if IMAGES.iter().all(|i| crate::docker::images::exists(i)) {
        return Ok(false);
    }
    let script = source_dir.join("scripts/demo-image.sh");
    if !script.is_file() {
        bail!(
            "the demo images {} are missing and this binary was not built from a cutover checkout; run scripts/demo-image.sh from one",
            IMAGES.join(", ")
        );
    }
    Cmd::new("bash", "build the demo images")
        .arg(&script)
        .args(["v1", "v2"])
        .dir(source_dir)
        .timeout(Duration::from_secs(900))
        .run()?;
    Ok(true)
}

/// The demo project's cutover.yml.
pub fn project_config(project: &str, ports: [u16; 3], prefix: &Path, secrets: bool) -> String {
    let [blue, green, nginx_port] = ports;
    let argv = |extra: &[&str]| crate::nginx::LocalNginx::argv_yaml(prefix, extra);
    format!(
        "# The cutover demo: the bundled demo app, blue/green behind a private nginx.\n\
         project: {project}\n\
         app:\n\
         \x20 name: web\n\
         \x20 image: cutover-demo\n\
         \x20 port: 8080\n\
         \x20 memory: 64M\n\
         \x20 environment: {{ STARTUP_DELAY_MS: \"1500\", GREETING: \"hello from the demo\" }}\n\
         {secrets}\
         \x20 health: {{ path: /health, timeout: 30s, interval: 100ms }}\n\
         \x20 drain: 10s\n\
         \x20 stop_grace: 5s\n\
         colors: {{ blue: {blue}, green: {green} }}\n\
         nginx:\n\
         \x20 include: {include}\n\
         \x20 site: {site}\n\
         \x20 listen: \"127.0.0.1:{nginx_port}\"\n\
         \x20 test: {test}\n\
         \x20 reload: {reload}\n",
        secrets = if secrets {
            "  secrets: [secrets/demo.env.age]\n"
        } else {
            ""
        },
        include = prefix.join("service-url.inc").display(),
        // Its own site file: the box-wide claims refuse two projects with one site path.
        site = prefix.join("site.conf").display(),
        test = argv(&["-t"]),
        reload = argv(&["-s", "reload"]),
    )
}

/// A loopback port that is free now and that this process has not handed out before.
///
/// Drawn from 20000–29999, below Linux's ephemeral range (32768–60999) and swarm's published
/// range (30000–32767): a port from `bind(:0)` can be handed out again by the next `bind(:0)`
/// once the first listener closes (CI once got blue's port back for nginx), and any outgoing
/// connection may take it as its source port before the caller binds it. The process-wide
/// set keeps the ports of one run distinct.
pub fn free_port() -> anyhow::Result<u16> {
    use rand::Rng;
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut rng = rand::thread_rng();
    for _ in 0..2000 {
        let port = rng.gen_range(20000..30000);
        if handed_out.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return Ok(port);
    }
    anyhow::bail!("no free loopback port in 20000–29999 that this process has not handed out")
}

/// Removes every container of a compose project and its default network.
pub fn remove_project(project: &str) {
    crate::docker::compose::remove_project(project);
}

/// The directory this binary was built from (for scripts/demo-image.sh).
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the demo's encrypted secrets and its test-only identity (0600) into the demo
/// project; returns the identity path.
pub fn write_secrets(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;

    const DEMO_SECRETS: &[u8] = include_bytes!("../../secrets/demo.env.age");
    const DEMO_IDENTITY: &str = include_str!("../../fixtures/secrets/test-identity.txt");
    crate::atomic::write(&dir.join("secrets/demo.env.age"), DEMO_SECRETS, 0o644)?;
    let identity = dir.join("demo-identity.txt");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&identity)
        .and_then(|mut f| f.write_all(DEMO_IDENTITY.as_bytes()))
        .with_context(|| format!("could not write {}", identity.display()))?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_of_one_process_are_distinct() {
        let ports: Vec<u16> = (0..300).map(|_| super::free_port().unwrap()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(
            ports.iter().all(|p| (20000..30000).contains(p)),
            "{ports:?}"
        );
    }
}
