//! The box's side of `cutover --host`: the same run as a local one, plus the SSH channel.
//!
//! stdin is the channel from the machine that started us:
//! - with `--age-key-stdin`, first a line `key <N>` and then N bytes: the age identity, held
//!   in memory only (never argv, environment or a file);
//! - then control lines, `int` or `term`: the local Ctrl-C / SIGTERM, raised here as the same
//!   signal so a deploy reacts exactly as it does locally;
//! - EOF means the connection is gone: raised as SIGTERM (before the switch the new color is
//!   torn down, after it the deploy completes). SIGHUP is treated the same.
//!
//! stdout and stderr are relayed through pipes by two threads that drop what cannot be
//! written, so a dropped connection (EPIPE on sshd's pipes) never makes a `println!` panic in
//! the middle of a switch.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use zeroize::Zeroizing;

/// Runs `body` as the box side of a remote invocation.
pub fn run(
    age_key_stdin: bool,
    body: impl FnOnce() -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let relays = [Relay::install(1)?, Relay::install(2)?];
    let mut stdin = std::io::stdin().lock();
    if age_key_stdin {
        let key = read_key(&mut stdin)?;
        crate::secrets::keys::set_stdin_identity(key);
    }
    drop(stdin);
    // SAFETY: the action only calls raise(2), which is async-signal-safe.
    let _ = unsafe {
        signal_hook::low_level::register(signal_hook::consts::SIGHUP, || {
            libc::raise(libc::SIGTERM);
        })
    };
    std::thread::spawn(watch_channel);
    let result = body();
    for relay in relays {
        relay.finish();
    }
    result
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

fn watch_channel() {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        let signal = match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => libc::SIGTERM,
            Ok(_) => match line.trim() {
                "int" => libc::SIGINT,
                "term" => libc::SIGTERM,
                _ => continue,
            },
        };
        // SAFETY: raise(2) has no memory-safety preconditions.
        unsafe {
            libc::raise(signal);
        }
        if line.is_empty() {
            return;
        }
    }
}

/// fd 1 or 2 replaced by a pipe whose other end a thread copies to the original descriptor.
struct Relay {
    fd: i32,
    original: OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

impl Relay {
    fn install(fd: i32) -> anyhow::Result<Relay> {
        let dup = |fd: i32| -> anyhow::Result<OwnedFd> {
            // SAFETY: dup(2) on a descriptor we own for the life of the process.
            let new = unsafe { libc::dup(fd) };
            if new < 0 {
                bail!("dup({fd}): {}", std::io::Error::last_os_error());
            }
            // SAFETY: `new` is a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(new) })
        };
        let original = dup(fd)?;
        let out = dup(fd)?;
        let (mut reader, writer) = std::io::pipe().context("could not create a pipe")?;
        // SAFETY: dup2 onto our own stdout/stderr.
        if unsafe { libc::dup2(writer.as_raw_fd(), fd) } < 0 {
            bail!("dup2 onto fd {fd}: {}", std::io::Error::last_os_error());
        }
        drop(writer);
        let thread = std::thread::spawn(move || {
            let mut out = std::fs::File::from(out);
            let mut buf = [0u8; 8192];
            let mut broken = false;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if !broken && out.write_all(&buf[..n]).is_err() {
                            // The connection is gone: keep draining so writers never block.
                            broken = true;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Relay {
            fd,
            original,
            thread,
        })
    }

    /// Puts the original descriptor back (closing the pipe) and waits for the copy to drain.
    fn finish(self) {
        if self.fd == 1 {
            let _ = std::io::stdout().flush();
        }
        // SAFETY: dup2 of a descriptor we own onto our own stdout/stderr.
        unsafe {
            libc::dup2(self.original.as_raw_fd(), self.fd);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
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
}
