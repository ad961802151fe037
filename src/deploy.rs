//! The blue/green deploy state machine (DESIGN.md "Deploy", nine steps) and rollback.
//!
//! Order is the safety argument: nothing user-visible changes until the new color has passed
//! its health gate; nginx changes only through a tested, atomically written include; the old
//! color stops only after nginx demonstrably serves the new one and the old one has drained.
//! Every failure before the switch tears the new color down and leaves nginx alone; a failure
//! of the switch restores the old include. Progress goes to a [`Reporter`]; this module
//! prints nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use secrecy::SecretString;
use serde::Serialize;

use crate::compose::{Compose, Container, Project};
use crate::config::{Color, Loaded};
use crate::health::{self, Answer, Outcome, Prober, Verdict};
use crate::host::MemInfo;
use crate::nginx::Nginx;
use crate::render::{Plan, Renderer, SecretKeys};
use crate::state::{HistoryEntry, Holder, InProgress, StateDir, StepTiming};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The image to deploy; `None` redeploys the active image (or, for rollback, the
    /// previous one).
    pub image: Option<String>,
    pub rollback: bool,
    pub dry_run: bool,
    pub force: bool,
    pub lock_wait: Duration,
}

/// Progress events, for the command layer to print.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step started.
    Start { step: &'static str, detail: String },
    /// A step finished.
    Done {
        step: &'static str,
        took: Duration,
        detail: String,
    },
    /// Still waiting inside a step.
    Waiting {
        step: &'static str,
        elapsed: Duration,
        limit: Duration,
        last: String,
    },
    /// Something the user should know that is not a failure.
    Note(String),
}

pub trait Reporter {
    fn event(&mut self, event: Event);
}

/// Everything a deploy needs, gathered by the command layer.
pub struct Deployer<'a> {
    pub loaded: &'a Loaded,
    pub compose: Compose,
    pub renderer: Renderer,
    /// Every decrypted secret (app and accessories): process environment for compose only.
    pub secrets: BTreeMap<String, SecretString>,
    pub secret_keys: SecretKeys,
    /// Set by SIGINT/SIGTERM.
    pub interrupted: Arc<AtomicBool>,
}

/// What `status` and `deploy` see: nginx's include, the containers, and the record.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    /// The color the nginx include points at (None: no include, or a port of neither color).
    pub nginx_color: Option<Color>,
    pub containers: Vec<Container>,
    pub running: BTreeSet<Color>,
    pub recorded: crate::state::State,
}

impl Observed {
    /// The color serving traffic: nginx's, if it runs; else the only running color; else
    /// whatever nginx or the record says.
    pub fn active(&self) -> Option<Color> {
        if let Some(c) = self.nginx_color.filter(|c| self.running.contains(c)) {
            return Some(c);
        }
        if self.running.len() == 1 {
            return self.running.iter().next().copied();
        }
        self.nginx_color.or(self.recorded.active)
    }

    /// The image a color's container runs (falling back to the record).
    pub fn image_of(&self, loaded: &Loaded, color: Color) -> Option<String> {
        let service = loaded.config.service(color);
        self.containers
            .iter()
            .find(|c| c.service == service && c.running())
            .map(|c| c.image.clone())
            .or_else(|| self.recorded.images.get(&color).cloned())
    }

    /// Where nginx, the containers and the record disagree, in words.
    pub fn disagreements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let deployed_before = self.recorded.active.is_some() || !self.containers.is_empty();
        match self.nginx_color {
            Some(c) if !self.running.contains(&c) && deployed_before => out.push(format!(
                "nginx points at {c}, but no {c} container is running"
            )),
            None if !self.running.is_empty() => {
                out.push("containers run, but the nginx include points at neither color".into())
            }
            _ => {}
        }
        if self.running.len() == 2 {
            out.push("both colors are running (a deploy is in progress or was interrupted)".into());
        }
        if let (Some(rec), Some(active)) = (self.recorded.active, self.active()) {
            if rec != active {
                out.push(format!(
                    "the record says {rec} is active, but {active} serves"
                ));
            }
        }
        if let Some(p) = &self.recorded.in_progress {
            let alive = std::path::Path::new(&format!("/proc/{}", p.pid)).exists();
            out.push(format!(
                "a deploy of {} to {} (pid {}, started {}) {} at step `{}`",
                p.image,
                p.to,
                p.pid,
                p.started,
                if alive {
                    "is running"
                } else {
                    "did not finish; it stopped"
                },
                p.step
            ));
        }
        out
    }
}

/// Reads nginx's include and the engine's containers for a project.
pub fn observe(loaded: &Loaded) -> anyhow::Result<Observed> {
    let config = &loaded.config;
    let nginx_color = match std::fs::read_to_string(&config.nginx.include) {
        Ok(text) => crate::nginx::include_port(&text).and_then(|port| {
            Color::ALL
                .into_iter()
                .find(|c| config.colors.port(*c) == port)
        }),
        Err(_) => None,
    };
    let containers = crate::compose::containers_of(config.project.as_str())?;
    let running = containers
        .iter()
        .filter(|c| c.running())
        .filter_map(|c| config.color_of_service(&c.service))
        .collect();
    let recorded = StateDir::new(loaded.state_dir()).load()?;
    Ok(Observed {
        nginx_color,
        containers,
        running,
        recorded,
    })
}

/// The outcome of a deploy (or its plan, for `--dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub action: &'static str,
    pub image: String,
    pub from: Option<Color>,
    pub to: Color,
    pub first_deploy: bool,
    pub dry_run: bool,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
    /// Time from the health gate passing to nginx answering from the new color.
    pub switch_ms: Option<u64>,
    pub notes: Vec<String>,
    /// For --dry-run: the commands that would run.
    pub plan: Vec<String>,
}

/// A deploy that failed, with what was rolled back. `interrupted` tells the command layer to
/// exit with the interrupt status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    pub message: String,
    pub interrupted: bool,
}

struct Run<'a, 'r> {
    d: &'a Deployer<'a>,
    /// The color that served before this deploy (None on a first deploy).
    from: Option<Color>,
    reporter: &'r mut dyn Reporter,
    project: Project,
    nginx: Nginx,
    state_dir: StateDir,
    steps: Vec<StepTiming>,
    started: Instant,
    step_started: Instant,
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
        let nginx = Nginx {
            include: config.nginx.include.clone(),
            test: config.nginx.test.clone(),
            reload: config.nginx.reload.clone(),
        };
        let mut run = Run {
            d: self,
            from: None,
            reporter,
            project: self.project(),
            nginx,
            state_dir: StateDir::new(self.loaded.state_dir()),
            steps: Vec::new(),
            started: Instant::now(),
            step_started: Instant::now(),
        };
        run.execute(req)
    }
}

impl Run<'_, '_> {
    fn start(&mut self, step: &'static str, detail: impl Into<String>) {
        self.step_started = Instant::now();
        self.reporter.event(Event::Start {
            step,
            detail: detail.into(),
        });
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

    fn interrupted(&self) -> bool {
        self.d.interrupted.load(Ordering::SeqCst)
    }

    fn execute(&mut self, req: &Request) -> anyhow::Result<Summary> {
        let loaded = self.d.loaded;
        let config = &loaded.config;
        let action = if req.rollback { "rollback" } else { "deploy" };

        // 1. Lock (a dry run changes nothing and takes no lock).
        let _lock = if req.dry_run {
            None
        } else {
            self.start("lock", "");
            let holder = Holder {
                pid: std::process::id(),
                user: crate::state::current_user(),
                started: crate::state::now_rfc3339(),
                action: format!(
                    "{action} {}",
                    req.image.as_deref().unwrap_or("(active image)")
                ),
            };
            let lock = self.state_dir.lock(req.lock_wait, &holder)?;
            self.done("lock", "");
            // Registered before anything runs, so another project's prune keeps our images.
            if let Err(e) = crate::registry::register(&self.state_dir.dir) {
                self.reporter.event(Event::Note(format!(
                    "warning: {e:#}; other cutover projects on this box may prune this project's images"
                )));
            }
            Some(lock)
        };

        // 3. Which color serves now.
        self.start("observe", "");
        let observed = observe(loaded)?;
        for note in observed.disagreements() {
            self.reporter.event(Event::Note(note));
        }
        let active = observed.active();
        let first_deploy = active.is_none() || observed.running.is_empty();
        let from = if observed.running.is_empty() {
            None
        } else {
            active
        };
        // Nothing running: the first deploy (or a recovery) goes to blue.
        let to = from.map(Color::other).unwrap_or(Color::Blue);
        self.from = from;
        let from_image = from.and_then(|c| observed.image_of(loaded, c));
        let image = match (&req.image, req.rollback) {
            (Some(image), _) => image.clone(),
            (None, true) => observed.recorded.previous_image.clone().context(
                "nothing to roll back to: no previous image is recorded (deploy at least twice first)",
            )?,
            (None, false) => from_image.clone().or_else(|| observed.recorded.images.get(&to).cloned()).context(
                "no image is running to redeploy; pass --image REF",
            )?,
        };
        self.done(
            "observe",
            match from {
                Some(c) => format!(
                    "{c} serves {}; deploying to {to}",
                    from_image.as_deref().unwrap_or("?")
                ),
                None => format!("first deploy: going to {to}"),
            },
        );

        // 4. Memory budget: both colors run during the overlap.
        let need = config.app.memory.bytes()
            + if first_deploy {
                config
                    .accessories
                    .values()
                    .map(|a| a.memory.bytes())
                    .sum::<u64>()
            } else {
                0
            };
        let mem = MemInfo::read()?;
        if mem.headroom() < need {
            let msg = format!(
                "not enough memory for another {}: it needs {} MiB (deploy.resources.limits.memory), but MemAvailable {} MiB + SwapFree {} MiB = {} MiB",
                if first_deploy { "app and its accessories" } else { "color during the overlap" },
                need >> 20,
                mem.available >> 20,
                mem.swap_free >> 20,
                mem.headroom() >> 20
            );
            if !req.force {
                bail!("{msg}; add swap (`cutover bootstrap --swap auto`) or pass --force");
            }
            self.reporter
                .event(Event::Note(format!("{msg}; going on because of --force")));
        }

        let idle_service = config.service(to);
        let mut images = BTreeMap::new();
        if let (Some(c), Some(img)) = (from, &from_image) {
            images.insert(c, img.clone());
        }
        images.insert(to, image.clone());
        let compose_text = self.d.renderer.compose(
            config,
            &Plan {
                images,
                secret_keys: self.d.secret_keys.clone(),
            },
        )?;
        let include_text = self.d.renderer.include(config, to)?;
        let accessories: Vec<String> = config.accessories.keys().map(|n| n.to_string()).collect();
        let accessories_down: Vec<String> = accessories
            .iter()
            .filter(|name| {
                !observed
                    .containers
                    .iter()
                    .any(|c| &c.service == *name && c.running())
            })
            .cloned()
            .collect();

        if req.dry_run {
            let mut plan = Vec::new();
            let compose_file = self.project.file.display().to_string();
            plan.push(format!("write {compose_file} ({to} runs {image})"));
            if !accessories_down.is_empty() {
                plan.push(format!(
                    "{} -p {} -f {compose_file} up -d {}",
                    self.d.compose.program(),
                    config.project,
                    accessories_down.join(" ")
                ));
            }
            plan.push(format!(
                "{} -p {} -f {compose_file} up -d --no-deps --force-recreate {idle_service}",
                self.d.compose.program(),
                config.project
            ));
            plan.push(format!(
                "wait for {} to answer {} (up to {})",
                health_url(loaded, to),
                config.app.health.status,
                config.app.health.timeout
            ));
            plan.push(format!(
                "write {} -> {}, `{}`, `{}`",
                config.nginx.include.display(),
                crate::render::upstream_url(config, to),
                config.nginx.test.join(" "),
                config.nginx.reload.join(" ")
            ));
            plan.push(format!(
                "probe {}/.cutover/active until it says {to}",
                config.nginx.probe_base()
            ));
            if let Some(c) = from {
                plan.push(format!(
                    "drain {c} (up to {}), then stop -t {} {} and rm -f it",
                    config.app.drain,
                    config.app.stop_grace.get().as_secs(),
                    config.service(c)
                ));
            }
            return Ok(Summary {
                action,
                image,
                from,
                to,
                first_deploy,
                dry_run: true,
                steps: self.steps.clone(),
                total_ms: self.started.elapsed().as_millis() as u64,
                switch_ms: None,
                notes: Vec::new(),
                plan,
            });
        }

        let mut record = self.state_dir.load()?;
        record.in_progress = Some(InProgress {
            pid: std::process::id(),
            started: crate::state::now_rfc3339(),
            image: image.clone(),
            from,
            to,
            step: "up".into(),
        });
        self.state_dir.save(&record)?;

        let result = self.deploy_steps(DeploySteps {
            image: &image,
            from,
            from_image: from_image.as_deref(),
            to,
            compose_text: &compose_text,
            include_text: &include_text,
            accessories_down: &accessories_down,
        });

        // 9. Record what happened, whatever it was.
        let mut record = self.state_dir.load()?;
        record.in_progress = None;
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
        if result.is_ok() {
            if let (Some(old), Some(old_image)) = (from, &from_image) {
                record.images.insert(old, old_image.clone());
                if *old_image != image {
                    record.previous_image = Some(old_image.clone());
                }
            }
            record.active = Some(to);
            record.images.insert(to, image.clone());
        }
        self.state_dir.save(&record)?;
        let total_ms = self.started.elapsed().as_millis() as u64;
        self.state_dir.append_history(&HistoryEntry {
            time: crate::state::now_rfc3339(),
            user: crate::state::current_user(),
            engine: "compose".to_string(),
            action: action.to_string(),
            image: image.clone(),
            from_image: None,
            from,
            to: Some(to),
            result: result_word.to_string(),
            reason,
            steps: self.steps.clone(),
            total_ms,
        })?;
        let (switch_ms, mut notes) = result?;

        // Prune old images of app.image's repository beyond `keep_images`, never one that
        // anything on the box still records or runs (see `prune`).
        let repo = crate::images::repository(&config.app.image);
        match crate::prune::prune(repo, config.app.keep_images, &record, false) {
            Ok(pruned) => {
                notes.extend(pruned.removed.iter().map(|r| format!("pruned image {r}")));
                notes.extend(
                    pruned
                        .kept_with_errors
                        .iter()
                        .map(|k| format!("kept image {k}")),
                );
            }
            Err(e) => notes.push(format!("pruned nothing: {e:#}")),
        }

        Ok(Summary {
            action,
            image,
            from,
            to,
            first_deploy,
            dry_run: false,
            steps: self.steps.clone(),
            total_ms,
            switch_ms,
            notes,
            plan: Vec::new(),
        })
    }

    fn set_step(&self, step: &str) {
        if let Ok(mut record) = self.state_dir.load() {
            if let Some(p) = record.in_progress.as_mut() {
                p.step = step.to_string();
                let _ = self.state_dir.save(&record);
            }
        }
    }

    /// Steps 5–8. Returns the switch time and notes; on failure the idle color is gone and
    /// nginx points where it pointed before.
    fn deploy_steps(&mut self, s: DeploySteps) -> anyhow::Result<(Option<u64>, Vec<String>)> {
        let config = &self.d.loaded.config;
        let to = s.to;
        let idle_service = config.service(to);
        let mut notes = Vec::new();

        // 5. Bring the idle color up with the new image.
        crate::atomic::write(
            &self.project.file,
            s.compose_text.as_bytes(),
            crate::state::FILE_MODE,
        )?;
        if !s.accessories_down.is_empty() {
            self.start("accessories", s.accessories_down.join(", "));
            self.project.up(
                s.accessories_down,
                false,
                &self.d.secrets,
                "start the accessories",
            )?;
            self.done("accessories", s.accessories_down.join(", "));
        }
        if self.interrupted() {
            return Err(self.abort_before_switch(
                &idle_service,
                "interrupted before starting the new color",
                true,
            ));
        }
        self.start("up", format!("{idle_service} ← {}", s.image));
        if let Err(e) = self.project.up(
            std::slice::from_ref(&idle_service),
            true,
            &self.d.secrets,
            format!("start {to}"),
        ) {
            return Err(self.abort_before_switch(&idle_service, &e.to_string(), false));
        }
        self.done("up", format!("{idle_service} ← {}", s.image));

        // 6. Health gate.
        self.set_step("health");
        let health = &config.app.health;
        let url = health_url(self.d.loaded, to);
        self.start("health", url.clone());
        let prober = Prober::new(health.probe_timeout.get());
        let expected = health.status;
        let project = self.project.clone();
        let interrupted = self.d.interrupted.clone();
        // Fail fast when the container dies, instead of waiting out the timeout. The engine
        // is asked from a background thread, so its ~100 ms round trip never delays a poll.
        let death = Arc::new(std::sync::Mutex::new(None::<String>));
        let gate_done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (death, gate_done, service) =
                (death.clone(), gate_done.clone(), idle_service.clone());
            std::thread::spawn(move || {
                while !gate_done.load(Ordering::SeqCst) {
                    if let Ok(containers) = project.containers() {
                        let mine: Vec<_> =
                            containers.iter().filter(|c| c.service == service).collect();
                        let verdict = if let Some(dead) = mine.iter().find(|c| {
                            !c.running() || c.state == "restarting" || c.restart_count > 0
                        }) {
                            Some(format!(
                                "the {to} container exited (state {}, exit code {}, restarts {})",
                                dead.state,
                                dead.exit_code.unwrap_or_default(),
                                dead.restart_count
                            ))
                        } else if mine.is_empty() {
                            Some(format!("the {to} container is gone"))
                        } else {
                            None
                        };
                        if verdict.is_some() {
                            *death.lock().unwrap_or_else(|e| e.into_inner()) = verdict;
                            return;
                        }
                    }
                    // Sleep in small steps so the thread ends soon after the gate does.
                    for _ in 0..10 {
                        if gate_done.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        };
        let reporter = &mut *self.reporter;
        let outcome = health::wait_until(
            || {
                let answer = prober.get(&url, None);
                (
                    matches!(answer, Answer::Status { code, .. } if code == expected),
                    answer,
                )
            },
            health.interval.get(),
            health.timeout.get(),
            &mut |elapsed: Duration, last: Option<&Answer>| {
                if interrupted.load(Ordering::SeqCst) {
                    return Verdict::Abort("interrupted".into());
                }
                reporter.event(Event::Waiting {
                    step: "health",
                    elapsed,
                    limit: health.timeout.get(),
                    last: last.map(Answer::describe).unwrap_or_default(),
                });
                match death.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    Some(reason) => Verdict::Abort(reason),
                    None => Verdict::Continue,
                }
            },
        );
        gate_done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        let passed_at = Instant::now();
        match outcome {
            Outcome::Passed { after, polls } => self.done(
                "health",
                format!(
                    "{} after {} ({polls} polls)",
                    expected,
                    crate::report::duration(after)
                ),
            ),
            Outcome::TimedOut { after, last } => {
                let why = format!(
                    "health gate timed out after {}: {url} last answered {}",
                    crate::report::duration(after),
                    last.map(|a| a.describe())
                        .unwrap_or_else(|| "nothing".into())
                );
                return Err(self.abort_before_switch(&idle_service, &why, false));
            }
            Outcome::Aborted { reason, .. } => {
                let interrupted = reason == "interrupted";
                return Err(self.abort_before_switch(&idle_service, &reason, interrupted));
            }
        }
        if self.interrupted() {
            return Err(self.abort_before_switch(&idle_service, "interrupted", true));
        }

        // 7. Switch nginx, then prove through nginx that the new color answers. From here on
        // an interrupt no longer stops the deploy: finishing is the consistent state.
        self.set_step("switch");
        self.start("switch", config.nginx.include.display().to_string());
        // The workers that may still route to the old color once the reload returns.
        let old_workers = crate::nginx::worker_pids(&config.nginx.reload);
        let switch = match self.nginx.switch(s.include_text) {
            Ok(sw) => sw,
            Err(e) => {
                return Err(self.abort_before_switch(&idle_service, &format!("{e:#}"), false));
            }
        };
        self.done(
            "switch",
            format!("nginx → {}", crate::render::upstream_url(config, to)),
        );
        self.start("probe", config.nginx.probe_base());
        match self.probe_through_nginx(to) {
            Ok(note) => {
                notes.extend(note);
                self.done("probe", format!("nginx serves {to}"));
            }
            Err(why) => {
                let restored = switch.restore(&self.nginx);
                let mut message = format!("{why}; restored the previous nginx include");
                if let Err(e) = restored {
                    message.push_str(&format!(" (restoring failed too: {e:#})"));
                }
                return Err(self.abort_before_switch(&idle_service, &message, false));
            }
        }
        let switch_ms = passed_at.elapsed().as_millis() as u64;
        if self.interrupted() {
            notes.push("interrupt received after the switch: finishing the deploy".into());
        }

        // 8. Drain the old color, then stop and remove it (its image stays for rollback).
        if let Some(old) = s.from {
            self.set_step("drain");
            let old_service = config.service(old);
            let port = config.colors.port(old);
            self.start("drain", format!("{old_service} on port {port}"));
            let drain_start = Instant::now();
            let limit = config.app.drain.get();
            // Drained when no connection to the old port is open and every nginx worker that
            // predates the reload has exited (until then it may still route to the old color).
            let pending = || {
                let workers = old_workers
                    .iter()
                    .filter(|pid| crate::nginx::process_alive(**pid))
                    .count();
                (crate::host::established_connections(port), workers)
            };
            let (mut connections, mut workers) = pending();
            while (connections > 0 || workers > 0) && drain_start.elapsed() < limit {
                self.reporter.event(Event::Waiting {
                    step: "drain",
                    elapsed: drain_start.elapsed(),
                    limit,
                    last: format!("{connections} open connections, {workers} old nginx workers"),
                });
                std::thread::sleep(Duration::from_millis(20));
                (connections, workers) = pending();
            }
            if connections > 0 || workers > 0 {
                notes.push(format!(
                    "{connections} connections to {old} and {workers} old nginx workers were left after the drain limit ({})",
                    config.app.drain
                ));
            }
            self.done(
                "drain",
                format!("{connections} connections, {workers} old nginx workers left"),
            );
            self.set_step("stop");
            self.start("stop", old_service.clone());
            if let Err(e) = self
                .project
                .stop_and_remove(&old_service, config.app.stop_grace.get())
            {
                notes.push(format!("{e}"));
            }
            self.done(
                "stop",
                format!(
                    "{old_service} stopped, image {} kept",
                    s.from_image.unwrap_or("?")
                ),
            );
        }
        Ok((Some(switch_ms), notes))
    }

    /// Polls nginx until it serves `to`: its include answers `/.cutover/active` with the new
    /// color and the health path answers through nginx.
    fn probe_through_nginx(&mut self, to: Color) -> Result<Option<String>, String> {
        let config = &self.d.loaded.config;
        let base = config.nginx.probe_base();
        let host = config.nginx.probe_host();
        let prober = Prober::new(Duration::from_secs(2));
        let marker_url = format!("{base}/.cutover/active");
        let health_url = format!("{base}{}", config.app.health.path);
        let expected = config.app.health.status;
        let mut note = None;
        let outcome = health::wait_until(
            || {
                let marker = prober.get(&marker_url, host);
                match &marker {
                    Answer::Status { code: 200, body }
                        if body.split_whitespace().next() == Some(to.as_str()) => {}
                    Answer::Status { code: 404, .. } => {
                        note = Some("the nginx include has no /.cutover/active; checked the health path only".to_string());
                    }
                    other => return (false, other.clone()),
                }
                let health = prober.get(&health_url, host);
                (
                    matches!(health, Answer::Status { code, .. } if code == expected),
                    health,
                )
            },
            // The reload is asynchronous: retry quickly so the switch time is nginx's, not ours.
            Duration::from_millis(10),
            Duration::from_secs(10),
            &mut |_: Duration, _: Option<&Answer>| Verdict::Continue,
        );
        match outcome {
            Outcome::Passed { .. } => Ok(note),
            Outcome::TimedOut { last, .. } => Err(format!(
                "nginx did not serve {to} after the reload: {marker_url} / {health_url} last answered {}",
                last.map(|a| a.describe()).unwrap_or_else(|| "nothing".into())
            )),
            Outcome::Aborted { reason, .. } => Err(reason),
        }
    }

    /// Tears the idle color down and builds the error. nginx is not touched here.
    fn abort_before_switch(
        &mut self,
        idle_service: &str,
        why: &str,
        interrupted: bool,
    ) -> anyhow::Error {
        let config = &self.d.loaded.config;
        let logs = self.project.logs(idle_service, 20);
        self.start("teardown", idle_service.to_string());
        let teardown = self
            .project
            .stop_and_remove(idle_service, config.app.stop_grace.get());
        self.done("teardown", idle_service.to_string());
        let mut message = format!(
            "{} failed: {why}",
            if interrupted {
                "deploy interrupted"
            } else {
                "deploy"
            }
        );
        let unchanged = match self.from {
            Some(old) => format!("nginx still serves {old}"),
            None => "nothing served before this deploy".to_string(),
        };
        match teardown {
            Ok(()) => message.push_str(&format!(
                "\n{idle_service} was stopped and removed; {unchanged}"
            )),
            Err(e) => message.push_str(&format!("\ncould not remove {idle_service}: {e}")),
        }
        if !logs.trim().is_empty() && !interrupted {
            message.push_str(&format!(
                "\nlast log lines of {idle_service}:\n{}",
                indent(&logs)
            ));
        }
        Failed {
            message,
            interrupted,
        }
        .into()
    }
}

struct DeploySteps<'s> {
    image: &'s str,
    from: Option<Color>,
    from_image: Option<&'s str>,
    to: Color,
    compose_text: &'s str,
    include_text: &'s str,
    accessories_down: &'s [String],
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The URL of a color's health endpoint on this box.
pub fn health_url(loaded: &Loaded, color: Color) -> String {
    let config = &loaded.config;
    let host = match config.colors.upstream_host() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!(
        "http://{host}:{}{}",
        config.colors.port(color),
        config.app.health.path
    )
}
