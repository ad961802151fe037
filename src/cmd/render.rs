//! `cutover render`: write (or only check) the compose file and the nginx files.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{Engine, RenderArgs};
use crate::config::{self, Color};
use crate::context::Context;
use crate::render::{OutputFiles, Plan, Renderer, Route};
use crate::state::StateDir;

pub fn run(ctx: &Context, args: RenderArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.templates {
        return write_templates(ctx, &ctx.dir.join(dir));
    }
    let loaded = super::load_config(ctx)?;
    if args.engine == Engine::Swarm {
        return run_stack(ctx, &loaded, &args);
    }
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
        secret_keys: crate::secrets::secret_keys(ctx.identity.as_deref(), &loaded)?,
        workers: state.worker_images(),
        secrets_dir: crate::secrets::files::for_project(&loaded.config)?.map(|d| d.dir),
    };
    let renderer = Renderer::new(&ctx.dir)?;
    let site = renderer.site(&loaded.config)?;
    let files = Files {
        compose: renderer.compose(&loaded.config, &plan)?,
        include: renderer.include(
            &loaded.config,
            active,
            crate::maintenance::load(&loaded.state_dir())?.as_ref(),
            // What a deploy leaves between deploys; its switch opens the fallback.
            Route::Direct,
        )?,
        site,
    };
    // A template override can produce anything; catch broken YAML before docker compose does.
    config::check_yaml(&files.compose)
        .context("the rendered compose file is not valid YAML (check templates/compose.yml.j2)")?;
    if args.check {
        if !ctx.quiet() {
            outln!(
                "ok: {} is valid; compose file, nginx include ({active}) and site render",
                loaded.path.display()
            )?;
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

/// `render --templates DIR`: the built-in templates as files, the start of an override (a
/// release tarball has no copy of cutover's repository). A file already there is kept: it
/// may be the project's own override.
fn write_templates(ctx: &Context, dir: &Path) -> anyhow::Result<ExitCode> {
    for (name, text) in crate::render::BUILT_IN {
        let path = dir.join(name);
        if path.exists() {
            eprintln!("kept {} (already there)", path.display());
            continue;
        }
        crate::atomic::write(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("could not write {}", path.display()))?;
        if !ctx.quiet() {
            outln!("wrote {}", path.display())?;
        }
    }
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
        // The compose file is the state directory's (owner only); nginx's files are for nginx.
        for (path, text, mode) in [
            (&paths.compose, &self.compose, crate::state::FILE_MODE),
            (&paths.include, &self.include, 0o644),
            (&paths.site, &self.site, 0o644),
        ] {
            crate::atomic::write(path, text.as_bytes(), mode)?;
            outln!("wrote {}", path.display())?;
        }
        Ok(())
    }
}

/// `render --engine swarm`: the stack file. Secret names carry a hash of each value, so the
/// secrets are decrypted (in memory) to name them; the values are not written anywhere.
fn run_stack(
    ctx: &Context,
    loaded: &config::Loaded,
    args: &RenderArgs,
) -> anyhow::Result<ExitCode> {
    let crate::secrets::DeployEnv {
        values: secrets,
        keys: secret_keys,
        ..
    } = crate::secrets::deploy_env(ctx.identity.as_deref(), loaded)?;
    let project = loaded.config.project.to_string();
    // The image: --image, else what the service runs (when this engine is a swarm manager),
    // else the config's repository.
    let image = match &args.image {
        Some(image) => image.clone(),
        None => crate::docker::swarm::service(&crate::docker::swarm::service_name(
            &project,
            loaded.config.app.name.as_str(),
        ))
        .ok()
        .flatten()
        .map(|s| crate::docker::swarm::display_image(&s.image).to_string())
        .unwrap_or_else(|| loaded.config.default_image()),
    };
    let plan = crate::engine::swarm::stack::StackPlan {
        // Under `routing: host` the render shows the first color, blue.
        colors: vec![(crate::config::Color::Blue, image.clone())],
        workers: crate::engine::swarm::stack::workers_on(&loaded.config, &image),
        image,
        secret_names: crate::engine::swarm::secret_names(&project, &secrets),
        secret_keys,
        accessories_only: false,
    };
    let rendered =
        crate::engine::swarm::stack::render(&Renderer::new(&ctx.dir)?, &loaded.config, &plan)?;
    config::check_yaml(&rendered.text)
        .context("the rendered stack file is not valid YAML (check templates/stack.yml.j2)")?;
    if !ctx.quiet() {
        for note in &rendered.notes {
            eprintln!("note: {note}");
        }
    }
    if args.check {
        if !ctx.quiet() {
            outln!(
                "ok: {} is valid; the stack file renders",
                loaded.path.display()
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let out_dir = match &args.out {
        Some(dir) => ctx.dir.join(dir),
        None => loaded.state_dir(),
    };
    let path = OutputFiles::in_dir(&out_dir).stack;
    crate::atomic::write(&path, rendered.text.as_bytes(), crate::state::FILE_MODE)?;
    outln!("wrote {}", path.display())?;
    Ok(ExitCode::SUCCESS)
}
