//! The tests' single-node swarm (`docker swarm init --advertise-addr 127.0.0.1`), shared by
//! the swarm e2e tests: one already there is reused and never left; otherwise the first test
//! to need one creates it and it is left once no swarm test holds it and no compose project
//! of this run is up ([`crate::harness::common::ENGINE_MODE`]): by the last swarm test to
//! finish ([`SwarmGuard`], so a panic leaves too) when no compose project is up then, else by
//! the last of those compose projects to go ([`leave_if_idle`]). The swarm test's thread does
//! not wait for them: with two test threads it would sit idle for the rest of whatever
//! compose test runs beside it (minutes, for the switch_clients ones that follow).
//!
//! The routing mesh (the published port) needs IPVS in the kernel. Where the kernel has none
//! (proved from /proc/net/ip_vs and /proc/config.gz), [`routing_mesh`] says so loudly and the
//! tests reach each task directly on its docker_gwbridge address ([`direct_get`]). Where
//! IPVS exists but the mesh does not answer, that is a failure.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover::demo::http_get;

use crate::harness::common::require;
use crate::harness::project::{App, Project};

/// How many tests hold the swarm, and whether we created it (and so must leave it: while
/// none holds it, that leave is pending until no compose project is up).
static SWARM: Mutex<(usize, bool)> = Mutex::new((0, false));

struct SwarmGuard;

impl SwarmGuard {
    pub(crate) fn acquire() -> Option<SwarmGuard> {
        let mut held = SWARM.lock().unwrap_or_else(|p| p.into_inner());
        // A swarm we created and have not left yet (its leave pending) is ours to keep using.
        if held.0 == 0 && !held.1 {
            let node = cutover::docker::swarm::node().expect("docker info");
            match node.state.as_str() {
                "active" if node.manager => held.1 = false,
                "active" => {
                    fail_or_skip("this engine is a swarm worker; the tests need a manager");
                    return None;
                }
                _ => {
                    let out = std::process::Command::new("docker")
                        .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        fail_or_skip(&format!(
                            "the engine cannot form a swarm: `docker swarm init --advertise-addr 127.0.0.1` failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                        return None;
                    }
                    held.1 = true;
                }
            }
        }
        held.0 += 1;
        Some(SwarmGuard)
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let mut held = SWARM.lock().unwrap_or_else(|p| p.into_inner());
        held.0 -= 1;
        leave_now_or_later(&mut held);
    }
}

/// Leaves the swarm if we created it, no swarm test holds it and no compose project of this
/// run is up (leaving breaks the networks of compose projects created while the swarm was
/// active); otherwise the leave stays pending. Called when a compose project lets go of
/// [`crate::harness::common::ENGINE_MODE`], so the last one up does the pending leave.
pub(crate) fn leave_if_idle() {
    let mut held = SWARM.lock().unwrap_or_else(|p| p.into_inner());
    leave_now_or_later(&mut held);
}

fn leave_now_or_later(held: &mut (usize, bool)) {
    // Set before the try below: a compose project that holds the lock now calls back.
    let _ = crate::harness::common::ON_COMPOSE_RELEASE.set(leave_if_idle);
    if held.0 != 0 || !held.1 {
        return;
    }
    // Not waiting for the lock: a compose project that is up will call back when it goes.
    let _no_compose = match crate::harness::common::ENGINE_MODE.try_write() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    let _ = std::process::Command::new("docker")
        .args(["swarm", "leave", "--force"])
        .output();
    held.1 = false;
}

fn fail_or_skip(msg: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure)");
    }
    crate::harness::common::loud(&format!("*** SKIPPED: {msg} ***"));
}

/// Docker and the demo images; not the second (compose v1) e2e run.
pub(crate) fn swarm_ready() -> bool {
    if std::env::var_os("CUTOVER_COMPOSE").is_some() {
        eprintln!("swarm e2e: not repeated in the compose-flavour run (CUTOVER_COMPOSE is set; swarm does not use compose)");
        return false;
    }
    if !require("docker", "run swarm deploys") {
        return false;
    }
    let images_ok = cutover::demo::IMAGES
        .iter()
        .all(|i| cutover::docker::images::exists(i));
    if !images_ok {
        fail_or_skip("demo images cutover-demo:v1/v2 are missing (run scripts/demo-image.sh)");
        return false;
    }
    for image in cutover::demo::IMAGES {
        if let Err(why) = has_healthcheck_mode(image) {
            panic!("{image} cannot serve as a swarm healthcheck: {why}; rebuild it from this tree with scripts/demo-image.sh");
        }
    }
    true
}

/// The swarm tests gate rollouts on `/app healthcheck`; an image built before that mode
/// existed would start a second server instead and never report healthy. With nothing
/// listening, the mode answers at once with exit 1 and a `/health:` line.
fn has_healthcheck_mode(image: &str) -> Result<(), String> {
    let name = format!(
        "cutover-hc-probe-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let out = cutover::process::Cmd::new("docker", "probe the healthcheck mode")
        .args([
            "run",
            "--rm",
            "--name",
            &name,
            "--network",
            "none",
            image,
            "healthcheck",
        ])
        .timeout(Duration::from_secs(10))
        .run_unchecked();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    match out {
        Ok(o) if o.code == Some(1) && o.stdout.contains("/health:") => Ok(()),
        Ok(o) => Err(format!(
            "`/app healthcheck` exited {:?}: {}{}",
            o.code,
            o.stdout.trim(),
            o.stderr.trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Why the routing mesh cannot work on this machine, when that is provable: swarm's ingress
/// load balancing is IPVS, and a kernel built without it has no /proc/net/ip_vs (dockerd
/// logs "Could not get ipvs family information from the kernel").
fn kernel_without_ipvs() -> Option<String> {
    if Path::new("/proc/net/ip_vs").exists() {
        return None;
    }
    let config = std::process::Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -E '^(# )?CONFIG_IP_VS[ =]'",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let module = std::process::Command::new("sh")
        .args([
            "-c",
            "ls /lib/modules/$(uname -r)/kernel/net/netfilter/ipvs 2>/dev/null",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if module {
        return None; // loadable: the engine should have loaded it; a mesh failure is real
    }
    Some(format!(
        "the kernel has no IPVS (no /proc/net/ip_vs, no ip_vs module; /proc/config.gz: {})",
        if config.is_empty() {
            "unavailable".to_string()
        } else {
            config
        }
    ))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A swarm project on the shared single-node swarm (`None` when there is none to use).
pub(crate) fn swarm_project(app: App) -> Option<Project> {
    let guard = SwarmGuard::acquire()?;
    Some(Project::swarm(app, guard))
}

/// One GET to `ip:8080` on a fresh connection.
pub(crate) fn direct_get(ip: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// Whether the published port answers; if not, why (and whether that is this machine's
/// kernel, proven, or a real failure).
pub(crate) fn routing_mesh(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(http_get(port, "/"), Some((200, _))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    match kernel_without_ipvs() {
        Some(why) => {
            crate::harness::common::loud(&format!(
                "*** ROUTING MESH UNAVAILABLE ON THIS MACHINE: the published port {port} does not answer because {why}.\n\
                 *** Swarm's ingress load balancing is IPVS: without it no published port works. The load through\n\
                 *** the published port is NOT measured here; every task is checked directly on docker_gwbridge. ***"
            ));
            false
        }
        None => panic!(
            "the published port {port} does not answer although the kernel has IPVS: the routing mesh is broken"
        ),
    }
}
