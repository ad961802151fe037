//! `deploy`, `rollback`, `status`, `history`, `prune`: the command layer over the compose
//! engine (`engine::compose`). Step lines go to stderr (`progress`); results go to stdout, as
//! JSON with `--json`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::progress::{self, interrupt_flag, lock_wait, StepPrinter};
use crate::cli::{DeployCommon, HistoryArgs, PruneArgs};
use crate::config;
use crate::context::Context;
use crate::docker::compose::Compose;
use crate::engine::compose::{self as engine, Deployer};
use crate::engine::Request;
use crate::render::Renderer;
use crate::report::duration;
use crate::state::{Action, EngineKind, StateDir};

/// `rollback`: `None` for a deploy; for a rollback, whether `--release` asks for the release
/// phase.
pub fn run_deploy(
    ctx: &Context,
    image: Option<String>,
    rollback: Option<bool>,
    common: DeployCommon,
) -> anyhow::Result<ExitCode> {
    // First: a SIGINT/SIGTERM while the config loads or the secrets decrypt must become a
    // recorded interrupt (exit 130), not a kill by the default action.
    let interrupted = interrupt_flag()?;
    let release = rollback.unwrap_or(true);
    let rollback = rollback.is_some();
    let loaded = super::load_config(ctx)?;
    let lock_wait = lock_wait(&common)?;
    if let Some(image) = &image {
        if let Some(why) = crate::config::image_ref::indistinct_tag(image) {
            eprintln!(
                "warning: --image {image}: {why}; rollback and history cannot tell such \
                 releases apart: tag each build (e.g. {}:v2 or the commit sha)",
                crate::config::image_ref::repository(image)
            );
        }
        let repo = crate::config::image_ref::repository(&loaded.config.app.image);
        if crate::config::image_ref::repository(image) != repo {
            eprintln!(
                "warning: {image} is not from app.image's repository {repo}; deploying it anyway, but prune manages {repo} only (check for a typo)"
            );
        }
    }
    // Another project on this box with the same ports, server name or nginx files: refuse
    // before anything changes (both named); else record this one's claims.
    crate::claims::claim(&loaded, common.dry_run)
        .with_context(|| format!("cannot deploy {}", loaded.config.project))?;
    // Decrypt before touching anything: a missing or wrong identity fails here.
    let secrets_started = Instant::now();
    let env = crate::secrets::deploy_env(ctx.identity.as_deref(), &loaded)?;
    let secret_files = crate::secrets::files::for_project(&loaded.config)
        .context("cannot deploy: app.secrets_delivery is `files`")?;
    if secret_files.is_none() {
        crate::secrets::check_env_sizes(env.values.iter().map(|(k, v)| (k.as_str(), v)))
            .context("cannot deploy: the secrets reach compose as its process environment")?;
    }
    if secret_files.is_some() && !common.dry_run {
        refresh_boot_binary();
    }
    let secrets_took = secrets_started.elapsed();
    let compose = Compose::detect_cached()?;
    let deployer = Deployer {
        loaded: &loaded,
        compose,
        renderer: Renderer::new(&ctx.dir)?,
        secrets: env.values,
        secret_keys: env.keys,
        secret_sources: env.sources,
        secret_files,
        identity: ctx.identity.clone(),
        rollback_values: Default::default(),
        interrupted,
    };
    let request = Request {
        image,
        action: if rollback {
            Action::Rollback
        } else {
            Action::Deploy
        },
        dry_run: common.dry_run,
        force: common.force,
        lock_wait,
        release,
        decrypted: secrets_took,
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
        progress::decrypt_line(secrets_took, deployer.secrets.len());
    }
    let maintenance = crate::maintenance::load(&loaded.state_dir())?;
    if let (Some(m), false) = (&maintenance, quiet) {
        eprintln!("{}", maintenance_line(m));
    }
    match deployer.run(&request, &mut printer) {
        Ok(summary) => {
            printer.clear_spinner();
            print_summary(ctx, &common, rollback, summary, maintenance.as_ref())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            printer.clear_spinner();
            progress::failed(err, common.json, EngineKind::Compose)
        }
    }
}

/// What a finished compose deploy prints on stdout (see [`progress::print_summary`]).
fn print_summary(
    ctx: &Context,
    common: &DeployCommon,
    rollback: bool,
    summary: crate::engine::compose::Summary,
    maintenance: Option<&crate::maintenance::Maintenance>,
) -> anyhow::Result<()> {
    let plan_head = format!(
        "plan: {} {} to {}",
        summary.action, summary.image, summary.detail.to
    );
    let done_head = format!(
        "{} {} to {} in {}{}",
        if rollback {
            "rolled back to"
        } else {
            "deployed"
        },
        summary.image,
        summary.detail.to,
        duration(Duration::from_millis(summary.total_ms)),
        summary
            .detail
            .switch_ms
            .map(|ms| format!(
                " (nginx served it {} after the health gate passed)",
                duration(Duration::from_millis(ms))
            ))
            .unwrap_or_default()
    );
    let extra: Vec<String> = maintenance.map(maintenance_line).into_iter().collect();
    progress::print_summary(ctx, common.json, summary, &plan_head, &done_head, &extra)
}

/// What a deploy says while maintenance mode is on.
fn maintenance_line(m: &crate::maintenance::Maintenance) -> String {
    format!(
        "maintenance mode is on (since {}): the deploy keeps it on, the public still gets 503 until `cutover maintenance off`",
        m.since
    )
}

pub fn run_status(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let report = engine::status::status(&loaded)?;
    // A site that is down is a failure for a monitor or a script, text or JSON.
    let code = if report.down.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Status,
                &report
            ))?
        )?;
        return Ok(code);
    }
    outln!(
        "project {}: {}",
        report.project,
        match report.active {
            Some(c) => format!("{c} is active"),
            None => "never deployed".to_string(),
        }
    )?;
    outln!(
        "  nginx serves {}, its include names {}",
        match (report.nginx_serves, &report.nginx_serves_reason) {
            (Some(c), _) => c.to_string(),
            (None, Some(why)) => format!("? ({why})"),
            (None, None) => "?".to_string(),
        },
        report
            .nginx_points_at
            .map_or("neither color".to_string(), |c| c.to_string())
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
    for w in &report.workers {
        outln!(
            "  worker {:<13} {:<6} {:<12} {:<28} {}",
            w.name,
            w.color.map_or("-", |c| c.as_str()),
            w.state.as_deref().unwrap_or("no container"),
            w.image.as_deref().unwrap_or("-"),
            w.health.as_deref().unwrap_or("")
        )?;
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
    if let Some(m) = &report.maintenance {
        outln!(
            "maintenance mode is ON since {} ({}): nginx answers 503 (Retry-After: {}s): {}",
            m.since,
            m.by,
            m.retry_after_secs,
            m.message
        )?;
    }
    for p in &report.problems {
        outln!("! {p}")?;
    }
    if let Some(down) = &report.down {
        outln!("! {down}")?;
    }
    Ok(code)
}

pub fn run_history(ctx: &Context, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    // With -n only the last N lines are read (from the end of the log), not the whole history.
    let entries = match args.limit {
        Some(n) => StateDir::new(loaded.state_dir()).history_tail(n)?,
        None => StateDir::new(loaded.state_dir()).history()?,
    };
    if args.json {
        // An object, not a bare array: it carries its version like every document.
        #[derive(serde::Serialize)]
        struct History<'a> {
            entries: &'a [crate::state::HistoryEntry],
        }
        let doc = History { entries: &entries };
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::History,
                &doc
            ))?
        )?;
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
        let (from, to) = if e.engine == EngineKind::Swarm {
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
    let report = engine::prune::prune(&loaded, args.keep, args.dry_run)?;
    let (repo, removed, kept) = (
        &report.repository,
        &report.removed,
        &report.kept_with_errors,
    );
    if args.json {
        outln!(
            "{}",
            serde_json::to_string(&super::failure::versioned(
                super::failure::Document::Prune,
                &report
            ))?
        )?;
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

/// Files mode on a bootstrapped box: the boot unit's copy of cutover made current, so after
/// an upgrade a reboot's `secrets restore` parses what this cutover deploys. A failure is a
/// warning: this deploy does not need the copy, the next reboot does.
fn refresh_boot_binary() {
    use crate::bootstrap::boot_secrets::{binary_copy, refresh_binary, BinaryRefresh};
    let Ok(running) = std::env::current_exe() else {
        return;
    };
    let copy = binary_copy();
    match refresh_binary(&copy, &running) {
        BinaryRefresh::NoCopy | BinaryRefresh::Current => {}
        BinaryRefresh::Refreshed => eprintln!(
            "note: {} (the secrets boot unit's cutover) is now this version",
            copy.display()
        ),
        BinaryRefresh::Failed(why) => eprintln!(
            "warning: {}, the cutover the secrets boot unit runs after a reboot, is \
             another version and could not be replaced ({why}); run `cutover bootstrap` on the box",
            copy.display()
        ),
    }
}
