//! The deploy lock and the history line, the same for both engines: one deploy at a time
//! per project, and every attempt (ok, failed, interrupted; also one refused before anything
//! changed) appended to `history.jsonl`.

use std::time::Duration;

use crate::config::Color;
use crate::state::{
    Action, DeployLock, EngineKind, HistoryEntry, Holder, LockError, RunResult, StateDir,
};

use super::step::StepTiming;

/// Takes the project's deploy lock for `action` (e.g. "deploy app:v2"), naming this process
/// as the holder a waiting deploy reports.
pub fn lock(state_dir: &StateDir, wait: Duration, action: String) -> Result<DeployLock, LockError> {
    let holder = Holder {
        pid: std::process::id(),
        user: crate::state::current_user(),
        started: crate::state::now_rfc3339(),
        action,
    };
    state_dir.lock(wait, &holder)
}

/// [`lock`], and when another deploy holds it, `refused`'s history line (result failed,
/// reason `refused: …`) before the error: `history` then says why a CI job's release is not
/// out. Both engines take their lock through this.
pub fn lock_or_record_refusal(
    state_dir: &StateDir,
    wait: Duration,
    action: String,
    refused: Refused<'_, '_>,
) -> anyhow::Result<DeployLock> {
    let holder = Holder {
        pid: std::process::id(),
        user: crate::state::current_user(),
        started: crate::state::now_rfc3339(),
        action,
    };
    let (err, result) = match state_dir.lock_unless(wait, &holder, refused.interrupted) {
        Ok(lock) => return Ok(lock),
        Err(held @ LockError::Held { .. }) => {
            let err = anyhow::Error::from(held);
            let reason = format!("refused: {err}");
            (err, (RunResult::Failed, reason))
        }
        // A signal while waiting: an interrupted deploy (exit 130) that changed nothing.
        Err(LockError::Interrupted { path }) => {
            let err = anyhow::Error::from(super::failure::Failed {
                message: LockError::Interrupted { path }.to_string(),
                abort: super::failure::Abort::Interrupted,
            });
            let reason = format!("{err}");
            (err, (RunResult::Interrupted, reason))
        }
        Err(other) => return Err(other.into()),
    };
    let attempt = Attempt {
        engine: refused.engine,
        action: refused.request.action,
        image: refused
            .request
            .image
            .clone()
            .unwrap_or_else(|| "(the running image)".into()),
        from_image: None,
        from: None,
        to: None,
        result: result.0,
        reason: Some(result.1),
        steps: refused.clock.steps(),
        total_ms: refused.clock.total_ms(),
        switch_ms: None,
        workers: Vec::new(),
    };
    Err(match append(state_dir, attempt) {
        Ok(()) => err,
        Err(problem) => unrecorded(err, problem),
    })
}

/// Who was refused by the lock (or interrupted while waiting for it), for its history line.
pub struct Refused<'a, 'r> {
    pub engine: EngineKind,
    pub request: &'a super::Request,
    pub clock: &'a super::StepClock<'r>,
    /// The deploy's interrupt flag: set while waiting, the wait ends as an interrupt.
    pub interrupted: &'a std::sync::atomic::AtomicBool,
}

/// What a run contributes to its history line.
pub struct Attempt {
    pub engine: EngineKind,
    pub action: Action,
    pub image: String,
    pub from_image: Option<String>,
    pub from: Option<Color>,
    pub to: Option<Color>,
    pub result: RunResult,
    pub reason: Option<String>,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
    /// The compose engine's switch time, when the deploy succeeded.
    pub switch_ms: Option<u64>,
    pub workers: Vec<crate::state::WorkerOutcome>,
}

/// Appends one attempt to the history, stamped with now and the user.
pub fn append(state_dir: &StateDir, a: Attempt) -> anyhow::Result<()> {
    state_dir
        .append_history(&HistoryEntry {
            time: crate::state::now_rfc3339(),
            user: crate::state::current_user(),
            engine: a.engine,
            action: a.action,
            image: a.image,
            from_image: a.from_image,
            from: a.from,
            to: a.to,
            result: a.result,
            reason: a.reason,
            steps: a.steps,
            total_ms: a.total_ms,
            switch_ms: a.switch_ms,
            workers: a.workers,
        })
        .map(|_set_aside| ()) // a torn tail set aside is reported by `status`
}

/// A run's result once its record was (or was not) written. A record that fails after a
/// successful run says what is live and what was not recorded, instead of a bare I/O error;
/// after a failed run the failure stays the error, the record's problem only appended.
pub fn outcome<T>(
    result: anyhow::Result<T>,
    recorded: anyhow::Result<()>,
    live: impl FnOnce() -> String,
) -> anyhow::Result<T> {
    let problem = match recorded {
        Ok(()) => return result,
        Err(e) => e,
    };
    match result {
        Ok(_) => Err(anyhow::anyhow!(
            "the deploy went through, but its record could not be written\n\
             live: {}\n\
             not recorded: {problem:#}\n\
             the next deploy or rollback repairs the record from what it observes",
            live()
        )),
        Err(err) => Err(unrecorded(err, problem)),
    }
}

/// A failure whose history line could not be written: the failure stays the error (its
/// [`super::Failed`] kind kept), the record's problem appended.
pub fn unrecorded(err: anyhow::Error, problem: anyhow::Error) -> anyhow::Error {
    match err.downcast::<super::Failed>() {
        Ok(mut failed) => {
            failed.message.push_str(&format!(
                "\n(this failure could not be recorded either: {problem:#})"
            ));
            failed.into()
        }
        Err(err) => {
            anyhow::anyhow!("{err:#}\n(this failure could not be recorded either: {problem:#})")
        }
    }
}
