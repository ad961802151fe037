//! The `workers` step: after the web switch has settled, the old color drained and stopped,
//! every worker (`workers:`) moves to the new image, one after the other.
//!
//! A worker has two compose services, `<app>-<worker>-blue` / `-green`, like the app; its
//! color is its own (it need not follow the web color: a worker that failed to move stays
//! where it was while the web moved on). `overlap: false` stops the old container (stop, not
//! remove) before the new one starts, so a scheduler never runs twice; if the new one fails,
//! it is removed and the old container is started again (same container, old image).
//! `overlap: true` starts the new one first and stops the old one once the new one is up; if
//! the new one fails, the old one never stopped.
//!
//! A worker is up when its container healthcheck says `healthy`, or, without one, when it is
//! still running (no restart) after its `settle`. A worker failure never undoes the web switch:
//! the deploy records it and exits 1 naming the worker.
//!
//! A worker taken out of `workers:` is *retired*: its containers (found by their
//! `dev.cutover.worker` label, never by name) are stopped and removed in this step, after the
//! web switch, so a deleted entry does not keep running unseen.

use std::time::{Duration, Instant};

use crate::config::{Color, Config, Worker};
use crate::docker::compose::{Container, ContainerState, HealthState, Project};
use crate::docker::containers;
use crate::engine::{Abort, Failed, Step, StepClock};
use crate::state::{RunResult, WorkerOutcome};

use super::observe::Observed;

/// How often a waiting worker is looked at.
const POLL: Duration = Duration::from_millis(250);

/// What one worker's move is: from where (its running containers) to which color.
#[derive(Debug, Clone)]
pub(super) struct Move {
    pub name: String,
    pub worker: Worker,
    pub from: Option<Color>,
    pub from_image: Option<String>,
    /// The running containers of the old color.
    pub old_ids: Vec<String>,
    pub to: Color,
}

/// Every worker's move, from the containers observed under the lock.
pub(super) fn moves(config: &Config, observed: &Observed) -> Vec<Move> {
    config
        .workers
        .iter()
        .map(|(name, worker)| {
            let running = |c: Color| -> Vec<&Container> {
                let service = config.worker_service(name.as_str(), c);
                observed
                    .containers
                    .iter()
                    .filter(|k| k.service == service && k.running())
                    .collect()
            };
            // Both colors running (an interrupted deploy): the recorded one is the old one.
            let recorded = observed
                .recorded
                .workers
                .get(name.as_str())
                .map(|w| w.color);
            let from = recorded
                .filter(|c| !running(*c).is_empty())
                .or_else(|| Color::ALL.into_iter().find(|c| !running(*c).is_empty()));
            let old = from.map(running).unwrap_or_default();
            Move {
                name: name.to_string(),
                worker: worker.clone(),
                from,
                from_image: old.first().map(|c| c.image.clone()),
                old_ids: old.iter().map(|c| c.id.clone()).collect(),
                to: from.map(Color::other).unwrap_or(Color::Blue),
            }
        })
        .collect()
}

/// A worker whose containers exist but that cutover.yml no longer names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Retired {
    pub name: String,
    /// Its containers, running or not.
    pub ids: Vec<String>,
}

/// The retired workers among the observed containers, by their worker label.
pub(super) fn retired(config: &Config, observed: &Observed) -> Vec<Retired> {
    let mut retired: Vec<Retired> = Vec::new();
    for c in &observed.containers {
        let Some(name) = c.worker.as_deref() else {
            continue;
        };
        if config.has_worker(name) {
            continue;
        }
        match retired.iter_mut().find(|r| r.name == name) {
            Some(r) => r.ids.push(c.id.clone()),
            None => retired.push(Retired {
                name: name.to_string(),
                ids: vec![c.id.clone()],
            }),
        }
    }
    retired
}

/// The images to render: each worker's old color keeps its image, the new one gets `image`.
pub(super) fn images(
    moves: &[Move],
    image: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<Color, String>> {
    moves
        .iter()
        .map(|m| {
            let mut colors = std::collections::BTreeMap::from([(m.to, image.to_string())]);
            if let (Some(c), Some(img)) = (m.from, &m.from_image) {
                colors.insert(c, img.clone());
            }
            (m.name.clone(), colors)
        })
        .collect()
}

/// The extra memory the workers need on top of what runs now: a worker that does not run
/// yet, or one with `overlap: true` (old and new run together), counts once more.
pub(super) fn extra_memory(moves: &[Move]) -> u64 {
    moves
        .iter()
        .filter(|m| m.from.is_none() || m.worker.overlap)
        .map(|m| m.worker.memory.bytes())
        .sum()
}

/// Moves the workers together: one `docker stop` of every `overlap: false` old worker, one
/// `compose up` of every new one, one wait that judges each, then each is finished (old
/// removed) or put back (new removed, old started again). One failing does not stop the others.
pub(super) struct Mover<'m, 'r, 'c> {
    pub config: &'m Config,
    pub project: &'m Project,
    pub secrets: &'m std::collections::BTreeMap<String, secrecy::SecretString>,
    pub up_timeout: Duration,
    pub clock: &'m mut StepClock<'r>,
    pub image: &'c str,
}

impl Mover<'_, '_, '_> {
    pub fn run(&mut self, moves: &[Move]) -> Vec<WorkerOutcome> {
        if moves.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let names: Vec<&str> = moves.iter().map(|m| m.name.as_str()).collect();
        self.clock.start(Step::Workers, names.join(", "));
        let (verdicts, elapsed) = match self.stop_and_start(moves) {
            Ok(()) => self.wait(moves),
            Err(why) => (
                vec![Err(why); moves.len()],
                vec![started.elapsed(); moves.len()],
            ),
        };
        let outcomes: Vec<WorkerOutcome> = moves
            .iter()
            .zip(verdicts)
            .zip(elapsed)
            .map(|((m, verdict), took)| self.finish(m, verdict, took))
            .collect();
        let failed = outcomes
            .iter()
            .filter(|o| o.result != RunResult::Ok)
            .count();
        self.clock.done(
            Step::Workers,
            match failed {
                0 => format!("{} on {}", names.join(", "), self.image),
                n => format!("{n} of {} failed", outcomes.len()),
            },
        );
        outcomes
    }

    /// Stops the old `overlap: false` workers, then starts every new one.
    fn stop_and_start(&mut self, moves: &[Move]) -> Result<(), String> {
        let grace = self.config.app.stop_grace.get();
        let first: Vec<&String> = moves
            .iter()
            .filter(|m| !m.worker.overlap)
            .flat_map(|m| &m.old_ids)
            .collect();
        if !first.is_empty() {
            let first: Vec<String> = first.into_iter().cloned().collect();
            containers::stop(&first, grace, "the old workers that must not overlap")
                .map_err(|e| e.to_string())?;
        }
        let services: Vec<String> = moves
            .iter()
            .map(|m| self.config.worker_service(&m.name, m.to))
            .collect();
        self.project
            .up(
                &services,
                true,
                self.secrets,
                self.up_timeout,
                "start the new workers",
            )
            .map_err(|e| e.to_string())
    }

    /// Watches every new worker until each is judged; returns the verdicts and how long each
    /// took, in the order of `moves`.
    fn wait(&mut self, moves: &[Move]) -> (Vec<Result<(), String>>, Vec<Duration>) {
        let started = Instant::now();
        let mut verdicts: Vec<Option<Result<(), String>>> = vec![None; moves.len()];
        let mut took = vec![Duration::ZERO; moves.len()];
        let limit = |m: &Move| match &m.worker.health {
            Some(h) => h.timeout.get(),
            None => m.worker.settle.get(),
        };
        let longest = moves.iter().map(limit).max().unwrap_or_default();
        while verdicts.iter().any(Option::is_none) {
            let containers = match self.project.containers() {
                Ok(c) => c,
                Err(e) => {
                    for v in verdicts.iter_mut().filter(|v| v.is_none()) {
                        *v = Some(Err(e.to_string()));
                    }
                    break;
                }
            };
            let mut last = String::new();
            for (i, m) in moves.iter().enumerate() {
                if verdicts[i].is_some() {
                    continue;
                }
                let service = self.config.worker_service(&m.name, m.to);
                let mine: Vec<&Container> =
                    containers.iter().filter(|c| c.service == service).collect();
                let time_is_up = started.elapsed() >= limit(m);
                match judge(&mine, m.worker.health.is_some(), time_is_up) {
                    Judged::Up => verdicts[i] = Some(Ok(())),
                    Judged::Down(why) => verdicts[i] = Some(Err(format!("{service} {why}"))),
                    Judged::Waiting(what) => last = format!("{service}: {what}"),
                }
                if verdicts[i].is_some() {
                    took[i] = started.elapsed();
                }
            }
            if verdicts.iter().any(Option::is_none) {
                self.clock
                    .waiting(Step::Workers, started.elapsed(), longest, last);
                std::thread::sleep(POLL);
            }
        }
        let verdicts = verdicts
            .into_iter()
            .map(|v| v.unwrap_or_else(|| Err("was never judged".into())))
            .collect();
        (verdicts, took)
    }

    /// Removes the old worker after the new one came up, or puts the old one back.
    fn finish(&mut self, m: &Move, verdict: Result<(), String>, took: Duration) -> WorkerOutcome {
        let started = Instant::now();
        let new_service = self.config.worker_service(&m.name, m.to);
        let old_service = m.from.map(|c| self.config.worker_service(&m.name, c));
        let grace = self.config.app.stop_grace.get();
        let result = match verdict {
            Ok(()) => {
                let old = old_service.as_deref().unwrap_or_default();
                containers::stop_and_remove(old, &m.old_ids, grace).map_err(|e| {
                    format!("{new_service} is up, but removing the old {old} failed: {e}")
                })
            }
            Err(why) => Err(self.put_back(m, &new_service, old_service.as_deref(), why)),
        };
        if let Err(why) = &result {
            self.clock.note(format!("worker {}: {why}", m.name));
        }
        WorkerOutcome {
            name: m.name.clone(),
            from: m.from,
            to: m.to,
            image: self.image.to_string(),
            result: if result.is_ok() {
                RunResult::Ok
            } else {
                RunResult::Failed
            },
            reason: result.err(),
            ms: (took + started.elapsed()).as_millis() as u64,
        }
    }

    /// A new worker that did not come up: its last lines, it removed, the old one running.
    fn put_back(&mut self, m: &Move, new: &str, old: Option<&str>, why: String) -> String {
        if let Some(logs) = last_lines(self.project, new) {
            self.clock.note(format!("{new}'s last lines:\n{logs}"));
        }
        let mut message = why;
        if let Err(e) = self
            .project
            .stop_and_remove(new, self.config.app.stop_grace.get())
        {
            message.push_str(&format!(" (removing {new} failed too: {e})"));
        }
        match (old, m.worker.overlap) {
            (None, _) => {}
            (Some(old), true) => message.push_str(&format!("; {old} kept running")),
            (Some(old), false) => message.push_str(&match restart(&m.old_ids, old) {
                Ok(()) => format!("; {old} was started again (its old image)"),
                Err(e) => format!("; starting {old} again failed: {e}"),
            }),
        }
        message
    }
}

/// What one look at a new worker's container says.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    Up,
    Down(String),
    Waiting(String),
}

fn judge(containers: &[&Container], healthcheck: bool, time_is_up: bool) -> Judged {
    let Some(c) = containers.first() else {
        return Judged::Down("has no container (removed while starting?)".into());
    };
    if c.restart_count > 0 {
        return Judged::Down(format!(
            "exited and was restarted by docker ({} restart(s))",
            c.restart_count
        ));
    }
    if c.state != ContainerState::Running {
        return Judged::Down(format!(
            "is {} (exit code {})",
            c.state,
            c.exit_code.unwrap_or(-1)
        ));
    }
    match (healthcheck, &c.health) {
        (true, Some(HealthState::Healthy)) => Judged::Up,
        (true, Some(HealthState::Unhealthy)) => {
            Judged::Down("is unhealthy (its healthcheck failed)".into())
        }
        (true, _) if time_is_up => Judged::Down("did not become healthy in time".into()),
        (true, h) => Judged::Waiting(format!(
            "health {}",
            h.as_ref().map_or("starting", HealthState::as_str)
        )),
        (false, _) if time_is_up => Judged::Up,
        (false, _) => Judged::Waiting("running".into()),
    }
}

/// The last lines a failed worker printed (`docker logs` of its container: no compose
/// prefixes or progress codes), None when there are none or they cannot be read.
fn last_lines(project: &Project, service: &str) -> Option<String> {
    let containers = project.containers().ok()?;
    let c = containers.iter().find(|c| c.service == service)?;
    let text = containers::tail_logs(&c.id, 5, service).ok()?;
    let text = text.trim_end();
    (!text.is_empty()).then(|| {
        text.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `docker start` the old worker's containers again.
fn restart(ids: &[String], service: &str) -> Result<(), String> {
    containers::start(ids, &format!("the old worker {service}")).map_err(|e| e.to_string())
}

impl super::Run<'_, '_> {
    /// Step 8c: move every worker to the new image, then remove the retired ones (see the
    /// module doc). Returns notes for the summary.
    pub(super) fn move_workers(&mut self, t: &super::Target, r: &super::Rendered) -> Vec<String> {
        self.set_step(Step::Workers);
        let up_timeout = self.up_timeout();
        let outcomes = Mover {
            config: &self.d.loaded.config,
            project: &self.project,
            secrets: super::secret_files::compose_env(self.d),
            up_timeout,
            clock: &mut self.clock,
            image: &t.image,
        }
        .run(&r.workers);
        let config = &self.d.loaded.config;
        // Files mode: the secret files of whichever color of each worker no longer runs.
        let mut notes: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o.result {
                RunResult::Ok => o.from.map(|c| config.worker_service(&o.name, c)),
                _ => Some(config.worker_service(&o.name, o.to)),
            })
            .filter_map(|service| self.remove_secret_files(&service))
            .collect();
        self.worker_outcomes = outcomes;
        let grace = config.app.stop_grace.get();
        for gone in &r.retired {
            let what = format!("worker {} (no longer in cutover.yml)", gone.name);
            match containers::stop_and_remove(&what, &gone.ids, grace) {
                Ok(()) => {
                    notes.push(format!("{what}: stopped and removed"));
                    for c in Color::ALL {
                        let service = config.worker_service(&gone.name, c);
                        notes.extend(self.remove_secret_files(&service));
                    }
                }
                Err(e) => notes.push(format!("warning: could not remove {what}: {e}")),
            }
        }
        notes
    }
}

/// Records where each worker that moved runs now; one that failed keeps its old record, one
/// no longer configured loses its record.
pub(super) fn record(state: &mut crate::state::State, config: &Config, outcomes: &[WorkerOutcome]) {
    state.workers.retain(|name, _| config.has_worker(name));
    for o in outcomes.iter().filter(|o| o.result == RunResult::Ok) {
        state.workers.insert(
            o.name.clone(),
            crate::state::WorkerRecord {
                color: o.to,
                image: o.image.clone(),
            },
        );
    }
}

/// The deploy's error when a worker failed: the web switch stays, the exit is 1.
pub(super) fn failure(outcomes: &[WorkerOutcome], web: &str) -> Option<Failed> {
    let failed: Vec<&WorkerOutcome> = outcomes
        .iter()
        .filter(|o| o.result != RunResult::Ok)
        .collect();
    if failed.is_empty() {
        return None;
    }
    let names: Vec<&str> = failed.iter().map(|o| o.name.as_str()).collect();
    let mut message = format!(
        "worker {} failed to come up; {web} (the web switch is kept)",
        names.join(", ")
    );
    for o in failed {
        message.push_str(&format!(
            "\n{}: {}",
            o.name,
            o.reason.as_deref().unwrap_or("failed")
        ));
    }
    Some(Failed {
        message,
        abort: Abort::WorkerFailed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: &str, restarts: i64, health: Option<&str>) -> Container {
        Container {
            id: "x".into(),
            service: "web-jobs-blue".into(),
            image: "i".into(),
            state: state.into(),
            exit_code: Some(0),
            restart_count: restarts,
            health: health.map(HealthState::from),
            worker: Some("jobs".into()),
            pid: None,
        }
    }

    #[test]
    fn a_worker_is_up_when_healthy_or_still_running_after_settle() {
        let running = container("running", 0, None);
        assert_eq!(judge(&[&running], false, true), Judged::Up);
        assert!(matches!(
            judge(&[&running], false, false),
            Judged::Waiting(_)
        ));
        let healthy = container("running", 0, Some("healthy"));
        assert_eq!(judge(&[&healthy], true, false), Judged::Up);
        let starting = container("running", 0, Some("starting"));
        assert!(matches!(judge(&[&starting], true, true), Judged::Down(_)));
    }

    #[test]
    fn an_exited_or_restarting_worker_is_down() {
        let exited = container("exited", 0, None);
        assert!(matches!(judge(&[&exited], false, false), Judged::Down(_)));
        let restarted = container("running", 1, None);
        assert!(matches!(judge(&[&restarted], false, true), Judged::Down(_)));
        assert!(matches!(judge(&[], false, true), Judged::Down(_)));
    }
}
