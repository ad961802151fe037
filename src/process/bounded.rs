//! Children with a hard time bound whose output is shown as it comes: the deploy hooks and
//! the release phase. The child runs in its own process group, and at the bound the whole
//! group is killed: a hook written as `[sh, -c, 'curl …']` leaves a grandchild holding the
//! output pipe, and killing only `sh` would leave the deploy waiting on that pipe.
//!
//! stdout and stderr share one pipe, so lines keep the order the child wrote them in.
//!
//! Nothing a hook starts outlives it: once the child has exited, what is left of its process
//! group (`cmd &`) is killed, and so is a daemon that left the group (`setsid`, a double
//! fork): each bounded child gets a random `CUTOVER_RUN_TOKEN` in its environment, which its
//! descendants inherit, and every process still carrying it afterwards is killed. (A
//! descendant that empties its environment escapes; so would one under any supervisor short
//! of a cgroup.) The token is not a subreaper and a parent-pid sweep on purpose: other
//! threads (and other tests in one test process) have children of their own.

use std::io::BufRead as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Cmd, ProcessError};

/// How many of the last output lines a [`Bounded`] keeps for an error message.
pub const TAIL_LINES: usize = 20;

/// How long to keep reading after the child exited (or was killed): a background grandchild
/// may hold the pipe open for good.
const DRAIN: Duration = Duration::from_secs(1);

/// A finished (or killed) bounded child.
#[derive(Debug, Clone)]
pub struct Bounded {
    /// The exit code; `None` when a signal ended it (a kill at the bound included).
    pub code: Option<i32>,
    /// Killed at its time bound.
    pub timed_out: bool,
    /// Killed because `cancel` was set (SIGINT/SIGTERM to the deploy), not a timeout.
    pub cancelled: bool,
    /// The last [`TAIL_LINES`] lines of its output.
    pub tail: Vec<String>,
}

impl Bounded {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.cancelled
    }
}

impl Cmd {
    /// Runs with stdin empty, passing each output line to `on_line` as it arrives; kills the
    /// child's process group past `limit` (`timed_out`), or once `cancel` is set (an
    /// interrupted deploy: `cancelled`). Errors only when it cannot start.
    pub fn run_bounded(
        &self,
        limit: Duration,
        cancel: &AtomicBool,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Bounded, ProcessError> {
        let io = |e| self.spawn_error(e);
        let token = format!("{:032x}", rand::random::<u128>());
        let mut env = self.child_env(std::env::vars_os());
        env.insert(
            RUN_TOKEN.into(),
            zeroize::Zeroizing::new(token.clone().into_bytes()),
        );
        let (reader, writer) = std::io::pipe().map_err(io)?;
        let expr = self
            .base_expression(&env)
            .stdin_null()
            .stdout_file(writer.try_clone().map_err(io)?)
            .stderr_file(writer)
            .before_spawn(|command| {
                use std::os::unix::process::CommandExt;
                command.process_group(0);
                Ok(())
            });
        let started = Instant::now();
        let handle = expr.start();
        // Our copies of the write end go, so the reader sees EOF once the child's are gone.
        drop(expr);
        drop(env);
        let handle = handle.map_err(io)?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(reader);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                buf.clear();
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = started.checked_add(limit);
        let mut tail = std::collections::VecDeque::new();
        let mut push = |line: String, on_line: &mut dyn FnMut(&str)| {
            on_line(&line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        };
        let mut timed_out = false;
        let mut cancelled = false;
        let mut exited_at = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => push(line, on_line),
                Err(mpsc::RecvTimeoutError::Disconnected) if exited_at.is_some() => break,
                Err(_) => {}
            }
            if exited_at.is_none() {
                if handle.try_wait().map_err(io)?.is_some() {
                    // Its background jobs hold the pipe: they go with it.
                    kill_group(&handle);
                    exited_at = Some(Instant::now());
                } else if cancel.load(Ordering::SeqCst) {
                    cancelled = true;
                    kill_group(&handle);
                    exited_at = Some(Instant::now());
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    timed_out = true;
                    kill_group(&handle);
                    exited_at = Some(Instant::now());
                }
            }
            if exited_at.is_some_and(|t| t.elapsed() >= DRAIN) {
                break;
            }
        }
        // Reaped here; after a kill this returns at once.
        let status = handle.wait().map_err(io)?.status;
        kill_tagged(&token);
        super::trace(
            &self.display(),
            started.elapsed(),
            &super::exit_outcome(status.code()),
        );
        Ok(Bounded {
            code: if timed_out || cancelled {
                None
            } else {
                status.code()
            },
            timed_out,
            cancelled,
            tail: tail.into_iter().collect(),
        })
    }
}

/// SIGKILL to the child's process group (its pid: it leads the group it was started in).
fn kill_group(handle: &duct::Handle) {
    for pid in handle.pids() {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = handle.kill();
}

/// The environment variable that tags a bounded child's descendants (module doc).
pub const RUN_TOKEN: &str = "CUTOVER_RUN_TOKEN";

/// SIGKILL to every process whose environment holds `CUTOVER_RUN_TOKEN=<token>`: what a
/// bounded child left running. Again until none is left (a dying parent may still fork), at
/// most a few rounds.
fn kill_tagged(token: &str) {
    use rustix::process::{kill_process, Pid, Signal};
    let tag = format!("{RUN_TOKEN}={token}");
    for _ in 0..5 {
        let tagged = tagged_processes(tag.as_bytes());
        if tagged.is_empty() {
            return;
        }
        for pid in tagged.into_iter().filter_map(Pid::from_raw) {
            let _ = kill_process(pid, Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live processes (not zombies) whose `/proc/<pid>/environ` holds `tag` as one entry.
fn tagged_processes(tag: &[u8]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|entry| entry == tag))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_arrive_in_order_and_the_exit_code_is_kept() {
        let mut seen = Vec::new();
        let out = Cmd::new("sh", "print")
            .args(["-c", "echo one; echo two >&2; echo three; exit 4"])
            .run_bounded(Duration::from_secs(20), &AtomicBool::new(false), &mut |l| {
                seen.push(l.to_string())
            })
            .unwrap();
        assert_eq!(seen, ["one", "two", "three"]);
        assert_eq!(out.code, Some(4));
        assert!(!out.timed_out);
    }

    /// A grandchild holding the pipe is killed with the group: the call returns at the bound.
    #[test]
    fn the_bound_kills_the_whole_group() {
        let out = Cmd::new("sh", "sleep")
            .args(["-c", "echo started; sleep 30; echo never"])
            .run_bounded(
                Duration::from_millis(300),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.code, None);
        assert_eq!(out.tail, ["started"]);
    }

    fn alive(pid: i32) -> bool {
        // A zombie is dead: only its entry is left.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, s)| s.trim_start().starts_with('Z'))
        })
    }

    /// `cmd &` and a `setsid` daemon both die with the hook that started them.
    #[test]
    fn nothing_a_bounded_child_starts_outlives_it() {
        let mut pids = Vec::new();
        let out = Cmd::new("sh", "start two sleepers")
            .args([
                "-c",
                "sleep 300 >/dev/null 2>&1 & echo $!; \
                 setsid sh -c 'echo $$; exec sleep 300' </dev/null 2>/dev/null & sleep 0.3",
            ])
            .run_bounded(Duration::from_secs(20), &AtomicBool::new(false), &mut |l| {
                pids.extend(l.trim().parse::<i32>().ok())
            })
            .unwrap();
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(pids.len(), 2, "{out:?}");
        for pid in pids {
            assert!(!alive(pid), "pid {pid} outlived its hook");
        }
    }
}
