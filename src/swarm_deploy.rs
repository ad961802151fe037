//! `deploy --engine swarm`: the same project as one replicated swarm service, updated by
//! swarm's own rolling update instead of cutover's blue/green switch.
//!
//! Swarm does what steps 5–8 of the compose engine do (start the new task, gate it on its
//! healthcheck, stop the old one after its grace period) and rolls back by itself when a new
//! task fails within `monitor`. cutover's part is what swarm does not do: secrets as
//! versioned swarm secrets created from the decrypted values, the stack file, following the
//! rollout to a verdict with the same step lines, `--json` summary and history as the compose
//! engine, and removing secret versions nothing references any more. Prints nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::config::Loaded;
use crate::deploy::{Event, Failed, Reporter};
use crate::render::{Renderer, SecretKeys};
use crate::stack::StackPlan;
use crate::state::{HistoryEntry, Holder, StateDir, StepTiming};
use crate::swarm::{self, Rollout};

/// Everything a swarm deploy needs, gathered by the command layer.
pub struct SwarmDeployer<'a> {
    pub loaded: &'a Loaded,
    pub renderer: Renderer,
    /// Every decrypted secret, by key: the values of the swarm secrets to create.
    pub secrets: BTreeMap<String, SecretString>,
    pub secret_keys: SecretKeys,
    pub interrupted: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
pub struct Request {
    /// `None` redeploys the image the service runs (a config or secret change).
    pub image: Option<String>,
    pub dry_run: bool,
    pub lock_wait: Duration,
}

/// The outcome of a swarm deploy (or its plan).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub engine: &'static str,
    pub action: &'static str,
    pub stack: String,
    pub service: String,
    pub image: String,
    pub from_image: Option<String>,
    pub first_deploy: bool,
    pub replicas: u32,
    pub dry_run: bool,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
    /// From `docker stack deploy` to the rollout's verdict.
    pub rollout_ms: Option<u64>,
    pub secrets_created: Vec<String>,
    pub secrets_removed: Vec<String>,
    pub notes: Vec<String>,
    pub plan: Vec<String>,
}

/// The swarm secret name of every key, from its decrypted value.
pub fn secret_names(
    project: &str,
    secrets: &BTreeMap<String, SecretString>,
) -> BTreeMap<String, String> {
    secrets
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                crate::stack::secret_name(project, k, v.expose_secret().as_bytes()),
            )
        })
        .collect()
}

struct Run<'a, 'r> {
    d: &'a SwarmDeployer<'a>,
    reporter: &'r mut dyn Reporter,
    steps: Vec<StepTiming>,
    started: Instant,
    step_started: Instant,
}

impl SwarmDeployer<'_> {
    pub fn run(&self, req: &Request, reporter: &mut dyn Reporter) -> anyhow::Result<Summary> {
        let mut run = Run {
            d: self,
            reporter,
            steps: Vec::new(),
            started: Instant::now(),
            step_started: Instant::now(),
        };
        run.execute(req)
    }
}

impl Run<'_, '_> {
    fn start(&mut self) {
        self.step_started = Instant::now();
    }

    fn done(&mut self, step: &'static str, detail: impl Into<String>) {
        let took = self.step_started.elapsed();
        self.steps.push(StepTiming {
            step: step.to_string(),
            ms: took.as_millis() as u64,
        });
        self.reporter.event(Event::Done {
            step,
            took,
            detail: detail.into(),
        });
    }

    fn execute(&mut self, req: &Request) -> anyhow::Result<Summary> {
        let loaded = self.d.loaded;
        let config = &loaded.config;
        let swarm_cfg = config
            .swarm
            .as_ref()
            .context("cutover.yml has no `swarm:` section; add at least `swarm: { port: 80 }` to use --engine swarm")?;
        let project = config.project.to_string();
        let service_name = swarm::service_name(&project, config.app.name.as_str());
        let state_dir = StateDir::new(loaded.state_dir());

        // 1. Lock: the same lock as the compose engine, one deploy at a time per project.
        let _lock = if req.dry_run {
            None
        } else {
            self.start();
            let holder = Holder {
                pid: std::process::id(),
                user: crate::state::current_user(),
                started: crate::state::now_rfc3339(),
                action: format!(
                    "swarm deploy {}",
                    req.image.as_deref().unwrap_or("(running image)")
                ),
            };
            let lock = state_dir.lock(req.lock_wait, &holder)?;
            self.done("lock", "");
            Some(lock)
        };

        // 2. Observe: a swarm manager, and what the service runs now.
        self.start();
        swarm::require_manager()?;
        let before = swarm::service(&service_name)?;
        let from_image = before
            .as_ref()
            .map(|s| swarm::display_image(&s.image).to_string());
        let image = match (&req.image, &from_image) {
            (Some(image), _) => image.clone(),
            (None, Some(running)) => running.clone(),
            (None, None) => anyhow::bail!(
                "service {service_name} does not exist yet, so there is no image to redeploy; pass --image REF"
            ),
        };
        let first_deploy = before.is_none();
        self.done(
            "observe",
            match &from_image {
                Some(old) => format!("{service_name} runs {old}; rolling to {image}"),
                None => format!("first deploy: creating stack {project}"),
            },
        );

        // 3. Render the stack file with versioned secret names.
        let names = secret_names(&project, &self.d.secrets);
        let rendered = crate::stack::render(
            &self.d.renderer,
            config,
            &StackPlan {
                image: image.clone(),
                secret_names: names.clone(),
                secret_keys: self.d.secret_keys.clone(),
            },
        )?;
        for note in &rendered.notes {
            self.reporter.event(Event::Note(note.clone()));
        }
        let stack_file = loaded.state_dir().join("stack.yml");
        let existing: BTreeSet<String> = if req.dry_run {
            swarm::secrets_of(&project)
                .map(|l| l.into_iter().map(|s| s.name).collect())
                .unwrap_or_default()
        } else {
            swarm::secrets_of(&project)?
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        let missing: Vec<(&String, &String)> = names
            .iter()
            .filter(|(_, name)| !existing.contains(*name))
            .collect();

        if req.dry_run {
            let mut plan = vec![format!(
                "write {} ({service_name}: {image}, {} replicas)",
                stack_file.display(),
                swarm_cfg.replicas.0
            )];
            for (key, name) in &missing {
                plan.push(format!(
                    "docker secret create {name} - (value of {key} on stdin)"
                ));
            }
            plan.push(format!(
                "docker stack deploy --compose-file {} --resolve-image {} {project}",
                stack_file.display(),
                swarm_cfg.resolve_image.as_str()
            ));
            plan.push(format!(
                "wait for {service_name} to converge or roll back (up to {})",
                swarm_cfg.timeout
            ));
            plan.push(format!(
                "remove swarm secrets labelled {}={project} that no service references",
                swarm::PROJECT_LABEL
            ));
            return Ok(self.summary(SummaryParts {
                service: service_name,
                image,
                from_image,
                first_deploy,
                dry_run: true,
                rollout_ms: None,
                created: Vec::new(),
                removed: Vec::new(),
                notes: rendered.notes,
                plan,
            }));
        }

        let result = self.deploy_steps(DeploySteps {
            project: &project,
            service_name: &service_name,
            stack_file: &stack_file,
            stack_text: &rendered.text,
            missing: &missing,
            image: &image,
        });

        // Record what happened, whatever it was.
        let (result_word, reason) = match &result {
            Ok(_) => ("ok", None),
            Err(e) => {
                let interrupted = e.downcast_ref::<Failed>().is_some_and(|f| f.interrupted);
                (
                    if interrupted { "interrupted" } else { "failed" },
                    Some(format!("{e:#}")),
                )
            }
        };
        let total_ms = self.started.elapsed().as_millis() as u64;
        state_dir.append_history(&HistoryEntry {
            time: crate::state::now_rfc3339(),
            user: crate::state::current_user(),
            engine: "swarm".to_string(),
            action: "deploy".to_string(),
            image: image.clone(),
            from_image: from_image.clone(),
            from: None,
            to: None,
            result: result_word.to_string(),
            reason,
            steps: self.steps.clone(),
            total_ms,
        })?;
        let done = result?;
        let mut notes = rendered.notes;
        notes.extend(done.notes);
        Ok(self.summary(SummaryParts {
            service: service_name,
            image,
            from_image,
            first_deploy,
            dry_run: false,
            rollout_ms: Some(done.rollout_ms),
            created: done.created,
            removed: done.removed,
            notes,
            plan: Vec::new(),
        }))
    }

    fn summary(&self, p: SummaryParts) -> Summary {
        let config = &self.d.loaded.config;
        Summary {
            engine: "swarm",
            action: "deploy",
            stack: config.project.to_string(),
            service: p.service,
            image: p.image,
            from_image: p.from_image,
            first_deploy: p.first_deploy,
            replicas: config.swarm.as_ref().map(|s| s.replicas.0).unwrap_or(0),
            dry_run: p.dry_run,
            steps: self.steps.clone(),
            total_ms: self.started.elapsed().as_millis() as u64,
            rollout_ms: p.rollout_ms,
            secrets_created: p.created,
            secrets_removed: p.removed,
            notes: p.notes,
            plan: p.plan,
        }
    }

    /// Secrets, stack deploy, rollout, secret cleanup.
    fn deploy_steps(&mut self, s: DeploySteps) -> anyhow::Result<Done> {
        let config = &self.d.loaded.config;
        let swarm_cfg = config.swarm.as_ref().context("no swarm section")?;

        // 4. Secrets: create the versions this deploy needs (existing ones are immutable and
        // already hold the same value: the name is the value's hash).
        self.start();
        let mut created = Vec::new();
        for (key, name) in s.missing {
            let value = &self.d.secrets[*key];
            swarm::create_secret(s.project, key, name, value)?;
            created.push((*name).clone());
        }
        let total = self.d.secrets.len();
        self.done(
            "secrets",
            format!(
                "{} created, {} already present",
                created.len(),
                total - created.len()
            ),
        );

        // 5. Stack deploy: swarm starts the rolling update in the background.
        self.start();
        crate::atomic::write(
            s.stack_file,
            s.stack_text.as_bytes(),
            crate::state::FILE_MODE,
        )?;
        let deployed_at = Instant::now();
        swarm::stack_deploy(s.stack_file, s.project, swarm_cfg.resolve_image.as_str())?;
        self.done("stack", format!("docker stack deploy {}", s.project));

        // 6. Follow the rollout to a verdict.
        self.start();
        let interrupted = self.d.interrupted.clone();
        let reporter = &mut *self.reporter;
        let limit = swarm_cfg.timeout.get();
        let outcome = swarm::wait_rollout(s.service_name, limit, &mut |p| {
            reporter.event(Event::Waiting {
                step: "rollout",
                elapsed: p.elapsed,
                limit,
                last: p.describe(),
            });
            !interrupted.load(Ordering::SeqCst)
        })?;
        let rollout_ms = deployed_at.elapsed().as_millis() as u64;
        let outcome = match outcome {
            Some(o) => o,
            None => {
                return Err(Failed {
                    message: format!(
                        "deploy interrupted while swarm rolled {} out; swarm carries on (or rolls back) without cutover: see `cutover status --engine swarm`",
                        s.image
                    ),
                    interrupted: true,
                }
                .into())
            }
        };
        let mut notes = Vec::new();
        let failure = match &outcome {
            Rollout::Converged { running } => {
                self.done(
                    "rollout",
                    format!(
                        "{running} tasks run {} (start-first, one at a time)",
                        s.image
                    ),
                );
                None
            }
            Rollout::RolledBack { message } => {
                let now = swarm::service(s.service_name)?
                    .map(|svc| swarm::display_image(&svc.image).to_string())
                    .unwrap_or_else(|| "?".into());
                self.done("rollout", "rolled back");
                Some(format!(
                    "swarm rolled the update back: a new task failed ({message}); {} still runs {now}{}",
                    s.service_name,
                    task_error(s.service_name, s.image)
                ))
            }
            Rollout::Paused { state, message } => {
                self.done("rollout", state.clone());
                Some(format!(
                    "the rollout is {state} ({message}): {} is partly updated; fix and redeploy, or `docker service rollback {}`",
                    s.service_name, s.service_name
                ))
            }
            Rollout::Failing { failed, error } => {
                self.done("rollout", "failing");
                Some(format!(
                    "the first deploy of {} keeps failing ({failed} tasks failed, last error: {error}); nothing to roll back to{}",
                    s.image,
                    task_error(s.service_name, s.image)
                ))
            }
            Rollout::TimedOut { running, wanted } => {
                self.done("rollout", "timed out");
                Some(format!(
                    "the rollout did not converge within {} ({running}/{wanted} tasks on the new spec); swarm keeps trying: see `cutover status --engine swarm`",
                    swarm_cfg.timeout
                ))
            }
        };

        // 7. Remove secret versions no service references, after success and failure alike:
        // a rolled-back deploy leaves its new versions unused. Versions the previous spec
        // references stay, so `docker service rollback` keeps working.
        self.start();
        let mut removed = Vec::new();
        match self.prune_secrets(s.project) {
            Ok((gone, kept)) => {
                removed = gone;
                notes.extend(kept);
            }
            Err(e) => notes.push(format!("could not prune old swarm secrets: {e:#}")),
        }
        self.done(
            "prune",
            format!("{} unused secret versions removed", removed.len()),
        );

        if let Some(message) = failure {
            return Err(Failed {
                message,
                interrupted: false,
            }
            .into());
        }
        Ok(Done {
            rollout_ms,
            created,
            removed,
            notes,
        })
    }

    /// Removes cutover's secrets of `project` that no service spec (current or previous)
    /// references. Returns the removed names and notes for those swarm refused to remove.
    fn prune_secrets(&self, project: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let services = swarm::services_of(project)?;
        let referenced: BTreeSet<&String> = services
            .iter()
            .flat_map(|s| s.secrets.iter().chain(&s.previous_secrets))
            .collect();
        let mut removed = Vec::new();
        let mut notes = Vec::new();
        for secret in swarm::secrets_of(project)? {
            if referenced.contains(&secret.name) {
                continue;
            }
            match swarm::remove_secret(&secret.name) {
                Ok(()) => removed.push(secret.name),
                Err(e) => notes.push(format!("kept swarm secret {}: {e}", secret.name)),
            }
        }
        Ok((removed, notes))
    }
}

/// The last task error of the new image, for a failure message (`; task: …`).
fn task_error(service: &str, image: &str) -> String {
    let Ok(tasks) = swarm::tasks(service) else {
        return String::new();
    };
    tasks
        .iter()
        .filter(|t| swarm::display_image(&t.image) == image && !t.error.is_empty())
        .map(|t| format!("; its task said: {}", t.error))
        .next()
        .unwrap_or_default()
}

struct DeploySteps<'s> {
    project: &'s str,
    service_name: &'s str,
    stack_file: &'s std::path::Path,
    stack_text: &'s str,
    missing: &'s [(&'s String, &'s String)],
    image: &'s str,
}

struct Done {
    rollout_ms: u64,
    created: Vec<String>,
    removed: Vec<String>,
    notes: Vec<String>,
}

struct SummaryParts {
    service: String,
    image: String,
    from_image: Option<String>,
    first_deploy: bool,
    dry_run: bool,
    rollout_ms: Option<u64>,
    created: Vec<String>,
    removed: Vec<String>,
    notes: Vec<String>,
    plan: Vec<String>,
}
