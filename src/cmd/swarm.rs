//! `deploy --engine swarm` and `status --engine swarm`: the command layer over
//! `swarm_deploy` and `swarm`, printing as the compose engine's commands do (step lines on
//! stderr, results on stdout, JSON with `--json`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::deploy::{interrupt_flag, StepPrinter};
use crate::cli::DeployCommon;
use crate::config;
use crate::render::Renderer;
use crate::report::duration;
use crate::state::StateDir;
use crate::swarm;
use crate::swarm_deploy::{Request, SwarmDeployer};
use crate::Context;

pub fn run_deploy(
    ctx: &Context,
    image: Option<String>,
    common: DeployCommon,
) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    if common.force {
        anyhow::bail!("--force applies to the compose engine's memory budget; swarm schedules tasks by their memory limits itself");
    }
    let lock_wait = super::deploy::lock_wait(&common)?;
    // Decrypt before touching anything: a missing or wrong identity fails here.
    let secrets_started = Instant::now();
    let (secrets, secret_keys) = super::decrypt_for_deploy(ctx, &loaded)?;
    let secrets_took = secrets_started.elapsed();
    let deployer = SwarmDeployer {
        loaded: &loaded,
        renderer: Renderer::new(&ctx.dir)?,
        secrets,
        secret_keys,
        interrupted: interrupt_flag()?,
    };
    let quiet = ctx.quiet() || common.json;
    let mut printer = StepPrinter::new(quiet);
    if !quiet {
        eprintln!(
            "deploying {} to docker swarm (stack {}){}",
            loaded.config.project,
            loaded.config.project,
            if common.dry_run {
                " (dry run: nothing changes)"
            } else {
                ""
            }
        );
        eprintln!(
            "  ✓ {:<12} {:>7}  {} keys",
            "decrypt",
            duration(secrets_took),
            deployer.secrets.len()
        );
    }
    let request = Request {
        image,
        dry_run: common.dry_run,
        lock_wait,
    };
    match deployer.run(&request, &mut printer) {
        Ok(summary) => {
            printer.clear_spinner();
            if common.json {
                outln!("{}", serde_json::to_string_pretty(&summary)?)?;
            } else if summary.dry_run {
                outln!(
                    "plan: swarm deploy {} as {}",
                    summary.image,
                    summary.service
                )?;
                for line in &summary.plan {
                    outln!("  {line}")?;
                }
            } else if !ctx.quiet() {
                for note in &summary.notes {
                    eprintln!("  ! {note}");
                }
                outln!(
                    "deployed {} to {} ({} replicas) in {}{}",
                    summary.image,
                    summary.service,
                    summary.replicas,
                    duration(Duration::from_millis(summary.total_ms)),
                    summary
                        .rollout_ms
                        .map(|ms| format!(" (rollout {})", duration(Duration::from_millis(ms))))
                        .unwrap_or_default()
                )?;
                outln!("  {}", super::deploy::steps_line(&summary.steps))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            printer.clear_spinner();
            super::deploy::failed(err, common.json, "swarm")
        }
    }
}

#[derive(Serialize)]
struct ServiceStatus {
    name: String,
    image: String,
    replicas: Option<u64>,
    running: usize,
    update: Option<swarm::UpdateStatus>,
    tasks: Vec<TaskStatus>,
}

#[derive(Serialize)]
struct TaskStatus {
    slot: u64,
    state: String,
    desired: String,
    image: String,
    error: String,
}

#[derive(Serialize)]
struct StatusReport {
    engine: &'static str,
    stack: String,
    services: Vec<ServiceStatus>,
    secrets: Vec<swarm::Secret>,
    last_deploy: Option<crate::state::HistoryEntry>,
}

pub fn run_status(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    swarm::require_manager()?;
    let project = loaded.config.project.to_string();
    let mut services = Vec::new();
    for svc in swarm::services_of(&project)? {
        let tasks = swarm::tasks(&svc.name)?;
        let running = tasks
            .iter()
            .filter(|t| t.state == "running" && t.desired == "running")
            .count();
        services.push(ServiceStatus {
            name: svc.name.clone(),
            image: swarm::display_image(&svc.image).to_string(),
            replicas: svc.replicas,
            running,
            update: svc.update.clone(),
            tasks: tasks
                .iter()
                .filter(|t| t.desired == "running" || t.state == "running")
                .map(|t| TaskStatus {
                    slot: t.slot,
                    state: t.state.clone(),
                    desired: t.desired.clone(),
                    image: swarm::display_image(&t.image).to_string(),
                    error: t.error.clone(),
                })
                .collect(),
        });
    }
    let last_deploy = StateDir::new(loaded.state_dir())
        .history()?
        .into_iter()
        .rev()
        .find(|e| e.engine == "swarm");
    let report = StatusReport {
        engine: "swarm",
        stack: project,
        services,
        secrets: swarm::secrets_of(&loaded.config.project.to_string())?,
        last_deploy,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if report.services.is_empty() {
        outln!("stack {}: not deployed to this swarm", report.stack)?;
    } else {
        outln!("stack {}:", report.stack)?;
    }
    for s in &report.services {
        outln!(
            "  {:<28} {:<28} {}/{} running{}",
            s.name,
            s.image,
            s.running,
            s.replicas
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            s.update
                .as_ref()
                .map(|u| format!(", last update {}: {}", u.state, u.message))
                .unwrap_or_default()
        )?;
    }
    if !report.secrets.is_empty() {
        let names: Vec<&str> = report.secrets.iter().map(|s| s.name.as_str()).collect();
        outln!("  secrets: {}", names.join(", "))?;
    }
    if let Some(last) = &report.last_deploy {
        outln!(
            "last swarm deploy: {} {} at {} ({})",
            last.image,
            last.result,
            last.time,
            duration(Duration::from_millis(last.total_ms))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
