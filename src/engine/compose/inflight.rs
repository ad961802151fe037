//! Step 1 (the deploy lock, and registering the project box-wide) and the in-progress
//! record in `state.json` that lets `status` and the next deploy explain a run that was
//! killed: the bookkeeping around the steps, apart from the steps themselves.

use crate::engine::record;
use crate::engine::{Request, Step};
use crate::state::{DeployLock, EngineKind, InProgress};

use super::{Run, Target};

impl Run<'_, '_> {
    /// Step 1: Lock (a dry run changes nothing and takes no lock).
    pub(super) fn lock(&mut self, req: &Request) -> anyhow::Result<Option<DeployLock>> {
        if req.dry_run {
            return Ok(None);
        }
        self.clock.start(Step::Lock, "");
        let action = format!(
            "{} {}",
            req.action,
            req.image.as_deref().unwrap_or("(active image)")
        );
        // Refused by another deploy: the attempt still gets its history line.
        let refused = record::Refused {
            engine: EngineKind::Compose,
            request: req,
            clock: &self.clock,
            interrupted: &self.d.interrupted,
        };
        let lock = record::lock_or_record_refusal(&self.state_dir, req.lock_wait, action, refused)?;
        self.clock.done(Step::Lock, "");
        // Registered before anything runs, so other projects' prunes keep this one's images.
        if let Err(e) = crate::registry::register(&self.state_dir.dir) {
            self.clock.note(format!(
                "warning: {e:#}; other cutover projects on this box may prune this project's images"
            ));
        }
        Ok(Some(lock))
    }

    pub(super) fn mark_in_progress(&mut self, t: &Target) -> anyhow::Result<()> {
        let mut record = self.state_dir.load()?;
        record.in_progress = Some(InProgress {
            pid: std::process::id(),
            started: crate::state::now_rfc3339(),
            image: t.image.clone(),
            from: t.from,
            to: t.to,
            step: Step::Up,
        });
        self.state_dir.save(&record)
    }

    /// Moves the in-progress record to `step`; a record that cannot be written only costs
    /// `status` its detail, never the deploy (a warning says so).
    pub(super) fn set_step(&mut self, step: Step) {
        let marked = self.state_dir.mark_step(step);
        self.step_marked(step, marked);
    }

    /// The warning for a step the in-progress record could not be moved to (a full disk, a
    /// read-only state directory): `status` would tell of a killed run an earlier step.
    pub(super) fn step_marked(&mut self, step: Step, marked: anyhow::Result<()>) {
        if let Err(e) = marked {
            self.clock.note(format!(
                "warning: could not record step `{step}` in {}: {e:#}; a run killed now \
                 would be told of at an earlier step",
                self.state_dir.state_file().display()
            ));
        }
    }
}
