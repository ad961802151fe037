//! The command layer: one file per subcommand group. These functions call the domain modules
//! and decide what reaches stdout (results, JSON) and stderr (progress, step lines).

mod bootstrap;
mod demo;
mod deploy;
mod init;
mod render;
mod swarm;

use std::process::ExitCode;

use anyhow::bail;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::Context;

mod secrets;

pub fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completions { shell } => completions(shell),
        Command::Init(args) => init::run(ctx, args),
        Command::Render(args) => render::run(ctx, args),
        Command::Deploy(args) if args.engine == crate::cli::Engine::Swarm => {
            swarm::run_deploy(ctx, args.image, args.common)
        }
        Command::Deploy(args) => deploy::run_deploy(ctx, args.image, false, args.common),
        Command::Rollback(args) => deploy::run_deploy(ctx, None, true, args.common),
        Command::Status(args) if args.engine == crate::cli::Engine::Swarm => {
            swarm::run_status(ctx, args.json)
        }
        Command::Status(args) => deploy::run_status(ctx, args.json),
        Command::History(args) => deploy::run_history(ctx, args),
        Command::Prune(args) => deploy::run_prune(ctx, args),
        Command::Secrets(command) => secrets::run(ctx, command),
        Command::Bootstrap(args) => bootstrap::run(ctx, args),
        Command::Demo(args) => demo::run(ctx, args),
    }
}

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "cutover", &mut crate::report::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Loads the config and prints its warnings (`warning: file:line:col: key: …`) on stderr,
/// for the commands that act on the colors (render, deploy, rollback, bootstrap).
pub fn load_config(ctx: &Context) -> anyhow::Result<crate::config::Loaded> {
    let loaded = crate::config::load(&ctx.config_path, &ctx.dir)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded)
}

/// Secret key names per service, for rendering. Values are decrypted only to learn the names
/// and are dropped here.
pub fn secret_keys(
    ctx: &Context,
    loaded: &crate::config::Loaded,
) -> anyhow::Result<crate::render::SecretKeys> {
    decrypt_for_deploy(ctx, loaded).map(|(_, keys)| keys)
}

/// Decrypts every secrets file the config names: the values (process environment for
/// compose) and the key names per service (for rendering). A key in both the app's and an
/// accessory's files must carry the same value, since compose gets one environment.
pub fn decrypt_for_deploy(
    ctx: &Context,
    loaded: &crate::config::Loaded,
) -> anyhow::Result<(
    std::collections::BTreeMap<String, secrecy::SecretString>,
    crate::render::SecretKeys,
)> {
    use anyhow::Context as _;
    use secrecy::ExposeSecret;

    let config = &loaded.config;
    let mut values = std::collections::BTreeMap::new();
    let mut keys = crate::render::SecretKeys::default();
    let groups: Vec<(String, &Vec<std::path::PathBuf>)> =
        std::iter::once(("app".to_string(), &config.app.secrets))
            .chain(
                config
                    .accessories
                    .iter()
                    .map(|(n, a)| (n.to_string(), &a.secrets)),
            )
            .filter(|(_, files)| !files.is_empty())
            .collect();
    if groups.is_empty() {
        return Ok((values, keys));
    }
    let identities = crate::secrets::resolve_identity(ctx.identity.as_deref())
        .context("cannot decrypt the secrets files named in cutover.yml")?;
    for (owner, files) in groups {
        let paths: Vec<_> = files.iter().map(|f| loaded.resolve(f)).collect();
        let env = crate::secrets::load_env(&paths, &identities)
            .with_context(|| format!("cannot decrypt the secrets of {owner}"))?;
        let names: std::collections::BTreeSet<String> = env.keys().map(str::to_string).collect();
        for (key, value) in env.iter() {
            let clash = values.get(key).is_some_and(|v: &secrecy::SecretString| {
                v.expose_secret() != value.expose_secret()
            });
            if clash {
                bail!("secret key `{key}` of {owner} has a different value in another service's secrets files; compose gets one environment, so use distinct key names");
            }
            values.insert(key.to_string(), value.clone());
        }
        if owner == "app" {
            keys.app = names;
        } else {
            keys.accessories.insert(owner, names);
        }
    }
    Ok((values, keys))
}

/// Writes the demo's encrypted secrets and its test-only identity (0600) into the demo
/// project; returns the identity path.
fn write_demo_secrets(dir: &std::path::Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    const DEMO_SECRETS: &[u8] = include_bytes!("../../secrets/demo.env.age");
    const DEMO_IDENTITY: &str = include_str!("../../fixtures/secrets/test-identity.txt");
    crate::atomic::write(&dir.join("secrets/demo.env.age"), DEMO_SECRETS, 0o644)?;
    let identity = dir.join("demo-identity.txt");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&identity)
        .and_then(|mut f| f.write_all(DEMO_IDENTITY.as_bytes()))
        .with_context(|| format!("could not write {}", identity.display()))?;
    Ok(Some(identity))
}
