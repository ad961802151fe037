//! The VM under test: booted by `scripts/vm/vm.sh` (image built and cached by
//! `scripts/vm/image.sh`), driven over SSH with the ssh_config that script writes, powered off
//! when this value is dropped, even when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{loud, repo_root};

pub struct Vm {
    run_dir: tempfile::TempDir,
    pub ssh_port: u16,
    pub http_port: u16,
    pub ssh_config: PathBuf,
}

/// Says why the suite cannot run: a loud skip, or a failure when `CI` is set.
pub fn cannot_run(why: &str) {
    let msg = format!("the VM suite cannot run: {why}");
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure; run scripts/test.sh)");
    }
    loud(&format!("*** SKIPPED: {msg} ***"));
}

fn vm_script(verb: &str, run_dir: &Path) -> Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/vm/vm.sh"))
        .args([verb])
        .arg(run_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/vm/vm.sh")
}

impl Vm {
    /// Boots a fresh overlay of the cached image; `None` (after saying so) when this
    /// machine cannot run it.
    pub fn start() -> Option<Vm> {
        if cutover::process::which("qemu-system-x86_64").is_none() {
            cannot_run("`qemu-system-x86_64` is not installed (Debian: qemu-system-x86)");
            return None;
        }
        if cutover::process::which("ssh").is_none() {
            cannot_run("`ssh` is not installed (openssh-client)");
            return None;
        }
        let run_dir = tempfile::Builder::new()
            .prefix("cutover-vm-")
            .tempdir()
            .unwrap();
        let out = vm_script("start", run_dir.path());
        assert!(
            out.status.success(),
            "the VM did not boot (scripts/vm/vm.sh start, see its output above)"
        );
        let env = std::fs::read_to_string(run_dir.path().join("env")).unwrap();
        let var = |k: &str| -> String {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in the VM's env file:\n{env}"))
                .to_string()
        };
        Some(Vm {
            ssh_port: var("VM_SSH_PORT").parse().unwrap(),
            http_port: var("VM_HTTP_PORT").parse().unwrap(),
            ssh_config: PathBuf::from(var("VM_SSH_CONFIG")),
            run_dir,
        })
    }

    /// `admin@127.0.0.1:PORT`, what `cutover --host` gets.
    pub fn host(&self) -> String {
        format!("admin@127.0.0.1:{}", self.ssh_port)
    }

    /// Runs a shell command on the box as `admin` (prefix `sudo -n` for root).
    pub fn ssh(&self, script: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "box",
                "--",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// [`Vm::ssh`] that must succeed; its stdout.
    pub fn ssh_ok(&self, script: &str) -> String {
        let out = self.ssh(script);
        assert!(
            out.status.success(),
            "on the VM, `{script}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Reboots the guest and waits (bounded) for sshd.
    pub fn reboot(&self) {
        let out = vm_script("reboot", self.run_dir.path());
        assert!(
            out.status.success(),
            "the VM did not come back after a reboot"
        );
    }

    /// GET through the forwarded port 80 (the box's nginx), from this machine.
    pub fn http_get(&self, path: &str) -> Result<String, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let agent = ureq_agent();
        match agent.get(&url).call() {
            Ok(mut resp) => resp
                .body_mut()
                .read_to_string()
                .map_err(|e| format!("{url}: {e}")),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }

    /// Waits until `check` passes on the box, bounded.
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl Fn() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(start.elapsed() < limit, "{what}: not so after {limit:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn ureq_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(true)
        .build()
        .into()
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.run_dir.path().join("serial.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            loud(&format!(
                "--- VM serial log tail ({}):\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        let _ = vm_script("stop", self.run_dir.path());
    }
}
