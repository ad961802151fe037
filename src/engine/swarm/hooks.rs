//! The deploy hooks on a swarm: the same `engine/hooks.rs` runner as the compose engine, on
//! the machine cutover runs on (never on a node), with the same `CUTOVER_*` environment.
//! `pre_deploy` runs once the stack is rendered and before any secret, service or nginx file
//! changes (its failure aborts: nothing changed); `post_deploy` after a success and
//! `on_failure` after a failure, whose own failure is a warning, never a change of the
//! result. Under `routing: ingress` there are no colors: `CUTOVER_COLOR` and
//! `CUTOVER_FROM_COLOR` are empty. Swarm secrets are files on the nodes, so a hook gets the
//! keys it names in `env` as values, as under `secrets_delivery: env`.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::engine::hooks::{self, Facts, HookKind, HookRun, Runner, Standing};
use crate::engine::{Abort, Failed, Request};

use super::{Run, Summary, Target};

impl Run<'_, '_> {
    /// What every hook is told, and the check that the keys they ask for exist.
    pub(super) fn prepare_hooks(&mut self, req: &Request, t: &Target) -> anyhow::Result<()> {
        self.facts = Some(Facts {
            project: t.project.clone(),
            action: req.action,
            image: t.image.clone(),
            from_image: t.from_image.clone(),
            from: t
                .colors
                .as_ref()
                .and_then(|c| c.active.as_ref().map(|(color, _)| *color)),
            color: t.colors.as_ref().map(|c| c.new),
            started: Instant::now(),
        });
        hooks::check_keys(&self.d.loaded.config.hooks, &self.d.secrets)
    }

    /// The `pre_deploy` hook: its failure aborts the deploy before anything changed.
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
        let (what, abort) = if run.interrupted {
            ("deploy interrupted", Abort::Interrupted)
        } else {
            ("deploy aborted", Abort::HookFailed)
        };
        Err(Failed {
            message: format!(
                "{what}: {}\nnothing was changed",
                run.failure(&self.d.loaded.config.hooks)
            ),
            abort,
        }
        .into())
    }

    fn run_hook(&mut self, kind: HookKind, standing: Standing) -> Option<HookRun> {
        let facts = self.facts.clone()?;
        let d = self.d;
        let after_the_deploy = AtomicBool::new(false);
        let runner = Runner {
            hooks: &d.loaded.config.hooks,
            secrets: &d.secrets,
            cancel: match kind {
                HookKind::PreDeploy => &d.interrupted,
                HookKind::PostDeploy | HookKind::OnFailure => &after_the_deploy,
            },
            dir: &d.loaded.dir,
            files: None,
        };
        let run = runner.run(kind, &facts, standing, self.clock.reporter())?;
        if !run.ok && kind != HookKind::PreDeploy {
            let text = run.failure(&d.loaded.config.hooks);
            self.clock
                .note(format!("warning: {text} (the deploy's result stands)"));
        }
        Some(run)
    }

    /// `post_deploy` on success, `on_failure` on failure ([`hooks::after_deploy`]).
    pub(super) fn after_hooks(
        &mut self,
        result: anyhow::Result<Summary>,
    ) -> anyhow::Result<Summary> {
        let d = self.d;
        hooks::after_deploy(
            result,
            &d.loaded.config.hooks,
            |kind, standing| self.run_hook(kind, standing),
            |detail| &mut detail.hooks,
        )
    }
}
