//! The one way cutover runs a subprocess.
//!
//! Every command carries a human summary ("start green", "test nginx config"), so a failure
//! reads `failed to start green (exit 1): <stderr>` instead of a bare exit status, as in
//! cargo-dist. Output is always captured; nothing a child prints reaches the terminal unless a
//! caller shows it. Environment values given through [`Cmd::env`] never appear in
//! [`Cmd::display`] or in errors, since they may be decrypted secrets.
//!
//! One secret-environment policy for every child (docker, compose, nginx, hooks, `secrets
//! exec`): its environment is built in one place, [`Cmd::child_env`], which never passes on
//! the variables in [`WITHHELD_FROM_CHILDREN`] (cutover's own age key and identity path).
//! The buffers cutover owns that held a secret (the child's environment strings, stdin bytes,
//! the raw captured output) are wiped when dropped. The copies duct and std make to spawn the
//! child cannot be reached from safe code and are freed unwiped.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

mod bounded;
#[cfg(test)]
pub(crate) mod fake;
mod primed;
mod streaming;

pub use bounded::{Bounded, TAIL_LINES};
pub use primed::Primed;
pub use streaming::{Stdin, Streaming};

/// Variables of cutover's own environment that never reach a child: `CUTOVER_AGE_KEY` is an
/// age private key, `CUTOVER_IDENTITY` names the identity file. No child needs either, and a
/// hook or a compromised image that dumps its environment must not learn them.
pub const WITHHELD_FROM_CHILDREN: [&str; 2] = ["CUTOVER_AGE_KEY", "CUTOVER_IDENTITY"];

/// A child's whole environment, name to value; values are wiped when dropped.
pub type ChildEnv = BTreeMap<OsString, Zeroizing<Vec<u8>>>;

/// Receives every finished subprocess, and every request cutover makes of the Docker engine's
/// socket in place of one (`docker::engine_api`): its display line, how long it took and how
/// it ended ("exit 0", "killed", "HTTP 200"), for `-v`. The command layer installs it; this
/// module never prints.
pub type Trace = Box<dyn Fn(&str, Duration, &str) + Send + Sync>;

static TRACE: std::sync::OnceLock<Trace> = std::sync::OnceLock::new();

/// Installs the trace hook (once per process).
pub fn set_trace(trace: Trace) {
    let _ = TRACE.set(trace);
}

/// Hands one finished exchange to the trace hook, when `-v` installed one.
pub fn trace(line: &str, took: Duration, outcome: &str) {
    if let Some(trace) = TRACE.get() {
        trace(line, took, outcome);
    }
}

/// How a subprocess ended, as the trace says it.
fn exit_outcome(code: Option<i32>) -> String {
    code.map_or("killed".to_string(), |c| format!("exit {c}"))
}

/// Why a subprocess did not do its job. Callers branch on `NotFound` (tool missing: try the
/// other compose flavour, say how to install) versus `Failed`.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to {summary}: `{program}` was not found on PATH")]
    NotFound { summary: String, program: String },
    #[error("failed to {summary} ({status}){}", stderr_suffix(.stderr))]
    Failed {
        summary: String,
        status: String,
        stderr: String,
        stdout: String,
    },
    #[error("failed to {summary}: `{program}` timed out after {after}")]
    TimedOut {
        summary: String,
        program: String,
        after: String,
    },
    #[error("failed to {summary}: could not run `{program}`")]
    Io {
        summary: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {}", tail(trimmed, 20))
    }
}

/// The last `lines` lines of `text`, so a long log does not bury the error line.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// What a finished subprocess produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A subprocess to run, with a summary of what it is for.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    summary: String,
    env: Vec<(OsString, SecretString)>,
    plain_env: Vec<(OsString, OsString)>,
    env_clear_except: Option<Vec<OsString>>,
    dir: Option<PathBuf>,
    stdin: Option<Zeroizing<Vec<u8>>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cmd({:?}: {})", self.summary, self.display())
    }
}

impl Cmd {
    /// `summary` completes the sentence "failed to …", e.g. "start green".
    pub fn new(program: impl AsRef<OsStr>, summary: impl Into<String>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            summary: summary.into(),
            env: Vec::new(),
            plain_env: Vec::new(),
            env_clear_except: None,
            dir: None,
            stdin: None,
            timeout: None,
        }
    }

    /// Builds a command from an argv list such as `nginx.test` in the config.
    pub fn from_argv(argv: &[String], summary: impl Into<String>) -> Self {
        let mut cmd = Cmd::new(argv.first().map(String::as_str).unwrap_or(""), summary);
        cmd.args = argv.iter().skip(1).map(OsString::from).collect();
        cmd
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds a secret variable: passed to the child, never displayed.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: SecretString) -> Self {
        self.env.push((key.as_ref().to_owned(), value));
        self
    }

    /// Adds a variable whose value is not secret (shown with `-v`).
    pub fn plain_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.plain_env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts the child with only the named variables inherited from this process (still
    /// never [`WITHHELD_FROM_CHILDREN`]), for children that must not see the deployer's shell.
    pub fn env_clear_except<I, S>(mut self, keep: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.env_clear_except = Some(keep.into_iter().map(|k| k.as_ref().to_owned()).collect());
        self
    }

    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Feeds `bytes` to the child's stdin (then EOF). The buffer is wiped after the run: it
    /// may be a secret (an identity, a plaintext env file).
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Zeroizing::new(bytes.into()));
        self
    }

    /// Kills the child when it runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The program and its arguments (lossy UTF-8): what tests assert and fakes match on.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The command line as a shell would read it; secret env values are never included.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The child's whole environment, built here and nowhere else: `inherited` (this
    /// process's environment when running) filtered by [`Cmd::env_clear_except`], minus
    /// [`WITHHELD_FROM_CHILDREN`], then the plain variables, then the secret ones (a later
    /// one of the same name wins).
    pub fn child_env(&self, inherited: impl IntoIterator<Item = (OsString, OsString)>) -> ChildEnv {
        let mut env = ChildEnv::new();
        for (name, value) in inherited {
            // Wrapped first, so a withheld value is wiped too when it is dropped here.
            let value = Zeroizing::new(value.into_vec());
            let kept = self
                .env_clear_except
                .as_ref()
                .is_none_or(|keep| keep.contains(&name));
            let withheld = WITHHELD_FROM_CHILDREN.iter().any(|w| name == OsStr::new(w));
            if kept && !withheld {
                env.insert(name, value);
            }
        }
        for (name, value) in &self.plain_env {
            env.insert(name.clone(), Zeroizing::new(value.as_bytes().to_vec()));
        }
        for (name, value) in &self.env {
            env.insert(
                name.clone(),
                Zeroizing::new(value.expose_secret().as_bytes().to_vec()),
            );
        }
        env
    }

    /// The duct expression with its environment and directory; stdio is up to the caller.
    fn base_expression(&self, env: &ChildEnv) -> duct::Expression {
        let mut expr = duct::cmd(&self.program, &self.args).unchecked().full_env(
            env.iter()
                .map(|(k, v)| (k.as_os_str(), OsStr::from_bytes(v))),
        );
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        expr
    }

    /// Runs to completion and returns the output whatever the exit status.
    pub fn run_unchecked(&self) -> Result<Output, ProcessError> {
        #[cfg(test)]
        if let Some(answer) = fake::answer(self) {
            return answer;
        }
        let started = std::time::Instant::now();
        let result = self.run_captured();
        self.finished(&self.display(), started.elapsed(), result)
    }

    /// A captured run's result, traced as `line` and told as ours: the output as text, a kill
    /// at the bound as `TimedOut`, anything else as the spawn's error.
    fn finished(
        &self,
        line: &str,
        took: Duration,
        result: std::io::Result<std::process::Output>,
    ) -> Result<Output, ProcessError> {
        let code = result.as_ref().ok().and_then(|o| o.status.code());
        trace(line, took, &exit_outcome(code));
        match result {
            Ok(out) => Ok(Output {
                code: out.status.code(),
                stdout: lossy(out.stdout),
                stderr: lossy(out.stderr),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(ProcessError::TimedOut {
                summary: self.summary.clone(),
                program: self.program.to_string_lossy().into_owned(),
                after: crate::report::duration(self.timeout.unwrap_or_default()),
            }),
            Err(e) => Err(self.spawn_error(e)),
        }
    }

    /// Spawns with stdout and stderr captured, feeds stdin from our own buffer (so no unwiped
    /// copy of it is left behind), and waits, killing the child past the timeout.
    fn run_captured(&self) -> std::io::Result<std::process::Output> {
        let env = self.child_env(std::env::vars_os());
        let expr = self.base_expression(&env).stdout_capture().stderr_capture();
        let (expr, stdin_writer) = match &self.stdin {
            Some(_) => {
                let (reader, writer) = std::io::pipe()?;
                (expr.stdin_file(reader), Some(writer))
            }
            None => (expr.stdin_null(), None),
        };
        let handle = expr.start();
        // Closes our copy of the pipe's read end: a child that exits without reading all of
        // its stdin ends the writer below with EPIPE instead of blocking it.
        drop(expr);
        drop(env);
        let handle = handle?;
        if let (Some(mut writer), Some(bytes)) = (stdin_writer, &self.stdin) {
            // Not waited for: it ends as soon as the child is gone (EPIPE), unless a
            // grandchild keeps the pipe open unread, and then the bound must not wait on it.
            // Its copy of the bytes is wiped when it ends.
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                use std::io::Write as _;
                // A child that does not read its stdin is not an error of ours.
                let _ = writer.write_all(&bytes);
            });
        }
        wait_with_timeout(handle, self.timeout)
    }

    /// Runs with the terminal: stdin, stdout and stderr are inherited (an editor). Returns the
    /// exit code, `None` when a signal killed the child.
    pub fn run_interactive(&self) -> Result<Option<i32>, ProcessError> {
        let env = self.child_env(std::env::vars_os());
        let expr = self.base_expression(&env);
        drop(env);
        expr.run()
            .map(|out| out.status.code())
            .map_err(|e| self.spawn_error(e))
    }

    /// Replaces this process with the command (exec(2)), stdio inherited, so the child's exit
    /// status and signals are the caller's without a waiting parent. Returns only on failure.
    pub fn exec_replace(&self) -> ProcessError {
        use std::os::unix::process::CommandExt;
        let env = self.child_env(std::env::vars_os());
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, OsStr::from_bytes(v))));
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        drop(env);
        self.spawn_error(command.exec())
    }

    fn spawn_error(&self, e: std::io::Error) -> ProcessError {
        let program = self.program.to_string_lossy().into_owned();
        let summary = self.summary.clone();
        if e.kind() == std::io::ErrorKind::NotFound {
            ProcessError::NotFound { summary, program }
        } else {
            ProcessError::Io {
                summary,
                program,
                source: e,
            }
        }
    }

    /// Runs to completion; a non-zero exit is an error carrying the summary and stderr.
    pub fn run(&self) -> Result<Output, ProcessError> {
        self.checked(self.run_unchecked()?)
    }

    /// A finished run judged by its exit: a non-zero one is the error [`Cmd::failed`] gives.
    fn checked(&self, out: Output) -> Result<Output, ProcessError> {
        if out.success() {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    /// The error for an output the caller judged a failure (e.g. compose v1 exiting 0 with a
    /// usage message).
    pub fn failed(&self, out: &Output) -> ProcessError {
        ProcessError::Failed {
            summary: self.summary.clone(),
            status: match out.code {
                Some(code) => format!("exit {code}"),
                None => "killed by a signal".to_string(),
            },
            stderr: out.stderr.clone(),
            stdout: out.stdout.clone(),
        }
    }
}

/// Waits for the child and for its output pipes to close; past `limit` kills it and reports
/// `TimedOut`. A limit too large for `Instant` to add is no limit.
///
/// The pipes are bounded too: a grandchild the child left behind (`cmd &` in a script, a
/// daemon) can hold them open long after the child exited, and duct's output is complete
/// only at their EOF.
fn wait_with_timeout(
    handle: duct::Handle,
    limit: Option<Duration>,
) -> std::io::Result<std::process::Output> {
    let Some(deadline) = limit.and_then(|l| std::time::Instant::now().checked_add(l)) else {
        return handle.into_output();
    };
    if finished_by(&handle, deadline)? {
        return handle.into_output();
    }
    let _ = handle.kill();
    // Reaps the child; its output is dropped (wiped) unread. A grandchild may still hold the
    // pipes (duct kills only the child): after a moment for the kill to land, that wait is
    // left to a thread of its own, or it would be as unbounded as the one just given up.
    // Polled, not a pidfd: the child may be reaped already, and its PID another process's.
    let grace = std::time::Instant::now() + Duration::from_secs(1);
    if exited_by_polling(&handle, grace).unwrap_or(false) {
        if let Ok(out) = handle.into_output() {
            wipe_output(out);
        }
    } else {
        std::thread::spawn(move || {
            if let Ok(out) = handle.into_output() {
                wipe_output(out);
            }
        });
    }
    Err(std::io::ErrorKind::TimedOut.into())
}

/// Whether the child exited and its output pipes closed by `deadline`.
fn finished_by(handle: &duct::Handle, deadline: std::time::Instant) -> std::io::Result<bool> {
    if !exited_by(handle, deadline)? {
        return Ok(false);
    }
    // The child is reaped: duct's `wait_deadline` then only waits on the threads reading
    // its pipes (a condvar), never on the child (a SIGCHLD handler).
    Ok(handle.wait_deadline(deadline)?.is_some())
}

/// Whether the child exited by `deadline`; when it did, it is reaped (its output pipes may
/// still be open). A pidfd (Linux 5.3+) wakes this thread the moment the child exits: the
/// poll every 20 ms that came before made a 3 ms `nft` cost 20 ms, on the path from
/// the health pass to the switch. Not duct's
/// own `wait_deadline`: that installs a SIGCHLD handler, and every child's exit would then
/// interrupt other threads' socket reads that have a timeout (the health probes, the engine
/// API) with EINTR. Where no pidfd can be had (an older kernel, a seccomp filter), `try_wait`
/// every millisecond at first, backing off to every 20 ms.
fn exited_by(handle: &duct::Handle, deadline: std::time::Instant) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    let pidfd = match handle.pids()[..] {
        [pid] => i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            }),
        _ => None,
    };
    if let Some(pidfd) = pidfd {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(timeout) = rustix::event::Timespec::try_from(left) else {
                break;
            };
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Ok(handle.try_wait()?.is_some()),
                Ok(_) => {
                    // Reaps it: the pidfd is readable only once the child is a zombie. Its
                    // output threads may still be reading (then `None`): not waited for here.
                    let _ = handle.try_wait()?;
                    return Ok(true);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
    }
    exited_by_polling(handle, deadline)
}

/// [`exited_by`] without a pidfd, by duct's `try_wait`: true only once the child exited
/// and its output pipes closed too (a grandchild holding them keeps it false).
fn exited_by_polling(handle: &duct::Handle, deadline: std::time::Instant) -> std::io::Result<bool> {
    let started = std::time::Instant::now();
    loop {
        if handle.try_wait()?.is_some() {
            return Ok(true);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        // A tenth of the time it has run: ≤ 10 % late, every 1 to 20 ms.
        let pace =
            ((now - started) / 10).clamp(Duration::from_millis(1), Duration::from_millis(20));
        std::thread::sleep(pace.min(deadline - now));
    }
}

/// Captured output as text; a raw buffer not handed on is wiped, since a child may echo a secret it was
/// given (`docker compose config` prints the interpolated environment).
fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        // The same buffer, handed on: nothing left behind to wipe.
        Ok(text) => text,
        Err(invalid) => {
            let bytes = Zeroizing::new(invalid.into_bytes());
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

fn wipe_output(out: std::process::Output) {
    drop(Zeroizing::new(out.stdout));
    drop(Zeroizing::new(out.stderr));
}

/// Quotes a word for display the way a POSIX shell would read it back.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Looks a program up on PATH without running it.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_summary_exit_code_and_stderr() {
        let err = Cmd::new("sh", "start green")
            .args(["-c", "echo boom >&2; exit 3"])
            .run()
            .unwrap_err();
        assert_eq!(err.to_string(), "failed to start green (exit 3): boom");
    }

    #[test]
    fn missing_program_is_not_found() {
        let err = Cmd::new("definitely-not-a-program-xyz", "probe")
            .run()
            .unwrap_err();
        assert!(matches!(err, ProcessError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("not found on PATH"));
    }

    #[test]
    fn secret_env_reaches_child_but_not_display() {
        let cmd = Cmd::new("sh", "print secret")
            .args(["-c", "printf %s \"$TOKEN\""])
            .env("TOKEN", SecretString::from("s3cr3t-value"));
        assert!(!cmd.display().contains("s3cr3t"));
        assert!(!format!("{cmd:?}").contains("s3cr3t"));
        assert_eq!(cmd.run().unwrap().stdout, "s3cr3t-value");
    }

    #[test]
    fn env_clear_except_drops_other_variables() {
        let out = Cmd::new("/bin/sh", "print env")
            .args(["-c", "printf %s \"${HOME:-unset}\""])
            .env_clear_except(["PATH"])
            .run()
            .unwrap();
        assert_eq!(out.stdout, "unset");
    }

    #[test]
    fn child_env_never_carries_cutover_secrets() {
        let parent = [
            ("PATH", "/usr/bin"),
            ("CUTOVER_AGE_KEY", "AGE-SECRET-KEY-1PARENTKEY"),
            ("CUTOVER_IDENTITY", "/root/.config/cutover/identity.txt"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let names = |env: &ChildEnv| {
            env.keys()
                .map(|k| k.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let plain = Cmd::new("docker", "probe").plain_env("COMPOSE_PROJECT_NAME", "app");
        let env = plain.child_env(parent.clone());
        assert_eq!(names(&env), ["COMPOSE_PROJECT_NAME", "HOME", "PATH"]);
        // Even when a caller asks to keep them.
        let kept = Cmd::new("docker", "probe")
            .env_clear_except(["PATH", "CUTOVER_AGE_KEY", "CUTOVER_IDENTITY"])
            .env("TOKEN", SecretString::from("s3cr3t"));
        let env = kept.child_env(parent);
        assert_eq!(names(&env), ["PATH", "TOKEN"]);
        assert_eq!(env[OsStr::new("TOKEN")].as_slice(), b"s3cr3t");
        assert!(!env
            .values()
            .any(|v| String::from_utf8_lossy(v).contains("PARENTKEY")));
    }

    #[test]
    fn child_env_applies_plain_then_secret_variables() {
        let parent = [(OsString::from("MODE"), OsString::from("parent"))];
        let cmd = Cmd::new("sh", "probe")
            .plain_env("MODE", "plain")
            .plain_env("ONLY_PLAIN", "1");
        assert_eq!(
            cmd.child_env(parent.clone())[OsStr::new("MODE")].as_slice(),
            b"plain"
        );
        let cmd = cmd.env("MODE", SecretString::from("secret"));
        let env = cmd.child_env(parent);
        assert_eq!(env[OsStr::new("MODE")].as_slice(), b"secret");
        assert_eq!(env[OsStr::new("ONLY_PLAIN")].as_slice(), b"1");
    }

    #[test]
    fn stdin_bytes_reach_the_child() {
        let out = Cmd::new("cat", "echo stdin")
            .stdin_bytes(b"line one\nline two".to_vec())
            .run()
            .unwrap();
        assert_eq!(out.stdout, "line one\nline two");
    }

    /// A child that exits without reading a stdin larger than a pipe holds must not hang us.
    #[test]
    fn child_ignoring_a_large_stdin_does_not_block() {
        let out = Cmd::new("true", "ignore stdin")
            .stdin_bytes(vec![b'x'; 1 << 20])
            .timeout(Duration::from_secs(20))
            .run()
            .unwrap();
        assert!(out.success());
    }

    #[test]
    fn a_timeout_too_large_for_instant_is_no_limit() {
        let out = Cmd::new("true", "probe")
            .timeout(Duration::MAX)
            .run()
            .unwrap();
        assert!(out.success());
    }

    #[test]
    fn the_wait_for_a_child_sees_its_exit_and_its_deadline_with_and_without_a_pidfd() {
        use std::time::{Duration, Instant};
        for wait in [exited_by, exited_by_polling] {
            let quick = duct::cmd!("sleep", "0.05").unchecked().start().unwrap();
            assert!(wait(&quick, Instant::now() + Duration::from_secs(30)).unwrap());
            assert!(quick.into_output().unwrap().status.success());
            let slow = duct::cmd!("sleep", "30").unchecked().start().unwrap();
            assert!(!wait(&slow, Instant::now() + Duration::from_millis(50)).unwrap());
            slow.kill().unwrap();
        }
    }

    /// Runs `sh -c script hold` with a 300 ms bound, where `hold` is a FIFO a grandchild the
    /// script leaves waits on, and asserts that the run timed out within its bound, not when
    /// the grandchild let go (which this lets happen only after 20 s, so that a wait that
    /// does not hold its bound ends the test instead of hanging it).
    fn assert_the_bound_holds_with_a_grandchild_left(script: &str, stdin: Option<Vec<u8>>) {
        use std::os::unix::fs::OpenOptionsExt as _;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let hold = dir.path().join("hold");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &hold,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        // Lets the grandchild go (it waits for a writer to open the FIFO); false: none waits.
        let release = |hold: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(hold)
                .is_ok()
        };
        let released = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            let (done, wait) = std::sync::mpsc::channel::<()>();
            scope.spawn(|| {
                let wait = wait;
                if wait.recv_timeout(Duration::from_secs(20)).is_err() {
                    released.store(true, Ordering::SeqCst);
                    while !release(&hold) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            });
            let mut cmd = Cmd::new("sh", "leave a grandchild")
                .args(["-c", script])
                .arg(&hold)
                .timeout(Duration::from_millis(300));
            if let Some(bytes) = stdin {
                cmd = cmd.stdin_bytes(bytes);
            }
            let result = cmd.run_unchecked();
            let _ = done.send(());
            result
        });
        assert!(
            !released.load(Ordering::SeqCst),
            "the wait outlasted its bound until the grandchild let go: {result:?}"
        );
        assert!(
            matches!(result, Err(ProcessError::TimedOut { .. })),
            "{result:?}"
        );
        assert!(release(&hold), "the grandchild no longer waits on the FIFO");
    }

    /// The child exits at once and leaves a grandchild holding its stdout: the child's
    /// bound is still the wait's bound.
    #[test]
    fn a_grandchild_holding_the_output_pipe_does_not_outlast_the_bound() {
        assert_the_bound_holds_with_a_grandchild_left(r#"read x < "$0" & echo started"#, None);
    }

    /// As above, the grandchild holding the stdin pipe too (fd 3; the background job's own
    /// stdin is /dev/null), unread, with more bytes for it than a pipe holds: the writer of
    /// those bytes does not outlast the bound either.
    #[test]
    fn a_grandchild_holding_an_unread_stdin_does_not_outlast_the_bound() {
        assert_the_bound_holds_with_a_grandchild_left(
            r#"exec 3<&0; read x < "$0" & exit 0"#,
            Some(vec![b'x'; 1 << 20]),
        );
    }

    /// The bounded wait never installs a SIGCHLD handler (duct's own `wait_deadline` on a
    /// running child would: other threads' timed socket reads would then fail with EINTR).
    #[test]
    fn a_bounded_wait_never_catches_sigchld() {
        for script in ["exit 0", "sleep 5", "kill -9 $$", "sleep 5 & exit 0"] {
            let _ = Cmd::new("sh", "run a script")
                .args(["-c", script])
                .timeout(Duration::from_millis(200))
                .run_unchecked();
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
            .unwrap();
        let sigchld = rustix::process::Signal::CHILD.as_raw();
        assert_eq!(
            caught & (1 << (sigchld - 1)),
            0,
            "SIGCHLD is caught: {status}"
        );
    }

    #[test]
    fn a_child_killed_by_a_signal_is_reported_killed_not_timed_out() {
        let out = Cmd::new("sh", "kill itself")
            .args(["-c", "echo before; kill -9 $$"])
            .timeout(Duration::from_secs(30))
            .run_unchecked()
            .unwrap();
        assert_eq!(out.code, None);
        assert_eq!(out.stdout, "before\n");
    }

    #[test]
    fn a_zero_bound_or_a_huge_one_still_ends_the_wait() {
        let err = Cmd::new("sleep", "sleep")
            .arg("5")
            .timeout(Duration::ZERO)
            .run_unchecked()
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
        let out = Cmd::new("echo", "echo")
            .arg("hi")
            .timeout(Duration::from_secs(1 << 62))
            .run()
            .unwrap();
        assert_eq!(out.stdout, "hi\n");
    }

    #[test]
    fn timeout_kills_child() {
        let err = Cmd::new("sleep", "sleep")
            .arg("5")
            .timeout(Duration::from_millis(100))
            .run()
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn display_quotes_words() {
        let cmd = Cmd::new("nginx", "reload").args(["-s", "reload", "-g", "pid /tmp/a b;"]);
        assert_eq!(cmd.display(), "nginx -s reload -g 'pid /tmp/a b;'");
    }
}
