//! cutover: zero-downtime blue/green deploys of a Docker Compose app behind nginx.
//!
//! `main.rs` parses the command line and calls [`run`]; `cmd/` turns each subcommand into
//! calls on the domain modules and owns all printing; the domain modules do the work and
//! return values or errors: [`engine`] (the compose and swarm deploy engines and what they
//! share), [`docker`] (typed Docker operations), config, render, secrets, nginx, state, …

#![forbid(unsafe_code)]

// First, so its `outln!`/`out!` macros are in scope in every module below.
#[macro_use]
pub mod report;

pub mod atomic;
pub mod bootstrap;
pub mod ci;
pub mod claims;
pub mod cli;
mod cmd;
pub mod config;
pub mod context;
pub mod demo;
pub mod docker;
pub mod engine;
pub mod health;
pub mod host;
pub mod jsonl;
pub mod maintenance;
pub mod nft;
pub mod nginx;
pub mod process;
pub mod registry;
pub mod remote;
pub mod render;
pub mod secrets;
pub mod sock_diag;
pub mod state;
pub mod switch_rule;

use std::process::ExitCode;

use cli::{Cli, Command};
pub use context::Context;
use report::Verbosity;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `--json` promises one document on stdout, failures included (the relay of `--host`
    // only passes on the worker's).
    let json = cmd::failure::wants_json(&cli.command).filter(|_| !cli.on_box);
    let result = run_cli(cli);
    if let (Some(doc), Err(err)) = (json, &result) {
        cmd::failure::print_unless_printed(doc, err);
    }
    result
}

fn run_cli(cli: Cli) -> anyhow::Result<ExitCode> {
    // The box's end of `--host`: carries the session for a worker running this same argv.
    if cli.on_box {
        return remote::on_box::relay(cli.age_key_stdin);
    }
    // The nft switch's root side: before the context, so no cutover.yml, `--host` or
    // `remote.host` of the working directory takes part (sudo's rule admits no flag).
    if let cli::Command::SwitchRule(args) = cli.command {
        return cmd::switch_rule::run(args);
    }
    let ctx = Context::from_cli(&cli)?;
    if ctx.verbosity == Verbosity::Verbose {
        process::set_trace(Box::new(|line, took, outcome| {
            eprintln!("    $ {line}  ({}, {outcome})", report::duration(took));
        }));
    }
    // `--host` / `remote.host`: the same command, run on the box over SSH (src/remote/).
    if let Some(code) = remote::run_if_remote(&cli, &ctx)? {
        return Ok(code);
    }
    if cli.on_box_child {
        let promote = cli.on_box_promote;
        return remote::on_box::worker(cli.age_key_stdin, || {
            let code = dispatch(&ctx, cli.command)?;
            // A synced release becomes `current` only once its command has succeeded. The
            // command's own result stands either way: a release left un-promoted is a warning.
            if promote && code == ExitCode::SUCCESS {
                let promoted = config::load(&ctx.config_path, &ctx.dir).and_then(|loaded| {
                    let state_dir = loaded.state_dir();
                    remote::release::promote(&ctx.dir, &state_dir, remote::release::LOCK_WAIT)
                });
                if let Err(e) = promoted {
                    eprintln!(
                        "warning: {}",
                        report::error_chain(&e).trim_start_matches("error: ")
                    );
                }
            }
            Ok(code)
        });
    }
    dispatch(&ctx, cli.command)
}

fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completions { shell } => cmd::completions(shell),
        other => cmd::dispatch(ctx, other),
    }
}
