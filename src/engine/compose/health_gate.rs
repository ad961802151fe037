//! Step 6, the health gate: poll the new color's health endpoint until it answers as
//! configured, failing fast when its container dies or the user interrupts.
//!
//! The container is watched from a background thread: asking the engine takes ~100 ms, and
//! on the polling thread that round trip would delay every poll (and the switch) by as much.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Color, Loaded};
use crate::docker::compose::{ContainerState, Project};
use crate::engine::{Abort, Event, Step, StepClock};
use crate::health::{self, Answer, Outcome, Prober, Verdict};

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
        // The engine's look taken beside the confirmations that passed (`beside_confirmations`).
        let looked: std::cell::Cell<Option<Option<String>>> = std::cell::Cell::new(None);
        let outcome = health::wait_paced(
            || {
                let answer = prober.get(&url, None);
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
                let (confirmed, look) = beside_confirmations(&watcher, confirm);
                match confirmed {
                    Ok(()) => {
                        looked.set(look);
                        (true, answer)
                    }
                    Err(again) => (false, again.unwrap_or(answer)),
                }
            },
            &|answer: &Answer, waited: Duration| {
                answered.set(answered.get() || matches!(answer, Answer::Status { .. }));
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
        // gate would see it. One list + inspects on the engine's socket, 2–5 ms, asked beside
        // the confirmations (`beside_confirmations`), so not on the path to the switch.
        let death = match outcome {
            Outcome::Passed { .. } => looked.take().unwrap_or_else(|| watcher.final_look()),
            _ => watcher.death(),
        };
        watcher.finish();
        match outcome {
            Outcome::Passed { after, polls } => {
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

/// Runs the confirmations with the watcher's final look on a thread beside them, started at
/// the first healthy answer: the confirmations' answer and the look's verdict (`None`: the
/// look panicked, to be asked again after).
///
/// A look begun at the first healthy answer sees every restart that a look after the last
/// confirmation would: the restart count never goes down, so one restart before the look is
/// counted; and one after it means the app's process died between two answers, a few ms apart
/// (CONFIRM_EVERY and a probe). A probe in flight or started while it is dead fails (the count
/// starts again, and so does the look); only a restart that is over and answering again
/// inside one 2 ms pause could pass unseen, and the engine waits at least 100 ms before a
/// restart (its restart policy's first back-off), before the app's own start.
fn beside_confirmations<T>(
    watcher: &Watcher,
    confirm: impl FnOnce() -> T,
) -> (T, Option<Option<String>>) {
    std::thread::scope(|scope| {
        let look = scope.spawn(|| watcher.final_look());
        let confirmed = confirm();
        (confirmed, look.join().ok())
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
    done: Arc<AtomicBool>,
    project: Project,
    service: String,
    to: Color,
}

impl Watcher {
    pub fn spawn(project: Project, service: String, to: Color) -> Watcher {
        let death = Arc::new(Mutex::new(None::<String>));
        let done = Arc::new(AtomicBool::new(false));
        {
            let (death, done) = (death.clone(), done.clone());
            let (project, service) = (project.clone(), service.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    // A failed look is no verdict: the next one, or the gate's timeout, decides.
                    if let Ok(containers) = project.containers() {
                        if let Some(verdict) = died(&containers, &service, to) {
                            *death.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
                            return;
                        }
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
            done,
            project,
            service,
            to,
        }
    }

    pub fn death(&self) -> Option<String> {
        self.death.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The thread's verdict, or one more look now: what ends a window asks this, so a death
    /// between the thread's last look and the end is not missed.
    pub fn final_look(&self) -> Option<String> {
        self.death().or_else(|| {
            let containers = self.project.containers().ok()?;
            died(&containers, &self.service, self.to)
        })
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
