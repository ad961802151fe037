//! A project on the laptop side (a temp dir with a cutover.yml) and `cutover --host` runs of
//! it against the VM.
//!
//! nginx on the box is Debian's, run by root: the deploy user `admin` reloads it through
//! `sudo -n` (`nginx.test` / `nginx.reload`), and the include lives in a directory `admin`
//! owns, since a switch replaces it with write-temp-and-rename: the config `cutover init
//! --user admin` writes, and bootstrap makes the directory and the sudoers rule.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{isolate, loud};
use crate::machine::Vm;

pub struct BoxProject {
    /// The laptop side: HOME (`.home`, the laptop's age identity) and the project's folder.
    local: tempfile::TempDir,
    /// The project's folder: `local` itself, or the one `cutover init NAME` made in it.
    dir: std::path::PathBuf,
    pub name: String,
    host: String,
    ssh_config: std::path::PathBuf,
}

/// One `cutover` run: what it printed and how long it took.
pub struct Run {
    pub out: Output,
    pub took: Duration,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout).unwrap_or_else(|e| {
            panic!(
                "not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            )
        })
    }
}

/// The binary under test without its debug info: `--host` uploads the binary it runs, and
/// 125 MB of debug build takes 1.5 min over the VM's emulated network; stripped it is ~22 MB.
pub fn stripped_binary() -> &'static Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-cutover");
        let status = std::process::Command::new("strip")
            .arg("-o")
            .arg(&out)
            .arg(env!("CARGO_BIN_EXE_cutover"))
            .status()
            .expect("run strip (binutils)");
        assert!(status.success(), "strip of the cutover binary failed");
        out
    })
}

/// The nginx keys every VM project shares (see the module docs).
fn nginx_section(project: &str, listen: u16) -> String {
    format!(
        "nginx:\n\
         \x20 include: /home/admin/nginx/{project}.inc\n\
         \x20 site: /etc/nginx/sites-enabled/{project}.conf\n\
         \x20 listen: {listen}\n\
         \x20 test: [sudo, -n, nginx, -t]\n\
         \x20 reload: [sudo, -n, nginx, -s, reload]\n"
    )
}

impl BoxProject {
    /// A project with `body` (app, colors, accessories…) plus the shared nginx section.
    pub fn new(vm: &Vm, name: &str, body: &str, listen: u16) -> BoxProject {
        let local = tempfile::tempdir().unwrap();
        let text = format!(
            "project: {name}\n{body}{}host: {{ swap: auto, swappiness: 10 }}\n",
            nginx_section(name, listen)
        );
        std::fs::write(local.path().join("cutover.yml"), text).unwrap();
        // No hand-made include directory: bootstrap's `nginx access` step creates it for
        // admin (the SSH user, `$SUDO_USER` under `sudo -n`), with the sudoers drop-in.
        BoxProject {
            dir: local.path().to_path_buf(),
            local,
            name: name.to_string(),
            host: vm.host(),
            ssh_config: vm.ssh_config.clone(),
        }
    }

    /// A project made by commands run in an empty folder (the README's walk): its folder is
    /// `dir` below the laptop side, once a command made it.
    pub fn empty(vm: &Vm, name: &str) -> BoxProject {
        let local = tempfile::tempdir().unwrap();
        BoxProject {
            dir: local.path().to_path_buf(),
            local,
            name: name.to_string(),
            host: vm.host(),
            ssh_config: vm.ssh_config.clone(),
        }
    }

    /// `cd DIR` (relative to the project's folder).
    pub fn cd(&mut self, dir: &str) {
        let to = self.dir.join(dir);
        assert!(to.is_dir(), "cd {dir}: {} is not a directory", to.display());
        self.dir = to;
    }

    /// The laptop's HOME (its age identity is under it).
    pub fn home(&self) -> std::path::PathBuf {
        self.local.path().join(".home")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.path().join("cutover.yml")
    }

    /// `cutover --host admin@127.0.0.1:PORT ARGS…` from this project.
    pub fn cutover(&self, args: &[&str]) -> Run {
        let mut with_host = vec!["--host", &self.host];
        with_host.extend_from_slice(args);
        self.cutover_here(&with_host)
    }

    /// `cutover ARGS` on this machine (no `--host`): `secrets …` works on local files.
    pub fn local_ok(&self, args: &[&str]) -> Run {
        let run = self.cutover_here(args);
        assert!(
            run.out.status.success(),
            "`cutover {}` failed ({}):\n{}",
            args.join(" "),
            run.out.status,
            run.stderr()
        );
        run
    }

    pub fn cutover_here(&self, args: &[&str]) -> Run {
        let home = self.home();
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = std::process::Command::new(stripped_binary());
        cmd.current_dir(self.path());
        isolate(&mut cmd, &home);
        cmd.env("CUTOVER_SSH_CONFIG", &self.ssh_config)
            .args(args)
            .stdin(std::process::Stdio::null());
        let started = Instant::now();
        let out = cmd.output().expect("run cutover");
        Run {
            out,
            took: started.elapsed(),
        }
    }

    /// [`BoxProject::cutover`] that must exit 0.
    pub fn cutover_ok(&self, args: &[&str]) -> Run {
        let run = self.cutover(args);
        assert!(
            run.out.status.success(),
            "`cutover --host … {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            run.out.status,
            run.stdout(),
            run.stderr()
        );
        loud(&format!(
            "vm: `cutover {}` took {:.1}s",
            args.join(" "),
            run.took.as_secs_f64()
        ));
        run
    }
}
