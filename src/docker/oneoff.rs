//! One-off containers of a compose service (`compose run --rm --no-deps`): the release phase
//! runs one of the NEW color's service before that color starts, `cutover run` one of the
//! SERVING color's service. Running the service (not a bare `docker run` of its image) gives
//! the container what the color gets: its environment anchor, the secrets (process
//! environment of the compose call only), the networks where the accessories are, the
//! volumes and the memory limit; no ports are published (`run` never publishes them).
//!
//! Each one-off has a name cutover chose, so a run that had to be killed (the compose
//! client dies, the container does not) can be found and removed. Their containers carry
//! `com.docker.compose.oneoff=True`, which [`super::compose::containers_of`] leaves out: a
//! console open during a deploy is never taken for a color.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use secrecy::SecretString;

use super::compose::Project;
use crate::process::{Bounded, Cmd, ProcessError};

/// One `compose run` of `service` with `command`.
pub struct OneOff<'a> {
    pub project: &'a Project,
    pub service: String,
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, SecretString>,
    /// The container's name: `<project>-<service>-<purpose>-<pid>`.
    pub name: String,
}

impl<'a> OneOff<'a> {
    /// `purpose` (`release`, `run`) goes into the container's name.
    pub fn new(
        project: &'a Project,
        service: String,
        purpose: &str,
        command: &'a [String],
        env: &'a BTreeMap<String, SecretString>,
    ) -> Self {
        let name = format!(
            "{}-{service}-{purpose}-{}",
            project.name,
            std::process::id()
        );
        OneOff {
            project,
            service,
            command,
            env,
            name,
        }
    }

    /// The compose command; `tty` false adds `-T` (no pseudo-terminal: pipes, CI, the box
    /// side of `--host`).
    pub fn cmd(&self, tty: bool, summary: impl Into<String>) -> Cmd {
        let mut cmd =
            self.project
                .cmd(summary)
                .args(["run", "--rm", "--no-deps", "--name", &self.name]);
        if !tty {
            cmd = cmd.arg("-T");
        }
        cmd = cmd.arg(&self.service).args(self.command);
        for (k, v) in self.env {
            cmd = cmd.env(k, v.clone());
        }
        cmd
    }

    /// Runs without a terminal, each output line to `on_line`, killed at `limit` (or when
    /// `cancel` is set); the container is removed whatever happened.
    pub fn run_bounded(
        &self,
        limit: Duration,
        cancel: &AtomicBool,
        summary: impl Into<String>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Bounded, ProcessError> {
        let out = self.cmd(false, summary).run_bounded(limit, cancel, on_line);
        // `--rm` is the compose client's job; a killed client leaves the container running.
        if !out.as_ref().is_ok_and(Bounded::success) {
            self.remove();
        }
        out
    }

    /// Runs attached to this terminal (or these pipes); the command's exit code.
    pub fn run_attached(&self, tty: bool, stdin: bool) -> Result<Option<i32>, ProcessError> {
        let summary = format!("run a one-off container of {}", self.service);
        let code = self.cmd(tty, summary).run_attached(stdin);
        if !matches!(code, Ok(Some(0))) {
            self.remove();
        }
        code
    }

    fn remove(&self) {
        remove(&self.name);
    }
}

/// `docker rm -f` of a one-off by name, if it is still there (a best effort: it may be gone);
/// also how an interrupted `cutover run` stops its container.
pub fn remove(name: &str) {
    let _ = Cmd::new("docker", format!("remove the one-off container {name}"))
        .args(["rm", "-f", name])
        .timeout(Duration::from_secs(60))
        .run_unchecked();
}
