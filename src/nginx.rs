//! nginx: switching the include that points at the active color, and a throwaway nginx in a
//! temp prefix for the demo and the tests.
//!
//! A switch is write-temp-and-rename (keeping the previous include beside it), `nginx -t`,
//! reload; any failure puts the previous include back. `nginx -s reload` exits 0 even when
//! the new config cannot be applied, so the caller must still probe through nginx that the new
//! color answers (see `deploy`), and call [`Switch::restore`] when it does not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::process::Cmd;

/// The nginx commands and include path of a project.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub include: PathBuf,
    pub test: Vec<String>,
    pub reload: Vec<String>,
}

/// A switch that has been applied: the include now holds `new_text`.
#[derive(Debug)]
pub struct Switch {
    include: PathBuf,
    /// What the include held before, `None` when it did not exist.
    previous: Option<String>,
}

impl Nginx {
    pub fn test_config(&self) -> anyhow::Result<()> {
        Cmd::from_argv(&self.test, "test the nginx config")
            .timeout(Duration::from_secs(30))
            .run()?;
        Ok(())
    }

    pub fn reload_config(&self) -> anyhow::Result<()> {
        Cmd::from_argv(&self.reload, "reload nginx")
            .timeout(Duration::from_secs(30))
            .run()?;
        Ok(())
    }

    /// The workers of the nginx this project reloads (see [`worker_pids_of`]).
    pub fn worker_pids(&self) -> Vec<u32> {
        worker_pids_of(&self.reload, &self.test)
    }

    /// Refuses, before a deploy changes anything, an include this user cannot switch: a
    /// switch creates the new include (and the `.prev` copy) beside the old one and renames it,
    /// so the directory must be writable. Checked with access(2), so a dry run writes nothing;
    /// a directory that does not exist yet is left to the write, which creates it.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        let dir = crate::atomic::temp_dir_of(&self.include);
        if !dir.is_dir() {
            return Ok(());
        }
        use rustix::fs::{access, Access};
        let Err(errno) = access(dir, Access::WRITE_OK | Access::EXEC_OK) else {
            return Ok(());
        };
        anyhow::bail!(unwritable_include(
            &self.include,
            rustix::process::getuid().as_raw(),
            dir,
            &std::io::Error::from(errno).to_string(),
        ))
    }

    /// What the include holds now (None when missing).
    pub fn current_include(&self) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(&self.include) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("could not read {}", self.include.display())),
        }
    }

    /// Writes the include atomically, tests the config and reloads. On a failed test the
    /// previous include is restored and nginx is not reloaded.
    pub fn switch(&self, new_text: &str) -> anyhow::Result<Switch> {
        let previous = self.current_include()?;
        if let Some(prev) = &previous {
            crate::atomic::write(&backup_path(&self.include), prev.as_bytes(), 0o644)?;
        }
        crate::atomic::write(&self.include, new_text.as_bytes(), 0o644)?;
        let switch = Switch {
            include: self.include.clone(),
            previous,
        };
        if let Err(err) = self.test_config() {
            switch.put_back()?;
            return Err(err.context(format!(
                "the new include {} does not pass `{}`; restored the previous one, nginx not reloaded",
                self.include.display(),
                self.test.join(" ")
            )));
        }
        if let Err(err) = self.reload_config() {
            switch.put_back()?;
            // The reload may have half-applied: reload again so nginx runs the include on disk,
            // and say so when even that fails (nginx's state is then unknown).
            return Err(match self.reload_config() {
                Ok(()) => err.context("restored the previous include and reloaded nginx"),
                Err(again) => err.context(format!(
                    "restored the previous include, but reloading nginx with it failed too \
                     ({again:#}): check `{}` by hand",
                    self.reload.join(" ")
                )),
            });
        }
        Ok(switch)
    }
}

impl Switch {
    fn put_back(&self) -> anyhow::Result<()> {
        match &self.previous {
            Some(text) => crate::atomic::write(&self.include, text.as_bytes(), 0o644),
            None => match std::fs::remove_file(&self.include) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => {
                    Err(e).with_context(|| format!("could not remove {}", self.include.display()))
                }
            },
        }
    }

    /// Puts the previous include back and reloads nginx.
    pub fn restore(self, nginx: &Nginx) -> anyhow::Result<()> {
        self.put_back()?;
        if self.previous.is_some() {
            nginx.test_config()?;
            nginx.reload_config()?;
        }
        Ok(())
    }
}

/// The worker processes of the nginx that `reload_argv` reloads, read from `/proc`.
///
/// Taken just before a switch, these are the workers that may still route a request to the
/// old color after the reload: `nginx -s reload` returns before old workers act on their QUIT,
/// so for a moment they can still accept a connection. The drain waits until they are gone.
/// Masters are matched by the `-c`/`-p` path in `reload_argv` (their process title keeps
/// their command line); with neither, by the one in `test_argv` (a wrapper or `systemctl
/// reload nginx` reloads the nginx that `nginx -t -c …` tests); with neither there either,
/// the masters started without `-c`/`-p` (the system nginx on its default config) in this
/// box's pid namespace, never an nginx inside a container or one on a private prefix. An
/// nginx this box cannot see yields no pids, and the drain counts connections alone.
pub fn worker_pids(reload_argv: &[String]) -> Vec<u32> {
    worker_pids_of(reload_argv, &[])
}

/// [`worker_pids`] of the nginx that `reload_argv` reloads and `test_argv` tests.
pub fn worker_pids_of(reload_argv: &[String], test_argv: &[String]) -> Vec<u32> {
    let config_path = |argv: &[String]| {
        argv.windows(2)
            .find(|w| w[0] == "-c")
            .or_else(|| argv.windows(2).find(|w| w[0] == "-p"))
            .map(|w| w[1].trim_end_matches('/').to_string())
    };
    let wanted = config_path(reload_argv).or_else(|| config_path(test_argv));
    let own_namespace = std::fs::read_link("/proc/self/ns/pid").ok();
    let procs: Vec<(u32, u32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let title = std::fs::read(entry.path().join("cmdline")).ok()?;
            let title = String::from_utf8_lossy(&title).replace('\0', " ");
            if !title.starts_with("nginx: ") {
                return None;
            }
            if own_namespace.is_some()
                && std::fs::read_link(entry.path().join("ns/pid")).ok() != own_namespace
            {
                return None;
            }
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let ppid = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            Some((pid, ppid, title))
        })
        .collect();
    let on_default_config = |title: &str| !title.split_whitespace().any(|w| w == "-c" || w == "-p");
    let masters: Vec<u32> = procs
        .iter()
        .filter(|(_, _, title)| title.starts_with("nginx: master process"))
        .filter(|(_, _, title)| match &wanted {
            Some(w) => title.contains(w.as_str()),
            None => on_default_config(title),
        })
        .map(|(pid, _, _)| *pid)
        .collect();
    procs
        .iter()
        .filter(|(_, ppid, title)| {
            masters.contains(ppid) && title.starts_with("nginx: worker process")
        })
        .map(|(pid, _, _)| *pid)
        .collect()
}

/// Whether a process still runs (a zombie does not count).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Why a deploy as uid `uid` cannot switch `include` (its directory `dir` is not writable:
/// `reason`), and the fix. One text for the box's own check and `--host`'s check before it
/// ships or syncs anything.
pub fn unwritable_include(include: &Path, uid: u32, dir: &Path, reason: &str) -> String {
    format!(
        "nginx.include {}: uid {uid} cannot create files in {} ({reason}), and a switch writes \
         the new include beside the old one and renames it; deploying as a user other than \
         root, keep the include in a directory that user owns (e.g. /home/<user>/nginx/<project>.inc, \
         included by the site: `cutover init --user <user>` writes such a config, and `cutover \
         bootstrap` creates the directory) and run nginx.test / nginx.reload through `sudo -n` \
         (README: \"From a laptop or CI: `--host`\")",
        include.display(),
        dir.display(),
    )
}

/// `service-url.inc` → `service-url.inc.prev`: the include before the last switch.
pub fn backup_path(include: &Path) -> PathBuf {
    let mut name = include.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    include.with_file_name(name)
}

/// Which port an include points at, read from its `set $cutover_upstream http://host:PORT;`
/// line, or, in an include without one (an older cutover's, or one that sends traffic to the
/// address directly), from `set $service_url http://host:PORT;`.
pub fn include_port(text: &str) -> Option<u16> {
    let set = |variable: &str| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(variable))
            .map(str::to_string)
    };
    set("set $cutover_upstream")
        .or_else(|| set("set $service_url"))
        .and_then(|rest| {
            let url = rest.trim().trim_end_matches(';');
            url.rsplit(':')
                .next()
                .map(|p| p.trim_end_matches('/').to_string())
        })
        .and_then(|port| port.parse().ok())
}

/// Whether an include sends traffic to an upstream group (`set $service_url http://cutover_…;`,
/// the watch window's fallback) rather than to a color's address.
pub fn include_routes_through_a_group(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("set $service_url"))
        .map(|rest| rest.trim().trim_end_matches(';').trim_end())
        // A color's group (`cutover_<project>_<color>`), not the nft switch's group, which
        // is always routed through.
        .any(|url| {
            url.starts_with("http://cutover_")
                && (url.ends_with("_blue") || url.ends_with("_green"))
        })
}

/// An nginx master running from a private prefix on a loopback port, for the demo and tests.
/// Stopped (`-s quit`, then killed) when dropped.
#[derive(Debug)]
pub struct LocalNginx {
    pub prefix: PathBuf,
    stopped: bool,
}

impl LocalNginx {
    /// The main config: everything (pid, logs, temp paths) inside `prefix`, so no root and no
    /// system paths are needed; `site` is included from `prefix/site.conf`, and further
    /// projects' sites from `prefix/sites/*.conf` (several apps behind one nginx).
    pub fn write_config(prefix: &Path) -> anyhow::Result<PathBuf> {
        let p = prefix.display();
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(sub))
                .with_context(|| format!("could not create {p}/{sub}"))?;
        }
        let conf = format!(
            "# Written by cutover for a local nginx in {p}.\n\
             worker_processes 1;\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {p}/tmp/body;\n\
             \x20   proxy_temp_path {p}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {p}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {p}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {p}/tmp/scgi;\n\
             \x20   include {p}/site.conf;\n\
             \x20   include {p}/sites/*.conf;\n\
             }}\n"
        );
        let path = prefix.join("nginx.conf");
        crate::atomic::write(&path, conf.as_bytes(), 0o644)?;
        Ok(path)
    }

    /// The argv that runs nginx against this prefix, followed by `extra`.
    pub fn argv(prefix: &Path, extra: &[&str]) -> Vec<String> {
        let p = prefix.display().to_string();
        let mut argv = vec![
            "nginx".to_string(),
            "-p".into(),
            format!("{p}/"),
            "-c".into(),
            format!("{p}/nginx.conf"),
            "-e".into(),
            format!("{p}/logs/error.log"),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// [`LocalNginx::argv`] as a YAML flow list, for `nginx.test` / `nginx.reload` in a config.
    pub fn argv_yaml(prefix: &Path, extra: &[&str]) -> String {
        let words: Vec<String> = Self::argv(prefix, extra)
            .iter()
            .map(|a| serde_json::Value::String(a.clone()).to_string())
            .collect();
        format!("[{}]", words.join(", "))
    }

    /// Starts nginx (it daemonizes) after writing the config; `site.conf` must exist.
    pub fn start(prefix: &Path) -> anyhow::Result<LocalNginx> {
        Self::write_config(prefix)?;
        Cmd::from_argv(&Self::argv(prefix, &["-t"]), "test the local nginx config").run()?;
        Cmd::from_argv(&Self::argv(prefix, &[]), "start the local nginx")
            .timeout(Duration::from_secs(20))
            .run()?;
        // Stopped on drop, should its workers never come.
        let nginx = LocalNginx {
            prefix: prefix.to_owned(),
            stopped: false,
        };
        // The process run above exits once nginx has daemonized: the master writes its pid
        // file and starts its workers after that. Waited for, so that a caller looking for
        // them right away (the drain's list of workers) finds them; a wait that woke every
        // 20 ms hid this, one that wakes at the exit does not.
        let reload = Self::argv(prefix, &["-s", "reload"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while worker_pids(&reload).is_empty() {
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "nginx on {} started, but no worker of it ran within 10 s",
                    prefix.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(nginx)
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = Cmd::from_argv(
            &Self::argv(&self.prefix, &["-s", "quit"]),
            "stop the local nginx",
        )
        .timeout(Duration::from_secs(10))
        .run();
        // `-s quit` lets workers finish; make sure the master is gone before the prefix is.
        let pid_file = self.prefix.join("nginx.pid");
        for _ in 0..100 {
            if !pid_file.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = Cmd::new("kill", "kill the local nginx")
                .args(["-9", pid.trim()])
                .run();
        }
    }
}

impl Drop for LocalNginx {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_port_reads_the_set_line() {
        let text = "# comment\nset $service_url http://127.0.0.1:8082;\n";
        assert_eq!(include_port(text), Some(8082));
        assert_eq!(
            include_port("set $service_url http://[::1]:9000;"),
            Some(9000)
        );
        assert_eq!(include_port("nothing here"), None);
    }

    #[test]
    fn include_port_reads_the_colors_address_not_the_group() {
        let text = "set $cutover_upstream http://127.0.0.1:8082;\n\
                    set $service_url http://cutover_app_green;\n";
        assert_eq!(include_port(text), Some(8082));
        // A group name alone names no port: not "nothing there", but no answer either.
        assert!(include_routes_through_a_group(text));
        assert!(!include_routes_through_a_group(
            "# set $service_url http://cutover_app_green;\nset $service_url http://127.0.0.1:1;"
        ));
        assert_eq!(
            include_port("set $service_url http://cutover_app_green;"),
            None
        );
    }

    #[test]
    fn backup_sits_beside_the_include() {
        assert_eq!(
            backup_path(Path::new("/etc/nginx/conf.d/service-url.inc")),
            Path::new("/etc/nginx/conf.d/service-url.inc.prev")
        );
    }
}
