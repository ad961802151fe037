//! The command layer: one file per subcommand group. These functions call the domain modules
//! and decide what reaches stdout (results, JSON) and stderr (progress, step lines).

use std::process::ExitCode;

use anyhow::bail;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::Context;

mod secrets;

pub fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let _ = ctx;
    match command {
        Command::Completions { shell } => completions(shell),
        Command::Init(_) => not_yet("init", 2),
        Command::Render(_) => not_yet("render", 2),
        Command::Deploy(_) => not_yet("deploy", 4),
        Command::Rollback(_) => not_yet("rollback", 4),
        Command::Status(_) => not_yet("status", 4),
        Command::History(_) => not_yet("history", 4),
        Command::Prune(_) => not_yet("prune", 4),
        Command::Secrets(command) => secrets::run(ctx, command),
        Command::Bootstrap(_) => not_yet("bootstrap", 5),
        Command::Demo(_) => not_yet("demo", 4),
    }
}

fn not_yet(name: &str, issue: u32) -> anyhow::Result<ExitCode> {
    bail!("`cutover {name}` is not implemented yet (tracked in issue #{issue})")
}

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "cutover", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
