//! `cutover run -- CMD…`: a one-off container of the SERVING color's service (its image,
//! environment, secrets, networks, memory limit), `--rm`, attached to this terminal. The
//! exit code of the command is cutover's. The container code is the release phase's
//! (`docker/oneoff.rs`).
//!
//! TTY: passed through when stdin and stdout are terminals, `-T` otherwise. On the box side
//! of `--host` there is no terminal (the SSH session has none) and stdin is the relay's
//! control channel, so the container gets `-T` and an empty stdin. A Ctrl-C or SIGTERM (also
//! forwarded over `--host`) removes the container and exits 130.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::cli::RunArgs;
use crate::context::Context;
use crate::docker::compose::{Compose, Project};
use crate::docker::oneoff::{self, OneOff};
use crate::engine::compose::observe;

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(ctx)?;
    let config = &loaded.config;
    let observed = observe(&loaded)?;
    let Some(color) = observed.active().filter(|c| observed.running.contains(c)) else {
        bail!(
            "nothing is serving in project {}: no color is running, so there is no image to run `{}` in; deploy first (`cutover deploy --image REF`)",
            config.project,
            args.command.join(" ")
        );
    };
    let file = loaded.state_dir().join("compose.yml");
    if !file.exists() {
        bail!(
            "{} is missing, though {color} runs: redeploy (`cutover deploy`) to write it again",
            file.display()
        );
    }
    // Files mode: the one-off container mounts the serving color's own files, written by the
    // deploy that started it (or the boot unit); compose needs no value, so none is decrypted.
    let values = match crate::secrets::files::for_project(config)
        .context("cannot run: app.secrets_delivery is `files`")?
    {
        Some(dirs) => {
            let dir = dirs.service(&config.service(color));
            if !config_has_no_secrets(&loaded) && !dir.is_dir() {
                bail!(
                    "the secret files of {} are missing ({} is not there, though {color} runs): after a reboot, `cutover secrets restore` (the boot unit `bootstrap` installs runs it) writes them again",
                    config.service(color),
                    dir.display()
                );
            }
            Default::default()
        }
        None => {
            let env = crate::secrets::deploy_env(ctx.identity.as_deref(), &loaded)?;
            crate::secrets::check_env_sizes(env.values.iter().map(|(k, v)| (k.as_str(), v)))
                .context("cannot run: the secrets reach compose as its process environment")?;
            env.values
        }
    };
    let project = Project {
        compose: Compose::detect_cached()?,
        name: config.project.to_string(),
        file,
        dir: loaded.dir.clone(),
    };
    let on_box = crate::remote::on_box::stdin_is_relay();
    let tty = !on_box && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let service = config.service(color);
    if !ctx.quiet() {
        eprintln!(
            "running `{}` in a one-off container of {service} ({}){}",
            args.command.join(" "),
            observed.image_of(&loaded, color).as_deref().unwrap_or("?"),
            if tty { "" } else { ", no TTY" }
        );
    }
    let oneoff = OneOff::new(&project, service, "run", &args.command, &values);
    let interrupted = super::progress::interrupt_flag()?;
    // Cutover stays up through a Ctrl-C/SIGTERM and removes the container, which ends compose.
    let watcher = {
        let (flag, name) = (interrupted.clone(), oneoff.name.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            oneoff::remove(&name);
        })
    };
    let code = oneoff.run_attached(tty, !on_box)?;
    if interrupted.load(Ordering::SeqCst) {
        let _ = watcher.join();
        return Ok(ExitCode::from(130));
    }
    Ok(match code {
        Some(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

/// A project whose app names no secrets files mounts nothing.
fn config_has_no_secrets(loaded: &crate::config::Loaded) -> bool {
    loaded.config.app.secrets.is_empty()
}
