//! The system OpenSSH client, with one master connection per invocation.
//!
//! Using `ssh` itself (not a library) keeps `~/.ssh/config`, agents, jump hosts and
//! known_hosts working the way users expect. The first command opens the master
//! (`ControlMaster=auto`, its socket in a private 0700 temp dir, `ControlPersist` as a safety
//! net should cutover die); every later step is a session multiplexed on it, so a deploy opens
//! one TCP connection. [`Session`]'s `Drop` sends `-O exit`.
//!
//! Host keys are checked strictly unless the user's own config chose otherwise, and an unknown
//! key fails with the exact command that pins it. Without a terminal `BatchMode=yes`, so CI
//! never hangs on a prompt.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context as _};

use crate::config::Target;
use crate::process::{Cmd, Output, ProcessError, Streaming};

/// Variables `ssh` may need from our environment (agent, askpass, locale); everything else,
/// notably `CUTOVER_AGE_KEY`, is withheld so a `SendEnv` in the user's config cannot ship it.
const SSH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "SSH_ASKPASS",
    "SSH_ASKPASS_REQUIRE",
    "DISPLAY",
    "XAUTHORITY",
    "KRB5CCNAME",
    "TERM",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
];

/// What `ssh -G` resolves for the target: the parts our messages and options need.
#[derive(Debug, Clone)]
struct Resolved {
    hostname: String,
    port: u16,
    user: String,
    strict_host_key_checking: String,
    known_hosts: String,
}

/// The box could not be reached, or refused the connection (host key, authentication): the
/// message says what to do. Typed so `--json` can say `"kind":"ssh"`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SshError(pub String);

/// One master connection to the box; every [`Session::exec`] is multiplexed on it.
pub struct Session {
    pub target: Target,
    resolved: Resolved,
    /// Options on every `ssh` call (config file, port, control socket, batch mode).
    options: Vec<String>,
    control_dir: tempfile::TempDir,
    connected: bool,
}

impl Session {
    /// Resolves the target with `ssh -G` (no connection yet). `ssh_config` is
    /// `CUTOVER_SSH_CONFIG`, passed as `ssh -F`.
    pub fn new(target: Target, ssh_config: Option<PathBuf>) -> anyhow::Result<Session> {
        let control_dir = tempfile::Builder::new()
            .prefix("cutover-ssh-")
            .tempdir()
            .context("could not create a private directory for the SSH control socket")?;
        let mut options: Vec<String> = Vec::new();
        if let Some(config) = &ssh_config {
            options.push("-F".into());
            options.push(config.display().to_string());
        }
        if let Some(port) = target.port {
            options.push("-p".into());
            options.push(port.to_string());
        }
        let resolved = resolve(&options, &target)?;
        // "ask" is ssh's default: nobody chose it, so refuse instead of prompting. A user who
        // set accept-new (or no) in their config keeps their choice.
        if resolved.strict_host_key_checking == "ask" {
            options.push("-oStrictHostKeyChecking=yes".into());
        }
        if !std::io::stdin().is_terminal() {
            options.push("-oBatchMode=yes".into());
        }
        options.push("-oControlMaster=auto".into());
        options.push(format!(
            "-oControlPath={}",
            control_dir.path().join("master").display()
        ));
        // Only a safety net: the master closes 60 s after its last session should cutover die
        // without sending `-O exit`.
        options.push("-oControlPersist=60".into());
        options.push("-oServerAliveInterval=15".into());
        Ok(Session {
            target,
            resolved,
            options,
            control_dir,
            connected: false,
        })
    }

    fn ssh(&self, summary: &str) -> Cmd {
        Cmd::new("ssh", summary)
            .env_clear_except(SSH_ENV.iter().copied())
            .args(&self.options)
    }

    /// Runs `script` in the box user's shell (`sh -c`), output captured. The first call opens
    /// the master connection and turns the usual ways that fails into clear errors.
    pub fn exec(
        &mut self,
        script: &str,
        summary: &str,
        stdin: Option<Vec<u8>>,
    ) -> anyhow::Result<Output> {
        let mut cmd = self
            .ssh(summary)
            .arg("-T")
            .arg("--")
            .arg(self.target.destination())
            .arg(remote_sh(script));
        if let Some(bytes) = stdin {
            cmd = cmd.stdin_bytes(bytes);
        }
        let out = cmd.run_unchecked().map_err(|e| self.spawn_failed(e))?;
        if out.code == Some(255) {
            let err = self.connection_error(&out.stderr);
            return Err(anyhow::Error::new(SshError(format!("{err:#}"))));
        }
        self.connected = true;
        Ok(out)
    }

    /// Like [`Session::exec`], but a non-zero exit is an error with the box's stderr.
    pub fn exec_ok(
        &mut self,
        script: &str,
        summary: &str,
        stdin: Option<Vec<u8>>,
    ) -> anyhow::Result<Output> {
        let out = self.exec(script, summary, stdin)?;
        if !out.success() {
            let status = out
                .code
                .map_or("killed by a signal".into(), |c| format!("exit {c}"));
            let stderr = out.stderr.trim();
            bail!(
                "failed to {summary} on {} ({status}){}",
                self.target,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {}", crate::process::tail(stderr, 20))
                }
            );
        }
        Ok(out)
    }

    /// Starts `argv` on the box (already shell-quoted words) with stdout/stderr streamed here
    /// and stdin a pipe we keep open; see `remote::run` for what travels on it.
    pub fn start_streaming(&self, command_line: &str, summary: &str) -> anyhow::Result<Streaming> {
        self.ssh(summary)
            .arg("-T")
            .arg("--")
            .arg(self.target.destination())
            .arg(command_line)
            .start_streaming(false)
            .map_err(|e| self.spawn_failed(e))
    }

    /// Runs `script` in `sh` on the box with stdin a pipe we write to and stdout/stderr piped
    /// back here (the image `--ship` streams).
    pub fn start_script(&self, script: &str, summary: &str) -> anyhow::Result<Streaming> {
        self.ssh(summary)
            .arg("-T")
            .arg("--")
            .arg(self.target.destination())
            .arg(remote_sh(script))
            .start_streaming(true)
            .map_err(|e| self.spawn_failed(e))
    }

    /// Why a streamed run ended with ssh's own 255: the connection, or the remote side?
    pub fn describe_lost(&self) -> String {
        format!(
            "the SSH connection to {} was lost; the box treats that like SIGTERM (before the \
             switch it tears the new color down, after it the deploy completes). Run `cutover \
             --host {} status` to see where it stands",
            self.target, self.target
        )
    }

    fn spawn_failed(&self, e: ProcessError) -> anyhow::Error {
        match e {
            ProcessError::NotFound { .. } => anyhow::anyhow!(
                "`ssh` (the OpenSSH client) was not found on PATH; `cutover --host` uses it \
                 (Debian/Ubuntu: apt-get install openssh-client)"
            ),
            other => other.into(),
        }
    }

    /// Turns ssh's own failure (exit 255) into a message that says what to do.
    fn connection_error(&self, stderr: &str) -> anyhow::Error {
        let r = &self.resolved;
        let said = crate::process::tail(stderr.trim(), 6);
        if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            return anyhow::anyhow!(
                "the host key of {} ({}:{}) has CHANGED since it was pinned in {}; refusing to \
                 connect. If the box was rebuilt, verify its new fingerprint out of band, then \
                 `ssh-keygen -R {}` and pin it again:\n  ssh-keyscan -p {} {} >> {}\n{said}",
                self.target,
                r.hostname,
                r.port,
                r.known_hosts,
                known_hosts_name(&r.hostname, r.port),
                r.port,
                r.hostname,
                r.known_hosts
            );
        }
        if stderr.contains("Host key verification failed")
            || stderr.contains("No matching host key")
            || stderr.contains("host key is known")
        {
            return anyhow::anyhow!(
                "the host key of {} ({}:{}) is not known (not in {}), and cutover does not \
                 trust an unknown box. Pin it with:\n  ssh-keyscan -p {} {} >> {}\nand \
                 verify the fingerprint it prints (`ssh-keygen -lf {}`) against the box's \
                 console or your cloud provider's first-boot log before deploying.\n{said}",
                self.target,
                r.hostname,
                r.port,
                r.known_hosts,
                r.port,
                r.hostname,
                r.known_hosts,
                r.known_hosts
            );
        }
        if stderr.contains("Permission denied") {
            return anyhow::anyhow!(
                "{} refused our SSH key for user `{}`: add your public key to \
                 ~{}/.ssh/authorized_keys on the box (or point IdentityFile / the agent at the \
                 right key in ~/.ssh/config)\n{said}",
                self.target,
                r.user,
                r.user
            );
        }
        anyhow::anyhow!(
            "could not connect to {} ({}:{}) with ssh (exit 255){}",
            self.target,
            r.hostname,
            r.port,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )
    }

    /// Closes the master connection (also done on drop).
    pub fn close(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        let _ = self
            .ssh("close the SSH master connection")
            .args(["-O", "exit", "--"])
            .arg(self.target.destination())
            .timeout(std::time::Duration::from_secs(10))
            .run_unchecked();
        let _ = &self.control_dir;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// The remote login shell may be anything (bash, zsh, fish); run our POSIX scripts in `sh`.
fn remote_sh(script: &str) -> String {
    format!("exec sh -c {}", crate::process::shell_quote(script))
}

/// How known_hosts names a host: `host`, or `[host]:port` off port 22.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn resolve(options: &[String], target: &Target) -> anyhow::Result<Resolved> {
    let out = Cmd::new("ssh", "resolve the SSH settings for the box (ssh -G)")
        .env_clear_except(SSH_ENV.iter().copied())
        .args(options)
        .arg("-G")
        .arg("--")
        .arg(target.destination())
        .run()
        .map_err(|e| match e {
            ProcessError::NotFound { .. } => anyhow::anyhow!(
                "`ssh` (the OpenSSH client) was not found on PATH; `cutover --host` uses it \
                 (Debian/Ubuntu: apt-get install openssh-client)"
            ),
            other => other.into(),
        })?;
    let get = |key: &str| {
        out.stdout.lines().find_map(|line| {
            line.split_once(' ')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let missing =
        |key: &str| anyhow::anyhow!("`ssh -G {}` printed no `{key}` line", target.destination());
    let known_hosts = get("userknownhostsfile")
        .ok_or_else(|| missing("userknownhostsfile"))?
        .split_whitespace()
        .next()
        .unwrap_or("~/.ssh/known_hosts")
        .to_string();
    Ok(Resolved {
        hostname: get("hostname").ok_or_else(|| missing("hostname"))?,
        port: get("port")
            .ok_or_else(|| missing("port"))?
            .parse()
            .map_err(|_| missing("port (a number)"))?,
        user: get("user").ok_or_else(|| missing("user"))?,
        strict_host_key_checking: get("stricthostkeychecking")
            .ok_or_else(|| missing("stricthostkeychecking"))?,
        known_hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_names_off_port_22_are_bracketed() {
        assert_eq!(known_hosts_name("box", 22), "box");
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }
}
