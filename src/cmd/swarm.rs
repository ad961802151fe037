//! `deploy --engine swarm` and `status --engine swarm`: the command layer over
//! `engine::swarm` and `docker::swarm`, printing as the compose engine's commands do (step lines on
//! stderr, results on stdout, JSON with `--json`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::progress::{self, interrupt_flag, StepPrinter};
use crate::cli::DeployCommon;
use crate::config;
use crate::context::Context;
use crate::engine::swarm::SwarmDeployer;
use crate::engine::Request;
use crate::render::Renderer;
use crate::report::duration;
use crate::state::{Action, EngineKind};

/// `deploy --engine swarm`, and `rollback --engine swarm` (`action`, with no image: the
/// engine finds the image before the last swarm deploy; `release`: `rollback --release`).
pub fn run_deploy(
    ctx: &Context,
    image: Option<String>,
    action: Action,
    release: bool,
    common: DeployCommon,
) -> anyhow::Result<ExitCode> {
    // First: a signal while the config loads or the secrets decrypt is a recorded interrupt.
    let interrupted = interrupt_flag()?;
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    if common.force {
        anyhow::bail!("--force applies to the compose engine's memory budget; the swarm engine's budget (each node must hold two tasks of app.memory) has no override: lower app.memory or add memory to the node");
    }
    let lock_wait = progress::lock_wait(&common)?;
    // Decrypt before touching anything: a missing or wrong identity fails here.
    let secrets_started = Instant::now();
    let env = crate::secrets::deploy_env(ctx.identity.as_deref(), &loaded)?;
    let secrets_took = secrets_started.elapsed();
    let deployer = SwarmDeployer {
        loaded: &loaded,
        renderer: Renderer::new(&ctx.dir)?,
        secrets: env.values,
        secret_keys: env.keys,
        interrupted,
    };
    let quiet = ctx.quiet() || common.json;
    let mut printer = StepPrinter::new(quiet);
    if !quiet {
        eprintln!(
            "{} {} on docker swarm (stack {}){}",
            match action {
                Action::Deploy => "deploying",
                Action::Rollback => "rolling back",
            },
            loaded.config.project,
            loaded.config.project,
            if common.dry_run {
                " (dry run: nothing changes)"
            } else {
                ""
            }
        );
        progress::decrypt_line(secrets_took, deployer.secrets.len());
    }
    let request = Request {
        image,
        action,
        dry_run: common.dry_run,
        force: false,
        lock_wait,
        release,
        decrypted: secrets_took,
    };
    match deployer.run(&request, &mut printer) {
        Ok(summary) => {
            printer.clear_spinner();
            let plan_head = format!(
                "plan: swarm deploy {} as {}",
                summary.image, summary.detail.service
            );
            let done_head = format!(
                "deployed {} to {} ({} replicas) in {}{}",
                summary.image,
                summary.detail.service,
                summary.detail.replicas,
                duration(Duration::from_millis(summary.total_ms)),
                summary
                    .detail
                    .rollout_ms
                    .map(|ms| format!(" (rollout {})", duration(Duration::from_millis(ms))))
                    .unwrap_or_default()
            );
            progress::print_summary(ctx, common.json, summary, &plan_head, &done_head, &[])?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            printer.clear_spinner();
            progress::failed(err, common.json, EngineKind::Swarm)
        }
    }
}

pub fn run_status(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let report = crate::engine::swarm::status::status(&loaded)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Status,
                &report
            ))?
        )?;
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
    if report.nodes.len() > 1 || report.nodes.iter().any(|n| n.state != "ready") {
        outln!("nodes:")?;
        for n in &report.nodes {
            let tasks: Vec<String> = report
                .services
                .iter()
                .flat_map(|s| s.tasks.iter().map(move |t| (s, t)))
                .filter(|(_, t)| t.node == n.hostname && t.state == "running")
                .map(|(s, _)| s.name.clone())
                .collect();
            let runs = if n.state != "ready" {
                // The manager still lists a lost node's last tasks; they serve nothing.
                " (lost: its tasks are not counted)".to_string()
            } else if tasks.is_empty() {
                String::new()
            } else {
                format!(", runs {}", tasks.join(", "))
            };
            outln!(
                "  {:<24} {:<16} {:<6} {}{}",
                n.hostname,
                n.addr,
                n.state,
                if n.manager { "manager" } else { "worker" },
                runs
            )?;
        }
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
