//! The blue/green engine (docs/ARCHITECTURE.md, "The deploy state machine") and rollback.
//!
//! Order is the safety argument: nothing user-visible changes until the new color has passed
//! its health gate; nginx changes only through a tested, atomically written include; the old
//! color stops only after nginx demonstrably serves the new one and the old one has drained.
//! Every failure before the switch tears the new color down and leaves nginx alone; a failure
//! of the switch restores the old include.
//!
//! `Run::execute` takes the lock, observes, pulls, checks the budget and renders (the steps
//! that decide), then walks the list of operations `ops.rs` decides: the same list
//! `--dry-run` prints, so the plan and the deploy cannot drift. Each operation is a method of
//! `Run` in its own file (`health_gate` with its container watcher, `switch`'s probe through
//! nginx, `settle`, `drain`, …), as is the teardown after a failure (`teardown`). Progress
//! goes to a [`Reporter`]; this module prints nothing.

mod budget;
mod drain;
#[cfg(test)]
mod fake_box;
mod health_gate;
mod hooks;
mod inflight;
mod listener_look;
pub mod nft_switch;
pub mod observe;
mod ops;
mod outcome;
pub mod prune;
mod pull;
mod reconcile;
mod release;
mod rule_replacement;
pub mod secret_files;
pub mod service;
mod settle;
#[cfg(test)]
mod state_machine;
pub mod status;
mod switch;
mod teardown;
mod workers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Serialize;

use crate::config::{Color, Loaded};
use crate::docker::compose::{Compose, Project};
use crate::engine::record;
use crate::engine::{Abort, Reporter, Request, Step, StepClock};
use crate::nginx::Nginx;
use crate::render::{Plan, Renderer, Route};
use crate::secrets::SecretKeys;
use crate::state::{Action, EngineKind, StateDir};

pub use observe::{health_url, observe, Observed};
use ops::{Change, Check, Ops};
pub use switch::probe_through_nginx;

/// Everything a deploy needs, gathered by the command layer.
pub struct Deployer<'a> {
    pub loaded: &'a Loaded,
    pub compose: Compose,
    pub renderer: Renderer,
    /// Every decrypted secret (app and accessories): process environment for compose only.
    pub secrets: BTreeMap<String, SecretString>,
    pub secret_keys: SecretKeys,
    /// The ciphertext `secrets` came from: kept per service in files mode, for a reboot.
    pub secret_sources: crate::secrets::SecretSources,
    /// `app.secrets_delivery: files`: where each service's secret files go (None: env mode).
    pub secret_files: Option<crate::secrets::files::ProjectDirs>,
    /// The identity `--identity` names: a rollback decrypts the ciphertext kept for the
    /// color it brings back with it (`secret_files::Given`).
    pub identity: Option<std::path::PathBuf>,
    /// A rollback's values, once it knows its color: what that color was deployed with
    /// (read through [`Deployer::values`] and its siblings, never `secrets` directly).
    pub rollback_values: std::sync::OnceLock<secret_files::Given>,
    /// Set by SIGINT/SIGTERM.
    pub interrupted: Arc<AtomicBool>,
}

/// The compose engine's part of a [`crate::engine::Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct ComposeDetail {
    pub from: Option<Color>,
    pub to: Color,
    /// Time from the health gate passing to nginx answering from the new color.
    pub switch_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<crate::state::WorkerOutcome>,
    /// The hooks that ran after the deploy (`post_deploy`), with their verdicts.
    pub hooks: Vec<crate::engine::hooks::HookRun>,
    /// A rollback: where the values of the color it brought back came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_from: Option<secret_files::SecretsFrom>,
    /// How the switch was made (`nginx.switch`): `nft` (no nginx reload) or `reload`.
    pub switch: nft_switch::Used,
}

pub type Summary = crate::engine::Summary<ComposeDetail>;

/// What the observe step decided: where the deploy goes and with which image.
struct Target {
    observed: Observed,
    /// The color that served before this deploy (None on a first deploy).
    from: Option<Color>,
    from_image: Option<String>,
    to: Color,
    image: String,
    first_deploy: bool,
}

/// What the render step produced.
struct Rendered {
    compose_text: String,
    include_text: String,
    /// How `include_text` routes: through the group (the watch window's fallback) or not.
    /// In nft mode: `Fallback` while a watch window keeps the old color as the rule's backup.
    route: Route,
    /// How this deploy switches (`nginx.switch`, decided under the lock).
    switch: nft_switch::Used,
    /// Accessories not running yet: started before the new color.
    accessories_down: Vec<String>,
    /// Each worker's move, done after the old color stopped.
    workers: Vec<workers::Move>,
    /// Workers no longer in cutover.yml whose containers are still there: removed then.
    retired: Vec<workers::Retired>,
}

struct Run<'a, 'r> {
    d: &'a Deployer<'a>,
    clock: StepClock<'r>,
    /// The color that served before this deploy, once observed.
    from: Option<Color>,
    project: Project,
    nginx: Nginx,
    state_dir: StateDir,
    /// What the workers step did (empty until it ran).
    worker_outcomes: Vec<crate::state::WorkerOutcome>,
    /// nginx was switched to the new color and proven (the point after which a failure may
    /// leave it there: no healthy color to go back to, a switch back undone).
    switched: bool,
    /// What the hooks are told, once observed (`hooks.rs`).
    facts: Option<crate::engine::hooks::Facts>,
    /// The prune's reading of the box, taken while the old color stops (see `stop`).
    survey: Option<std::thread::JoinHandle<anyhow::Result<prune::Survey>>>,
    /// How this deploy switches colors (`nginx.switch`), decided under the lock.
    switch_used: nft_switch::Used,
    /// The project's nft rule as this run last read or wrote it (`Some(None)`: no table;
    /// `None`: not known, read it before a write), so a switch does not list it again.
    rule: std::cell::Cell<Option<Option<crate::nft::Mapping>>>,
    /// nft mode: an `nft` started as the health gate starts, for the switch's lead
    /// (`Run::prime_lead`); taken by the switch, or dropped unfed.
    primed: std::cell::Cell<Option<crate::nft::Primed>>,
    /// nft mode: the table's replacement running beside the watch window or the stop
    /// (`rule_replacement.rs`), until `Run::replaced` waits for it.
    replacing: std::cell::Cell<Option<rule_replacement::Replacing>>,
    /// The rule as `nft_switch::decide` read it while checking that nft works here, used by
    /// observe and the check for a rule left open (two `nft` processes fewer).
    first_read: nft_switch::FirstRead,
    /// nft mode: a listener was seen on the new color's port before its health gate, so the
    /// switch need not ask again (false: not asked, or none seen: asked after the gate).
    listens: bool,
}

impl<'a> Deployer<'a> {
    fn project(&self) -> Project {
        Project {
            compose: self.compose.clone(),
            name: self.loaded.config.project.to_string(),
            file: self.loaded.state_dir().join("compose.yml"),
            dir: self.loaded.dir.clone(),
        }
    }

    /// Runs a deploy (or rollback) to completion, or fails having restored a consistent state.
    pub fn run(&self, req: &Request, reporter: &mut dyn Reporter) -> anyhow::Result<Summary> {
        let config = &self.loaded.config;
        let mut run = Run {
            d: self,
            clock: StepClock::new(reporter),
            from: None,
            project: self.project(),
            nginx: Nginx {
                include: config.nginx.include.clone(),
                test: config.nginx.test.clone(),
                reload: config.nginx.reload.clone(),
            },
            state_dir: StateDir::new(self.loaded.state_dir()),
            worker_outcomes: Vec::new(),
            switched: false,
            facts: None,
            survey: None,
            switch_used: nft_switch::Used::Reload,
            rule: std::cell::Cell::new(None),
            primed: std::cell::Cell::new(None),
            replacing: std::cell::Cell::new(None),
            first_read: None,
            listens: false,
        };
        run.clock.ran_before(Step::Decrypt, req.decrypted);
        let result = run.execute(req);
        run.after_hooks(req, result)
    }
}

/// The color nginx's backup server leads to right after the switch: the old one while a watch
/// window is open (`Route::Fallback`), else the new one itself.
fn backup_of(t: &Target, r: &Rendered) -> Color {
    match (r.route, t.from) {
        (Route::Fallback, Some(old)) => old,
        _ => t.to,
    }
}

/// A step being written into the in-progress record on a thread of its own.
struct Marking(Step, std::thread::JoinHandle<anyhow::Result<()>>);

impl Run<'_, '_> {
    /// The include for `color`, in maintenance while the project's flag is on: the flag
    /// cannot change during a deploy, since turning it on or off takes the deploy lock.
    /// `route`: [`Route::Fallback`] only for the switch that opens a watch window.
    fn include_text(&self, color: Color, route: Route) -> anyhow::Result<String> {
        let maintenance = crate::maintenance::load(&self.d.loaded.state_dir())?;
        self.d
            .renderer
            .include(&self.d.loaded.config, color, maintenance.as_ref(), route)
    }

    /// `set_step(step)` on a thread of its own, for the caller to join once the step's own
    /// work returned, before anything else writes `state.json`. The step is only what
    /// `status` tells of a killed run (what serves is read from nginx and the rule, never
    /// from it), and its fsync'd write (0.3 to 20 ms on a VM's disk) need not sit between
    /// the health pass and the switch, nor before the old color's stop.
    fn mark_alongside(&self, step: Step) -> Marking {
        let state_dir = self.state_dir.clone();
        Marking(step, std::thread::spawn(move || state_dir.mark_step(step)))
    }

    /// Waits for [`Run::mark_alongside`]'s thread; as `set_step`, a record that cannot be
    /// written costs `status` its detail only, and a warning says so.
    fn marked(&mut self, Marking(step, thread): Marking) {
        let marked = thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread writing it panicked")));
        self.step_marked(step, marked);
    }

    fn interrupted(&self) -> bool {
        self.d.interrupted.load(Ordering::SeqCst)
    }

    /// The deciding steps, then the operations they decided, then the record.
    fn execute(&mut self, req: &Request) -> anyhow::Result<Summary> {
        let _lock = self.lock(req)?;
        // Before anything starts: an include this user cannot switch would fail the deploy
        // only after the new color had booted and passed its health gate.
        self.nginx.check_writable()?;
        let (used, fell_back, first_read) = nft_switch::decide(&self.d.loaded.config)?;
        self.switch_used = used;
        self.first_read = first_read;
        if let Some(why) = fell_back {
            self.clock.note(why);
        }
        let target = self.observe(req)?;
        if req.action == Action::Rollback {
            self.rollback_values(&target)
                .map_err(|e| self.record_refusal(req, &target, e))?;
        }
        self.pull(req, &target)
            .map_err(|e| self.record_refusal(req, &target, e))?;
        self.budget(req, &target)
            .map_err(|e| self.record_refusal(req, &target, e))?;
        let rendered = self
            .render(&target)
            .map_err(|e| self.record_refusal(req, &target, e))?;
        let ops = Ops::decide(&self.d.loaded.config, req, target.from, &rendered);
        if req.dry_run {
            let plan = ops::Describe {
                d: self.d,
                req,
                project: &self.project,
                t: &target,
                r: &rendered,
            }
            .lines(&ops);
            let mut summary = self.summary(req, &target, None, Vec::new(), plan);
            // Decrypt (recorded before the engine ran, `Request::decrypted`), then the plan's.
            summary.plan_steps = std::iter::once(Step::Decrypt)
                .chain(ops.steps(self.pulls(&target)))
                .collect();
            return Ok(summary);
        }
        // A signal that came while the lock, observe or render ran: stop before the first
        // thing that changes the box (the pre_deploy hook included).
        if self.interrupted() {
            let stop = crate::engine::failure::Failed {
                message: "interrupted (SIGINT/SIGTERM) before anything changed".into(),
                abort: Abort::Interrupted,
            };
            return Err(self.record_refusal(req, &target, stop.into()));
        }
        self.prepare_hooks(req, &target)
            .map_err(|e| self.record_refusal(req, &target, e))?;
        for check in &ops.checks {
            self.check(check)
                .map_err(|e| self.record_refusal(req, &target, e))?;
        }
        self.mark_in_progress(&target)?;
        let result = self.changes(&target, &rendered, &ops.changes);
        let recorded = self.record(req, &target, &result);
        let (switch_ms, mut notes) = record::outcome(result, recorded, || self.live(&target))?;
        notes.extend(self.prune_images());
        if let Some(failed) = workers::failure(&self.worker_outcomes, &self.live(&target)) {
            return Err(failed.into());
        }
        Ok(self.summary(req, &target, Some(switch_ms), notes, Vec::new()))
    }

    fn check(&mut self, check: &Check) -> anyhow::Result<()> {
        match check {
            Check::PreDeploy => self.pre_deploy(),
        }
    }

    /// The changes, in order. Returns the switch time and notes; on a failure before the
    /// switch the idle color is gone and nginx points where it pointed before.
    fn changes(
        &mut self,
        t: &Target,
        r: &Rendered,
        changes: &[Change],
    ) -> anyhow::Result<(u64, Vec<String>)> {
        let mut passed_at = Instant::now();
        // From the health gate passing to nginx answering from the new color: taken right
        // after the probe, not after the settle window and the drain.
        let mut switch_ms = 0;
        let mut old_workers = Vec::new();
        let mut notes = Vec::new();
        for change in changes {
            match change {
                Change::WriteCompose => {
                    crate::atomic::write(
                        &self.project.file,
                        r.compose_text.as_bytes(),
                        crate::state::FILE_MODE,
                    )?;
                    self.write_deploy_secret_files(t, r)?;
                }
                Change::Accessories(names) => self.accessories(names)?,
                Change::Release { run } => self.release(*run, t)?,
                Change::Up => self.up(t)?,
                Change::Health => {
                    // Docker's proxy listens from the container's start: a listener seen now
                    // (a sock_diag look on a thread beside the gate) is taken, off the path from the
                    // health pass to the switch. None seen is asked again once the gate
                    // passed: a container that died at its start has no proxy either, and
                    // then the gate says why, not "no nft here".
                    let port = (self.switch_used == nft_switch::Used::Nft)
                        .then(|| self.d.loaded.config.colors.port(t.to));
                    let look = port.map(|port| move || crate::host::listening(port));
                    self.prime_lead(t.to, backup_of(t, r));
                    let (gate, seen) = nft_switch::beside(look, || self.health(t));
                    passed_at = gate?;
                    if let Some(seen) = seen {
                        self.listens = nft_switch::listens(seen.ok());
                    }
                }
                Change::Switch => {
                    let (workers, switch_notes) = self.switch(t, r)?;
                    switch_ms = passed_at.elapsed().as_millis() as u64;
                    self.switched = true;
                    old_workers = workers;
                    notes.extend(switch_notes);
                    if self.interrupted() {
                        notes.push(
                            "interrupt received after the switch: finishing the deploy".into(),
                        );
                    }
                }
                Change::Settle { old } => self.settle(t, *old, r.route)?,
                Change::Drain { old } => notes.extend(self.drain(*old, &old_workers)),
                Change::Stop { old } => {
                    notes.extend(self.stop(*old, t.from_image.as_deref(), &t.observed))
                }
                Change::Workers => notes.extend(self.move_workers(t, r)),
            }
        }
        // The window's close replaced the table beside the drain and the stop.
        notes.extend(self.close_replaced(t.to, t.from));
        Ok((switch_ms, notes))
    }

    /// Step 2: Which color serves now, where the deploy goes, and with which image.
    fn observe(&mut self, req: &Request) -> anyhow::Result<Target> {
        let loaded = self.d.loaded;
        self.clock.start(Step::Observe, "");
        let mut observed = observe::observe_with(loaded, self.first_read.clone())?;
        for note in observed.disagreements() {
            self.clock.note(note);
        }
        self.reconcile(&mut observed, req.dry_run)?;
        if self.switch_used == nft_switch::Used::Nft {
            self.close_a_rule_left_open(req.dry_run)?;
        }
        self.repair_record(&mut observed, req.dry_run);
        let active = observed.active();
        let nothing_runs = observed.running.is_empty();
        // Nothing runs, yet a deploy succeeded before (a reboot, a crash): a recovery, which
        // redeploys what served, on the color nginx points at, never a first deploy's blue
        // with blue's older image.
        let recovery = nothing_runs && observed.recorded.active.is_some();
        let first_deploy = nothing_runs && !recovery;
        let from = if nothing_runs { None } else { active };
        let to = match (from, recovery) {
            (Some(c), _) => c.other(),
            (None, true) => active.unwrap_or(Color::Blue),
            (None, false) => Color::Blue,
        };
        self.from = from;
        let from_image = from.and_then(|c| observed.image_of(loaded, c));
        let image = match (&req.image, req.action) {
            (Some(image), _) => image.clone(),
            (None, Action::Rollback) => observed.recorded.previous_image.clone().context(
                "nothing to roll back to: no previous image is recorded (deploy at least twice first)",
            )?,
            (None, Action::Deploy) => from_image.clone().or_else(|| observed.recorded.images.get(&to).cloned()).context(
                "no image is running to redeploy; pass --image REF",
            )?,
        };
        let found = match (from, recovery) {
            (Some(c), _) => format!(
                "{c} serves {}; deploying to {to}",
                from_image.as_deref().unwrap_or("?")
            ),
            (None, true) => format!(
                "recovery: nothing runs, but {to} served {} (nginx points at {}); deploying {image} to {to}",
                observed.recorded.images.get(&to).map_or("?", String::as_str),
                observed.nginx_color.map_or("neither color".to_string(), |c| c.to_string()),
            ),
            (None, false) => format!("first deploy: going to {to}"),
        };
        if recovery {
            self.clock.note(found.clone());
        }
        self.clock.done(Step::Observe, found);
        Ok(Target {
            observed,
            from,
            from_image,
            to,
            image,
            first_deploy,
        })
    }

    /// Step 4: Render the compose file (both colors' images) and the include for the new color.
    fn render(&mut self, t: &Target) -> anyhow::Result<Rendered> {
        let config = &self.d.loaded.config;
        let moves = workers::moves(config, &t.observed);
        let mut images = BTreeMap::new();
        if let (Some(c), Some(img)) = (t.from, &t.from_image) {
            images.insert(c, img.clone());
        }
        images.insert(t.to, t.image.clone());
        let compose_text = self.d.renderer.compose(
            config,
            &Plan {
                images,
                secret_keys: self.d.keys().clone(),
                workers: workers::images(&moves, &t.image),
                secrets_dir: self.d.secret_files.as_ref().map(|d| d.dir.clone()),
            },
        )?;
        // The old color is nginx's backup for the new one while the window is open (and only
        // then: the settle step closes it), when the site declares the groups.
        let window = t.from.is_some() && !config.app.settle.get().is_zero();
        let (route, include_text) = match self.switch_used {
            nft_switch::Used::Nft => {
                let maintenance = crate::maintenance::load(&self.d.loaded.state_dir())?;
                let text = self.d.renderer.include_nft(config, maintenance.as_ref())?;
                let route = if window {
                    Route::Fallback
                } else {
                    Route::Direct
                };
                (route, text)
            }
            nft_switch::Used::Reload => {
                let route = if window {
                    crate::engine::site_route(config)
                } else {
                    Route::Direct
                };
                (route, self.include_text(t.to, route)?)
            }
        };
        let accessories_down = config
            .accessories
            .keys()
            .map(|n| n.to_string())
            .filter(|name| {
                !t.observed
                    .containers
                    .iter()
                    .any(|c| &c.service == name && c.running())
            })
            .collect();
        Ok(Rendered {
            compose_text,
            include_text,
            route,
            switch: self.switch_used,
            accessories_down,
            workers: moves,
            retired: workers::retired(config, &t.observed),
        })
    }

    /// Starts the accessories that are not running yet.
    fn accessories(&mut self, names: &[String]) -> anyhow::Result<()> {
        let shown = names.join(", ");
        self.clock.start(Step::Accessories, shown.clone());
        self.project.up(
            names,
            false,
            secret_files::compose_env(self.d),
            self.up_timeout(),
            "start the accessories",
        )?;
        self.clock.done(Step::Accessories, shown);
        Ok(())
    }

    /// Starts the idle color with the new image (an interrupt before it stops the deploy).
    fn up(&mut self, t: &Target) -> anyhow::Result<()> {
        let idle_service = self.d.loaded.config.service(t.to);
        if self.interrupted() {
            return Err(self.abort_before_switch(
                &idle_service,
                "interrupted before starting the new color",
                Abort::Interrupted,
            ));
        }
        let detail = format!("{idle_service} ← {}", t.image);
        self.clock.start(Step::Up, detail.clone());
        if let Err(e) = self.project.up(
            std::slice::from_ref(&idle_service),
            true,
            secret_files::compose_env(self.d),
            self.up_timeout(),
            format!("start {}", t.to),
        ) {
            return Err(self.abort_before_switch(
                &idle_service,
                &e.to_string(),
                Abort::StartFailed,
            ));
        }
        self.clock.done(Step::Up, detail);
        Ok(())
    }

    /// The bound of one `compose up`: creating and starting containers takes seconds, but a
    /// missing image is pulled first; `health.timeout` + 2 min covers a pull without letting
    /// a stalled engine hold the lock forever.
    fn up_timeout(&self) -> std::time::Duration {
        self.d.loaded.config.app.health.timeout.get() + std::time::Duration::from_secs(120)
    }

    /// Step 6: Health gate: the new color answers its health check, directly. Returns when it
    /// passed.
    fn health(&mut self, t: &Target) -> anyhow::Result<Instant> {
        self.set_step(Step::Health);
        let idle_service = self.d.loaded.config.service(t.to);
        let gate = health_gate::Gate {
            loaded: self.d.loaded,
            project: &self.project,
            service: &idle_service,
            to: t.to,
            interrupted: &self.d.interrupted,
        };
        let passed = gate.wait(&mut self.clock);
        let passed_at = Instant::now();
        if let Err((abort, why)) = passed {
            return Err(self.abort_before_switch(&idle_service, &why, abort));
        }
        if self.interrupted() {
            return Err(self.abort_before_switch(&idle_service, "interrupted", Abort::Interrupted));
        }
        Ok(passed_at)
    }

    /// Step 7: Switch nginx, then prove through nginx that the new color answers. From here on an
    /// interrupt no longer stops the deploy: finishing is the consistent state. Returns the
    /// nginx workers that may still route to the old color, and notes.
    fn switch(&mut self, t: &Target, r: &Rendered) -> anyhow::Result<(Vec<u32>, Vec<String>)> {
        let mut include_text = std::borrow::Cow::Borrowed(r.include_text.as_str());
        if self.switch_used == nft_switch::Used::Nft {
            if std::mem::take(&mut self.listens) {
                return self.switch_nft(t, r);
            }
            match self.nft_reaches(t.to, r.route == Route::Fallback) {
                Ok(()) => return self.switch_nft(t, r),
                Err(text) => include_text = std::borrow::Cow::Owned(text?),
            }
        }
        let config = &self.d.loaded.config;
        let idle_service = config.service(t.to);
        let marked = self.mark_alongside(Step::Switch);
        self.clock
            .start(Step::Switch, config.nginx.include.display().to_string());
        let old_workers = self.nginx.worker_pids();
        let switched = self.nginx.switch(&include_text);
        self.marked(marked);
        let switch = match switched {
            Ok(sw) => sw,
            Err(e) => {
                return Err(self.abort_before_switch(
                    &idle_service,
                    &format!("{e:#}"),
                    Abort::SwitchFailed,
                ));
            }
        };
        self.clock.done(
            Step::Switch,
            format!("nginx → {}", crate::render::upstream_url(config, t.to)),
        );
        self.clock.start(Step::Probe, config.nginx.probe_base());
        match switch::probe_through_nginx(config, t.to, &include_text, &old_workers) {
            Ok(note) => {
                self.clock
                    .done(Step::Probe, format!("nginx serves {}", t.to));
                let left = self.remove_a_table_left_behind();
                Ok((old_workers, note.into_iter().chain(left).collect()))
            }
            Err(why) => {
                let restored = switch.restore(&self.nginx);
                let mut message = format!("{why}; restored the previous nginx include");
                if let Err(e) = restored {
                    message.push_str(&format!(" (restoring failed too: {e:#})"));
                }
                Err(self.abort_before_switch(&idle_service, &message, Abort::ProbeFailed))
            }
        }
    }

    /// Step 7 in nft mode: the rule (primary → the new color; backup → the old one while
    /// a watch window is open), no reload unless the mode is being set up; the same probe
    /// through nginx. Returns the nginx workers from before a set-up reload (none without
    /// one: no worker can hold an old route, only connections can).
    fn switch_nft(&mut self, t: &Target, r: &Rendered) -> anyhow::Result<(Vec<u32>, Vec<String>)> {
        let config = &self.d.loaded.config;
        let idle_service = config.service(t.to);
        let marked = self.mark_alongside(Step::Switch);
        let table = crate::nft::table(config.project.as_str());
        self.clock
            .start(Step::Switch, format!("nft table ip {table}"));
        let backup = backup_of(t, r);
        // Into a watch window, the old color its backup: the table's replacement runs beside
        // the window and is waited for at its end (`rule_replacement.rs`).
        let routed = self.nft_route(t.to, backup, backup != t.to);
        self.marked(marked);
        let (text, workers, undo) = match routed {
            Ok(done) => done,
            Err(e) => {
                return Err(self.abort_before_switch(
                    &idle_service,
                    &format!("{e:#}"),
                    Abort::SwitchFailed,
                ));
            }
        };
        let reloaded = workers.is_some();
        let old_workers = workers.unwrap_or_default();
        self.clock.done(
            Step::Switch,
            format!(
                "{} → {}{}",
                crate::render::switch_group(config),
                crate::render::upstream_url(config, t.to),
                if reloaded {
                    " (nft mode set up: include written, nginx reloaded once)"
                } else {
                    " (nft rule, nginx not reloaded)"
                }
            ),
        );
        self.clock.start(Step::Probe, config.nginx.probe_base());
        match switch::probe_through_nginx(config, t.to, &text, &old_workers) {
            Ok(note) => {
                self.clock
                    .done(Step::Probe, format!("nginx serves {}", t.to));
                Ok((old_workers, note.into_iter().collect()))
            }
            Err(why) => {
                let mut message = format!("{why}; put the previous nft rule back");
                if let Err(e) = self.nft_undo(undo) {
                    message.push_str(&format!(" (that failed too: {e:#})"));
                }
                Err(self.abort_before_switch(&idle_service, &message, Abort::ProbeFailed))
            }
        }
    }

    /// Step 8b: Stop and remove the old color (its image stays for rollback).
    fn stop(&mut self, old: Color, old_image: Option<&str>, observed: &Observed) -> Option<String> {
        let config = &self.d.loaded.config;
        let old_service = config.service(old);
        let marked = self.mark_alongside(Step::Stop);
        self.clock.start(Step::Stop, old_service.clone());
        self.survey = Some(self.start_survey());
        // Its ciphertext is kept for a rollback before it stops: a kill in between leaves
        // the copy where a rollback reads it, never an older one there.
        let retired = self.retire_secret_files(&old_service);
        // The old color's containers as observed under the lock: no second engine lookup.
        let ids: Vec<String> = observed
            .containers
            .iter()
            .filter(|c| c.service == old_service)
            .map(|c| c.id.clone())
            .collect();
        let note = crate::docker::containers::stop_and_remove(
            &old_service,
            &ids,
            config.app.stop_grace.get(),
        )
        .err()
        .map(|e| e.to_string())
        .or(retired)
        .or_else(|| self.remove_files_only(&old_service));
        self.marked(marked);
        self.clock.done(
            Step::Stop,
            format!(
                "{old_service} stopped, image {} kept",
                old_image.unwrap_or("?")
            ),
        );
        note
    }

    /// Files mode: the files of everything this deploy starts (the new color, the accessories
    /// not running, each worker's new color), before the first of them starts. Env mode: only
    /// the new color's ciphertext, kept for a rollback to it once it has stopped.
    fn write_deploy_secret_files(&self, t: &Target, r: &Rendered) -> anyhow::Result<()> {
        if self.d.secret_files.is_none() {
            let service = self.d.loaded.config.service(t.to);
            return crate::secrets::deployed::save(
                &self.d.loaded.state_dir(),
                &service,
                Some(&t.image),
                &self.d.sources().app,
            );
        }
        self.write_secret_files(&self.d.loaded.config.service(t.to), None, Some(&t.image))?;
        for name in &r.accessories_down {
            self.write_secret_files(name, Some(name), None)?;
        }
        for m in &r.workers {
            let service = self.d.loaded.config.worker_service(&m.name, m.to);
            self.write_secret_files(&service, None, Some(&t.image))?;
        }
        Ok(())
    }

    fn summary(
        &self,
        req: &Request,
        t: &Target,
        switch_ms: Option<u64>,
        notes: Vec<String>,
        plan: Vec<crate::engine::PlanItem>,
    ) -> Summary {
        Summary {
            engine: EngineKind::Compose,
            action: req.action,
            image: t.image.clone(),
            first_deploy: t.first_deploy,
            dry_run: req.dry_run,
            steps: self.clock.steps(),
            total_ms: self.clock.total_ms(),
            notes,
            plan,
            plan_steps: Vec::new(),
            detail: ComposeDetail {
                from: t.from,
                to: t.to,
                switch_ms,
                workers: self.worker_outcomes.clone(),
                hooks: Vec::new(),
                secrets_from: self.d.rollback_values.get().map(|g| g.from.clone()),
                switch: self.switch_used,
            },
        }
    }
}
