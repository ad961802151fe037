//! `cutover render`: write (or only check) the compose file and the nginx files.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::RenderArgs;
use crate::config::{self, Color};
use crate::render::{OutputFiles, Plan, Renderer};
use crate::state::StateDir;
use crate::Context;

pub fn run(ctx: &Context, args: RenderArgs) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&ctx.config_path, &ctx.dir)?;
    let state = StateDir::new(loaded.state_dir()).load()?;
    let active = state.active.unwrap_or(Color::Blue);
    let mut images = state.images.clone();
    if let Some(image) = &args.image {
        let idle = if state.active.is_some() {
            active.other()
        } else {
            Color::Blue
        };
        images.insert(idle, image.clone());
    }
    let plan = Plan {
        images,
        secret_keys: super::secret_keys(ctx, &loaded)?,
    };
    let renderer = Renderer::new(&ctx.dir)?;
    let files = Files {
        compose: renderer.compose(&loaded.config, &plan)?,
        include: renderer.include(&loaded.config, active)?,
        site: renderer.site(&loaded.config)?,
    };
    // A template override can produce anything; catch broken YAML before docker compose does.
    config::check_yaml(&files.compose)
        .context("the rendered compose file is not valid YAML (check templates/compose.yml.j2)")?;
    if args.check {
        if !ctx.quiet() {
            println!(
                "ok: {} is valid; compose file, nginx include ({active}) and site render",
                loaded.path.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let out_dir = match &args.out {
        Some(dir) => ctx.dir.join(dir),
        None => loaded.state_dir(),
    };
    files.write(&out_dir)?;
    Ok(ExitCode::SUCCESS)
}

struct Files {
    compose: String,
    include: String,
    site: String,
}

impl Files {
    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let paths = OutputFiles::in_dir(dir);
        for (path, text) in [
            (&paths.compose, &self.compose),
            (&paths.include, &self.include),
            (&paths.site, &self.site),
        ] {
            crate::atomic::write(path, text.as_bytes(), 0o644)?;
            println!("wrote {}", path.display());
        }
        Ok(())
    }
}
