//! The deploy hooks (`hooks:` in cutover.yml): user commands run where cutover runs the
//! deploy (this machine, or the box with `--host`), never in a container.
//!
//! A hook is an argv list (no shell unless the user writes one), bounded by its timeout (its
//! whole process group is killed at the bound), with its output reported line by line as
//! [`Event::Output`] named after the hook. Its environment is cutover's own (minus
//! `CUTOVER_AGE_KEY`/`CUTOVER_IDENTITY`, like every child: `process::Cmd::child_env`) plus
//! the `CUTOVER_*` facts of the deploy, and of the decrypted secrets only the keys the hook
//! names in `env`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::bail;
use secrecy::SecretString;
use serde::Serialize;

use crate::config::{Color, Hook, Hooks};
use crate::engine::{Event, Reporter};
use crate::process::Cmd;
use crate::state::Action;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    PreDeploy,
    PostDeploy,
    OnFailure,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreDeploy => "pre_deploy",
            HookKind::PostDeploy => "post_deploy",
            HookKind::OnFailure => "on_failure",
        }
    }

    fn of(self, hooks: &Hooks) -> Option<&Hook> {
        match self {
            HookKind::PreDeploy => hooks.pre_deploy.as_ref(),
            HookKind::PostDeploy => hooks.post_deploy.as_ref(),
            HookKind::OnFailure => hooks.on_failure.as_ref(),
        }
    }
}

/// What a deploy tells its hooks, once it knows where it goes.
#[derive(Debug, Clone)]
pub struct Facts {
    pub project: String,
    pub action: Action,
    pub image: String,
    pub from_image: Option<String>,
    pub from: Option<Color>,
    /// The color the deploy goes to; `None` under swarm's `routing: ingress`, which has no
    /// colors (`CUTOVER_COLOR` is then empty).
    pub color: Option<Color>,
    pub started: Instant,
}

/// How the deploy stands when a hook runs: `pending` (pre_deploy), `ok`, `failed`,
/// `interrupted`; and the error, if it failed.
pub struct Standing<'a> {
    pub result: &'a str,
    pub error: Option<&'a str>,
}

/// One hook's run, as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct HookRun {
    pub hook: HookKind,
    pub command: Vec<String>,
    /// `None`: killed (its timeout) or ended by a signal.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Killed because the deploy was interrupted (SIGINT/SIGTERM), not at its bound.
    pub interrupted: bool,
    pub ms: u64,
    pub ok: bool,
    /// Its last output lines when it failed (secrets masked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<String>,
}

impl HookRun {
    /// `post_deploy hook `curl …` exited 3` / `… timed out after 30s`, with its last lines.
    pub fn failure(&self, hooks: &Hooks) -> String {
        let how = match (self.timed_out, self.exit_code) {
            _ if self.interrupted => "was interrupted (SIGINT/SIGTERM) and killed".to_string(),
            (true, _) => {
                let limit = self.hook.of(hooks).map(|h| hooks.timeout_of(h));
                format!(
                    "timed out after {} and was killed",
                    crate::config::Dur(limit.unwrap_or_default())
                )
            }
            (false, Some(code)) => format!("exited {code}"),
            (false, None) => "was killed by a signal".to_string(),
        };
        let mut text = format!(
            "{} hook `{}` {how}",
            self.hook.as_str(),
            self.command.join(" ")
        );
        if !self.tail.is_empty() {
            text.push_str(&format!(
                "; its last output lines:\n{}",
                self.tail
                    .iter()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        text
    }
}

/// Every key a hook asks for must be a decrypted secret: checked before the deploy changes
/// anything, so a typo fails first instead of a webhook silently posting nowhere.
pub fn check_keys(hooks: &Hooks, secrets: &BTreeMap<String, SecretString>) -> anyhow::Result<()> {
    for kind in [
        HookKind::PreDeploy,
        HookKind::PostDeploy,
        HookKind::OnFailure,
    ] {
        let Some(hook) = kind.of(hooks) else { continue };
        for key in &hook.env {
            if !secrets.contains_key(key) {
                bail!(
                    "hooks.{}.env asks for `{key}`, which is not a key of any secrets file in cutover.yml (app.secrets, accessories.*.secrets)",
                    kind.as_str()
                );
            }
        }
    }
    Ok(())
}

/// After a deploy on either engine: `post_deploy` on success (its run added to the summary
/// through `hooks_of`, a failure as a note), `on_failure` on failure (told `failed` or
/// `interrupted`, its failure said after the deploy's error). The deploy's result stands.
pub fn after_deploy<D>(
    result: anyhow::Result<crate::engine::Summary<D>>,
    hooks: &Hooks,
    mut run_hook: impl FnMut(HookKind, Standing<'_>) -> Option<HookRun>,
    hooks_of: fn(&mut D) -> &mut Vec<HookRun>,
) -> anyhow::Result<crate::engine::Summary<D>> {
    match result {
        Ok(mut summary) => {
            let standing = Standing {
                result: "ok",
                error: None,
            };
            if let Some(run) = run_hook(HookKind::PostDeploy, standing) {
                if !run.ok {
                    summary.notes.push(run.failure(hooks));
                }
                hooks_of(&mut summary.detail).push(run);
            }
            Ok(summary)
        }
        Err(err) => {
            let message = format!("{err:#}");
            let standing = Standing {
                result: if crate::engine::failure::is_interrupted(&err) {
                    "interrupted"
                } else {
                    "failed"
                },
                error: Some(&message),
            };
            match run_hook(HookKind::OnFailure, standing) {
                Some(run) if !run.ok => Err(amend(err, &run.failure(hooks))),
                _ => Err(err),
            }
        }
    }
}

/// The deploy's error with the on_failure hook's failure said after it (the same kind, so
/// the exit code and the history verdict stay).
pub fn amend(err: anyhow::Error, text: &str) -> anyhow::Error {
    match err.downcast::<crate::engine::Failed>() {
        Ok(mut failed) => {
            failed
                .message
                .push_str(&format!("\n(warning: {text}; the deploy's result stands)"));
            failed.into()
        }
        Err(err) => anyhow::anyhow!("{err:#}\n(warning: {text}; the deploy's result stands)"),
    }
}

/// The things a hook runs with, besides its facts.
pub struct Runner<'a> {
    pub hooks: &'a Hooks,
    pub secrets: &'a BTreeMap<String, SecretString>,
    pub cancel: &'a AtomicBool,
    /// Where the hook runs (the project directory).
    pub dir: &'a std::path::Path,
    /// `app.secrets_delivery: files`: the keys a hook asks for reach it as `<KEY>_FILE`, a
    /// file on the tmpfs in its own directory for the time it runs, never as a value.
    pub files: Option<&'a crate::secrets::files::ProjectDirs>,
}

impl Runner<'_> {
    /// Runs `kind` if it is configured; `Err` only when it could not start at all.
    pub fn run(
        &self,
        kind: HookKind,
        facts: &Facts,
        standing: Standing,
        reporter: &mut dyn Reporter,
    ) -> Option<HookRun> {
        let hook = kind.of(self.hooks)?;
        let started = Instant::now();
        let files_dir = format!(".hook-{}", kind.as_str());
        let cmd =
            match self.with_secrets(self.command(kind, hook, facts, standing), hook, &files_dir) {
                Ok(cmd) => cmd,
                Err(e) => {
                    return Some(HookRun {
                        hook: kind,
                        command: hook.command.0.clone(),
                        exit_code: None,
                        timed_out: false,
                        interrupted: false,
                        ms: started.elapsed().as_millis() as u64,
                        ok: false,
                        tail: vec![format!("{e:#}")],
                    })
                }
            };
        let from = kind.as_str().to_string();
        let secrets = self.secrets;
        let ran = cmd.run_bounded(self.hooks.timeout_of(hook), self.cancel, &mut |line| {
            reporter.event(Event::Output {
                from: from.clone(),
                line: crate::secrets::deploy_env::redact(line, secrets),
            })
        });
        let mut run = HookRun {
            hook: kind,
            command: hook.command.0.clone(),
            exit_code: None,
            timed_out: false,
            interrupted: false,
            ms: 0,
            ok: false,
            tail: Vec::new(),
        };
        match ran {
            Ok(out) => {
                run.exit_code = out.code;
                run.timed_out = out.timed_out;
                run.interrupted = out.cancelled;
                run.ok = out.success();
                if !run.ok {
                    run.tail = out
                        .tail
                        .iter()
                        .map(|l| crate::secrets::deploy_env::redact(l, secrets))
                        .collect();
                }
            }
            Err(e) => run.tail = vec![e.to_string()],
        }
        if let Some(files) = self.files {
            if let Err(e) = files.remove(&files_dir) {
                run.tail.push(format!("{e:#}"));
            }
        }
        run.ms = started.elapsed().as_millis() as u64;
        Some(run)
    }

    fn command(&self, kind: HookKind, hook: &Hook, facts: &Facts, standing: Standing) -> Cmd {
        let cmd = Cmd::from_argv(&hook.command.0, format!("run the {} hook", kind.as_str()))
            .dir(self.dir)
            .plain_env("CUTOVER_HOOK", kind.as_str())
            .plain_env("CUTOVER_PROJECT", &facts.project)
            .plain_env("CUTOVER_ACTION", facts.action.to_string())
            .plain_env("CUTOVER_IMAGE", &facts.image)
            .plain_env(
                "CUTOVER_FROM_IMAGE",
                facts.from_image.as_deref().unwrap_or(""),
            )
            .plain_env(
                "CUTOVER_COLOR",
                facts.color.map(Color::as_str).unwrap_or(""),
            )
            .plain_env(
                "CUTOVER_FROM_COLOR",
                facts.from.map(Color::as_str).unwrap_or(""),
            )
            .plain_env("CUTOVER_RESULT", standing.result)
            .plain_env(
                "CUTOVER_DURATION_MS",
                facts.started.elapsed().as_millis().to_string(),
            )
            .plain_env("CUTOVER_ERROR", standing.error.unwrap_or(""));
        cmd
    }

    /// The keys the hook asks for: as values in its environment, or (files mode) written to
    /// `dir` under the project's secrets directory with `<KEY>_FILE` naming each.
    fn with_secrets(&self, mut cmd: Cmd, hook: &Hook, dir: &str) -> anyhow::Result<Cmd> {
        let asked = hook
            .env
            .iter()
            .filter_map(|k| self.secrets.get(k).map(|v| (k.as_str(), v)));
        match self.files {
            None => {
                for (key, value) in asked {
                    cmd = cmd.env(key, value.clone());
                }
            }
            Some(files) => {
                let written = files.write(dir, asked)?;
                for key in hook.env.iter().filter(|k| self.secrets.contains_key(*k)) {
                    cmd = cmd.plain_env(
                        format!("{key}_FILE"),
                        written.join(key).display().to_string(),
                    );
                }
            }
        }
        Ok(cmd)
    }
}
