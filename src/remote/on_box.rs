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
//! The worker's stdin carries, with `--age-key-stdin`, first a line `key <N>` and N bytes:
//! the age identity, held in memory only (never argv, environment or a file); then control
//! lines `int` / `term`, raised in the worker as SIGINT / SIGTERM, so a deploy reacts as it
//! does to a local Ctrl-C (before the switch: tear down, exit 130; after: complete). The
//! session's stdin reaching EOF (the connection is gone) and the relay's own SIGTERM or
//! SIGHUP become `term`. So does a session that goes silent: the caller sends `ping` every
//! [`HEARTBEAT`], and a relay that hears nothing for [`SILENCE_LIMIT`] takes the connection
//! for dropped, since sshd may not notice a vanished client (no FIN) for hours.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use zeroize::Zeroizing;

use crate::process::Cmd;

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

/// What the session's stdin said.
enum Control {
    Interrupt,
    Terminate,
    /// `ping`: the caller is still there.
    Alive,
}

/// The relay: runs this invocation as a worker and carries its stdio over the session.
pub fn relay(age_key_stdin: bool) -> anyhow::Result<ExitCode> {
    let mut stdin = std::io::stdin().lock();
    let key = if age_key_stdin {
        Some(read_key(&mut stdin)?)
    } else {
        None
    };
    drop(stdin);
    let flags = [
        (
            signal_hook::consts::SIGINT,
            Arc::new(AtomicBool::new(false)),
        ),
        (
            signal_hook::consts::SIGTERM,
            Arc::new(AtomicBool::new(false)),
        ),
        (
            signal_hook::consts::SIGHUP,
            Arc::new(AtomicBool::new(false)),
        ),
    ];
    for (signal, flag) in &flags {
        signal_hook::flag::register(*signal, Arc::clone(flag))
            .context("could not install signal handlers")?;
    }
    let exe = std::env::current_exe().context("could not find the running cutover binary")?;
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .map(|a| {
            if a == "--on-box" {
                WORKER_FLAG.into()
            } else {
                a
            }
        })
        .collect();
    let mut worker = Cmd::new(&exe, "run the cutover worker on the box")
        .args(args)
        .start_streaming(true)?;
    if let (Some(key), Some(stdin)) = (&key, worker.stdin()) {
        let mut framed = Zeroizing::new(format!("key {}\n", key.len()).into_bytes());
        framed.extend_from_slice(key.as_bytes());
        // A worker that died at once says why through its exit status.
        let _ = stdin.write_all(&framed).and_then(|()| stdin.flush());
    }
    drop(key);
    let copies = [
        worker
            .stdout
            .take()
            .map(|from| std::thread::spawn(move || copy_lossy(from, std::io::stdout()))),
        worker
            .stderr
            .take()
            .map(|from| std::thread::spawn(move || copy_lossy(from, std::io::stderr()))),
    ];
    let (tx, controls) = mpsc::channel();
    std::thread::spawn(move || watch_session(tx));
    let mut last_heard = Instant::now();
    let mut silent = false;
    let status = loop {
        if let Some(status) = worker.try_wait()? {
            break status;
        }
        let mut lines: Vec<&str> = Vec::new();
        // 20 ms, not less: on a small box (an emulated 1 GiB VM, 2 vCPUs) a 5 ms poll kept
        // this otherwise idle relay at ~11% of a CPU for a whole bootstrap.
        if let Ok(control) = controls.recv_timeout(RELAY_POLL) {
            last_heard = Instant::now();
            match control {
                Control::Interrupt => lines.push("int\n"),
                Control::Terminate => lines.push("term\n"),
                Control::Alive => {}
            }
        }
        if !silent && last_heard.elapsed() > SILENCE_LIMIT {
            silent = true;
            lines.push("term\n");
        }
        for (signal, flag) in &flags {
            if flag.swap(false, Ordering::SeqCst) {
                lines.push(if *signal == signal_hook::consts::SIGINT {
                    "int\n"
                } else {
                    "term\n"
                });
            }
        }
        if let Some(stdin) = worker.stdin() {
            for line in lines {
                let _ = stdin
                    .write_all(line.as_bytes())
                    .and_then(|()| stdin.flush());
            }
        }
    };
    // The copies end at the worker's EOF; bounded, should something it started keep them.
    let deadline = Instant::now() + Duration::from_secs(5);
    for copy in copies.into_iter().flatten() {
        while !copy.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if copy.is_finished() {
            let _ = copy.join();
        }
    }
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
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

/// Reads the session's stdin: control lines, then EOF (the connection is gone).
fn watch_session(tx: mpsc::Sender<Control>) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        let control = match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Control::Terminate);
                return;
            }
            Ok(_) => match line.trim() {
                "int" => Control::Interrupt,
                "term" => Control::Terminate,
                _ => Control::Alive,
            },
        };
        if tx.send(control).is_err() {
            return;
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
        let key = read_key(&mut std::io::stdin().lock())?;
        crate::secrets::keys::set_stdin_identity(key);
    }
    STDIN_IS_RELAY.store(true, Ordering::SeqCst);
    std::thread::spawn(watch_relay);
    body()
}

fn watch_relay() {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        let (signal, last) = match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => (signal_hook::consts::SIGTERM, true),
            Ok(_) => match line.trim() {
                "int" => (signal_hook::consts::SIGINT, false),
                "term" => (signal_hook::consts::SIGTERM, false),
                _ => continue,
            },
        };
        // With no handler installed (status, history…) this ends the worker, as locally.
        let _ = signal_hook::low_level::raise(signal);
        if last {
            return;
        }
    }
}

fn read_key(stdin: &mut impl BufRead) -> anyhow::Result<Zeroizing<String>> {
    let mut header = String::new();
    stdin
        .read_line(&mut header)
        .context("could not read the age identity from stdin")?;
    let len: usize = match header.trim_end().strip_prefix("key ") {
        Some(n) => n.parse().context("bad `key <N>` header on stdin")?,
        None => bail!("--age-key-stdin: expected a `key <N>` line on stdin"),
    };
    if len > 64 * 1024 {
        bail!("--age-key-stdin: an identity of {len} bytes is not plausible");
    }
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    stdin
        .read_exact(&mut bytes)
        .context("stdin ended inside the age identity")?;
    let text = std::str::from_utf8(&bytes).context("the age identity on stdin is not UTF-8")?;
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_header_then_bytes() {
        let mut input = std::io::Cursor::new(b"key 5\nAB\nCDint\n".to_vec());
        assert_eq!(read_key(&mut input).unwrap().as_str(), "AB\nCD");
        let mut rest = String::new();
        input.read_line(&mut rest).unwrap();
        assert_eq!(rest, "int\n");
    }

    #[test]
    fn key_without_header_is_refused() {
        let mut input = std::io::Cursor::new(b"AGE-SECRET-KEY-1...\n".to_vec());
        assert!(read_key(&mut input).is_err());
    }

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
