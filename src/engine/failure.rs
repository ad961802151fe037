//! How a deploy fails on either engine: a message saying what was rolled back, and an
//! [`Abort`] saying why, which the command layer and the history branch on.

use crate::state::RunResult;

/// Why a deploy stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// SIGINT/SIGTERM before the point of no return.
    Interrupted,
    /// A `pre_deploy` hook failed: nothing was changed (compose).
    HookFailed,
    /// The release command (`app.release`) failed or timed out; the new color never started.
    ReleaseFailed,
    /// Bringing the new color up failed (compose).
    StartFailed,
    /// The new color's container exited or restarted during the health gate (compose).
    ContainerDied,
    /// The new color never answered its health check in time (compose).
    HealthTimedOut,
    /// nginx's config test or reload failed; the include was not switched (compose).
    SwitchFailed,
    /// nginx did not serve the new color after the reload; the include was restored.
    ProbeFailed,
    /// The new color failed inside the settle window after the switch; nginx switched back
    /// to the old color (compose).
    SettleFailed,
    /// A worker did not come up after a successful web switch; the switch is kept (compose).
    WorkerFailed,
    /// Swarm rolled the update back.
    RolledBack,
    /// Swarm paused the update (or its rollback).
    RolloutPaused,
    /// A first swarm deploy whose tasks keep failing.
    RolloutFailing,
    /// The rollout did not converge in time.
    RolloutTimedOut,
}

/// A deploy that failed, with what was rolled back.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    pub message: String,
    pub abort: Abort,
}

impl Failed {
    /// Interrupted: the command layer exits with the interrupt status.
    pub fn interrupted(&self) -> bool {
        self.abort == Abort::Interrupted
    }
}

/// Whether an error is an interrupted deploy.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Failed>()
        .is_some_and(Failed::interrupted)
}

/// The history verdict of a finished run, and the reason when it failed.
pub fn verdict<T>(result: &anyhow::Result<T>) -> (RunResult, Option<String>) {
    match result {
        Ok(_) => (RunResult::Ok, None),
        Err(e) => error_verdict(e),
    }
}

/// The history verdict of a run that ended in `err`: interrupted or failed, with the reason.
pub fn error_verdict(err: &anyhow::Error) -> (RunResult, Option<String>) {
    let result = if is_interrupted(err) {
        RunResult::Interrupted
    } else {
        RunResult::Failed
    };
    (result, Some(format!("{err:#}")))
}
