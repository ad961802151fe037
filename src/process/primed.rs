//! A child started before the moment it is needed, blocked reading its stdin: when that
//! moment comes, only its input is left to give it. The nft switch's lead is the one user: an
//! `nft -f -` started when the health gate starts has been exec'd, linked and set up by the
//! time the gate passes, so the pass → lead path holds the kernel's work, not a process start
//! (5–7 ms of the 10–13 an `nft` costs inside a deploy, measured in BENCHMARKS.md).
//!
//! A primed child that is never fed gets an empty stdin (EOF) when dropped: a command that
//! reads its input to the end, as `nft -f -` does, then does nothing. So does one whose parent
//! dies, since the pipe's only writer is ours (close-on-exec: no other child inherits it).

use std::io::Write as _;
use std::time::Instant;

use super::{Cmd, Output, ProcessError};

/// A started child waiting on its stdin (see the module doc).
pub struct Primed {
    cmd: Cmd,
    /// `None` once fed or dropped.
    running: Option<(duct::Handle, std::io::PipeWriter)>,
    /// When it was started: a child dropped unfed is traced with the time it waited.
    primed_at: Instant,
}

/// Input up to this size is written on the caller's thread: an empty pipe holds at least a
/// page, so the write cannot block. Larger input goes through a thread, as [`Cmd::run`]'s does.
const INLINE_INPUT: usize = 4096;

impl Cmd {
    /// Starts the command with stdout and stderr captured and its stdin a pipe this process
    /// holds; [`Primed::feed`] gives it its input and waits. The command's timeout counts from
    /// the feed, not from the start.
    pub fn prime(&self) -> Result<Primed, ProcessError> {
        let env = self.child_env(std::env::vars_os());
        let (reader, writer) = std::io::pipe().map_err(|e| self.spawn_error(e))?;
        let expr = self
            .base_expression(&env)
            .stdout_capture()
            .stderr_capture()
            .stdin_file(reader);
        let primed_at = Instant::now();
        let handle = expr.start();
        // Our copy of the read end goes: a child gone early ends a feed with EPIPE.
        drop(expr);
        drop(env);
        let handle = handle.map_err(|e| self.spawn_error(e))?;
        Ok(Primed {
            cmd: self.clone(),
            running: Some((handle, writer)),
            primed_at,
        })
    }
}

impl Primed {
    /// Writes `input` as the child's whole stdin, closes it, and waits as [`Cmd::run`] does:
    /// a non-zero exit is an error with the summary and stderr; past the timeout (from now) the
    /// child is killed. The trace line says it was primed and how many bytes it was fed (the
    /// input may be a secret); its time is from the feed.
    pub fn feed(self, input: &[u8]) -> Result<Output, ProcessError> {
        self.feed_shown(input, None)
    }

    /// [`Primed::feed`] for input that is no secret, which the trace line then shows (`<<<
    /// 'text'`): `-v` says what the child was given, as it does for a child given the same
    /// text as an argument (the lead's rules, before they went to a primed `nft -f -`).
    pub fn feed_plain(self, input: &str) -> Result<Output, ProcessError> {
        self.feed_shown(input.as_bytes(), Some(input))
    }

    fn feed_shown(mut self, input: &[u8], shown: Option<&str>) -> Result<Output, ProcessError> {
        #[cfg(test)]
        if let Some(answer) = super::fake::answer(&self.cmd.clone().stdin_bytes(input)) {
            return answer;
        }
        let Some((handle, mut writer)) = self.running.take() else {
            unreachable!("a Primed is fed once: feed takes it by value");
        };
        let started = Instant::now();
        if input.len() <= INLINE_INPUT {
            // A child that is gone (EPIPE) says why in its exit status, read below.
            let _ = writer.write_all(input);
            drop(writer);
        } else {
            let input = zeroize::Zeroizing::new(input.to_vec());
            std::thread::spawn(move || {
                let _ = writer.write_all(&input);
            });
        }
        let result = super::wait_with_timeout(handle, self.cmd.timeout);
        let line = fed_line(&self.cmd, input.len(), shown);
        let out = self.cmd.finished(&line, started.elapsed(), result)?;
        self.cmd.checked(out)
    }
}

/// The trace line of a fed child: its command line, and its input where it may be shown.
fn fed_line(cmd: &Cmd, bytes: usize, shown: Option<&str>) -> String {
    match shown {
        Some(text) => format!(
            "{} <<< {}  [primed]",
            cmd.display(),
            super::shell_quote(text.trim_end_matches('\n'))
        ),
        None => format!("{}  [primed; fed {bytes} bytes]", cmd.display()),
    }
}

impl Drop for Primed {
    /// Never fed: its stdin closes empty, and it is reaped on a thread of its own (bounded
    /// as a run would be), so dropping one never waits. Traced now, so `-v` lists it too
    /// (how it then ends is not waited for).
    fn drop(&mut self) {
        if let Some((handle, writer)) = self.running.take() {
            drop(writer);
            super::trace(
                &format!("{}  [primed; never fed]", self.cmd.display()),
                self.primed_at.elapsed(),
                "stdin closed empty",
            );
            let limit = self.cmd.timeout;
            std::thread::spawn(move || {
                if let Ok(out) = super::wait_with_timeout(handle, limit) {
                    super::wipe_output(out);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_primed_child_gets_its_input_only_when_fed() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        // Writes what it read to a file: nothing is there until the feed.
        let primed = Cmd::new("sh", "copy stdin")
            .args(["-c", "cat > \"$0\"; echo done", seen.to_str().unwrap()])
            .timeout(Duration::from_secs(10))
            .prime()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            std::fs::read(&seen).unwrap_or_default().is_empty(),
            "the child had input before the feed"
        );
        let out = primed.feed(b"the input").unwrap();
        assert_eq!(out.stdout.trim(), "done");
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "the input");
    }

    #[test]
    fn a_failing_primed_child_is_an_error_with_its_summary_and_stderr() {
        let primed = Cmd::new("sh", "refuse the input")
            .args(["-c", "cat >/dev/null; echo no such rule >&2; exit 3"])
            .timeout(Duration::from_secs(10))
            .prime()
            .unwrap();
        let e = primed.feed(b"x").unwrap_err().to_string();
        assert!(e.contains("refuse the input"), "{e}");
        assert!(e.contains("exit 3"), "{e}");
        assert!(e.contains("no such rule"), "{e}");
    }

    #[test]
    fn a_primed_child_past_its_bound_after_the_feed_is_killed() {
        let primed = Cmd::new("sh", "hang after the input")
            .args(["-c", "cat >/dev/null; exec sleep 30"])
            .timeout(Duration::from_millis(300))
            .prime()
            .unwrap();
        // Longer than the bound before the feed: the bound counts from the feed.
        std::thread::sleep(Duration::from_millis(400));
        let started = Instant::now();
        let e = primed.feed(b"x").unwrap_err();
        assert!(matches!(e, ProcessError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_primed_child_dropped_unfed_reads_an_empty_input_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let primed = Cmd::new("sh", "note the input")
            .args([
                "-c",
                "printf '%s' \"$(cat)\" > \"$0\"",
                seen.to_str().unwrap(),
            ])
            .timeout(Duration::from_secs(10))
            .prime()
            .unwrap();
        let pid = match &primed.running {
            Some((handle, _)) => handle.pids()[0],
            None => unreachable!(),
        };
        drop(primed);
        // It ran to its end on an empty input, and no zombie is left of it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "the unfed child {pid} was not reaped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "");
    }

    #[test]
    fn a_plain_feed_shows_its_input_in_the_trace_line_and_a_secret_one_only_its_size() {
        let cmd = Cmd::new("nft", "lead").args(["-f", "-"]);
        assert_eq!(
            fed_line(&cmd, 38, Some("insert rule ip t output dnat to :8081\n")),
            "nft -f - <<< 'insert rule ip t output dnat to :8081'  [primed]"
        );
        assert_eq!(fed_line(&cmd, 38, None), "nft -f -  [primed; fed 38 bytes]");
        let out = Cmd::new("cat", "echo the input")
            .timeout(Duration::from_secs(10))
            .prime()
            .unwrap()
            .feed_plain("shown\n")
            .unwrap();
        assert_eq!(out.stdout, "shown\n");
    }

    #[test]
    fn a_primed_child_that_is_gone_before_the_feed_is_its_own_failure() {
        let primed = Cmd::new("sh", "leave early")
            .args(["-c", "exit 4"])
            .timeout(Duration::from_secs(10))
            .prime()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let e = primed.feed(&[b'x'; 1 << 20]).unwrap_err().to_string();
        assert!(e.contains("leave early") && e.contains("exit 4"), "{e}");
    }
}
