//! Phase 3: seed 004's shape on the 1 GiB box. The app (512M limit, twice during the overlap)
//! plus a database-like and a cache-like accessory: limits of 512M + 512M + 512M + 256M add up
//! to far more than the RAM. Each container really holds memory (the demo app's
//! `ALLOCATE_MB`, every page touched), so the overlap needs the swap bootstrap made:
//!
//! - without swap, the first deploy is refused before anything starts, in MiB;
//! - with swap, the first deploy and the overlap complete, no container is OOM-killed (each
//!   one's `State.OOMKilled`, and the kernel log);
//! - an overlap needing more than RAM + swap is refused before anything starts, in MiB.
//!
//! Peak memory and swap during the overlap are read from the box's /proc/meminfo.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::common::loud;
use crate::deploy::ship_available;
use crate::machine::Vm;
use crate::project::BoxProject;

const APP_MB: u32 = 180;
const DB_MB: u32 = 300;
const CACHE_MB: u32 = 120;

fn body(app_memory: &str) -> String {
    format!(
        "app:\n\
         \x20 name: api\n\
         \x20 image: cutover-vmsuite\n\
         \x20 port: 8080\n\
         \x20 memory: {app_memory}\n\
         \x20 environment: {{ ALLOCATE_MB: \"{APP_MB}\" }}\n\
         \x20 depends_on: [db, cache]\n\
         \x20 health: {{ path: /health, timeout: 180s, interval: 1s }}\n\
         \x20 drain: 2s\n\
         \x20 stop_grace: 10s\n\
         colors: {{ blue: 8091, green: 8092 }}\n\
         accessories:\n\
         \x20 db:\n\
         \x20   image: cutover-vmsuite:v1\n\
         \x20   memory: 512M\n\
         \x20   environment: {{ ALLOCATE_MB: \"{DB_MB}\" }}\n\
         \x20 cache:\n\
         \x20   image: cutover-vmsuite:v1\n\
         \x20   memory: 256M\n\
         \x20   environment: {{ ALLOCATE_MB: \"{CACHE_MB}\" }}\n"
    )
}

/// The box's containers of `project` (compose's label), running or not.
fn containers(vm: &Vm, project: &str) -> Vec<String> {
    vm.ssh_ok(&format!(
        "docker ps -aq --filter label=com.docker.compose.project={project}"
    ))
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Peak "used" (MemTotal − MemAvailable) and swap used, in MiB, sampled every 0.5 s over SSH.
struct MemWatch {
    child: std::process::Child,
    reader: std::thread::JoinHandle<(u64, u64)>,
}

impl MemWatch {
    fn start(vm: &Vm) -> MemWatch {
        let mut child = Command::new("ssh")
            .arg("-F")
            .arg(&vm.ssh_config)
            .args(["-o", "BatchMode=yes", "box", "--"])
            .arg("while :; do awk '{v[$1]=$2} END {print v[\"MemTotal:\"]-v[\"MemAvailable:\"], v[\"SwapTotal:\"]-v[\"SwapFree:\"]}' /proc/meminfo; sleep 0.5; done")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the meminfo watch");
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut used, mut swap) = (0u64, 0u64);
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let v: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [u, s] = v[..] {
                    used = used.max(u);
                    swap = swap.max(s);
                }
            }
            (used >> 10, swap >> 10)
        });
        MemWatch { child, reader }
    }

    fn stop(mut self) -> (u64, u64) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().unwrap()
    }
}

fn no_oom(vm: &Vm, project: &str) {
    for id in containers(vm, project) {
        let state = vm.ssh_ok(&format!(
            "docker inspect --format '{{{{json .State}}}}' {id}"
        ));
        let state: serde_json::Value = serde_json::from_str(state.trim()).unwrap();
        assert_eq!(
            state["OOMKilled"], false,
            "container {id} was OOM-killed: {state}"
        );
    }
    let kernel = vm.ssh_ok("sudo -n journalctl -k --no-pager -q | grep -iE 'out of memory|oom-kill|oom_reaper' || true");
    assert!(
        kernel.trim().is_empty(),
        "the kernel log shows an OOM kill:\n{kernel}"
    );
}

fn refused_in_mib(run: &crate::project::Run, what: &str) {
    assert_eq!(
        run.out.status.code(),
        Some(1),
        "{what}: {}\n{}",
        run.stdout(),
        run.stderr()
    );
    let err = run.stderr();
    assert!(err.contains("not enough memory"), "{what}: {err}");
    assert!(err.contains(" MiB"), "{what}: the numbers in MiB: {err}");
}

pub fn seed_004_on_one_gib(vm: &Vm) {
    if !ship_available() {
        return; // said loudly by the deploy phase
    }
    let fit = BoxProject::new(vm, "vmfit", &body("512M"), 8000);
    fit.cutover_ok(&["bootstrap"]);
    crate::deploy::local_images();

    // Without swap: refused before anything starts (the first deploy needs the app and both
    // accessories: 512 + 512 + 256 MiB).
    vm.ssh_ok("sudo -n swapoff -a");
    let refused = fit.cutover(&["deploy", "--ship", "--image", "cutover-vmsuite:v1"]);
    vm.ssh_ok("sudo -n swapon -a");
    refused_in_mib(&refused, "first deploy without swap");
    assert!(
        refused.stderr().contains("1280 MiB"),
        "{}",
        refused.stderr()
    );
    assert!(
        refused.stderr().contains("SwapFree 0 MiB"),
        "{}",
        refused.stderr()
    );
    assert_eq!(
        containers(vm, &fit.name),
        Vec::<String>::new(),
        "nothing started"
    );

    // With swap: the first deploy, then the overlap.
    let first = fit.cutover_ok(&[
        "deploy",
        "--ship",
        "--image",
        "cutover-vmsuite:v1",
        "--json",
    ]);
    assert_eq!(first.json()["to"], "blue");
    let watch = MemWatch::start(vm);
    let overlap = fit.cutover_ok(&[
        "deploy",
        "--ship",
        "--image",
        "cutover-vmsuite:v2",
        "--json",
    ]);
    let (peak_used, peak_swap) = watch.stop();
    assert_eq!(overlap.json()["to"], "green");
    loud(&format!(
        "vm: seed-004 shape: first deploy {:.1}s, overlap deploy {:.1}s; during the overlap peak \
         used {peak_used} MiB of RAM, peak swap used {peak_swap} MiB",
        first.took.as_secs_f64(),
        overlap.took.as_secs_f64()
    ));
    no_oom(vm, &fit.name);
    let served = vm.ssh_ok("curl -fsS --max-time 20 http://127.0.0.1:8000/");
    assert!(
        served.contains("green") && served.contains("v2"),
        "{served}"
    );
    assert!(
        peak_swap > 0,
        "the overlap should not fit in RAM alone (swap used 0 MiB)"
    );

    // An overlap that needs more than RAM + swap: refused, nothing started, green serves.
    let before = containers(vm, &fit.name);
    let text = std::fs::read_to_string(fit.config_path()).unwrap();
    std::fs::write(
        fit.config_path(),
        text.replace(
            "memory: 512M\n  environment: { ALLOCATE_MB: \"180\" }",
            "memory: 8G\n  environment: { ALLOCATE_MB: \"180\" }",
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(fit.config_path())
        .unwrap()
        .contains("memory: 8G"));
    let refused = fit.cutover(&["deploy", "--ship", "--image", "cutover-vmsuite:v1"]);
    refused_in_mib(&refused, "an overlap bigger than RAM + swap");
    assert!(
        refused.stderr().contains("8192 MiB"),
        "{}",
        refused.stderr()
    );
    assert_eq!(
        containers(vm, &fit.name),
        before,
        "nothing started or removed"
    );
    let served = vm.ssh_ok("curl -fsS --max-time 20 http://127.0.0.1:8000/");
    assert!(served.contains("green"), "{served}");
    no_oom(vm, &fit.name);
}
