//! Where the compose engine runs the deploy hooks (`engine/hooks.rs` runs one): `pre_deploy`
//! once the deploy knows where it goes and before it changes anything (its failure aborts:
//! exit 1, nothing changed); `post_deploy` after a success and `on_failure` after a failure
//! (including a failed `pre_deploy` or release phase), whose own failure is a warning line and
//! a `hooks[]` entry in `--json`, never a change of the deploy's result or exit code.
//! A dry run runs no hook. Rollbacks run them too (`CUTOVER_ACTION=rollback`). An interrupt
//! during `pre_deploy` kills it and ends the deploy as interrupted (exit 130); the hooks
//! after the deploy are not cut short by that interrupt (`on_failure` sees
//! `CUTOVER_RESULT=interrupted`), only by their own timeout.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::engine::hooks::{self, Facts, HookKind, HookRun, Runner, Standing};
use crate::engine::{Abort, Failed, Reporter, Request};

use super::{Run, Summary, Target};

impl Run<'_, '_> {
    /// Once the deploy knows where it goes: what every hook will be told, and a check that
    /// the secret keys the hooks ask for exist (before anything changes).
    pub(super) fn prepare_hooks(&mut self, req: &Request, t: &Target) -> anyhow::Result<()> {
        self.facts = Some(Facts {
            project: self.d.loaded.config.project.to_string(),
            action: req.action,
            image: t.image.clone(),
            from_image: t.from_image.clone(),
            from: t.from,
            color: Some(t.to),
            started: Instant::now(),
        });
        hooks::check_keys(&self.d.loaded.config.hooks, self.d.values())
    }

    /// The `pre_deploy` hook: its failure aborts the deploy, nothing changed.
    pub(super) fn pre_deploy(&mut self) -> anyhow::Result<()> {
        let standing = Standing {
            result: "pending",
            error: None,
        };
        let Some(run) = self.run_hook(HookKind::PreDeploy, standing) else {
            return Ok(());
        };
        if run.ok {
            return Ok(());
        }
        let config = &self.d.loaded.config;
        let (what, abort) = if run.interrupted {
            ("deploy interrupted", Abort::Interrupted)
        } else {
            ("deploy aborted", Abort::HookFailed)
        };
        Err(Failed {
            message: format!(
                "{what}: {}\nnothing was changed",
                run.failure(&config.hooks)
            ),
            abort,
        }
        .into())
    }

    fn run_hook(&mut self, kind: HookKind, standing: Standing) -> Option<HookRun> {
        let facts = self.facts.clone()?;
        let d = self.d;
        // `pre_deploy` ends with the deploy on an interrupt; the hooks after the deploy run
        // whatever it was (an interrupted deploy's `on_failure` too), bounded by their timeout.
        let after_the_deploy = AtomicBool::new(false);
        let runner = Runner {
            hooks: &d.loaded.config.hooks,
            secrets: d.values(),
            cancel: match kind {
                HookKind::PreDeploy => &d.interrupted,
                HookKind::PostDeploy | HookKind::OnFailure => &after_the_deploy,
            },
            dir: &d.loaded.dir,
            files: d.secret_files.as_ref(),
        };
        let reporter: &mut dyn Reporter = self.clock.reporter();
        let run = runner.run(kind, &facts, standing, reporter)?;
        if !run.ok && kind != HookKind::PreDeploy {
            let text = run.failure(&self.d.loaded.config.hooks);
            self.clock
                .note(format!("warning: {text} (the deploy's result stands)"));
        }
        Some(run)
    }

    /// After the deploy: `post_deploy` on success, `on_failure` on failure
    /// ([`hooks::after_deploy`]); nothing for a dry run.
    pub(super) fn after_hooks(
        &mut self,
        req: &Request,
        result: anyhow::Result<Summary>,
    ) -> anyhow::Result<Summary> {
        if req.dry_run {
            return result;
        }
        let d = self.d;
        hooks::after_deploy(
            result,
            &d.loaded.config.hooks,
            |kind, standing| self.run_hook(kind, standing),
            |detail| &mut detail.hooks,
        )
    }
}
