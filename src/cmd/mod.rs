//! The command layer: one file per subcommand group. These functions call the domain modules
//! and decide what reaches stdout (results, JSON) and stderr (progress, step lines).

mod bootstrap;
mod container;
mod demo;
mod deploy;
pub(crate) mod failure;
mod init;
mod maintenance;
mod progress;
mod render;
mod run;
mod swarm;
pub(crate) mod switch_rule;
mod tls;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command, Engine};
use crate::context::Context;
use crate::state::Action;

mod secrets;
mod secrets_restore;

pub fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Deploy(args) if args.ship => {
            // `--host` ships before the box deploys and never passes `--ship` on.
            eprintln!(
                "error: --ship sends a local image to a box over SSH: use it with --host \
                 [user@]host (or remote.host); without a box the image is already here"
            );
            Ok(ExitCode::from(2))
        }
        Command::Completions { shell } => completions(shell),
        Command::Init(args) => init::run(ctx, args),
        Command::Render(args) => render::run(ctx, args),
        // The engine is the command's `--engine`, for every command that has one.
        Command::Deploy(args) => match args.engine {
            Engine::Compose => deploy::run_deploy(ctx, args.image, None, args.common),
            Engine::Swarm => swarm::run_deploy(ctx, args.image, Action::Deploy, false, args.common),
        },
        Command::Rollback(args) => match args.engine {
            Engine::Compose => deploy::run_deploy(ctx, None, Some(args.release), args.common),
            Engine::Swarm => {
                swarm::run_deploy(ctx, None, Action::Rollback, args.release, args.common)
            }
        },
        Command::Status(args) => match args.engine {
            Engine::Compose => deploy::run_status(ctx, args.json),
            Engine::Swarm => swarm::run_status(ctx, args.json),
        },
        Command::History(args) => deploy::run_history(ctx, args),
        Command::Prune(args) => deploy::run_prune(ctx, args),
        Command::Logs(args) => container::run_logs(ctx, args),
        Command::Exec(args) => container::run_exec(ctx, args),
        Command::Secrets(command) => secrets::run(ctx, command),
        Command::Bootstrap(args) => bootstrap::run(ctx, args),
        Command::Demo(args) => demo::run(ctx, args),
        Command::Tls(command) => tls::run(ctx, command),
        Command::Run(args) => run::run(ctx, args),
        Command::Maintenance(command) => maintenance::run(ctx, command),
        Command::SwitchRule(args) => switch_rule::run(args),
    }
}

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "cutover", &mut crate::report::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Loads the config and prints its warnings (`warning: file:line:col: key: …`) on stderr,
/// for the commands that act on the colors (render, deploy, rollback, bootstrap, maintenance,
/// logs, exec, run); README names the same list.
pub fn load_config(ctx: &Context) -> anyhow::Result<crate::config::Loaded> {
    let loaded = crate::config::load(&ctx.config_path, &ctx.dir)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded)
}
