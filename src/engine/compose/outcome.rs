//! Step 9, the record: what happened, whatever it was. `state.json` moves on after a success,
//! or after a failure that left nginx on the new color once switched (the in-progress record
//! is cleared either way); `history.jsonl` gets one line per
//! attempt, refusals before anything changed included (a failed pull, the budget, a render
//! error, a failing `pre_deploy`), so `history` and `status` say why a release is not out.

use crate::engine::record::{self, Attempt};
use crate::engine::{failure, Request};
use crate::state::{EngineKind, RunResult};

use super::{workers, Run, Target};

impl Run<'_, '_> {
    /// Step 9: Record what happened, whatever it was: the state (on success) and the history.
    pub(super) fn record(
        &mut self,
        req: &Request,
        t: &Target,
        result: &anyhow::Result<(u64, Vec<String>)>,
    ) -> anyhow::Result<()> {
        let saved = self.save_state(t, result.is_ok());
        let switch_ms = result.as_ref().ok().map(|(ms, _)| *ms);
        let (result, reason) = match workers::failure(&self.worker_outcomes, &self.live(t)) {
            Some(failed) if result.is_ok() => (RunResult::Failed, Some(failed.message)),
            _ => failure::verdict(result),
        };
        let appended = self.append_history(req, t, result, reason, switch_ms);
        match (saved, appended) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) => Err(e.context("state.json was not updated")),
            (Ok(()), Err(e)) => Err(e.context("this deploy's history line was not written")),
            (Err(e), Err(h)) => Err(e.context(format!(
                "state.json was not updated, nor this deploy's history line ({h:#})"
            ))),
        }
    }

    /// A deploy stopped before anything changed (a failed pull, the memory budget, a render
    /// error, a failing `pre_deploy`) still gets its history line, so `history` and `status`
    /// say why the release a CI job asked for is not out. A dry run records nothing.
    pub(super) fn record_refusal(
        &mut self,
        req: &Request,
        t: &Target,
        err: anyhow::Error,
    ) -> anyhow::Error {
        if req.dry_run {
            return err;
        }
        let (result, reason) = failure::error_verdict(&err);
        match self.append_history(req, t, result, reason, None) {
            Ok(()) => err,
            Err(problem) => record::unrecorded(err, problem),
        }
    }

    /// This run's history line: the steps so far, the workers moved so far.
    fn append_history(
        &self,
        req: &Request,
        t: &Target,
        result: RunResult,
        reason: Option<String>,
        switch_ms: Option<u64>,
    ) -> anyhow::Result<()> {
        record::append(
            &self.state_dir,
            Attempt {
                engine: EngineKind::Compose,
                action: req.action,
                image: t.image.clone(),
                from_image: None,
                from: t.from,
                to: Some(t.to),
                result,
                reason,
                steps: self.clock.steps(),
                total_ms: self.clock.total_ms(),
                switch_ms,
                workers: self.worker_outcomes.clone(),
            },
        )
    }

    /// What serves after a successful deploy, for a message about a record that failed.
    pub(super) fn live(&self, t: &Target) -> String {
        let mut live = format!("nginx serves {} with {}", t.to, t.image);
        if let (Some(old), Some(img)) = (t.from, &t.from_image) {
            live.push_str(&format!("; {old} ({img}) was stopped, its image kept"));
        }
        live
    }

    fn save_state(&self, t: &Target, succeeded: bool) -> anyhow::Result<()> {
        let mut state = self.state_dir.load()?;
        state.in_progress = None;
        if succeeded {
            if let (Some(old), Some(old_image)) = (t.from, &t.from_image) {
                state.images.insert(old, old_image.clone());
                if *old_image != t.image {
                    state.previous_image = Some(old_image.clone());
                }
            }
            state.active = Some(t.to);
            state.images.insert(t.to, t.image.clone());
            workers::record(&mut state, &self.d.loaded.config, &self.worker_outcomes);
        } else if self.switched && self.include_names(t.to) {
            // A failure after the switch that left nginx on the new color (no healthy color
            // to switch back to, a switch back that was undone, a first deploy that did not
            // settle): the record says where nginx points. Before the switch the include may
            // name the new color too (bootstrap's, a recovery's), and nothing is recorded.
            state.active = Some(t.to);
            state.images.insert(t.to, t.image.clone());
        }
        self.state_dir.save(&state)
    }

    /// Whether the include on disk points at `color`'s port.
    fn include_names(&self, color: crate::config::Color) -> bool {
        let port = self.d.loaded.config.colors.port(color);
        matches!(
            self.nginx.current_include(),
            Ok(Some(text)) if crate::nginx::include_port(&text) == Some(port)
        )
    }
}
