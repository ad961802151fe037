//! Turning maintenance mode on or off: the include switched as a deploy switches it, under
//! the project's deploy lock: `nginx -t`, reload, a probe through nginx, the previous include
//! put back on any failure. The flag and the page themselves are `crate::maintenance`.
//!
//! Turning it on writes the page, then the include, then the flag; off writes the include,
//! then removes the flag and the page: at no point does nginx reference a page that is not
//! there, and a failure leaves the mode as it was. Nothing here prints.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::config::{Color, Loaded};
use crate::maintenance::{flag_path, load, page_html, page_path, Maintenance, PAGE_URI};
use crate::nginx::{include_port, Nginx};
use crate::render::{Renderer, Route};

/// What a change did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub on: bool,
    /// False when the mode already was as asked (nothing written, nginx not reloaded).
    pub changed: bool,
    pub dry_run: bool,
    pub color: Color,
    pub include: PathBuf,
    pub page: PathBuf,
    pub flag: PathBuf,
    pub maintenance: Option<Maintenance>,
    /// How long the include switch (write, `nginx -t`, reload, probe) took.
    pub switch_ms: u64,
}

/// Turns the mode on (`Some`) or off (`None`) for the project, under its deploy lock.
pub fn set(
    loaded: &Loaded,
    renderer: &Renderer,
    wanted: Option<Maintenance>,
    dry_run: bool,
    lock_wait: Duration,
) -> anyhow::Result<Change> {
    let config = &loaded.config;
    let state_dir = crate::state::StateDir::new(loaded.state_dir());
    let _lock = if dry_run {
        None
    } else {
        let action = if wanted.is_some() {
            "maintenance on"
        } else {
            "maintenance off"
        };
        Some(crate::engine::record::lock(
            &state_dir,
            lock_wait,
            action.into(),
        )?)
    };
    let nginx = Nginx {
        include: config.nginx.include.clone(),
        test: config.nginx.test.clone(),
        reload: config.nginx.reload.clone(),
    };
    nginx.check_writable()?;
    let current = nginx.current_include()?.with_context(|| {
        format!(
            "{} does not exist: deploy (or `cutover bootstrap`) first, so nginx has an include to hold the 503",
            config.nginx.include.display()
        )
    })?;
    // nft mode: the include names the switch's port, and the rule the color.
    let nft = include_port(&current).is_some()
        && include_port(&current) == config.nginx.switch_ports.map(|[p, _]| p.0);
    let rule = if nft {
        super::compose::nft_switch::read(config)?
            .and_then(|m| super::compose::nft_switch::color_of(config, &m))
    } else {
        None
    };
    let color = include_port(&current)
        .and_then(|port| {
            rule.filter(|_| nft).or_else(|| {
                Color::ALL
                    .into_iter()
                    .find(|c| config.colors.port(*c) == port)
            })
        })
        .with_context(|| {
            format!(
                "{} points at neither color's port ({} / {}): cannot re-render it",
                config.nginx.include.display(),
                config.colors.blue,
                config.colors.green
            )
        })?;
    // `off` is the way out of a damaged flag: it removes it.
    let (before, damaged) = match load(&state_dir.dir) {
        Ok(before) => (before, false),
        Err(_) if wanted.is_none() => (None, true),
        Err(e) => return Err(e),
    };
    let same = |a: &Maintenance, b: &Maintenance| {
        a.message == b.message && a.retry_after_secs == b.retry_after_secs
    };
    // Already on as asked: keep the original `since`.
    let wanted = match (&before, wanted) {
        (Some(b), Some(w)) if same(b, &w) => Some(b.clone()),
        (_, w) => w,
    };
    // Between deploys (it takes the deploy lock) no watch window is open: the direct route.
    let text = if nft {
        renderer.include_nft(config, wanted.as_ref())?
    } else {
        renderer.include(config, color, wanted.as_ref(), Route::Direct)?
    };
    if wanted.is_some() && !text.contains(PAGE_URI) {
        anyhow::bail!(
            "the include template ({}) renders no maintenance block: a custom templates/{} must \
             render `maintenance` (see the built-in template)",
            renderer.origin(crate::render::INCLUDE),
            crate::render::INCLUDE
        );
    }
    let page = page_path(&config.nginx.include);
    let flag = flag_path(&state_dir.dir);
    let mut change = Change {
        on: wanted.is_some(),
        changed: damaged || text != current || before != wanted,
        dry_run,
        color,
        include: config.nginx.include.clone(),
        page: page.clone(),
        flag: flag.clone(),
        maintenance: wanted.clone(),
        switch_ms: 0,
    };
    if dry_run || !change.changed {
        return Ok(change);
    }
    let started = std::time::Instant::now();
    write_mode(&nginx, config, color, &text, &change)?;
    change.switch_ms = started.elapsed().as_millis() as u64;
    Ok(change)
}

/// Writes the mode as `change` says, in the order of the module docs: on: page, include,
/// flag; off: include, then flag and page removed.
fn write_mode(
    nginx: &Nginx,
    config: &crate::config::Config,
    color: Color,
    text: &str,
    change: &Change,
) -> anyhow::Result<()> {
    let (page, flag) = (&change.page, &change.flag);
    match &change.maintenance {
        Some(m) => {
            let page_before = std::fs::read(page).ok();
            crate::atomic::write(page, page_html(m).as_bytes(), 0o644)?;
            let switch = match apply(nginx, config, color, text) {
                Ok(switch) => switch,
                Err(err) => {
                    // nginx serves the previous include: put the page back as it was too.
                    let _ = match page_before {
                        Some(bytes) => crate::atomic::write(page, &bytes, 0o644),
                        None => std::fs::remove_file(page).map_err(Into::into),
                    };
                    return Err(err);
                }
            };
            let json = serde_json::to_string_pretty(m)? + "\n";
            if let Err(err) = crate::atomic::write(flag, json.as_bytes(), 0o600) {
                let _ = switch.restore(nginx);
                return Err(err.context("the include is back as it was"));
            }
        }
        None => {
            apply(nginx, config, color, text)?;
            for path in [flag, page] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("could not remove {}", path.display()))
                    }
                }
            }
        }
    }
    Ok(())
}

/// Switches the include and waits until nginx's new workers answer the probe (and the old
/// ones are gone), so the mode is live when `set` returns; restores the include otherwise.
fn apply(
    nginx: &Nginx,
    config: &crate::config::Config,
    color: Color,
    text: &str,
) -> anyhow::Result<crate::nginx::Switch> {
    let old_workers = nginx.worker_pids();
    let switch = nginx.switch(text)?;
    if let Err(why) = super::compose::probe_through_nginx(config, color, text, &old_workers) {
        let restored = switch.restore(nginx);
        return Err(anyhow::anyhow!(why)).context(match restored {
            Ok(()) => "the previous include is back and nginx reloaded".to_string(),
            Err(e) => format!("and putting the previous include back failed too: {e:#}"),
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old_workers.iter().any(|p| crate::nginx::process_alive(*p))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(switch)
}
