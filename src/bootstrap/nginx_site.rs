//! The project's nginx site and include, installed once per box, then `nginx -t` + reload.
//!
//! The site (a `server` block) is bootstrap's: it is rewritten whenever the rendered text
//! differs. The include (`set $service_url …;`) belongs to deploys, which rewrite it on every
//! switch, so bootstrap only creates it when missing and never points nginx back at blue.
//! Debian's stock `sites-enabled/default` claims `default_server` on port 80; with a
//! catch-all `server_name _` our site would never see a request while it is enabled, so
//! bootstrap removes that symlink (the file stays in `sites-available/`). A site nginx does
//! not load at all (Amazon Linux has no `sites-enabled/`) passes `nginx -t` silently, so a
//! live run checks `nginx -T` lists the file. A failed `nginx -t` puts the old files back.
//! The user-data writes both files, removes the default site the same way, and runs the
//! project's own test and reload commands.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::cloud_init::{Instance, Part, View};
use super::{tls, Options, StepDef, StepRun, Target};
use crate::config::{Color, Loaded};
use crate::process::{shell_quote, Cmd};
use crate::render::{Renderer, Route};

/// Step "nginx site".
pub const STEP: StepDef = StepDef {
    name: "nginx site",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Writes(cloud_init),
};

/// Debian's stock default site, enabled by the nginx package.
pub const DEBIAN_DEFAULT_SITE: &str = "/etc/nginx/sites-enabled/default";

/// The rendered nginx files of the project and how to test and reload nginx.
#[derive(Debug, Clone)]
pub struct Files {
    pub site_path: PathBuf,
    pub site: String,
    pub include_path: PathBuf,
    pub include: String,
    pub test: Vec<String>,
    pub reload: Vec<String>,
    /// `server_name _`: the site means to answer every request on its port.
    pub catch_all: bool,
}

impl Files {
    /// The project's site and include, rendered as `cutover render` does. The include
    /// points at the active color when a deploy recorded one, else blue (the first
    /// deploy's), and keeps the maintenance block while the project's flag is on.
    pub fn of(renderer: &Renderer, loaded: &Loaded, target: &Target) -> anyhow::Result<Files> {
        let active = crate::state::StateDir::new(loaded.state_dir())
            .load()
            .ok()
            .and_then(|s| s.active)
            .unwrap_or(Color::Blue);
        let nginx = &loaded.config.nginx;
        let site = renderer.site_with(&loaded.config, tls::cert_ready(loaded, target))?;
        Ok(Files {
            site_path: nginx.site.clone(),
            site,
            include_path: nginx.include.clone(),
            include: renderer.include(
                &loaded.config,
                active,
                crate::maintenance::load(&loaded.state_dir())?.as_ref(),
                Route::Direct,
            )?,
            test: nginx.test.clone(),
            reload: nginx.reload.clone(),
            catch_all: nginx.server_name.trim() == "_",
        })
    }
}

/// The site and include files, and the commands that enable them.
fn cloud_init(instance: &Instance<'_>, view: &mut View) {
    let Some(nginx) = &instance.opts.nginx else {
        view.note(
            "no cutover.yml: no nginx site; run from the project directory (or -C DIR) to include it",
        );
        return;
    };
    view.file(
        nginx.site_path.display().to_string(),
        "0644",
        nginx.site.clone(),
    );
    view.file(
        nginx.include_path.display().to_string(),
        "0644",
        nginx.include.clone(),
    );
    if nginx.catch_all {
        view.sh(format!(
            "if [ -L {DEBIAN_DEFAULT_SITE} ]; then rm {DEBIAN_DEFAULT_SITE}; fi"
        ));
    }
    let quote = |argv: &[String]| {
        argv.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    view.sh(format!(
        "{} && {}",
        quote(&nginx.test),
        quote(&nginx.reload)
    ));
}

pub fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let Some(files) = &opts.nginx else {
        step.skip(opts.no_config_reason.clone());
        return Ok(());
    };
    let site = step.target.path(&files.site_path);
    step.summary(format!(
        "{} includes {}",
        site.display(),
        files.include_path.display()
    ));
    let old_site = std::fs::read(&site).ok();
    let site_changed = step.write_file(&files.site_path, files.site.as_bytes(), 0o644)?;

    let include = step.target.path(&files.include_path);
    let include_created = !include.exists();
    if include_created {
        step.write_file(&files.include_path, files.include.as_bytes(), 0o644)?;
    }

    let default = step.target.path(Path::new(DEBIAN_DEFAULT_SITE));
    let mut removed_default: Option<PathBuf> = None;
    let mut default_goes = false;
    if files.catch_all {
        if let Ok(meta) = std::fs::symlink_metadata(&default) {
            if meta.file_type().is_symlink() {
                let points_to = std::fs::read_link(&default)
                    .with_context(|| format!("could not read the link {}", default.display()))?;
                step.change(format!(
                    "remove {} (-> {}): it is default_server on :80 and would take every request",
                    default.display(),
                    points_to.display()
                ));
                default_goes = true;
                if !step.dry_run() {
                    std::fs::remove_file(&default)
                        .with_context(|| format!("could not remove {}", default.display()))?;
                    removed_default = Some(points_to);
                }
            } else {
                step.note(format!(
                    "{} is a regular file, left alone: if it holds a default_server on the same port, \
                     requests may not reach this site",
                    default.display()
                ));
            }
        }
    }

    let test = Cmd::from_argv(&files.test, "test the nginx config");
    let reload = Cmd::from_argv(&files.reload, "reload nginx");
    if !step.target.on_live_system() {
        step.live_command(&test)?;
        step.live_command(&reload)?;
        return Ok(());
    }
    if !(site_changed || include_created || default_goes) {
        return Ok(());
    }
    if step.dry_run() {
        // Records the commands as planned; runs nothing.
        step.live_command(&test)?;
        step.live_command(&reload)?;
        return Ok(());
    }
    if let Err(err) = step.live_command(&test).and_then(|_| loaded_check(files)) {
        restore(
            &site,
            old_site.as_deref(),
            include_created.then_some(&include),
            &default,
            removed_default.as_deref(),
        );
        return Err(err.context(format!(
            "nginx rejected the new site {}; the previous files are back in place",
            site.display()
        )));
    }
    step.live_command(&reload)?;
    Ok(())
}

/// With the default test command, proves nginx actually loads the site file: a file in a
/// directory nginx.conf does not include passes `nginx -t` and serves nothing.
fn loaded_check(files: &Files) -> anyhow::Result<()> {
    if files.test != ["nginx", "-t"] {
        return Ok(());
    }
    let out = Cmd::new(super::sbin("nginx"), "dump the nginx config")
        .arg("-T")
        .run()?;
    let marker = format!("# configuration file {}:", files.site_path.display());
    if !out.stdout.contains(&marker) {
        anyhow::bail!(
            "nginx does not load {} (nginx.conf includes no such file): set nginx.site in \
             cutover.yml to a path it includes, e.g. /etc/nginx/conf.d/<project>.conf",
            files.site_path.display()
        );
    }
    Ok(())
}

/// Best effort: put back what was there before this step, so nginx keeps its working config.
fn restore(
    site: &Path,
    old_site: Option<&[u8]>,
    created_include: Option<&PathBuf>,
    default: &Path,
    default_target: Option<&Path>,
) {
    match old_site {
        Some(bytes) => {
            let _ = crate::atomic::write(site, bytes, 0o644);
        }
        None => {
            let _ = std::fs::remove_file(site);
        }
    }
    if let Some(include) = created_include {
        let _ = std::fs::remove_file(include);
    }
    if let Some(target) = default_target {
        let _ = std::os::unix::fs::symlink(target, default);
    }
}
