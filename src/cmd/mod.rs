//! The command layer: one file per subcommand group. These functions call the domain modules
//! and decide what reaches stdout (results, JSON) and stderr (progress, step lines).

mod bootstrap;
mod deploy;
mod init;
mod render;

use std::process::ExitCode;

use anyhow::bail;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::Context;

pub fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completions { shell } => completions(shell),
        Command::Init(args) => init::run(ctx, args),
        Command::Render(args) => render::run(ctx, args),
        Command::Deploy(args) => deploy::run_deploy(ctx, args.image, false, args.common),
        Command::Rollback(args) => deploy::run_deploy(ctx, None, true, args.common),
        Command::Status(args) => deploy::run_status(ctx, args),
        Command::History(args) => deploy::run_history(ctx, args),
        Command::Prune(args) => deploy::run_prune(ctx, args),
        Command::Secrets(_) => not_yet("secrets", 3),
        Command::Bootstrap(args) => bootstrap::run(ctx, args),
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

/// Secret key names per service, for rendering. Values are decrypted only to learn the names
/// and are dropped here.
pub fn secret_keys(
    ctx: &Context,
    loaded: &crate::config::Loaded,
) -> anyhow::Result<crate::render::SecretKeys> {
    let _ = ctx;
    let configured = !loaded.config.app.secrets.is_empty()
        || loaded
            .config
            .accessories
            .values()
            .any(|a| !a.secrets.is_empty());
    if configured {
        bail!("secrets files in cutover.yml need `cutover secrets` support (issue #3)");
    }
    Ok(crate::render::SecretKeys::default())
}

/// Decrypts every secrets file the config names: the values (process environment for
/// compose) and the key names per service (for rendering).
pub fn decrypt_for_deploy(
    ctx: &Context,
    loaded: &crate::config::Loaded,
) -> anyhow::Result<(
    std::collections::BTreeMap<String, secrecy::SecretString>,
    crate::render::SecretKeys,
)> {
    let keys = secret_keys(ctx, loaded)?;
    Ok((Default::default(), keys))
}
