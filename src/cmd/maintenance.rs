//! `cutover maintenance on|off`: flags and output over `engine/maintenance.rs`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{MaintenanceCommand, MaintenanceCommon};
use crate::context::Context;
use crate::engine::maintenance::Change;
use crate::maintenance::{self, Maintenance};
use crate::render::Renderer;
use crate::report::duration;

pub fn run(ctx: &Context, command: MaintenanceCommand) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(ctx)?;
    let (wanted, common) = match command {
        MaintenanceCommand::On(args) => {
            let message = args
                .message
                .unwrap_or_else(|| maintenance::DEFAULT_MESSAGE.to_string());
            maintenance::validate_message(&message)
                .map_err(|why| anyhow::anyhow!("--message: {why}"))?;
            let wanted = Maintenance {
                message,
                retry_after_secs: args.retry_after.as_secs().max(1),
                since: crate::state::now_rfc3339(),
                by: crate::state::current_user(),
            };
            (Some(wanted), args.common)
        }
        MaintenanceCommand::Off(args) => (None, args.common),
    };
    let renderer = Renderer::new(&ctx.dir)?;
    let on = wanted.is_some();
    let change = crate::engine::maintenance::set(
        &loaded,
        &renderer,
        wanted,
        common.dry_run,
        common.lock_wait,
    )
    .with_context(|| {
        format!(
            "could not turn maintenance mode {} for {}",
            if on { "on" } else { "off" },
            loaded.config.project
        )
    })?;
    print(ctx, &common, &change)?;
    Ok(ExitCode::SUCCESS)
}

fn print(ctx: &Context, common: &MaintenanceCommon, change: &Change) -> anyhow::Result<()> {
    if common.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Maintenance,
                change
            ))?
        )?;
        return Ok(());
    }
    if ctx.quiet() {
        return Ok(());
    }
    let mode = if change.on { "on" } else { "off" };
    if !change.changed {
        outln!("maintenance mode is already {mode}: nothing changed")?;
        return Ok(());
    }
    let verb = if change.dry_run {
        "would turn"
    } else {
        "turned"
    };
    match &change.maintenance {
        Some(m) => {
            outln!(
                "{verb} maintenance mode on: nginx answers 503 (Retry-After: {}s) with {}",
                m.retry_after_secs,
                change.page.display()
            )?;
            outln!("  message: {}", m.message)?;
        }
        None => outln!(
            "{verb} maintenance mode off: nginx serves {} again",
            change.color
        )?,
    }
    outln!(
        "  include {} (nginx -t, reload{}), flag {}",
        change.include.display(),
        if change.dry_run {
            String::new()
        } else {
            format!(
                ", live in {}",
                duration(Duration::from_millis(change.switch_ms))
            )
        },
        change.flag.display()
    )?;
    if change.dry_run {
        outln!("  (dry run: nothing changed)")?;
    }
    Ok(())
}
