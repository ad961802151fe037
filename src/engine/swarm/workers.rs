//! The `workers` step of the swarm engine: after the web has moved, every worker
//! (`workers:`, `overlap: true`) moves to the new image as its own swarm service,
//! `<app>-<worker>` ([`super::stack`]), and each one's rollout is followed to a verdict.
//!
//! Swarm does the move (start-first: the new task starts and the old one stops once swarm
//! counts the new one up; a new task that fails within `monitor` is rolled back): with a
//! healthcheck the old worker never stopped, as under compose; without one swarm stopped it
//! when the new process started and starts the old spec again (see [`super::stack`]). cutover follows each worker with the same
//! [`super::rollout`] as the app, and judges a worker created by this deploy (no update, so
//! no `monitor`) itself: without a healthcheck it must stay up through its `settle`. A worker
//! failure never undoes the web's move: the deploy fails naming each worker and what it did.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Color, Config};
use crate::docker::swarm;
use crate::engine::{Abort, Event, Failed, Step};

use super::rollout::{self, Rollout};
use super::{stack, Run, Target};

/// A worker as the observe step found it.
#[derive(Debug, Clone)]
pub(super) struct WorkerTarget {
    pub name: String,
    /// Its swarm service, `<project>_<app>-<worker>`.
    pub service: String,
    /// The image its service runs now (`None`: it does not run yet).
    pub from_image: Option<String>,
}

/// One worker's rollout, in the deploy's `--json` summary.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRollout {
    pub name: String,
    pub service: String,
    pub from_image: Option<String>,
    pub image: String,
    /// From the workers' stack deploy to this worker's verdict.
    pub ms: u64,
}

/// Every worker of `config` and what its service runs now.
pub(super) fn observe(config: &Config, project: &str) -> anyhow::Result<Vec<WorkerTarget>> {
    config
        .workers
        .keys()
        .map(|name| {
            let service = swarm::service_name(
                project,
                &stack::worker_service(config.app.name.as_str(), name.as_str()),
            );
            let from_image =
                swarm::service(&service)?.map(|s| swarm::display_image(&s.image).to_string());
            Ok(WorkerTarget {
                name: name.to_string(),
                service,
                from_image,
            })
        })
        .collect()
}

/// The workers as they run now, each on the image it runs: what a stack deploy that must not
/// move them (but prunes) names. A worker that does not run yet is left out.
pub(super) fn as_they_run(t: &Target) -> BTreeMap<String, String> {
    t.workers
        .iter()
        .filter_map(|w| Some((w.name.clone(), w.from_image.clone()?)))
        .collect()
}

impl Run<'_, '_> {
    /// The workers step: with `deploy` (the colors the stack keeps), the stack deployed again
    /// with every worker on the new image and `--prune`; without, the caller's deploy already
    /// did that (host routing's stop step). Then each worker's rollout, to a verdict.
    pub(super) fn move_workers(
        &mut self,
        t: &Target,
        deploy: Option<Vec<(Color, String)>>,
    ) -> anyhow::Result<Vec<WorkerRollout>> {
        if t.workers.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = t.workers.iter().map(|w| w.name.as_str()).collect();
        self.clock.start(Step::Workers, names.join(", "));
        let started = Instant::now();
        if let Some(colors) = deploy {
            self.deploy_partial_stack(
                t,
                colors,
                false,
                true,
                stack::workers_on(&self.d.loaded.config, &t.image),
            )?;
        }
        let mut moved = Vec::new();
        let mut failed = Vec::new();
        for w in &t.workers {
            match self.follow(t, w, started)? {
                Ok(rollout) => moved.push(rollout),
                Err(why) => failed.push(format!("worker {}: {why}", w.name)),
            }
        }
        if failed.is_empty() {
            self.clock.done(
                Step::Workers,
                format!("{} on {}", names.join(", "), t.image),
            );
            return Ok(moved);
        }
        self.clock.failed(Step::Workers, "failed");
        let moved: Vec<String> = moved.iter().map(|m| m.name.clone()).collect();
        Err(Failed {
            message: format!(
                "{}; the web runs {} (a worker failure does not undo it){}",
                failed.join("; "),
                t.image,
                if moved.is_empty() {
                    String::new()
                } else {
                    format!("; moved to it: {}", moved.join(", "))
                }
            ),
            abort: Abort::WorkerFailed,
        }
        .into())
    }

    /// One worker's rollout: `Ok(Ok(..))` it runs the new image, `Ok(Err(why))` it did not
    /// move (swarm rolled it back, or a new one keeps failing).
    fn follow(
        &mut self,
        t: &Target,
        w: &WorkerTarget,
        started: Instant,
    ) -> anyhow::Result<Result<WorkerRollout, String>> {
        let interrupted = self.d.interrupted.clone();
        let limit = t.swarm.timeout.get();
        let reporter = self.clock.reporter();
        let outcome = rollout::wait_rollout(&w.service, limit, &mut |p| {
            reporter.event(Event::Waiting {
                step: Step::Workers,
                elapsed: p.elapsed,
                limit,
                last: format!("{}: {}", w.name, p.describe()),
            });
            !interrupted.load(Ordering::SeqCst)
        })?;
        let Some(outcome) = outcome else {
            return Err(Failed {
                message: format!(
                    "deploy interrupted while swarm moved worker {} to {}; the web moved, swarm carries the worker on (or back) without cutover: see `cutover status --engine swarm`",
                    w.name, t.image
                ),
                abort: Abort::Interrupted,
            }
            .into());
        };
        let outcome = match (&outcome, &w.from_image) {
            // Created by this deploy: swarm had no update to watch through `monitor`.
            (Rollout::Converged { .. }, None) => self.settled(w)?.unwrap_or(outcome),
            _ => outcome,
        };
        let (_, failure) = rollout::judge(&outcome, &w.service, &t.image, &t.swarm.timeout)?;
        Ok(match failure {
            None => Ok(WorkerRollout {
                name: w.name.clone(),
                service: w.service.clone(),
                from_image: w.from_image.clone(),
                image: t.image.clone(),
                ms: started.elapsed().as_millis() as u64,
            }),
            Some((_, message)) => Err(message),
        })
    }

    /// A worker this deploy created, without a healthcheck, must keep its task running
    /// through its `settle` (swarm reports it running once the process started); `Some`
    /// failure when it did not. With a healthcheck swarm reported it running only once healthy.
    fn settled(&mut self, w: &WorkerTarget) -> anyhow::Result<Option<Rollout>> {
        let Some(worker) = self
            .d
            .loaded
            .config
            .workers
            .iter()
            .find_map(|(name, worker)| (name.as_str() == w.name).then_some(worker))
        else {
            return Ok(None);
        };
        if worker.health.is_some() {
            return Ok(None);
        }
        let until = Instant::now() + worker.settle.get();
        while Instant::now() < until {
            let failed: Vec<swarm::Task> = swarm::tasks(&w.service)?
                .into_iter()
                .filter(|task| task.state.gave_up())
                .collect();
            if let Some(task) = failed.first() {
                return Ok(Some(Rollout::Failing {
                    failed: failed.len(),
                    error: format!(
                        "{} within its settle of {}",
                        if task.error.is_empty() {
                            "exited".to_string()
                        } else {
                            task.error.clone()
                        },
                        worker.settle
                    ),
                }));
            }
            // An interrupt ends the watch, never as a pass: the worker was not seen through
            // its settle, so the deploy stops as interrupted, saying so.
            if self.d.interrupted.load(Ordering::SeqCst) {
                return Err(Failed {
                    message: format!(
                        "deploy interrupted while worker {} was in its settle of {} (created on the new image, not yet seen to stay up); the web moved: see `cutover status --engine swarm`",
                        w.name, worker.settle
                    ),
                    abort: Abort::Interrupted,
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(None)
    }
}
