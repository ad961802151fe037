//! `cutover tls issue`: the bootstrap step `tls` on its own (see `bootstrap/tls.rs`), with
//! the same `--dry-run`, `--root` and report as `cutover bootstrap`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::bootstrap::{self, tls, Report, Target};
use crate::cli::{TlsCommand, TlsIssueArgs};
use crate::config;
use crate::context::Context;
use crate::render::Renderer;

pub fn run(ctx: &Context, command: TlsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TlsCommand::Issue(args) => issue(ctx, args),
    }
}

fn issue(ctx: &Context, args: TlsIssueArgs) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let Some(plan) = tls::Plan::of(&loaded, &Renderer::new(&ctx.dir)?)? else {
        bail!(
            "{}: no nginx.tls section (add nginx.tls: {{ domains: [example.com], email: you@example.com }})",
            ctx.config_path.display()
        );
    };
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let root = args.root.as_ref().map(|r| cwd.join(r));
    if let Some(root) = &root {
        if !root.is_dir() {
            bail!("--root {}: no such directory", root.display());
        }
    }
    let target = Target {
        root: root.clone(),
        dry_run: args.dry_run,
    };
    bootstrap::check_privileges(&target)?;
    let started = Instant::now();
    let step = bootstrap::run_step(&target, "tls", |step| tls::step(Some(&plan), "", step));
    let report = Report {
        mode: target.mode(),
        root,
        dry_run: args.dry_run,
        steps: vec![step],
        recipient: None,
        identity_path: None,
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Tls,
                &report
            ))?
        )?;
    } else if !ctx.quiet() || report.failed().is_some() {
        let text = super::bootstrap::human(&report, started.elapsed());
        out!(
            "{}",
            text.replacen("cutover bootstrap", "cutover tls issue", 1)
        )?;
    }
    if let Some(failed) = report.failed() {
        bail!("{}", failed.error.as_deref().unwrap_or("tls issue failed"));
    }
    Ok(ExitCode::SUCCESS)
}
