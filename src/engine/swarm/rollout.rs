//! Following a swarm rollout to a verdict, and that verdict in words.
//!
//! Whether a rollout converged is read from the service's `UpdateStatus`, which swarm resets
//! on every spec update and sets again when its updater has work to do (`updating` →
//! `completed`, or `rollback_started` → `rollback_completed`, or `paused`). A service just
//! created, or updated without any task to replace, has no `UpdateStatus`: then the tasks
//! themselves are counted against the desired replicas.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Dur;
use crate::docker::swarm::{self, Task, TaskState, UpdateState};
use crate::engine::Abort;

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Rollout {
    /// Every replica runs the new spec (and swarm says the update completed, if it ran one).
    Converged {
        running: u64,
    },
    /// Swarm's updater saw a task fail and rolled the service back to the previous spec.
    RolledBack {
        message: String,
    },
    /// The update (or its rollback) paused on a failure; the service is half-updated.
    Paused {
        state: String,
        message: String,
    },
    /// A first deploy whose tasks keep failing (there is nothing to roll back to).
    Failing {
        failed: usize,
        error: String,
    },
    TimedOut {
        running: u64,
        wanted: u64,
    },
}

/// One poll of a rollout, for progress lines.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    /// Running tasks on the new spec / replicas wanted.
    pub running: u64,
    pub wanted: u64,
    /// swarm's `UpdateStatus.State`, or `-` when it set none.
    pub update_state: String,
}

impl Progress {
    pub fn describe(&self) -> String {
        format!(
            "{}/{} tasks on the new spec, update {}",
            self.running, self.wanted, self.update_state
        )
    }
}

/// Polls `service` until the rollout started by the last stack deploy converges, rolls back,
/// pauses, keeps failing (first deploy) or `timeout` passes. `on_poll` returning false stops
/// the wait (interrupt) with `Ok(None)`.
pub fn wait_rollout(
    service_name: &str,
    timeout: Duration,
    on_poll: &mut dyn FnMut(&Progress) -> bool,
) -> anyhow::Result<Option<Rollout>> {
    let started = Instant::now();
    // Swarm's updater picks a spec change up within milliseconds; a status-less service is
    // judged by its tasks only after this, so a just-starting update is not mistaken for
    // "nothing to do".
    let settle = Duration::from_millis(1500);
    loop {
        let service = swarm::service(service_name)?.ok_or_else(|| {
            anyhow::anyhow!("service {service_name} disappeared during the rollout")
        })?;
        let wanted = service.replicas.unwrap_or(1);
        let tasks = swarm::tasks(service_name)?;
        let current: Vec<&Task> = tasks.iter().filter(|t| t.matches(&service)).collect();
        let running = current.iter().filter(|t| t.serving()).count() as u64;
        let others_running = tasks
            .iter()
            .filter(|t| !t.matches(&service) && t.state == TaskState::Running)
            .count();
        let update_state = service
            .update
            .as_ref()
            .map(|u| u.state.to_string())
            .unwrap_or_else(|| "-".to_string());
        let progress = Progress {
            elapsed: started.elapsed(),
            running,
            wanted,
            update_state: update_state.clone(),
        };
        match service.update.as_ref() {
            Some(u) if u.state == UpdateState::Completed && running >= wanted => {
                return Ok(Some(Rollout::Converged { running }))
            }
            Some(u) if u.state == UpdateState::RollbackCompleted => {
                return Ok(Some(Rollout::RolledBack {
                    message: u.message.clone(),
                }));
            }
            Some(u) if u.state.paused() => {
                return Ok(Some(Rollout::Paused {
                    state: u.state.to_string(),
                    message: u.message.clone(),
                }));
            }
            None if started.elapsed() >= settle => {
                if running >= wanted && others_running == 0 {
                    return Ok(Some(Rollout::Converged { running }));
                }
                // No update in flight: a first deploy. Swarm retries failing tasks forever;
                // three failures of the current spec are a verdict, not bad luck.
                let failed: Vec<&&Task> = current.iter().filter(|t| t.state.gave_up()).collect();
                if failed.len() >= 3 {
                    let error = failed
                        .iter()
                        .map(|t| t.error.clone())
                        .find(|e| !e.is_empty())
                        .unwrap_or_default();
                    return Ok(Some(Rollout::Failing {
                        failed: failed.len(),
                        error,
                    }));
                }
            }
            _ => {}
        }
        if !on_poll(&progress) {
            return Ok(None);
        }
        if started.elapsed() >= timeout {
            return Ok(Some(Rollout::TimedOut { running, wanted }));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What a rollout's verdict means for the deploy: the `rollout` step line, and the failure
/// (why, and the message) unless it converged.
pub fn judge(
    outcome: &Rollout,
    service: &str,
    image: &str,
    timeout: &Dur,
) -> anyhow::Result<(String, Option<(Abort, String)>)> {
    Ok(match outcome {
        Rollout::Converged { running } => (
            format!("{running} tasks run {image} (start-first, one at a time)"),
            None,
        ),
        Rollout::RolledBack { message } => {
            let now = swarm::service(service)?
                .map(|svc| swarm::display_image(&svc.image).to_string())
                .unwrap_or_else(|| "?".into());
            (
                "rolled back".to_string(),
                Some((
                    Abort::RolledBack,
                    format!(
                        "swarm rolled the update back: a new task failed ({message}); {service} still runs {now}{}",
                        task_error(service, image)
                    ),
                )),
            )
        }
        Rollout::Paused { state, message } => (
            state.clone(),
            Some((
                Abort::RolloutPaused,
                format!(
                    "the rollout is {state} ({message}): {service} is partly updated; fix and redeploy, or `docker service rollback {service}`"
                ),
            )),
        ),
        Rollout::Failing { failed, error } => (
            "failing".to_string(),
            Some((
                Abort::RolloutFailing,
                format!(
                    "the first deploy of {image} keeps failing ({failed} tasks failed, last error: {error}); nothing to roll back to{}",
                    task_error(service, image)
                ),
            )),
        ),
        Rollout::TimedOut { running, wanted } => (
            "timed out".to_string(),
            Some((
                Abort::RolloutTimedOut,
                format!(
                    "the rollout did not converge within {timeout} ({running}/{wanted} tasks on the new spec); swarm keeps trying: see `cutover status --engine swarm`"
                ),
            )),
        ),
    })
}

/// The last task error of the new image, for a failure message (`; its task said: …`). Only
/// decoration of a failure already found: a Docker that cannot list tasks adds nothing.
fn task_error(service: &str, image: &str) -> String {
    let Ok(tasks) = swarm::tasks(service) else {
        return String::new();
    };
    tasks
        .iter()
        .filter(|t: &&Task| swarm::display_image(&t.image) == image && !t.error.is_empty())
        .map(|t| format!("; its task said: {}", t.error))
        .next()
        .unwrap_or_default()
}
