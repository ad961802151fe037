//! `deploy --engine swarm`: the same project as one replicated swarm service, updated by
//! swarm's own rolling update instead of cutover's blue/green switch.
//!
//! Swarm does what steps 5–8 of the compose engine do (start the new task, gate it on its
//! healthcheck, stop the old one after its grace period) and rolls back by itself when a new
//! task fails within `monitor`. cutover's part is what swarm does not do: secrets as
//! versioned swarm secrets created from the decrypted values ([`secrets`]), the stack file
//! ([`stack`]), following the rollout to a verdict ([`rollout`]) with the same step lines,
//! `--json` summary and history as the compose engine, and removing secret versions nothing
//! references any more. Prints nothing.
//!
//! Workers (`workers:`, `overlap: true`; `overlap: false` is refused, see
//! `Config::compose_only`) are services of the stack ([`stack`]) and move as under compose:
//! after the web. The web's stack deploy leaves them out (a stack deploy without `--prune`
//! does not touch a service its file does not name), and once the web has moved (the rollout
//! converged; under host routing the switch settled) the whole stack is deployed again with
//! every worker on the new image, `--prune` (a worker taken out of `workers:` is removed),
//! and each worker's rollout is followed to its own verdict ([`workers`]).

mod budget;
mod hooks;
pub mod host;
mod release;
pub mod rollout;
pub mod secrets;
pub mod stack;
pub mod status;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Serialize;

use crate::config::{Loaded, Routing, Swarm};
use crate::docker::swarm;
use crate::engine::record::{self, Attempt};
use crate::engine::{failure, Abort, Failed, PlanItem, Reporter, Request, Step, StepClock};
use crate::render::Renderer;
use crate::secrets::SecretKeys;
use crate::state::{Action, EngineKind, RunResult, StateDir};
use stack::StackPlan;

pub use secrets::secret_names;

/// Everything a swarm deploy needs, gathered by the command layer.
pub struct SwarmDeployer<'a> {
    pub loaded: &'a Loaded,
    pub renderer: Renderer,
    /// Every decrypted secret, by key: the values of the swarm secrets to create.
    pub secrets: BTreeMap<String, SecretString>,
    pub secret_keys: SecretKeys,
    pub interrupted: Arc<AtomicBool>,
}

/// The swarm engine's part of a [`crate::engine::Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct SwarmDetail {
    pub stack: String,
    pub service: String,
    pub from_image: Option<String>,
    pub replicas: u32,
    /// From `docker stack deploy` to the rollout's verdict.
    pub rollout_ms: Option<u64>,
    pub secrets_created: Vec<String>,
    pub secrets_removed: Vec<String>,
    /// The hooks that ran after the deploy (`post_deploy`), as the compose engine reports them.
    pub hooks: Vec<crate::engine::hooks::HookRun>,
    /// Each worker's rollout, in `workers:` order.
    pub workers: Vec<workers::WorkerRollout>,
}

pub type Summary = crate::engine::Summary<SwarmDetail>;

/// What the observe step found and the render decided.
struct Target {
    swarm: Swarm,
    project: String,
    service: String,
    image: String,
    from_image: Option<String>,
    first_deploy: bool,
    stack_file: PathBuf,
    stack_text: String,
    notes: Vec<String>,
    /// `(key, versioned name)` of the secrets swarm does not have yet.
    missing: Vec<(String, String)>,
    /// `routing: host`: the active color and the one this deploy starts.
    colors: Option<host::Colors>,
    /// `routing: host`: the front nginx's upstream file.
    upstream: PathBuf,
    /// `registry:` serves the image: log in on the manager, deploy `--with-registry-auth`.
    registry_auth: bool,
    /// Run `app.release`: every deploy; a rollback only with `--release`.
    run_release: bool,
    /// `app.release`, as shown.
    release: Option<String>,
    /// Each worker's service and the image it runs now (`None`: it does not run yet).
    workers: Vec<workers::WorkerTarget>,
}

/// What steps 4–7 produced.
#[derive(Default)]
struct Done {
    rollout_ms: Option<u64>,
    created: Vec<String>,
    removed: Vec<String>,
    notes: Vec<String>,
    workers: Vec<workers::WorkerRollout>,
}

struct Run<'a, 'r> {
    d: &'a SwarmDeployer<'a>,
    clock: StepClock<'r>,
    state_dir: StateDir,
    /// What the hooks are told, once the deploy knows where it goes.
    facts: Option<crate::engine::hooks::Facts>,
}

impl SwarmDeployer<'_> {
    pub fn run(&self, req: &Request, reporter: &mut dyn Reporter) -> anyhow::Result<Summary> {
        let mut run = Run {
            d: self,
            clock: StepClock::new(reporter),
            state_dir: StateDir::new(self.loaded.state_dir()),
            facts: None,
        };
        run.clock.ran_before(Step::Decrypt, req.decrypted);
        run.execute(req)
    }
}

impl Run<'_, '_> {
    fn execute(&mut self, req: &Request) -> anyhow::Result<Summary> {
        let swarm = self.swarm_config()?;
        // 1. Lock: the same lock as the compose engine, one deploy at a time per project.
        let _lock = self.lock(req)?;
        // 2. Observe: a swarm manager, and what the service runs now.
        let target = self.observe(req, swarm)?;
        // 3. Render the stack file with versioned secret names.
        let target = self.render(req, target)?;
        if req.dry_run {
            let plan = dry_run_plan(&target);
            return Ok(self.summary(req, &target, Done::default(), plan));
        }
        // The hooks' keys and `pre_deploy`, then 4–7: secrets, stack deploy, rollout, secret
        // cleanup; then `post_deploy` or `on_failure`, after the record.
        let result = self
            .prepare_hooks(req, &target)
            .and_then(|()| self.pre_deploy())
            .and_then(|()| self.deploy_steps(&target));
        self.record(req, &target, &result)?;
        let result = result.map(|done| self.summary(req, &target, done, Vec::new()));
        self.after_hooks(result)
    }

    fn swarm_config(&self) -> anyhow::Result<Swarm> {
        let loaded = &self.d.loaded;
        if let Some(first) = loaded.compose_only.first() {
            let more = match loaded.compose_only.len() {
                1 => String::new(),
                n => format!(
                    " (and {} more such key{})",
                    n - 1,
                    if n > 2 { "s" } else { "" }
                ),
            };
            anyhow::bail!("{first}{more}");
        }
        let swarm = loaded.config.swarm.clone().context(
            "cutover.yml has no `swarm:` section; add at least `swarm: { port: 80 }` to use --engine swarm",
        )?;
        if let Some(why) = release::name_taken(&loaded.config, swarm.routing) {
            anyhow::bail!("{why}");
        }
        if let Some(why) = stack::worker_name_clash(&loaded.config, swarm.routing) {
            anyhow::bail!("{why}");
        }
        if let Some(why) = stack::invalid_service_name(&loaded.config, swarm.routing) {
            anyhow::bail!("{why}");
        }
        Ok(swarm)
    }

    fn lock(&mut self, req: &Request) -> anyhow::Result<Option<crate::state::DeployLock>> {
        if req.dry_run {
            return Ok(None);
        }
        self.clock.start(Step::Lock, "");
        let action = format!(
            "swarm {} {}",
            req.action,
            req.image.as_deref().unwrap_or("(running image)")
        );
        let refused = record::Refused {
            engine: EngineKind::Swarm,
            request: req,
            clock: &self.clock,
            interrupted: &self.d.interrupted,
        };
        let lock = record::lock_or_record_refusal(&self.state_dir, req.lock_wait, action, refused)?;
        self.clock.done(Step::Lock, "");
        Ok(Some(lock))
    }

    /// What a rollback deploys: the image the service ran before the last successful swarm
    /// deploy of `running`, as history recorded it.
    fn previous_image(&self, running: &str) -> anyhow::Result<String> {
        let history = self.state_dir.history()?;
        history
            .iter()
            .rev()
            .find(|e| {
                e.engine == EngineKind::Swarm && e.result == RunResult::Ok && e.image == running
            })
            .and_then(|e| e.from_image.clone())
            .with_context(|| {
                format!(
                    "nothing to roll back to: no swarm deploy of {running} with an image before it is recorded in {}",
                    self.state_dir.history_file().display()
                )
            })
    }

    fn observe(&mut self, req: &Request, swarm_cfg: Swarm) -> anyhow::Result<Target> {
        let config = &self.d.loaded.config;
        let project = config.project.to_string();
        let service = swarm::service_name(&project, config.app.name.as_str());
        self.clock.start(Step::Observe, "");
        swarm::require_manager()?;
        let colors = match swarm_cfg.routing {
            Routing::Host => Some(host::observe(config, &project)?),
            Routing::Ingress => None,
        };
        let from_image = match &colors {
            Some(c) => c.active.as_ref().map(|(_, image)| image.clone()),
            None => swarm::service(&service)?.map(|s| swarm::display_image(&s.image).to_string()),
        };
        let image = match (&req.image, &from_image, req.action) {
            (Some(image), _, _) => image.clone(),
            (None, Some(running), Action::Rollback) => self.previous_image(running)?,
            (None, Some(running), Action::Deploy) => running.clone(),
            (None, None, _) => anyhow::bail!(
                "service {service} does not exist yet, so there is no image to redeploy or roll back to; pass --image REF"
            ),
        };
        let nodes = swarm::nodes()?;
        let tasks = budget::tasks_per_node(
            swarm_cfg.routing,
            swarm_cfg.replicas.0,
            &nodes,
            from_image.is_none(),
        );
        // The app's and the workers' services are counted by `need`; the stack's accessories
        // stay up through the deploy, so what they hold is held like another service's.
        let accessories: BTreeSet<String> = config
            .accessories
            .keys()
            .map(|a| swarm::service_name(&project, a.as_str()))
            .collect();
        let services = swarm::services_of(&project)?;
        let own = budget::counted_by_need(
            services.iter().map(|s| (s.id.as_str(), s.name.as_str())),
            &accessories,
        );
        let node_ids: Vec<&str> = nodes
            .iter()
            .filter(|n| n.schedulable())
            .map(|n| n.id.as_str())
            .collect();
        let held = budget::held_by_others(&swarm::tasks_on(&node_ids)?, &own);
        let workers = workers::observe(config, &project)?;
        let need = budget::Need {
            memory: config.app.memory.bytes(),
            tasks,
            workers: budget::workers_need(config, &workers),
        };
        let short = budget::short_nodes(&nodes, &need, &held);
        if !short.is_empty() {
            let err = anyhow::anyhow!(
                "the memory budget: {} cannot hold this deploy's tasks in {} free memory ({}); lower app.memory, free memory on the node or add a node; nothing was changed",
                if short.len() == 1 { "a node" } else { "nodes" },
                if short.len() == 1 { "its" } else { "their" },
                short.join("; ")
            );
            return Err(self.record_refusal(req, &image, from_image.clone(), err));
        }
        self.clock.done(
            Step::Observe,
            match (&from_image, &colors) {
                (Some(old), Some(c)) => {
                    format!(
                        "{} runs {old}; starting {} with {image}",
                        c.new.other(),
                        c.new
                    )
                }
                (Some(old), None) => format!("{service} runs {old}; rolling to {image}"),
                (None, _) => format!("first deploy: creating stack {project}"),
            },
        );
        Ok(Target {
            swarm: swarm_cfg,
            first_deploy: from_image.is_none(),
            colors,
            upstream: host::upstream_file(config),
            registry_auth: config
                .registry
                .as_ref()
                .is_some_and(|reg| reg.serves(&image)),
            run_release: req.action == Action::Deploy || req.release,
            release: config.app.release.as_ref().map(|a| a.0.join(" ")),
            workers,
            stack_file: self.d.loaded.state_dir().join("stack.yml"),
            project,
            service,
            image,
            from_image,
            stack_text: String::new(),
            notes: Vec::new(),
            missing: Vec::new(),
        })
    }

    fn render(&mut self, req: &Request, mut t: Target) -> anyhow::Result<Target> {
        let names = secret_names(&t.project, &self.d.secrets);
        let rendered = stack::render(
            &self.d.renderer,
            &self.d.loaded.config,
            &StackPlan {
                image: t.image.clone(),
                secret_names: names.clone(),
                secret_keys: self.d.secret_keys.clone(),
                colors: match &t.colors {
                    Some(c) => c
                        .active
                        .iter()
                        .cloned()
                        .chain([(c.new, t.image.clone())])
                        .collect(),
                    None => Vec::new(),
                },
                accessories_only: false,
                // The workers move after the web: this deploy leaves them as they run.
                workers: BTreeMap::new(),
            },
        )?;
        for note in &rendered.notes {
            self.clock.note(note.clone());
        }
        // A dry run may look from a box that is no swarm manager: it plans every secret.
        let existing: BTreeSet<String> = match secrets::existing(&t.project) {
            Ok(names) => names,
            Err(_) if req.dry_run => BTreeSet::new(),
            Err(e) => return Err(e.into()),
        };
        t.missing = secrets::missing(&names, &existing)
            .into_iter()
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        t.stack_text = rendered.text;
        t.notes = rendered.notes;
        Ok(t)
    }

    fn deploy_steps(&mut self, t: &Target) -> anyhow::Result<Done> {
        if let Some(colors) = &t.colors {
            return self.host_steps(t, colors);
        }
        self.login(t)?;
        let created = self.create_secrets(t)?;
        self.release(t)?;
        self.stop_if_interrupted("the stack deploy")?;
        let deployed_at = self.stack_deploy(t)?;
        let failure = self.rollout(t)?;
        let rollout_ms = deployed_at.elapsed().as_millis() as u64;
        // The web moved: now the workers (under ingress the app's service is in the stack
        // file as it runs now, so this deploy changes only them).
        let workers = match failure {
            None => self.move_workers(t, Some(Vec::new())),
            Some(_) => Ok(Vec::new()),
        };
        let (removed, notes) = self.prune(t);
        if let Some((abort, message)) = failure {
            return Err(Failed { message, abort }.into());
        }
        Ok(Done {
            rollout_ms: Some(rollout_ms),
            created,
            removed,
            notes,
            workers: workers?,
        })
    }

    /// `registry:` serves the image: `docker login` (the password on stdin) through the
    /// manager, whose engine checks it against the registry, so a bad credential fails here
    /// before anything changed; the stack deploy then passes the login on to the nodes.
    fn login(&mut self, t: &Target) -> anyhow::Result<()> {
        let Some(reg) = self
            .d
            .loaded
            .config
            .registry
            .as_ref()
            .filter(|_| t.registry_auth)
        else {
            return Ok(());
        };
        let password = self
            .d
            .secrets
            .get(&reg.password_secret.0)
            .with_context(|| {
                format!(
                    "registry.password_secret: `{}` is not a key of the decrypted secrets files \
                     (app.secrets / accessories); add it to one with `cutover secrets edit`",
                    reg.password_secret.0
                )
            })?;
        self.clock
            .start(Step::Pull, format!("log in to {}", reg.server.0));
        crate::docker::registry::login(reg, password, &t.image)?;
        self.clock.done(
            Step::Pull,
            format!(
                "logged in to {} as {}; nodes pull {} with that login",
                reg.server.0, reg.username, t.image
            ),
        );
        Ok(())
    }

    /// Step 4: Create the secret versions this deploy needs.
    fn create_secrets(&mut self, t: &Target) -> anyhow::Result<Vec<String>> {
        self.clock.start(Step::Secrets, "");
        let missing: Vec<(&String, &String)> = t.missing.iter().map(|(k, n)| (k, n)).collect();
        let created = secrets::create(&t.project, &missing, &self.d.secrets)?;
        let total = self.d.secrets.len();
        self.clock.done(
            Step::Secrets,
            format!(
                "{} created, {} already present",
                created.len(),
                total - created.len()
            ),
        );
        Ok(created)
    }

    /// An interrupt (SIGINT/SIGTERM) that came while an earlier step ran stops the deploy
    /// before `next` changes anything: swarm would otherwise roll (or the front nginx switch)
    /// on without cutover watching.
    fn stop_if_interrupted(&self, next: &str) -> anyhow::Result<()> {
        if !self.d.interrupted.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(Failed {
            message: format!(
                "deploy interrupted (SIGINT/SIGTERM) before {next}; nothing was switched"
            ),
            abort: Abort::Interrupted,
        }
        .into())
    }

    /// A stack of only part of the app, rendered, written over the stack file and deployed:
    /// `colors` (with their images; none for the accessories alone), `workers` (with theirs)
    /// and, with `prune`, every service it no longer names removed. The release phase's
    /// accessories-first deploy, the host routing's "one color left" and the workers' move
    /// all are one.
    fn deploy_partial_stack(
        &self,
        t: &Target,
        colors: Vec<(crate::config::Color, String)>,
        accessories_only: bool,
        prune: bool,
        workers: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let rendered = stack::render(
            &self.d.renderer,
            &self.d.loaded.config,
            &StackPlan {
                image: t.image.clone(),
                secret_names: secret_names(&t.project, &self.d.secrets),
                secret_keys: self.d.secret_keys.clone(),
                colors,
                accessories_only,
                workers,
            },
        )?;
        crate::atomic::write(
            &t.stack_file,
            rendered.text.as_bytes(),
            crate::state::FILE_MODE,
        )?;
        swarm::stack_deploy(
            &t.stack_file,
            &t.project,
            swarm::StackDeploy {
                resolve_image: t.swarm.resolve_image.as_str(),
                prune,
                registry_auth: t.registry_auth,
            },
        )?;
        Ok(())
    }

    /// Step 5: Stack deploy: swarm starts the rolling update in the background.
    fn stack_deploy(&mut self, t: &Target) -> anyhow::Result<Instant> {
        self.clock.start(Step::Stack, "");
        crate::atomic::write(
            &t.stack_file,
            t.stack_text.as_bytes(),
            crate::state::FILE_MODE,
        )?;
        let deployed_at = Instant::now();
        swarm::stack_deploy(
            &t.stack_file,
            &t.project,
            swarm::StackDeploy {
                resolve_image: t.swarm.resolve_image.as_str(),
                prune: false,
                registry_auth: t.registry_auth,
            },
        )?;
        self.clock
            .done(Step::Stack, format!("docker stack deploy {}", t.project));
        Ok(deployed_at)
    }

    /// Step 6: Follow the rollout to a verdict; returns the failure, if it failed.
    fn rollout(&mut self, t: &Target) -> anyhow::Result<Option<(Abort, String)>> {
        self.clock.start(Step::Rollout, "");
        let interrupted = self.d.interrupted.clone();
        let limit = t.swarm.timeout.get();
        let reporter = self.clock.reporter();
        let outcome = rollout::wait_rollout(&t.service, limit, &mut |p| {
            reporter.event(crate::engine::Event::Waiting {
                step: Step::Rollout,
                elapsed: p.elapsed,
                limit,
                last: p.describe(),
            });
            !interrupted.load(Ordering::SeqCst)
        })?;
        let Some(outcome) = outcome else {
            return Err(Failed {
                message: format!(
                    "deploy interrupted while swarm rolled {} out; swarm carries on (or rolls back) without cutover: see `cutover status --engine swarm`",
                    t.image
                ),
                abort: Abort::Interrupted,
            }
            .into());
        };
        let (detail, failure) = rollout::judge(&outcome, &t.service, &t.image, &t.swarm.timeout)?;
        self.clock.done(Step::Rollout, detail);
        Ok(failure)
    }

    /// Step 7: Remove secret versions no service references, after success and failure alike:
    /// a rolled-back deploy leaves its new versions unused. Versions the previous spec
    /// references stay, so `docker service rollback` keeps working.
    fn prune(&mut self, t: &Target) -> (Vec<String>, Vec<String>) {
        self.clock.start(Step::Prune, "");
        let (removed, notes) = match secrets::prune(&t.project) {
            Ok(pruned) => pruned,
            Err(e) => (
                Vec::new(),
                vec![format!("could not prune old swarm secrets: {e:#}")],
            ),
        };
        self.clock.done(
            Step::Prune,
            format!("{} unused secret versions removed", removed.len()),
        );
        (removed, notes)
    }

    /// Records what happened, whatever it was.
    fn record(
        &mut self,
        req: &Request,
        t: &Target,
        result: &anyhow::Result<Done>,
    ) -> anyhow::Result<()> {
        let (result, reason) = failure::verdict(result);
        record::append(
            &self.state_dir,
            Attempt {
                engine: EngineKind::Swarm,
                action: req.action,
                image: t.image.clone(),
                from_image: t.from_image.clone(),
                from: None,
                to: None,
                result,
                reason,
                steps: self.clock.steps(),
                total_ms: self.clock.total_ms(),
                switch_ms: None,
                workers: Vec::new(),
            },
        )
    }

    /// A refusal before anything changed (the memory budget) gets its history line, as
    /// every other refusal does; a dry run records nothing.
    fn record_refusal(
        &self,
        req: &Request,
        image: &str,
        from_image: Option<String>,
        err: anyhow::Error,
    ) -> anyhow::Error {
        if req.dry_run {
            return err;
        }
        let (result, reason) = failure::error_verdict(&err);
        let attempt = Attempt {
            engine: EngineKind::Swarm,
            action: req.action,
            image: image.to_string(),
            from_image,
            from: None,
            to: None,
            result,
            reason,
            steps: self.clock.steps(),
            total_ms: self.clock.total_ms(),
            switch_ms: None,
            workers: Vec::new(),
        };
        match record::append(&self.state_dir, attempt) {
            Ok(()) => err,
            Err(problem) => record::unrecorded(err, problem),
        }
    }

    fn summary(&self, req: &Request, t: &Target, done: Done, plan: Vec<PlanItem>) -> Summary {
        let mut notes = t.notes.clone();
        notes.extend(done.notes);
        Summary {
            engine: EngineKind::Swarm,
            action: req.action,
            image: t.image.clone(),
            first_deploy: t.first_deploy,
            dry_run: req.dry_run,
            steps: self.clock.steps(),
            total_ms: self.clock.total_ms(),
            notes,
            plan,
            plan_steps: Vec::new(),
            detail: SwarmDetail {
                stack: t.project.clone(),
                service: t.service.clone(),
                from_image: t.from_image.clone(),
                replicas: t.swarm.replicas.0,
                rollout_ms: done.rollout_ms,
                secrets_created: done.created,
                secrets_removed: done.removed,
                hooks: Vec::new(),
                workers: done.workers,
            },
        }
    }
}

/// `--dry-run`: the commands a deploy would run, in order, each with the step it is.
fn dry_run_plan(t: &Target) -> Vec<PlanItem> {
    let mut plan = vec![PlanItem::new(
        None,
        format!(
            "write {} ({}: {}, {} replicas)",
            t.stack_file.display(),
            t.service,
            t.image,
            t.swarm.replicas.0
        ),
    )];
    for (key, name) in &t.missing {
        plan.push(PlanItem::new(
            Step::Secrets,
            format!("docker secret create {name} - (value of {key} on stdin)"),
        ));
    }
    if t.registry_auth {
        plan.push(PlanItem::new(
            Step::Pull,
            "docker login --password-stdin (registry.password_secret on stdin), through the manager".to_string(),
        ));
    }
    if t.run_release {
        if let Some(argv) = &t.release {
            plan.push(PlanItem::new(
                Step::Release,
                format!(
                    "docker service create --mode replicated-job {}_release {} {argv} (the release phase, on the stack's network with the app's secrets, up to app.release_timeout; removed after; the deploy stops if it fails)",
                    t.project, t.image
                ),
            ));
        }
    }
    plan.push(PlanItem::new(
        Step::Stack,
        format!(
            "docker stack deploy{} --compose-file {} --resolve-image {} {}",
            if t.registry_auth {
                " --with-registry-auth"
            } else {
                ""
            },
            t.stack_file.display(),
            t.swarm.resolve_image.as_str(),
            t.project
        ),
    ));
    match &t.colors {
        Some(c) => {
            let new = format!("{}-{}", t.service, c.new);
            plan.push(PlanItem::new(
                Step::Rollout,
                format!(
                    "wait until every schedulable node runs a healthy task of {new} (up to {})",
                    t.swarm.timeout
                ),
            ));
            plan.push(PlanItem::new(
                Step::Health,
                format!(
                    "GET the health path of {} on every node's port (the gate)",
                    c.new
                ),
            ));
            plan.push(PlanItem::new(
                Step::Switch,
                format!(
                    "write the upstream of {} over the nodes to {}, nginx -t, reload (the switch)",
                    c.new,
                    t.upstream.display()
                ),
            ));
            plan.push(PlanItem::new(
                Step::Settle,
                "watch the new color for app.settle, switching back on a wrong answer; drain"
                    .to_string(),
            ));
            if let Some((old, _)) = &c.active {
                plan.push(PlanItem::new(
                    Step::Stop,
                    format!(
                        "scale {old} to 0: docker stack deploy --prune without {}-{old}",
                        t.service
                    ),
                ));
            }
        }
        None => plan.push(PlanItem::new(
            Step::Rollout,
            format!(
                "wait for {} to converge or roll back (up to {})",
                t.service, t.swarm.timeout
            ),
        )),
    }
    if !t.workers.is_empty() {
        let names: Vec<&str> = t.workers.iter().map(|w| w.name.as_str()).collect();
        plan.push(PlanItem::new(
            Step::Workers,
            format!(
                "after the web: docker stack deploy --prune with the workers ({}) on {} (start-first, rolled back by swarm if a new one fails), following each to a verdict",
                names.join(", "),
                t.image
            ),
        ));
    }
    plan.push(PlanItem::new(
        Step::Prune,
        format!(
            "remove swarm secrets labelled {}={} that no service references",
            swarm::PROJECT_LABEL,
            t.project
        ),
    ));
    plan
}
