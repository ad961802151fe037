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
            // Never the environment's `http_proxy`: ureq reads it by default, and a probe of
            // 127.0.0.1 through a proxy tests the proxy (or never passes).
            .proxy(None)
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
    wait_paced(probe, &|_: &Answer, _: Duration| interval, timeout, watch)
}

/// [`wait_until`], with the wait before the next poll chosen from the last answer and the time
/// waited so far: the health gate polls sooner where a poll costs the app nothing (see
/// [`gate_pace`]).
pub fn wait_paced<R>(
    mut probe: impl FnMut() -> (bool, Answer),
    pace: &dyn Fn(&Answer, Duration) -> Duration,
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
        let elapsed = start.elapsed();
        let interval = pace(&answer, elapsed);
        last = Some(answer);
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

/// How the health gate paces its polls while the new color gives no answer at all (see
/// [`gate_pace`]).
#[derive(Debug, Clone, Copy)]
pub struct FastPolls {
    /// The wait between polls at first.
    pub every: Duration,
    /// How long the gate polls `every` apart before it backs off.
    pub for_first: Duration,
    /// The longest wait the back-off reaches.
    pub at_most: Duration,
}

impl FastPolls {
    /// The wait before the next poll, `waited` into the gate: `every` for the first
    /// `for_first`, then a tenth of the time waited beyond it, up to `at_most`.
    pub fn after(&self, waited: Duration) -> Duration {
        (waited.saturating_sub(self.for_first) / 10).clamp(self.every, self.at_most.max(self.every))
    }
}

/// How long the health gate waits before its next poll, given the last answer and the time
/// it has waited so far. After an HTTP answer, `interval` (the app is up and serving:
/// `interval` is what the user allows its health path). After no answer at all (refused,
/// reset, closed by Docker's proxy: nothing listens in the container yet, so a poll costs the
/// app nothing; a probe that timed out has waited its own timeout already): `fast.every` for
/// the first `fast.for_first`, so an app that boots in about a second is seen within a few ms
/// of answering; then a tenth of the time waited beyond that, up to `fast.at_most`. Each poll
/// is a TCP connection through Docker's userland proxy and a conntrack entry that lingers for
/// minutes: with the gate's 25 ms cap a slow boot (30 s, say) costs ~1400 polls, not 6000.
/// Never longer than `interval`. `answered`: the app gave an HTTP answer before; then it is
/// up, and a refused or reset connection may be the app itself under strain (or flapping), so
/// `interval` as well: the fast polls are only for an app that never answered yet.
pub fn gate_pace(
    answer: &Answer,
    answered: bool,
    interval: Duration,
    waited: Duration,
    fast: FastPolls,
) -> Duration {
    match answer {
        Answer::Status { .. } => interval,
        Answer::NoAnswer(_) if answered => interval,
        Answer::NoAnswer(_) => fast.after(waited).min(interval),
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
    fn probes_go_to_the_address_never_to_the_environments_proxy() {
        // A "proxy" that answers 200 to whatever it gets: a probe through it would pass.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = proxy.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in proxy.incoming() {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let app = serve(vec!["HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n"]);
        // Only probers read these variables in this process (ureq, here and engine_api).
        let url = format!("http://127.0.0.1:{proxy_port}");
        std::env::set_var("http_proxy", &url);
        std::env::set_var("ALL_PROXY", &url);
        let answer = Prober::new(Duration::from_secs(2))
            .get(&format!("http://127.0.0.1:{app}/health"), None);
        std::env::remove_var("http_proxy");
        std::env::remove_var("ALL_PROXY");
        assert!(
            matches!(answer, Answer::Status { code: 503, .. }),
            "{answer:?}"
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

    const FAST: FastPolls = FastPolls {
        every: Duration::from_millis(5),
        for_first: Duration::from_secs(1),
        at_most: Duration::from_millis(25),
    };

    #[test]
    fn the_gate_polls_fast_only_while_nothing_answers_and_backs_off_after_a_second() {
        let interval = Duration::from_millis(500);
        let ms = Duration::from_millis;
        let refused = Answer::NoAnswer("connection refused".into());
        let warming = Answer::Status {
            code: 503,
            body: String::new(),
        };
        assert_eq!(gate_pace(&refused, false, interval, ms(0), FAST), ms(5));
        assert_eq!(gate_pace(&refused, false, interval, ms(1000), FAST), ms(5));
        assert_eq!(gate_pace(&refused, false, interval, ms(1200), FAST), ms(20));
        assert_eq!(gate_pace(&refused, false, interval, ms(1250), FAST), ms(25));
        assert_eq!(
            gate_pace(&refused, false, interval, ms(60_000), FAST),
            ms(25)
        );
        // An answer of any kind: the configured interval, at once.
        assert_eq!(gate_pace(&warming, false, interval, ms(0), FAST), interval);
        assert_eq!(
            gate_pace(&warming, false, interval, ms(60_000), FAST),
            interval
        );
        // Never slower than the interval the user set.
        assert_eq!(gate_pace(&refused, false, ms(2), ms(0), FAST), ms(2));
        assert_eq!(gate_pace(&refused, false, ms(10), ms(60_000), FAST), ms(10));
        // An app that answered once and then refuses or resets (flapping, under strain, its
        // server restarting): the configured interval still, not 200 polls a second.
        assert_eq!(gate_pace(&refused, true, interval, ms(0), FAST), interval);
        assert_eq!(
            gate_pace(&refused, true, interval, ms(60_000), FAST),
            interval
        );
    }

    /// The polls the pace allows while nothing answers for `boot`, probes taking no time.
    fn polls_until(boot: Duration) -> u32 {
        let refused = Answer::NoAnswer("connection refused".into());
        let (mut waited, mut polls) = (Duration::ZERO, 0);
        while waited < boot {
            polls += 1;
            waited += gate_pace(&refused, false, Duration::from_secs(1), waited, FAST);
        }
        polls
    }

    #[test]
    fn a_slow_boot_costs_a_bounded_number_of_polls() {
        // The first second: every 5 ms.
        assert_eq!(polls_until(Duration::from_secs(1)), 200);
        // Beyond it, the back-off: 40 a second (one per 25 ms) once the ramp (~30 polls) is
        // done.
        let thirty = polls_until(Duration::from_secs(30));
        assert!(thirty > 200 + 40 * 28, "{thirty}");
        assert!(thirty < 200 + 40 * 29 + 40, "{thirty}");
        // Not the 6000 a fixed 5 ms pace would make.
        assert!(thirty < 6000 / 4, "{thirty}");
    }

    #[test]
    fn the_pace_follows_the_last_answer() {
        // Three refusals then a pass: paced at 1 ms, it is done long before one 10 s interval.
        let mut polls = 0;
        let started = Instant::now();
        let fast = FastPolls {
            every: Duration::from_millis(1),
            ..FAST
        };
        let outcome = wait_paced(
            || {
                polls += 1;
                (polls == 4, Answer::NoAnswer("refused".into()))
            },
            &|a: &Answer, waited: Duration| {
                gate_pace(a, false, Duration::from_secs(10), waited, fast)
            },
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
