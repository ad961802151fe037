//! Bounded HTTP health polling: the gate a new color passes before nginx points at it, and
//! the probe through nginx after a reload.
//!
//! This replaces the seeds' `sleep 45`: poll every `interval` until the endpoint answers as
//! configured, so a deploy waits exactly as long as the app needs and never longer than
//! `timeout`. Each poll also gives the caller a chance to fail fast (the container exited)
//! or to stop (SIGINT), through [`Watch`].

use std::time::{Duration, Instant};

/// One HTTP GET result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server answered with this status and body.
    Status { code: u16, body: String },
    /// No HTTP answer: connection refused, reset, timed out.
    NoAnswer(String),
}

impl Answer {
    pub fn describe(&self) -> String {
        match self {
            Answer::Status { code, .. } => format!("HTTP {code}"),
            Answer::NoAnswer(why) => why.clone(),
        }
    }
}

/// A small HTTP client for loopback probes: no redirects, no proxy, short timeouts.
#[derive(Clone)]
pub struct Prober {
    agent: ureq::Agent,
}

impl Prober {
    pub fn new(per_request: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(per_request))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Prober {
            agent: config.into(),
        }
    }

    /// GET `url`, optionally with a Host header (for a named nginx server block).
    pub fn get(&self, url: &str, host: Option<&str>) -> Answer {
        self.get_with_headers(url, host, &[]).0
    }

    /// [`Prober::get`], and the values of the response headers `names` (in that order; each
    /// one line, as sent).
    pub fn get_with_headers(
        &self,
        url: &str,
        host: Option<&str>,
        names: &[&str],
    ) -> (Answer, Vec<Option<String>>) {
        let mut request = self.agent.get(url).header("Connection", "close");
        if let Some(host) = host {
            request = request.header("Host", host);
        }
        match request.call() {
            Ok(response) => {
                let code = response.status().as_u16();
                let values = names
                    .iter()
                    .map(|name| {
                        response
                            .headers()
                            .get(*name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    })
                    .collect();
                let body = response
                    .into_body()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                (Answer::Status { code, body }, values)
            }
            Err(e) => (Answer::NoAnswer(e.to_string()), vec![None; names.len()]),
        }
    }
}

/// What the caller says between two polls.
pub enum Verdict<R> {
    /// Keep polling.
    Continue,
    /// Stop now for this reason (the container died, the user pressed Ctrl-C); the caller's
    /// own type, so it branches on a kind, not on words.
    Abort(R),
}

/// Observes a wait: called before every poll with the time spent so far and the last answer.
pub trait Watch<R> {
    fn check(&mut self, elapsed: Duration, last: Option<&Answer>) -> Verdict<R>;
}

impl<R, F: FnMut(Duration, Option<&Answer>) -> Verdict<R>> Watch<R> for F {
    fn check(&mut self, elapsed: Duration, last: Option<&Answer>) -> Verdict<R> {
        self(elapsed, last)
    }
}

/// How a wait ended.
#[derive(Debug)]
pub enum Outcome<R> {
    Passed {
        after: Duration,
        polls: u32,
    },
    TimedOut {
        after: Duration,
        last: Option<Answer>,
    },
    Aborted {
        after: Duration,
        reason: R,
    },
}

/// Polls `probe` every `interval` until it returns true or `timeout` passes.
pub fn wait_until<R>(
    probe: impl FnMut() -> (bool, Answer),
    interval: Duration,
    timeout: Duration,
    watch: &mut dyn Watch<R>,
) -> Outcome<R> {
    wait_paced(probe, &|_: &Answer| interval, timeout, watch)
}

/// [`wait_until`], with the wait before the next poll chosen from the last answer: the health
/// gate polls at once again where a poll costs the app nothing (see [`gate_pace`]).
pub fn wait_paced<R>(
    mut probe: impl FnMut() -> (bool, Answer),
    pace: &dyn Fn(&Answer) -> Duration,
    timeout: Duration,
    watch: &mut dyn Watch<R>,
) -> Outcome<R> {
    let start = Instant::now();
    let mut last: Option<Answer> = None;
    let mut polls = 0;
    loop {
        if let Verdict::Abort(reason) = watch.check(start.elapsed(), last.as_ref()) {
            return Outcome::Aborted {
                after: start.elapsed(),
                reason,
            };
        }
        polls += 1;
        let (ok, answer) = probe();
        if ok {
            return Outcome::Passed {
                after: start.elapsed(),
                polls,
            };
        }
        let interval = pace(&answer);
        last = Some(answer);
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Outcome::TimedOut {
                after: elapsed,
                last,
            };
        }
        // Sleep in short slices, asking the watch between them: an interrupt or a dead
        // container is answered within a slice, not after a whole interval (30 s, say).
        let mut aborted = None;
        sleep_unless(interval.min(timeout - elapsed), SLICE, || {
            match watch.check(start.elapsed(), last.as_ref()) {
                Verdict::Abort(reason) => aborted = Some(reason),
                Verdict::Continue => {}
            }
            aborted.is_some()
        });
        if let Some(reason) = aborted {
            return Outcome::Aborted {
                after: start.elapsed(),
                reason,
            };
        }
    }
}

/// How long the health gate waits before its next poll, given the last answer: `interval`
/// after an HTTP answer (the app is up and serving: `interval` is what the user allows its
/// health path), `fast` after no answer at all (refused, reset, closed by Docker's proxy:
/// nothing listens in the container yet, so a poll costs the app nothing; a probe that timed
/// out has waited its own timeout already), so the gate sees the port start answering within
/// `fast` of it, not within a whole `interval`.
pub fn gate_pace(answer: &Answer, interval: Duration, fast: Duration) -> Duration {
    match answer {
        Answer::Status { .. } => interval,
        Answer::NoAnswer(_) => fast.min(interval),
    }
}

/// Sleeps `duration` in slices of at most `slice`, asking `stop` before each one; true when
/// it stopped early. Every wait in cutover sleeps through this, so none outlasts a signal,
/// a dead container or its own deadline by more than a slice.
pub fn sleep_unless(duration: Duration, slice: Duration, mut stop: impl FnMut() -> bool) -> bool {
    let wake = Instant::now() + duration;
    while let Some(left) = wake.checked_duration_since(Instant::now()) {
        if stop() {
            return true;
        }
        std::thread::sleep(left.min(slice));
    }
    false
}

/// The longest a wait sleeps without asking whether to stop.
pub const SLICE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn serve(responses: Vec<&'static str>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (stream, reply) in listener.incoming().zip(responses) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        port
    }

    #[test]
    fn gate_passes_on_the_first_healthy_answer() {
        let port = serve(vec![
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]);
        let prober = Prober::new(Duration::from_secs(2));
        let url = format!("http://127.0.0.1:{port}/health");
        let outcome = wait_until(
            || {
                let answer = prober.get(&url, None);
                (matches!(answer, Answer::Status { code: 200, .. }), answer)
            },
            Duration::from_millis(10),
            Duration::from_secs(5),
            &mut |_: Duration, _: Option<&Answer>| Verdict::<()>::Continue,
        );
        assert!(
            matches!(outcome, Outcome::Passed { polls: 2, .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn gate_times_out_with_the_last_answer() {
        let prober = Prober::new(Duration::from_millis(200));
        // Nothing listens on a port we just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let outcome = wait_until(
            || (false, prober.get(&url, None)),
            Duration::from_millis(20),
            Duration::from_millis(150),
            &mut |_: Duration, _: Option<&Answer>| Verdict::<()>::Continue,
        );
        match outcome {
            Outcome::TimedOut {
                last: Some(Answer::NoAnswer(_)),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_gate_polls_fast_only_while_nothing_answers() {
        let (interval, fast) = (Duration::from_millis(500), Duration::from_millis(5));
        let refused = Answer::NoAnswer("connection refused".into());
        let warming = Answer::Status {
            code: 503,
            body: String::new(),
        };
        assert_eq!(gate_pace(&refused, interval, fast), fast);
        assert_eq!(gate_pace(&warming, interval, fast), interval);
        // Never slower than the interval the user set.
        assert_eq!(
            gate_pace(&refused, Duration::from_millis(2), fast),
            Duration::from_millis(2)
        );
    }

    #[test]
    fn the_pace_follows_the_last_answer() {
        // Three refusals then a pass: paced at 1 ms, it is done long before one 10 s interval.
        let mut polls = 0;
        let started = Instant::now();
        let outcome = wait_paced(
            || {
                polls += 1;
                (polls == 4, Answer::NoAnswer("refused".into()))
            },
            &|a: &Answer| gate_pace(a, Duration::from_secs(10), Duration::from_millis(1)),
            Duration::from_secs(60),
            &mut |_: Duration, _: Option<&Answer>| Verdict::<()>::Continue,
        );
        assert!(
            matches!(outcome, Outcome::Passed { polls: 4, .. }),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn watch_aborts_the_wait() {
        let mut calls = 0;
        let outcome = wait_until(
            || (false, Answer::NoAnswer("refused".into())),
            Duration::from_millis(1),
            Duration::from_secs(10),
            &mut |_: Duration, _: Option<&Answer>| {
                calls += 1;
                if calls == 3 {
                    Verdict::Abort("container exited")
                } else {
                    Verdict::Continue
                }
            },
        );
        assert!(matches!(outcome, Outcome::Aborted { reason, .. } if reason == "container exited"));
    }
}
