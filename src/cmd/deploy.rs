//! `deploy`, `rollback`, `status`, `history`, `prune`: the command layer over `deploy`.
//!
//! Step lines go to stderr (a spinner while waiting on a terminal, plain lines otherwise, as
//! in CI logs); results go to stdout, as JSON with `--json`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{DeployCommon, HistoryArgs, PruneArgs};
use crate::compose::Compose;
use crate::config::{self, Color};
use crate::deploy::{self, Deployer, Event, Reporter, Request};
use crate::health::{Answer, Prober};
use crate::render::Renderer;
use crate::report::duration;
use crate::state::StateDir;
use crate::Context;

/// Prints deploy events as step lines.
pub struct StepPrinter {
    quiet: bool,
    spinner: Option<indicatif::ProgressBar>,
    tty: bool,
    last_wait_line: Option<Instant>,
}

impl StepPrinter {
    pub fn new(quiet: bool) -> Self {
        StepPrinter {
            quiet,
            spinner: None,
            tty: std::io::stderr().is_terminal(),
            last_wait_line: None,
        }
    }

    pub fn clear_spinner(&mut self) {
        if let Some(sp) = self.spinner.take() {
            sp.finish_and_clear();
        }
    }
}

impl Reporter for StepPrinter {
    fn event(&mut self, event: Event) {
        if self.quiet {
            return;
        }
        match event {
            Event::Start { .. } => {}
            Event::Done { step, took, detail } => {
                self.clear_spinner();
                self.last_wait_line = None;
                eprintln!("  ✓ {step:<12} {:>7}  {detail}", duration(took));
            }
            Event::Waiting {
                step,
                elapsed,
                limit,
                last,
            } => {
                let line = format!(
                    "{step}: waiting {} of {}{}",
                    duration(elapsed),
                    duration(limit),
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (last: {last})")
                    }
                );
                if self.tty {
                    let sp = self.spinner.get_or_insert_with(|| {
                        let sp = indicatif::ProgressBar::new_spinner();
                        sp.enable_steady_tick(Duration::from_millis(100));
                        sp
                    });
                    sp.set_message(line);
                } else if self
                    .last_wait_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    // Plain logs get a line every 5 s, not one per poll.
                    self.last_wait_line = Some(Instant::now());
                    eprintln!("  … {line}");
                }
            }
            Event::Note(text) => {
                self.clear_spinner();
                eprintln!("  ! {text}");
            }
        }
    }
}

/// `--lock-wait 30s` as a duration; absent means fail at once when another deploy runs.
pub fn lock_wait(common: &DeployCommon) -> anyhow::Result<Duration> {
    Ok(common.lock_wait.unwrap_or(Duration::ZERO))
}

/// `lock 1ms · observe 84ms · up 680ms · …`: a deploy's steps with their durations.
pub fn steps_line(steps: &[crate::state::StepTiming]) -> String {
    steps
        .iter()
        .map(|s| format!("{} {}", s.step, duration(Duration::from_millis(s.ms))))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// SIGINT/SIGTERM set a flag instead of killing cutover mid-step; the deploy decides what a
/// consistent stop is.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .context("could not install signal handlers")?;
    }
    Ok(flag)
}

pub fn run_deploy(
    ctx: &Context,
    image: Option<String>,
    rollback: bool,
    common: DeployCommon,
) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(ctx)?;
    let lock_wait = lock_wait(&common)?;
    if let Some(image) = &image {
        let repo = crate::images::repository(&loaded.config.app.image);
        if crate::images::repository(image) != repo {
            eprintln!(
                "warning: {image} is not from app.image's repository {repo}; deploying it anyway, but prune manages {repo} only (check for a typo)"
            );
        }
    }
    // Decrypt before touching anything: a missing or wrong identity fails here.
    let secrets_started = Instant::now();
    let (secrets, secret_keys) = super::decrypt_for_deploy(ctx, &loaded)?;
    crate::secrets::check_env_sizes(secrets.iter().map(|(k, v)| (k.as_str(), v)))
        .context("cannot deploy: the secrets reach compose as its process environment")?;
    let secrets_took = secrets_started.elapsed();
    let compose = Compose::detect_cached()?;
    let deployer = Deployer {
        loaded: &loaded,
        compose,
        renderer: Renderer::new(&ctx.dir)?,
        secrets,
        secret_keys,
        interrupted: interrupt_flag()?,
    };
    let request = Request {
        image,
        rollback,
        dry_run: common.dry_run,
        force: common.force,
        lock_wait,
    };
    let quiet = ctx.quiet() || common.json;
    let mut printer = StepPrinter::new(quiet);
    if !quiet {
        eprintln!(
            "{} {} with {} {}{}",
            if rollback {
                "rolling back"
            } else {
                "deploying"
            },
            loaded.config.project,
            deployer.compose.program(),
            deployer.compose.version,
            if common.dry_run {
                " (dry run: nothing changes)"
            } else {
                ""
            }
        );
        eprintln!(
            "  ✓ {:<12} {:>7}  {} keys",
            "secrets",
            duration(secrets_took),
            deployer.secrets.len()
        );
    }
    match deployer.run(&request, &mut printer) {
        Ok(summary) => {
            printer.clear_spinner();
            if common.json {
                outln!("{}", serde_json::to_string_pretty(&summary)?)?;
            } else if summary.dry_run {
                outln!(
                    "plan: {} {} to {}",
                    summary.action,
                    summary.image,
                    summary.to
                )?;
                for line in &summary.plan {
                    outln!("  {line}")?;
                }
            } else if !ctx.quiet() {
                for note in &summary.notes {
                    eprintln!("  ! {note}");
                }
                outln!(
                    "{} {} to {} in {}{}",
                    if rollback {
                        "rolled back to"
                    } else {
                        "deployed"
                    },
                    summary.image,
                    summary.to,
                    duration(Duration::from_millis(summary.total_ms)),
                    summary
                        .switch_ms
                        .map(|ms| format!(
                            " (nginx served it {} after the health gate passed)",
                            duration(Duration::from_millis(ms))
                        ))
                        .unwrap_or_default()
                )?;
                outln!("  {}", steps_line(&summary.steps))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            printer.clear_spinner();
            failed(err, common.json, "compose")
        }
    }
}

/// The end of a failed deploy on either engine: a JSON verdict for scripts, and exit 130
/// (after printing the error chain) when it was interrupted before its switch.
pub fn failed(err: anyhow::Error, json: bool, engine: &str) -> anyhow::Result<ExitCode> {
    let interrupted = err
        .downcast_ref::<deploy::Failed>()
        .is_some_and(|f| f.interrupted);
    if json {
        let result = if interrupted { "interrupted" } else { "failed" };
        outln!(
            "{}",
            serde_json::json!({ "engine": engine, "result": result, "error": format!("{err:#}") })
        )?;
    }
    if interrupted {
        eprintln!("{}", crate::report::error_chain(&err));
        return Ok(ExitCode::from(130));
    }
    Err(err)
}

#[derive(Serialize)]
struct ColorStatus {
    color: Color,
    service: String,
    port: u16,
    active: bool,
    container: Option<String>,
    image: Option<String>,
    health: String,
}

#[derive(Serialize)]
struct StatusReport {
    project: String,
    active: Option<Color>,
    nginx_points_at: Option<Color>,
    colors: Vec<ColorStatus>,
    accessories: Vec<crate::compose::Container>,
    last_deploy: Option<crate::state::HistoryEntry>,
    problems: Vec<String>,
}

pub fn run_status(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let observed = deploy::observe(&loaded)?;
    let active = observed.active();
    let prober = Prober::new(Duration::from_secs(1));
    let colors: Vec<ColorStatus> = Color::ALL
        .into_iter()
        .map(|color| {
            let service = loaded.config.service(color);
            let container = observed.containers.iter().find(|c| c.service == service);
            let health = match container {
                Some(c) if c.running() => {
                    match prober.get(&deploy::health_url(&loaded, color), None) {
                        Answer::Status { code, .. } if code == loaded.config.app.health.status => {
                            "healthy".to_string()
                        }
                        other => format!("unhealthy ({})", other.describe()),
                    }
                }
                Some(c) => format!("not running ({})", c.state),
                None => "no container".to_string(),
            };
            ColorStatus {
                color,
                port: loaded.config.colors.port(color),
                active: active == Some(color),
                container: container.map(|c| c.state.clone()),
                image: observed.image_of(&loaded, color),
                health,
                service,
            }
        })
        .collect();
    let accessories = observed
        .containers
        .iter()
        .filter(|c| loaded.config.color_of_service(&c.service).is_none())
        .cloned()
        .collect();
    let report = StatusReport {
        project: loaded.config.project.to_string(),
        active,
        nginx_points_at: observed.nginx_color,
        colors,
        accessories,
        last_deploy: StateDir::new(loaded.state_dir()).history()?.pop(),
        problems: observed
            .disagreements()
            .into_iter()
            .chain(torn_history_problems(&StateDir::new(loaded.state_dir())))
            .collect(),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "project {}: {}",
        report.project,
        match report.active {
            Some(c) => format!("{c} is active"),
            None => "never deployed".to_string(),
        }
    )?;
    for c in &report.colors {
        outln!(
            "  {} {:<6} :{:<5} {:<12} {:<28} {}",
            if c.active { "*" } else { " " },
            c.color.as_str(),
            c.port,
            c.container.as_deref().unwrap_or("-"),
            c.image.as_deref().unwrap_or("-"),
            c.health
        )?;
    }
    for a in &report.accessories {
        outln!("    {:<20} {:<12} {}", a.service, a.state, a.image)?;
    }
    if let Some(last) = &report.last_deploy {
        outln!(
            "last {}: {} {} → {} {} at {} ({})",
            last.action,
            last.image,
            last.from
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            last.to.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            last.result,
            last.time,
            duration(Duration::from_millis(last.total_ms))
        )?;
    }
    for p in &report.problems {
        outln!("! {p}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One problem line per torn history tail that was set aside (kept for inspection).
fn torn_history_problems(state_dir: &StateDir) -> Vec<String> {
    state_dir
        .torn_history()
        .into_iter()
        .map(|path| {
            format!(
                "{} holds a torn last line of the history (a crash or a full disk mid-append), set aside so later entries stay readable; inspect it, then delete it",
                path.display()
            )
        })
        .collect()
}

pub fn run_history(ctx: &Context, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let mut entries = StateDir::new(loaded.state_dir()).history()?;
    if let Some(n) = args.limit {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        outln!(
            "no deploys recorded in {}",
            StateDir::new(loaded.state_dir()).history_file().display()
        )?;
    }
    for e in &entries {
        let steps: Vec<String> = e
            .steps
            .iter()
            .map(|s| format!("{} {}ms", s.step, s.ms))
            .collect();
        // Swarm has no colors: its entries show the engine where compose shows from → to.
        let (from, to) = if e.engine == "swarm" {
            ("swarm".to_string(), "rolling".to_string())
        } else {
            (
                e.from.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                e.to.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            )
        };
        outln!(
            "{}  {:<8} {:<28} {:>5} → {:<5} {:<11} {:>8}  {}",
            e.time,
            e.action,
            e.image,
            from,
            to,
            e.result,
            duration(Duration::from_millis(e.total_ms)),
            steps.join(", ")
        )?;
        if let Some(reason) = &e.reason {
            outln!("    {}", reason.lines().next().unwrap_or_default())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_prune(ctx: &Context, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let state_dir = StateDir::new(loaded.state_dir());
    let recorded = state_dir.load()?;
    let repo = crate::images::repository(&loaded.config.app.image).to_string();
    let pruned = crate::prune::prune(&repo, args.keep, &recorded, args.dry_run).with_context(
        || format!("pruned nothing in {repo}: every image another project or container might need must be known first"),
    )?;
    let (removed, kept) = (&pruned.removed, &pruned.kept_with_errors);
    if args.json {
        outln!("{}", serde_json::to_string(&pruned)?)?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if removed.is_empty() {
            outln!(
                "nothing to prune in {repo} (keeping the newest {} and every image in use)",
                args.keep
            )?;
        }
        for r in removed {
            outln!("{verb} {r}")?;
        }
        for k in kept {
            outln!("kept {k}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
