//! The one way cutover runs a subprocess.
//!
//! Every command carries a human summary ("start green", "test nginx config"), so a failure
//! reads `failed to start green (exit 1): <stderr>` instead of a bare exit status, as in
//! cargo-dist. Output is always captured; nothing a child prints reaches the terminal unless a
//! caller shows it. Environment values given through [`Cmd::env`] never appear in
//! [`Cmd::display`] or in errors, since they may be decrypted secrets.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Receives every finished subprocess (its display line, how long it took, its exit code),
/// for `-v`. The command layer installs it; this module never prints.
pub type Trace = Box<dyn Fn(&str, Duration, Option<i32>) + Send + Sync>;

static TRACE: std::sync::OnceLock<Trace> = std::sync::OnceLock::new();

/// Installs the trace hook (once per process).
pub fn set_trace(trace: Trace) {
    let _ = TRACE.set(trace);
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
    stdin: Option<Vec<u8>>,
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

    /// Starts the child with only the named variables inherited from this process, so a
    /// secret in cutover's own environment (CUTOVER_AGE_KEY) does not leak into the child.
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

    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Kills the child when it runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command line as a shell would read it; secret env values are never included.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn expression(&self) -> duct::Expression {
        let expr = duct::cmd(&self.program, &self.args)
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        let expr = self.with_env_and_dir(expr);
        match &self.stdin {
            Some(bytes) => expr.stdin_bytes(bytes.clone()),
            None => expr.stdin_null(),
        }
    }

    fn with_env_and_dir(&self, mut expr: duct::Expression) -> duct::Expression {
        if let Some(keep) = &self.env_clear_except {
            expr = expr
                .full_env(std::env::vars_os().filter(|(k, _)| keep.iter().any(|want| want == k)));
        }
        for (k, v) in &self.plain_env {
            expr = expr.env(k, v);
        }
        for (k, v) in &self.env {
            expr = expr.env(k, v.expose_secret());
        }
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        expr
    }

    /// Runs to completion and returns the output whatever the exit status.
    pub fn run_unchecked(&self) -> Result<Output, ProcessError> {
        let expr = self.expression();
        let started = std::time::Instant::now();
        let result = match self.timeout {
            None => expr.run(),
            Some(limit) => run_with_timeout(expr, limit),
        };
        if let Some(trace) = TRACE.get() {
            let code = result.as_ref().ok().and_then(|o| o.status.code());
            trace(&self.display(), started.elapsed(), code);
        }
        match result {
            Ok(out) => Ok(Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ProcessError::NotFound {
                summary: self.summary.clone(),
                program: self.program.to_string_lossy().into_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(ProcessError::TimedOut {
                summary: self.summary.clone(),
                program: self.program.to_string_lossy().into_owned(),
                after: crate::report::duration(self.timeout.unwrap_or_default()),
            }),
            Err(source) => Err(ProcessError::Io {
                summary: self.summary.clone(),
                program: self.program.to_string_lossy().into_owned(),
                source,
            }),
        }
    }

    /// Runs with the terminal: stdin, stdout and stderr are inherited (an editor). Returns the
    /// exit code, `None` when a signal killed the child.
    pub fn run_interactive(&self) -> Result<Option<i32>, ProcessError> {
        let expr = self.with_env_and_dir(duct::cmd(&self.program, &self.args).unchecked());
        expr.run()
            .map(|out| out.status.code())
            .map_err(|e| self.spawn_error(e))
    }

    /// Replaces this process with the command (exec(2)), stdio inherited, so the child's exit
    /// status and signals are the caller's without a waiting parent. Returns only on failure.
    pub fn exec_replace(&self) -> ProcessError {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args);
        if let Some(keep) = &self.env_clear_except {
            command.env_clear();
            command.envs(std::env::vars_os().filter(|(k, _)| keep.iter().any(|want| want == k)));
        }
        command.envs(self.plain_env.iter().map(|(k, v)| (k, v)));
        for (k, v) in &self.env {
            command.env(k, v.expose_secret());
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
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
        let out = self.run_unchecked()?;
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

/// A child started with [`Cmd::start_streaming`]: its stdout and stderr are this process's
/// (streamed as they come), its stdin a pipe the caller writes to, and it runs in its own
/// process group so a Ctrl-C on the terminal reaches only cutover, which decides what to
/// forward.
pub struct Streaming {
    handle: duct::Handle,
    stdin: Option<std::io::PipeWriter>,
    summary: String,
    program: String,
}

impl Streaming {
    /// The child's stdin; `None` after [`Streaming::close_stdin`].
    pub fn stdin(&mut self) -> Option<&mut std::io::PipeWriter> {
        self.stdin.as_mut()
    }

    /// Closes the child's stdin (it reads EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit code once the child has exited (`Some(None)` when a signal killed it).
    pub fn try_wait(&self) -> Result<Option<Option<i32>>, ProcessError> {
        self.handle
            .try_wait()
            .map(|done| done.map(|out| out.status.code()))
            .map_err(|source| ProcessError::Io {
                summary: self.summary.clone(),
                program: self.program.clone(),
                source,
            })
    }

    /// SIGKILLs the child.
    pub fn kill(&self) {
        let _ = self.handle.kill();
    }

    pub fn pids(&self) -> Vec<u32> {
        self.handle.pids()
    }
}

impl Cmd {
    /// Starts the command with stdout and stderr inherited and stdin a pipe the caller keeps
    /// open (see [`Streaming`]).
    pub fn start_streaming(&self) -> Result<Streaming, ProcessError> {
        let (reader, writer) = std::io::pipe().map_err(|e| self.spawn_error(e))?;
        let expr = self
            .with_env_and_dir(duct::cmd(&self.program, &self.args).unchecked())
            .stdin_file(reader)
            .before_spawn(|command| {
                use std::os::unix::process::CommandExt;
                command.process_group(0);
                Ok(())
            });
        let handle = expr.start().map_err(|e| self.spawn_error(e))?;
        Ok(Streaming {
            handle,
            stdin: Some(writer),
            summary: self.summary.clone(),
            program: self.program.to_string_lossy().into_owned(),
        })
    }
}

fn run_with_timeout(
    expr: duct::Expression,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    let handle = expr.start()?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(out) = handle.try_wait()? {
            return Ok(out.clone());
        }
        if std::time::Instant::now() >= deadline {
            let _ = handle.kill();
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
