//! The deploy lock and the history line, the same for both engines: one deploy at a time
//! per project, and every attempt (ok, failed, interrupted) appended to `history.jsonl`.

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
        })
        .map(|_set_aside| ()) // a torn tail set aside is reported by `status`
}
