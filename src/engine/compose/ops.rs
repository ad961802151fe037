//! The compose deploy as a list of operations, decided once from what observe and render
//! found: which steps this deploy takes, in the order it takes them. The same list is run
//! (`Run::execute` walks it) and described (`--dry-run` prints each operation's lines, and
//! `plan_steps` in `--json` names the steps it will record), so the plan cannot drift from
//! the deploy. A new step is a variant here, a line in [`Ops::decide`], its lines in
//! `describe`, and its method on `Run` in its own file.
//!
//! Two kinds: a [`Check`] runs before anything changes, and its failure is a refusal
//! (recorded, nothing to undo); a [`Change`] runs after the in-progress record is written, and
//! its failure goes through the teardown and switch-back paths of the state machine.

use crate::config::{Color, Config, Dur};
use crate::docker::compose::Project;
use crate::engine::{PlanItem, Request, Step};

use super::{health_url, Deployer, Rendered, Target};

/// Before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    /// The `pre_deploy` hook: its failure aborts the deploy.
    PreDeploy,
}

/// Changes the box; from the first one on, `state.json` says a deploy is in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// The compose file for both colors.
    WriteCompose,
    /// Accessories that are not running yet.
    Accessories(Vec<String>),
    /// `app.release` in a one-off container of the new image (a rollback without
    /// `--release` skips it and says so).
    Release { run: bool },
    /// The idle color with the new image.
    Up,
    /// The health gate.
    Health,
    /// The include for the new color, `nginx -t`, reload, then the probe through nginx.
    Switch,
    /// The watch window (`app.settle`): with the old color still running, to switch back to;
    /// on a first deploy (`old: None`) with nothing to switch back to, so a failure fails the
    /// deploy and says what it saw.
    Settle { old: Option<Color> },
    /// The drain: the old color's connections, the nginx workers from before the reload.
    Drain { old: Option<Color> },
    /// The old color stopped and removed, its image kept.
    Stop { old: Color },
    /// Every worker moved to the new image, retired ones removed.
    Workers,
}

/// This deploy's operations, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ops {
    pub checks: Vec<Check>,
    pub changes: Vec<Change>,
}

impl Ops {
    /// The one place the order of a deploy is written down.
    pub fn decide(config: &Config, req: &Request, from: Option<Color>, r: &Rendered) -> Ops {
        let mut checks = Vec::new();
        if config.hooks.pre_deploy.is_some() {
            checks.push(Check::PreDeploy);
        }
        let mut changes = vec![Change::WriteCompose];
        if !r.accessories_down.is_empty() {
            changes.push(Change::Accessories(r.accessories_down.clone()));
        }
        if config.app.release.is_some() {
            changes.push(Change::Release { run: req.release });
        }
        changes.extend([Change::Up, Change::Health, Change::Switch]);
        if !config.app.settle.get().is_zero() {
            changes.push(Change::Settle { old: from });
        }
        changes.push(Change::Drain { old: from });
        if let Some(old) = from {
            changes.push(Change::Stop { old });
        }
        if !r.workers.is_empty() || !r.retired.is_empty() {
            changes.push(Change::Workers);
        }
        Ops { checks, changes }
    }

    /// The steps a successful run of these operations records, in order (the lock and
    /// observe steps come first on every run that is not a dry run; the pull with a
    /// registry image).
    pub fn steps(&self, pulls: bool) -> Vec<Step> {
        let mut steps = vec![Step::Lock, Step::Observe];
        if pulls {
            steps.push(Step::Pull);
        }
        steps.extend(self.changes.iter().flat_map(Change::steps));
        steps
    }
}

impl Change {
    /// The steps this operation records when it succeeds.
    pub fn steps(&self) -> Vec<Step> {
        match self {
            Change::WriteCompose => vec![],
            Change::Accessories(_) => vec![Step::Accessories],
            Change::Release { run: true } => vec![Step::Release],
            Change::Release { run: false } => vec![],
            Change::Up => vec![Step::Up],
            Change::Health => vec![Step::Health],
            Change::Switch => vec![Step::Switch, Step::Probe],
            Change::Settle { .. } => vec![Step::Settle],
            Change::Drain { .. } => vec![Step::Drain],
            Change::Stop { .. } => vec![Step::Stop],
            Change::Workers => vec![Step::Workers],
        }
    }
}

/// What the describing needs: the deploy's inputs and what observe and render decided.
pub(super) struct Describe<'a> {
    pub d: &'a Deployer<'a>,
    pub req: &'a Request,
    pub project: &'a Project,
    pub t: &'a Target,
    pub r: &'a Rendered,
}

impl Describe<'_> {
    /// The `--dry-run` plan: every operation's lines, then what follows every run (the record,
    /// the hooks after it).
    pub fn lines(&self, ops: &Ops) -> Vec<PlanItem> {
        let mut lines: Vec<PlanItem> = ops
            .checks
            .iter()
            .map(|c| PlanItem::new(None, self.check(c)))
            .collect();
        for change in &ops.changes {
            let steps = change.steps();
            let described = self.change(change);
            // Each line is its step's (`Switch`: the switch, then the probe); lines past the
            // steps (the workers, one per worker) belong to the last one.
            lines.extend(
                described
                    .into_iter()
                    .enumerate()
                    .map(|(i, line)| PlanItem::new(steps.get(i).or(steps.last()).copied(), line)),
            );
        }
        lines.extend(self.after().into_iter().map(|l| PlanItem::new(None, l)));
        lines
    }

    fn compose(&self, args: &str) -> String {
        format!(
            "{} -p {} -f {} {args}",
            self.d.compose.program(),
            self.d.loaded.config.project,
            self.project.file.display()
        )
    }

    fn check(&self, check: &Check) -> String {
        let hooks = &self.d.loaded.config.hooks;
        match check {
            Check::PreDeploy => {
                let hook = hooks.pre_deploy.as_ref();
                format!(
                    "run the pre_deploy hook `{}` (up to {}); abort if it fails",
                    hook.map(|h| h.command.0.join(" ")).unwrap_or_default(),
                    Dur(hook.map(|h| hooks.timeout_of(h)).unwrap_or_default())
                )
            }
        }
    }

    fn change(&self, change: &Change) -> Vec<String> {
        let config = &self.d.loaded.config;
        let (to, image) = (self.t.to, &self.t.image);
        let idle_service = config.service(to);
        match change {
            Change::WriteCompose => vec![format!(
                "write {} ({to} runs {image})",
                self.project.file.display()
            )],
            Change::Accessories(names) => {
                vec![self.compose(&format!("up -d {}", names.join(" ")))]
            }
            Change::Release { run } => {
                let argv = config.app.release.as_ref().map(|a| a.0.join(" "));
                let argv = argv.unwrap_or_default();
                vec![if *run {
                    format!(
                        "{} (release phase, up to {}; abort if it fails)",
                        self.compose(&format!("run --rm --no-deps -T {idle_service} {argv}")),
                        config.app.release_timeout
                    )
                } else {
                    format!("skip the release phase `{argv}` (a rollback runs it only with --release)")
                }]
            }
            Change::Up => vec![self.compose(&format!(
                "up -d --no-deps --force-recreate {idle_service}"
            ))],
            Change::Health => vec![format!(
                "wait for {} to answer {} {} times in a row (up to {})",
                health_url(self.d.loaded, to),
                config.app.health.status,
                config.app.health.healthy_checks,
                config.app.health.timeout
            )],
            Change::Switch if self.r.switch == super::nft_switch::Used::Nft => vec![
                format!(
                    "nft -f - (table ip {}): {} -> {}{}; nginx is not reloaded (unless {} is not the nft include yet: written once, `{}`, `{}`)",
                    crate::nft::table(config.project.as_str()),
                    crate::render::switch_group(config),
                    crate::render::upstream_url(config, to),
                    match self.r.route {
                        crate::render::Route::Fallback => {
                            format!(" ({} is the backup while the window is open)", to.other())
                        }
                        crate::render::Route::Direct => String::new(),
                    },
                    config.nginx.include.display(),
                    config.nginx.test.join(" "),
                    config.nginx.reload.join(" ")
                ),
                format!(
                    "probe {}/.cutover/health until it answers through the switch's primary port",
                    config.nginx.probe_base()
                ),
            ],
            Change::Switch => vec![
                format!(
                    "write {} -> {}{}, `{}`, `{}`",
                    config.nginx.include.display(),
                    crate::render::upstream_url(config, to),
                    match self.r.route {
                        crate::render::Route::Fallback => format!(
                            " (through the group {}: {} is its backup while the window is open)",
                            crate::render::upstream_group(config, to),
                            to.other()
                        ),
                        crate::render::Route::Direct => String::new(),
                    },
                    config.nginx.test.join(" "),
                    config.nginx.reload.join(" ")
                ),
                format!(
                    "probe {}/.cutover/health until the new include answers it through {to}",
                    config.nginx.probe_base()
                ),
            ],
            Change::Settle { old: Some(old) } => vec![format!(
                "watch {idle_service} for {} with {old} still running; switch back to {old} if it fails (and {old} is healthy){}",
                config.app.settle,
                match (self.r.route, self.r.switch) {
                    (crate::render::Route::Fallback, super::nft_switch::Used::Nft) => format!(
                        "; then the rule's backup -> {} too (nft, no reload)",
                        crate::render::upstream_url(config, to)
                    ),
                    (crate::render::Route::Fallback, _) => format!(
                        "; then nginx -> {} alone (one more reload)",
                        crate::render::upstream_url(config, to)
                    ),
                    (crate::render::Route::Direct, _) => String::new(),
                }
            )],
            Change::Settle { old: None } => vec![format!(
                "watch {idle_service} for {}; nothing to switch back to: fail the deploy if it does not stay up",
                config.app.settle
            )],
            Change::Drain { old: Some(old) } => vec![format!(
                "drain {old} (up to {}): its connections and the nginx workers from before the reload",
                config.app.drain
            )],
            Change::Drain { old: None } => vec![format!(
                "wait for the nginx workers from before the reload (up to {})",
                config.app.drain
            )],
            Change::Stop { old } => vec![format!(
                "stop -t {} {} and rm -f it (its image is kept)",
                config.app.stop_grace.get().as_secs(),
                config.service(*old)
            )],
            Change::Workers => self.workers(),
        }
    }

    fn workers(&self) -> Vec<String> {
        let config = &self.d.loaded.config;
        let mut lines = Vec::new();
        for m in &self.r.workers {
            let new = config.worker_service(&m.name, m.to);
            let old = m.from.map(|c| config.worker_service(&m.name, c));
            let up = match &m.worker.health {
                Some(h) => format!(
                    "wait up to {} for its healthcheck to say healthy",
                    h.timeout
                ),
                None => format!("watch it run for {}", m.worker.settle),
            };
            lines.push(match (old, m.worker.overlap) {
                (None, _) => format!("worker {}: up -d --no-deps {new}, {up}", m.name),
                (Some(old), false) => format!(
                    "worker {}: stop {old}, up -d --no-deps {new}, {up}, rm {old} (start {old} again if {new} fails)",
                    m.name
                ),
                (Some(old), true) => format!(
                    "worker {}: up -d --no-deps {new}, {up}, then stop and rm {old}",
                    m.name
                ),
            });
        }
        for gone in &self.r.retired {
            lines.push(format!(
                "worker {}: no longer in cutover.yml; stop and rm its {} container(s)",
                gone.name,
                gone.ids.len()
            ));
        }
        lines
    }

    /// What every run ends with: the record, then the hook for its outcome.
    fn after(&self) -> Vec<String> {
        let hooks = &self.d.loaded.config.hooks;
        let mut lines = vec![format!(
            "record the {} in state.json and history.jsonl, then prune old images",
            self.req.action
        )];
        if let Some(hook) = &hooks.post_deploy {
            lines.push(format!(
                "run the post_deploy hook `{}` (up to {})",
                hook.command.0.join(" "),
                Dur(hooks.timeout_of(hook))
            ));
        }
        if let Some(hook) = &hooks.on_failure {
            lines.push(format!(
                "run the on_failure hook `{}` (up to {}) if the deploy fails",
                hook.command.0.join(" "),
                Dur(hooks.timeout_of(hook))
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Action;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "project: p\napp: {{ name: web, image: example/web, port: 3000, memory: 128M{extra} }}\ncolors: {{ blue: 9001, green: 9002 }}\n"
        );
        Config::from_yaml(&text, Path::new("cutover.yml")).unwrap()
    }

    fn request(action: Action, release: bool) -> Request {
        Request {
            image: Some("example/web:v2".into()),
            action,
            dry_run: false,
            force: false,
            lock_wait: std::time::Duration::ZERO,
            release,
            decrypted: std::time::Duration::ZERO,
        }
    }

    fn rendered(accessories_down: &[&str]) -> Rendered {
        Rendered {
            compose_text: String::new(),
            include_text: String::new(),
            route: crate::render::Route::Direct,
            switch: crate::engine::compose::nft_switch::Used::Reload,
            accessories_down: accessories_down.iter().map(|s| s.to_string()).collect(),
            workers: Vec::new(),
            retired: Vec::new(),
        }
    }

    #[test]
    fn a_first_deploy_starts_accessories_drains_old_workers_and_stops_nothing() {
        let ops = Ops::decide(
            &config(", settle: 0s"),
            &request(Action::Deploy, true),
            None,
            &rendered(&["db"]),
        );
        assert!(ops.checks.is_empty());
        assert_eq!(
            ops.changes,
            [
                Change::WriteCompose,
                Change::Accessories(vec!["db".into()]),
                Change::Up,
                Change::Health,
                Change::Switch,
                Change::Drain { old: None },
            ]
        );
        use Step::*;
        assert_eq!(
            ops.steps(false),
            [Lock, Observe, Accessories, Up, Health, Switch, Probe, Drain]
        );
    }

    #[test]
    fn a_deploy_over_a_serving_color_settles_drains_and_stops_it() {
        let ops = Ops::decide(
            &config(", settle: 5s, release: [migrate]"),
            &request(Action::Deploy, true),
            Some(Color::Blue),
            &rendered(&[]),
        );
        assert_eq!(
            ops.changes,
            [
                Change::WriteCompose,
                Change::Release { run: true },
                Change::Up,
                Change::Health,
                Change::Switch,
                Change::Settle {
                    old: Some(Color::Blue)
                },
                Change::Drain {
                    old: Some(Color::Blue)
                },
                Change::Stop { old: Color::Blue },
            ]
        );
        use Step::*;
        assert_eq!(
            ops.steps(true),
            [Lock, Observe, Pull, Release, Up, Health, Switch, Probe, Settle, Drain, Stop]
        );
    }

    #[test]
    fn a_rollback_without_release_skips_the_release_phase_and_records_no_step() {
        let ops = Ops::decide(
            &config(", settle: 0s, release: [migrate]"),
            &request(Action::Rollback, false),
            Some(Color::Green),
            &rendered(&[]),
        );
        assert!(ops.changes.contains(&Change::Release { run: false }));
        assert!(!ops
            .changes
            .iter()
            .any(|c| matches!(c, Change::Settle { .. })));
        assert!(!ops.steps(false).contains(&Step::Release));
    }

    #[test]
    fn a_first_deploy_is_watched_too() {
        let ops = Ops::decide(
            &config(", settle: 3s"),
            &request(Action::Deploy, true),
            None,
            &rendered(&[]),
        );
        assert!(ops.changes.contains(&Change::Settle { old: None }));
        assert!(!ops.changes.iter().any(|c| matches!(c, Change::Stop { .. })));
    }
}
