//! Step 6, the health gate: poll the new color's health endpoint until it answers as
//! configured, failing fast when its container dies or the user interrupts.
//!
//! The container is watched from a background thread: asking the engine takes a few ms on its
//! socket and up to ~100 ms through the CLI, and on the polling thread that round trip would
//! delay every poll (and the switch) by as much.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Color, Loaded};
use crate::docker::compose::{ContainerState, Project};
use crate::engine::{Abort, Event, Step, StepClock};
use crate::health::{self, Answer, Outcome, Prober, Verdict};

use super::listener_look::{ListenerLook, Running};

/// Why the gate stopped early.
enum Stop {
    Interrupted,
    /// The container exited, restarted or vanished; the words say which.
    Died(String),
}

pub(super) struct Gate<'g> {
    pub loaded: &'g Loaded,
    pub project: &'g Project,
    pub service: &'g str,
    pub to: Color,
    pub interrupted: &'g Arc<AtomicBool>,
}

impl Gate<'_> {
    /// Waits for the gate, reporting the `health` step; the error says why it failed.
    pub fn wait(&self, clock: &mut StepClock) -> Result<(), (Abort, String)> {
        let health = &self.loaded.config.app.health;
        let url = super::health_url(self.loaded, self.to);
        clock.start(Step::Health, url.clone());
        let prober = Prober::new(health.probe_timeout.get());
        let expected = health.status;
        let watcher = Watcher::spawn(self.project.clone(), self.service.to_string(), self.to);
        let reporter = clock.reporter();
        let interval = health.interval.get();
        // Tighter than the config's own spacing (a quarter of the interval, at least 20 ms):
        // see CONFIRM_EVERY.
        let confirm_every = health.confirmation_interval().min(CONFIRM_EVERY);
        // The Waiting event is progress for a person: one per SLICE, not one per fast poll.
        let mut last_event: Option<std::time::Instant> = None;
        let healthy =
            |answer: &Answer| matches!(answer, Answer::Status { code, .. } if *code == expected);
        let deadline = std::time::Instant::now() + health.timeout.get();
        // The confirmations stop early, as the polls do, on an interrupt, a dead container
        // or the gate's own deadline.
        let must_stop = || {
            self.interrupted.load(Ordering::SeqCst)
                || watcher.death().is_some()
                || std::time::Instant::now() >= deadline
        };
        // Whether the app gave an HTTP answer yet: the fast polls end with it.
        let answered = std::cell::Cell::new(false);
        // Until something listens in the container, the gate looks at its listeners rather
        // than connecting (see ListenerLook).
        let listener =
            std::cell::RefCell::new(ListenerLook::new(self.loaded.config.app.port.0, deadline));
        // The engine's look begun beside the confirmations that passed (`Watcher::look_beside`).
        let looked: std::cell::Cell<Option<Look>> = std::cell::Cell::new(None);
        let outcome = health::wait_paced(
            || {
                let nothing_listens = listener
                    .borrow_mut()
                    .nothing_yet(watcher.running().as_ref());
                if let Some(words) = nothing_listens {
                    return (false, Answer::NoAnswer(words));
                }
                let answer = prober.get(&url, None);
                listener.borrow_mut().heard(&answer);
                if !healthy(&answer) {
                    return (false, answer);
                }
                // Once healthy, the confirmations follow quickly (the settle window after the
                // switch is what watches for longer); any failure starts the count again.
                // Err(None): stopped early; Err(Some(..)): a confirmation's unhealthy answer.
                let confirm = || {
                    for _ in 1..health.healthy_checks {
                        if must_stop() {
                            return Err(None);
                        }
                        if health::sleep_unless(confirm_every, health::SLICE, must_stop) {
                            return Err(None);
                        }
                        let again = prober.get(&url, None);
                        if !healthy(&again) {
                            return Err(Some(again));
                        }
                    }
                    Ok(())
                };
                // Begun at the first healthy answer, read only on a pass: confirmations that
                // stop (an interrupt, the deadline, an unhealthy answer) never wait for it.
                let look = watcher.look_beside();
                match confirm() {
                    Ok(()) => {
                        looked.set(Some(look));
                        (true, answer)
                    }
                    Err(again) => (false, again.unwrap_or(answer)),
                }
            },
            &|answer: &Answer, waited: Duration| {
                answered.set(answered.get() || matches!(answer, Answer::Status { .. }));
                if let Some(pace) = listener.borrow().pace() {
                    return pace.min(interval);
                }
                health::gate_pace(answer, answered.get(), interval, waited, FAST_POLLS)
            },
            health.timeout.get(),
            &mut |elapsed: Duration, last: Option<&Answer>| {
                if self.interrupted.load(Ordering::SeqCst) {
                    return Verdict::Abort(Stop::Interrupted);
                }
                if last_event.is_none_or(|t| t.elapsed() >= health::SLICE) {
                    last_event = Some(std::time::Instant::now());
                    reporter.event(Event::Waiting {
                        step: Step::Health,
                        elapsed,
                        limit: health.timeout.get(),
                        last: last.map(Answer::describe).unwrap_or_default(),
                    });
                }
                match watcher.death() {
                    Some(reason) => Verdict::Abort(Stop::Died(reason)),
                    None => Verdict::Continue,
                }
            },
        );
        // A pass asks the engine once more: the watcher looks every LOOK_EVERY, so its last
        // look can be from before a restart (a crash under a restart policy, back and
        // answering) that the answers cannot tell of; with `settle: 0s` nothing after the
        // gate would see it. One list + inspects on the engine's socket, 2–5 ms, begun beside
        // the confirmations (`Watcher::look_beside`), so not on the path to the switch; and
        // the watcher's own verdict as it is now, which it may have reached since.
        let death = match outcome {
            Outcome::Passed { .. } => {
                pass_verdict(watcher.death(), looked.take(), || watcher.final_look())
            }
            _ => watcher.death(),
        };
        watcher.finish();
        match outcome {
            Outcome::Passed { after, polls } => {
                // The looks at the listeners are not polls of the app.
                let polls = polls - listener.borrow().held_back;
                if let Some(why) = death {
                    return Err((Abort::ContainerDied, why));
                }
                clock.done(
                    Step::Health,
                    format!(
                        "{expected} {} times in a row after {} ({polls} polls)",
                        health.healthy_checks,
                        crate::report::duration(after)
                    ),
                );
                Ok(())
            }
            Outcome::TimedOut { after, last } => Err((
                Abort::HealthTimedOut,
                format!(
                    "health gate timed out after {}: {url} last answered {}",
                    crate::report::duration(after),
                    last.map(|a| a.describe())
                        .unwrap_or_else(|| "nothing".into())
                ),
            )),
            Outcome::Aborted {
                reason: Stop::Interrupted,
                ..
            } => Err((Abort::Interrupted, "interrupted".to_string())),
            Outcome::Aborted {
                reason: Stop::Died(why),
                ..
            } => Err((Abort::ContainerDied, why)),
        }
    }
}

/// A look at the engine begun on a thread of its own ([`Watcher::look_beside`]): its verdict
/// arrives here; dropped unread, the thread ends by itself.
type Look = std::sync::mpsc::Receiver<Option<String>>;

/// The verdict on a pass: the watcher's own, as it is now (it may have seen a death since the
/// look began); else the look's (the thread gone without one: asked again, here).
fn pass_verdict(
    watcher_now: Option<String>,
    look: Option<Look>,
    look_again: impl FnOnce() -> Option<String>,
) -> Option<String> {
    watcher_now.or_else(|| match look.map(|l| l.recv()) {
        Some(Ok(verdict)) => verdict,
        Some(Err(_)) | None => look_again(),
    })
}

/// The gate's pace while the new color gives no answer at all (refused, or closed by Docker's
/// proxy: nothing listens in the container yet): every 5 ms for the first second, so the gate
/// sees a quick app's port start answering within 5 ms, not within a whole `interval`; then
/// backing off to one poll per 25 ms (a slow boot is seen within 25 ms of answering). Each
/// poll is a connection through Docker's userland proxy and a conntrack entry that lingers
/// for minutes; on a 1 GiB box (where the conntrack table has filled under load) a 30 s boot
/// costs ~1400 polls, not 6000 (see `health::gate_pace`). Once the app answers anything, the
/// configured `interval`, also if it then stops answering.
const FAST_POLLS: health::FastPolls = health::FastPolls {
    every: Duration::from_millis(5),
    for_first: Duration::from_secs(1),
    at_most: Duration::from_millis(25),
};

/// The spacing of the confirmations after the first healthy answer. They prove the answer was
/// not a one-off: the app answers again, on new connections, with the container still
/// running (any failure starts the count again). How the app holds up over time is what the
/// watch window after the switch checks, with the old color kept as the backup; 2 ms apart
/// the confirmations add ~5 ms (not ~50 ms) between readiness and the switch: spacing them
/// further proves nothing more, and the goal for readiness → first response is 20 ms.
const CONFIRM_EVERY: Duration = Duration::from_millis(2);

/// How often the watcher asks the engine: a restart (the container is back within a second
/// under a restart policy, answering again) must be seen when it happens, not at the end of
/// the window.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The background thread that asks the engine, every [`LOOK_EVERY`], whether the new color's
/// container still runs, has restarted, or is gone.
pub(super) struct Watcher {
    death: Arc<Mutex<Option<String>>>,
    /// The new color's container, from the thread's last look (one container, running): the
    /// way into its network namespace ([`ListenerLook`]).
    running: Arc<Mutex<Option<Running>>>,
    done: Arc<AtomicBool>,
    project: Project,
    service: String,
    to: Color,
}

impl Watcher {
    pub fn spawn(project: Project, service: String, to: Color) -> Watcher {
        let death = Arc::new(Mutex::new(None::<String>));
        let running = Arc::new(Mutex::new(None::<Running>));
        let done = Arc::new(AtomicBool::new(false));
        {
            let (death, done, running) = (death.clone(), done.clone(), running.clone());
            let (project, service) = (project.clone(), service.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    // A failed look is no verdict: the next one, or the gate's timeout, decides.
                    if let Ok(containers) = project.containers() {
                        if let Some(verdict) = died(&containers, &service, to) {
                            *death.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
                            return;
                        }
                        *running.lock().unwrap_or_else(|e| e.into_inner()) =
                            running_alone(&containers, &service);
                    }
                    // Sleep in small steps so the thread ends soon after the gate does.
                    let slice = Duration::from_millis(50);
                    if crate::health::sleep_unless(LOOK_EVERY, slice, || {
                        done.load(Ordering::SeqCst)
                    }) {
                        return;
                    }
                }
            });
        }
        Watcher {
            death,
            running,
            done,
            project,
            service,
            to,
        }
    }

    pub fn death(&self) -> Option<String> {
        self.death.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The new color's container, as the last look found it running alone.
    pub fn running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The thread's verdict, or one more look now: what ends a window asks this, so a death
    /// between the thread's last look and the end is not missed.
    pub fn final_look(&self) -> Option<String> {
        self.death().or_else(|| {
            let containers = self.project.containers().ok()?;
            died(&containers, &self.service, self.to)
        })
    }

    /// One look at the engine, begun now on a thread of its own, for a pass to read
    /// ([`pass_verdict`]). Begun at the first healthy answer, it sees every restart a look
    /// after the last confirmation would: the count a restart leaves is there from the
    /// restart on, and a restart after the look began means the app's process died between
    /// two answers a few ms apart (CONFIRM_EVERY and a probe): a probe in flight or started
    /// while it is dead fails (the count starts again, and so does the look), and the engine
    /// waits at least 100 ms (its restart policy's first back-off), then the app's own start,
    /// before anything answers again. (A `docker restart` by hand sets the count back to 0;
    /// the watcher's own verdict, read again at the pass, is what sees that one.)
    pub fn look_beside(&self) -> Look {
        let (tx, rx) = std::sync::mpsc::channel();
        let (project, service, to) = (self.project.clone(), self.service.clone(), self.to);
        std::thread::spawn(move || {
            // A failed look is no verdict, as in `final_look`.
            let verdict = project
                .containers()
                .ok()
                .and_then(|containers| died(&containers, &service, to));
            let _ = tx.send(verdict);
        });
        rx
    }

    /// Tells the thread to stop and returns at once. Joining it would wait for a look in
    /// flight (a `docker ps` + `inspect`, read-only) or a sleep step: up to ~100 ms added to
    /// the gate and to the settle window, for nothing; the thread ends by itself.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// `service`'s container with its main process when exactly one runs (several: which one
/// the probe reaches is not known here).
fn running_alone(
    containers: &[crate::docker::compose::Container],
    service: &str,
) -> Option<Running> {
    match containers
        .iter()
        .filter(|c| c.service == service)
        .collect::<Vec<_>>()[..]
    {
        [one] if one.running() => one.pid.map(|pid| Running {
            id: one.id.clone(),
            pid,
        }),
        _ => None,
    }
}

/// Whether `service`'s container died, in words.
fn died(
    containers: &[crate::docker::compose::Container],
    service: &str,
    to: Color,
) -> Option<String> {
    let mine: Vec<_> = containers.iter().filter(|c| c.service == service).collect();
    if let Some(dead) = mine
        .iter()
        .find(|c| !c.running() || c.state == ContainerState::Restarting || c.restart_count > 0)
    {
        return Some(format!(
            "the {to} container exited (state {}, exit code {}, restarts {})",
            dead.state,
            dead.exit_code.unwrap_or_default(),
            dead.restart_count
        ));
    }
    mine.is_empty()
        .then(|| format!("the {to} container is gone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(verdict: Option<&str>) -> Look {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(verdict.map(String::from)).unwrap();
        rx
    }

    #[test]
    fn only_a_service_with_one_running_container_gives_its_process() {
        let container =
            |id: &str, state: &str, pid: Option<u32>| crate::docker::compose::Container {
                id: id.into(),
                service: "web-green".into(),
                image: "i".into(),
                state: state.into(),
                exit_code: Some(0),
                restart_count: 0,
                health: None,
                worker: None,
                pid,
            };
        let one = [container("a", "running", Some(7))];
        assert_eq!(
            running_alone(&one, "web-green"),
            Some(Running {
                id: "a".into(),
                pid: 7
            })
        );
        assert_eq!(running_alone(&one, "web-blue"), None);
        let two = [
            container("a", "running", Some(7)),
            container("b", "running", Some(8)),
        ];
        assert_eq!(running_alone(&two, "web-green"), None);
        let stopped = [container("a", "exited", None)];
        assert_eq!(running_alone(&stopped, "web-green"), None);
    }

    #[test]
    fn a_pass_takes_the_watchers_verdict_now_over_a_clean_look() {
        let again = || panic!("asked again with a look in hand");
        let died = Some("the green container exited".to_string());
        assert_eq!(pass_verdict(died.clone(), Some(look(None)), again), died);
        assert_eq!(
            pass_verdict(None, Some(look(Some("restarts 1"))), again).as_deref(),
            Some("restarts 1")
        );
        assert_eq!(pass_verdict(None, Some(look(None)), again), None);
    }

    #[test]
    fn a_look_whose_thread_ended_without_a_verdict_is_asked_again() {
        let (tx, gone) = std::sync::mpsc::channel::<Option<String>>();
        drop(tx);
        let again = || Some("the green container is gone".to_string());
        assert_eq!(
            pass_verdict(None, Some(gone), again).as_deref(),
            Some("the green container is gone")
        );
        assert_eq!(
            pass_verdict(None, None, again).as_deref(),
            Some("the green container is gone")
        );
    }
}
