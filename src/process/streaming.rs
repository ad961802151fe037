//! Children that run alongside cutover with a live stdin: the remote relay's `ssh` session,
//! whose stdin carries control lines (a forwarded signal, the age key) while its output
//! streams back as it comes; and `cutover run`'s one-off container, attached to the terminal. Kept apart from the run-to-completion path in `mod.rs`, which
//! captures everything and applies a timeout.

use super::{Cmd, ProcessError};

/// A child started with [`Cmd::start_streaming`]: stdin is a pipe the caller keeps open and
/// writes to; stdout and stderr are either this process's (streamed as they come) or pipes
/// the caller reads. It runs in its own process group, so a Ctrl-C on the terminal reaches
/// only cutover, which decides what to forward.
pub struct Streaming {
    handle: duct::Handle,
    stdin: Option<std::io::PipeWriter>,
    /// With `capture_output`: the child's stdout and stderr.
    pub stdout: Option<std::io::PipeReader>,
    pub stderr: Option<std::io::PipeReader>,
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

    /// The exit status once the child has exited.
    pub fn try_wait(&self) -> Result<Option<std::process::ExitStatus>, ProcessError> {
        self.handle
            .try_wait()
            .map(|done| done.map(|out| out.status))
            .map_err(|source| ProcessError::Io {
                summary: self.summary.clone(),
                program: self.program.clone(),
                source,
            })
    }
}

impl Cmd {
    /// Starts the command with stdin a pipe the caller keeps open, and stdout/stderr
    /// inherited, or piped to the caller with `capture_output` (see [`Streaming`]). The
    /// environment follows [`Cmd::child_env`]; no timeout applies.
    pub fn start_streaming(&self, capture_output: bool) -> Result<Streaming, ProcessError> {
        let pipe = || std::io::pipe().map_err(|e| self.spawn_error(e));
        let env = self.child_env(std::env::vars_os());
        let (stdin_reader, stdin_writer) = pipe()?;
        let mut expr = self
            .base_expression(&env)
            .stdin_file(stdin_reader)
            .before_spawn(|command| {
                use std::os::unix::process::CommandExt;
                command.process_group(0);
                Ok(())
            });
        let (mut stdout, mut stderr) = (None, None);
        if capture_output {
            let (out_reader, out_writer) = pipe()?;
            let (err_reader, err_writer) = pipe()?;
            expr = expr.stdout_file(out_writer).stderr_file(err_writer);
            stdout = Some(out_reader);
            stderr = Some(err_reader);
        }
        let handle = expr.start();
        // Closes our copies of the child's ends: its exit then ends our readers with EOF.
        drop(expr);
        drop(env);
        Ok(Streaming {
            handle: handle.map_err(|e| self.spawn_error(e))?,
            stdin: Some(stdin_writer),
            stdout,
            stderr,
            summary: self.summary.clone(),
            program: self.program.to_string_lossy().into_owned(),
        })
    }
}

/// What a [`Cmd::run_until`] child reads on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// EOF at once.
    Closed,
    /// This process's stdin, copied through (a pipe into `docker exec -i`).
    Forward,
}

impl Streaming {
    /// Kills the child (its process group's leader) and reaps it.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.handle.kill().map_err(|source| ProcessError::Io {
            summary: self.summary.clone(),
            program: self.program.clone(),
            source,
        })
    }
}

impl Cmd {
    /// Runs with stdout and stderr inherited (output streams as it comes) until the child
    /// exits, or until `stop` is set (SIGINT/SIGTERM), when it is killed. Returns the exit
    /// status, `None` when stopped. The child has its own process group, so a Ctrl-C reaches
    /// only cutover, which decides (on the box, a forwarded signal arrives the same way).
    pub fn run_until(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        stdin: Stdin,
    ) -> Result<Option<std::process::ExitStatus>, ProcessError> {
        let mut child = self.start_streaming(false)?;
        // Closed: dropping our end here is the child's EOF.
        if let (Stdin::Forward, Some(mut to)) = (stdin, child.stdin.take()) {
            // Ends with our stdin's EOF, or when the child stops reading.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
            });
        }
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                child.kill()?;
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Cmd {
    /// Runs attached to this process's stdout and stderr (a terminal or pipes), and to its
    /// stdin unless `stdin` is false (on the box, cutover's stdin is the relay's control
    /// channel and must not reach the child). Returns the exit code, `None` for a signal.
    pub fn run_attached(&self, stdin: bool) -> Result<Option<i32>, ProcessError> {
        let env = self.child_env(std::env::vars_os());
        let mut expr = self.base_expression(&env);
        if !stdin {
            expr = expr.stdin_null();
        }
        drop(env);
        expr.run()
            .map(|out| out.status.code())
            .map_err(|e| self.spawn_error(e))
    }
}
