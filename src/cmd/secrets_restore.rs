//! `cutover secrets restore [--all]`: the secret files of `app.secrets_delivery: files`
//! written again on tmpfs from the ciphertext each service was deployed from
//! (`engine::compose::secret_files::restore`).
//! The boot unit `bootstrap` installs runs it with `--all` before Docker starts, so the
//! containers Docker brings back find their files. Lines name projects, services and key
//! names, never a value: they end up in the journal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::context::Context;
use crate::engine::compose::secret_files::{restore, Restored};

pub fn run(ctx: &Context, all: bool, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let mut results = Vec::new();
    let mut failed = 0;
    let configs: Vec<PathBuf> = if all {
        let (configs, unreadable) = registered_configs()?;
        // A damaged entry is that project's failure, not every project's.
        for (file, why) in unreadable {
            failed += 1;
            eprintln!("error: {why}");
            results.push(serde_json::json!({ "claims": file, "error": why }));
        }
        configs
    } else {
        vec![ctx.config_path.clone()]
    };
    for config in configs {
        let dir = config
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let done = crate::config::load(&config, &dir)
            .and_then(|loaded| {
                // Nothing deployed (no state directory): nothing to lock, nor to make.
                let _lock = (!dry_run && loaded.state_dir().is_dir())
                    .then(|| lock(&loaded))
                    .transpose()?;
                restore(ctx.identity.as_deref(), &loaded, dry_run)
            })
            .with_context(|| format!("cannot restore the secret files of {}", config.display()));
        // This directory's project alone: its failure is the command's, so `--json` prints
        // the failure document (its kind: config, identity…) rather than a list of one error.
        let done = if all { done } else { Ok(done?) };
        match done {
            Ok(restored) => {
                if !json && !ctx.quiet() {
                    eprintln!("{}", line(&restored, dry_run));
                }
                results.push(serde_json::to_value(&restored)?);
            }
            Err(e) => {
                // One project's failure must not keep the others' files from being written.
                failed += 1;
                eprintln!("error: {e:#}");
                results.push(serde_json::json!({
                    "config": config, "error": format!("{e:#}"),
                }));
            }
        }
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::SecretsRestore,
                &serde_json::json!({ "dry_run": dry_run, "projects": results }),
            ))?
        )?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The project's deploy lock, not waited for: a deploy running meanwhile moves, writes and
/// removes the files and copies a restore reads, and a restore racing it would write again
/// the files of a color it had just stopped. (At boot no deploy runs.)
fn lock(loaded: &crate::config::Loaded) -> anyhow::Result<crate::state::DeployLock> {
    crate::engine::record::lock(
        &crate::state::StateDir::new(loaded.state_dir()),
        std::time::Duration::ZERO,
        "secrets restore".into(),
    )
    .context("the secret files are restored under the deploy lock; run this again once the deploy is done")
}

fn line(r: &Restored, dry_run: bool) -> String {
    if let Some(why) = &r.skipped {
        return format!("{}: skipped ({why})", r.project);
    }
    let services: Vec<String> = r
        .services
        .iter()
        .map(|(s, keys)| format!("{s} ({} keys)", keys.len()))
        .collect();
    let from_store = if r.from_store.is_empty() {
        String::new()
    } else {
        // Deployed by a cutover that kept no ciphertext: today's store, maybe never deployed.
        format!(
            "; from the store as it is now, not as deployed (deploy again to fix): {}",
            r.from_store.join(", ")
        )
    };
    format!(
        "{}: {} {}{from_store}",
        r.project,
        if dry_run { "would write" } else { "wrote" },
        services.join(", ")
    )
}

/// The cutover.yml of every project registered on this box (its claims name it).
/// A claims file that could not be read or parsed, and why.
type Unreadable = (PathBuf, String);

/// With the claims files that could not be read or parsed: those projects fail, the others
/// are restored.
fn registered_configs() -> anyhow::Result<(Vec<PathBuf>, Vec<Unreadable>)> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for state_dir in crate::registry::projects()? {
        let file = crate::claims::path(&state_dir);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable.push((
                    file.clone(),
                    format!("could not read {}: {e}", file.display()),
                ));
                continue;
            }
        };
        match serde_json::from_str::<crate::claims::Claims>(&text) {
            Ok(claims) if !out.contains(&claims.config) => out.push(claims.config),
            Ok(_) => {}
            Err(e) => unreadable.push((
                file.clone(),
                format!(
                    "{} does not parse (expected a project's claims as JSON): {e}",
                    file.display()
                ),
            )),
        }
    }
    Ok((out, unreadable))
}
