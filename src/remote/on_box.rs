//! The box's side of `cutover --host`: the same run as a local one, plus the SSH channel.
//!
//! Two processes, so that a dropped connection can never break the run mid-switch:
//!
//! - the **relay** (`--on-box`), whose stdio is the SSH session: it starts the same argv as
//!   the worker (`--on-box-child`) with every stdio a pipe, copies the worker's stdout and
//!   stderr to the session (dropping what can no longer be written, so the worker never sees
//!   a broken pipe), and turns what arrives on the session's stdin, and its own signals, into
//!   control lines for the worker;
//! - the **worker** (`--on-box-child`), which runs the command exactly as locally.
//!
//! Both stdins carry `Control` lines (`control.rs`). With `--age-key-stdin` the identity
//! comes first, held in memory only (never argv, environment or a file); then `int` /
//! `term`, raised in the worker as SIGINT / SIGTERM, so a deploy reacts as it does to a local
//! Ctrl-C (before the switch: tear down, exit 130; after: complete). The session's stdin
//! reaching EOF (the connection is gone) and the relay's own SIGINT, SIGTERM or SIGHUP become
//! `int` / `term` too. So does a session that goes silent: the caller sends `ping` every
//! [`HEARTBEAT`], and a relay that hears no control line for [`SILENCE_LIMIT`] takes the
//! connection for dropped (`term`), since sshd may not notice a vanished client (no FIN) for
//! hours. A line that does not decode is ignored on both sides: it is neither a heartbeat nor
//! a signal.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::control::{self, Control, Signal};
use super::signals::Signals;
use crate::process::{Cmd, Streaming};

/// How often the caller's side says it is still there.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Silence on the session for this long counts as a dropped connection.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// How often the relay looks for the worker's exit, control lines and signals.
const RELAY_POLL: Duration = Duration::from_millis(20);

/// Set in the worker: its stdin is the relay's control channel, which no child may read.
static STDIN_IS_RELAY: AtomicBool = AtomicBool::new(false);

/// True in the box's worker (`--host`): a child must get an empty stdin, never this one
/// (`cutover run` and `cutover exec` there run without a TTY and without the caller's stdin).
pub fn stdin_is_relay() -> bool {
    STDIN_IS_RELAY.load(Ordering::SeqCst)
}

/// The hidden flag the relay gives the worker instead of its own `--on-box`.
pub const WORKER_FLAG: &str = "--on-box-child";

/// The relay: runs this invocation as a worker and carries its stdio over the session.
pub fn relay(age_key_stdin: bool) -> anyhow::Result<ExitCode> {
    let key = if age_key_stdin {
        Some(control::read_identity(&mut std::io::stdin().lock())?)
    } else {
        None
    };
    let signals = Signals::install()?;
    let mut worker = start_worker(key)?;
    let copies = copy_output(&mut worker);
    let (tx, controls) = mpsc::channel();
    std::thread::spawn(move || watch_session(tx));
    let status = pump_controls(&mut worker, &controls, &signals)?;
    join_bounded(copies, Duration::from_secs(5));
    Ok(exit_code(status))
}

/// Starts this same argv as the worker, every stdio a pipe, and hands it the identity.
fn start_worker(key: Option<Zeroizing<String>>) -> anyhow::Result<Streaming> {
    let exe = std::env::current_exe().context("could not find the running cutover binary")?;
    // Only the first `--on-box`, which the caller put right after the binary: a later one
    // is a word of the command itself (`run -- …`).
    let mut swapped = false;
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .map(|a| {
            if !swapped && a == "--on-box" {
                swapped = true;
                WORKER_FLAG.into()
            } else {
                a
            }
        })
        .collect();
    let mut worker = Cmd::new(&exe, "run the cutover worker on the box")
        .args(args)
        .start_streaming(true)?;
    if let Some(key) = key {
        control::send(&mut worker, &control::identity_frame(&key));
    }
    Ok(worker)
}

/// Threads copying the worker's stdout and stderr to the session's.
fn copy_output(worker: &mut Streaming) -> [Option<JoinHandle<()>>; 2] {
    [
        worker
            .stdout
            .take()
            .map(|from| std::thread::spawn(move || copy_lossy(from, std::io::stdout()))),
        worker
            .stderr
            .take()
            .map(|from| std::thread::spawn(move || copy_lossy(from, std::io::stderr()))),
    ]
}

/// Until the worker exits: passes the session's signals and the relay's own on to it, and a
/// `term` once the session has been silent for [`SILENCE_LIMIT`].
fn pump_controls(
    worker: &mut Streaming,
    controls: &mpsc::Receiver<Control>,
    signals: &Signals,
) -> anyhow::Result<ExitStatus> {
    let mut last_heard = Instant::now();
    let mut silent = false;
    loop {
        if let Some(status) = worker.try_wait()? {
            return Ok(status);
        }
        let mut forward: Vec<Signal> = Vec::new();
        // 20 ms, not less: on a small box (an emulated 1 GiB VM, 2 vCPUs) a 5 ms poll kept
        // this otherwise idle relay at ~11% of a CPU for a whole bootstrap.
        if let Ok(control) = controls.recv_timeout(RELAY_POLL) {
            last_heard = Instant::now();
            match control {
                Control::Signal(signal) => forward.push(signal),
                Control::Heartbeat => {}
                // Read before this loop began; one now is out of place, and not a signal.
                Control::Identity { .. } => {}
            }
        }
        if !silent && last_heard.elapsed() > SILENCE_LIMIT {
            silent = true;
            forward.push(Signal::Terminate);
        }
        forward.extend(signals.take());
        for signal in forward {
            control::send(worker, Control::Signal(signal).encode().as_bytes());
        }
    }
}

/// Waits up to `limit` for the copies, which end at the worker's EOF; something the worker
/// started may hold its pipes open longer.
fn join_bounded(copies: [Option<JoinHandle<()>>; 2], limit: Duration) {
    let deadline = Instant::now() + limit;
    for copy in copies.into_iter().flatten() {
        while !copy.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if copy.is_finished() {
            let _ = copy.join();
        }
    }
}

/// The worker's exit as ours: its code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Copies until EOF; once `to` fails (the session is gone) it keeps reading and drops the
/// rest, so the writer on the other end never blocks or sees a broken pipe.
fn copy_lossy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    let mut broken = false;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) if !broken => {
                broken = to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err();
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads the session's stdin: control lines, then EOF (the connection is gone: `term`).
fn watch_session(tx: mpsc::Sender<Control>) {
    let stdin = std::io::stdin();
    loop {
        match control::read(&mut stdin.lock()) {
            Some(Ok(control)) => {
                if tx.send(control).is_err() {
                    return;
                }
            }
            // Garbled: not the caller's heartbeat (which keeps coming), nor a signal.
            Some(Err(_)) => {}
            None => {
                let _ = tx.send(Control::Signal(Signal::Terminate));
                return;
            }
        }
    }
}

/// The worker: takes the identity from stdin if sent, turns control lines into signals, and
/// runs `body` (the command, exactly as locally).
pub fn worker(
    age_key_stdin: bool,
    body: impl FnOnce() -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    if age_key_stdin {
        let key = control::read_identity(&mut std::io::stdin().lock())?;
        crate::secrets::keys::set_stdin_identity(key);
    }
    STDIN_IS_RELAY.store(true, Ordering::SeqCst);
    std::thread::spawn(watch_relay);
    body()
}

/// Raises each signal the relay sends in this process; the relay gone counts as `term`.
fn watch_relay() {
    let stdin = std::io::stdin();
    loop {
        let (signal, last) = match control::read(&mut stdin.lock()) {
            Some(Ok(Control::Signal(signal))) => (signal, false),
            // The relay sends neither of these, and a garbled line is no signal.
            Some(Ok(Control::Heartbeat | Control::Identity { .. }) | Err(_)) => continue,
            None => (Signal::Terminate, true),
        };
        // With no handler installed (status, history…) this ends the worker, as locally.
        let _ = signal_hook::low_level::raise(signal.number());
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_writer_does_not_stop_the_draining() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut input = std::io::Cursor::new(vec![7u8; 100_000]);
        copy_lossy(&mut input, Broken);
        assert_eq!(input.position(), 100_000);
    }
}
