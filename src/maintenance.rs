//! Maintenance mode: nginx answers 503, a page and `Retry-After` to everyone except cutover's
//! own loopback probes (`/.cutover/active` and the health path), so a deploy during
//! maintenance still proves the new color through nginx.
//!
//! The mode lives in three files, each written atomically:
//! - the flag, `<state_dir>/maintenance.json` (0600): the message, `Retry-After`, since when,
//!   by whom. Every rendering of the include reads it ([`crate::render::Renderer::include`]),
//!   so a deploy or a switch back during maintenance keeps the 503 block;
//! - the page, `<include>.maintenance.html` (0644, beside the include, where nginx's workers
//!   can read it; the state dir is private), the message HTML-escaped;
//! - the include itself, switched as a deploy switches it: `nginx -t`, reload, the previous
//!   include put back on any failure ([`crate::nginx::Nginx::switch`]).
//!
//! Turning it on writes the page, then the include, then the flag; off writes the include,
//! then removes the flag and the page: at no point does nginx reference a page that is not
//! there, and a failure leaves the mode as it was. Nothing here prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{Color, Loaded};
use crate::nginx::{include_port, Nginx};
use crate::render::Renderer;

/// The URI nginx serves the page under (an `internal` location: never requested directly).
pub const PAGE_URI: &str = "/.cutover/maintenance.html";

/// The longest message accepted (one short paragraph on a page).
pub const MAX_MESSAGE: usize = 500;

/// The message when none is given.
pub const DEFAULT_MESSAGE: &str = "We are down for maintenance and will be back shortly.";

/// The mode while it is on: what `status` shows and what the include renders from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after_secs: u64,
    pub since: String,
    pub by: String,
}

/// Why a message is refused (the command layer names the flag).
pub fn validate_message(message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("the message is empty (expected one line of text)".into());
    }
    if message.chars().count() > MAX_MESSAGE {
        return Err(format!(
            "the message is {} characters long (at most {MAX_MESSAGE})",
            message.chars().count()
        ));
    }
    if let Some(c) = message.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the message holds the control character {c:?} (expected one line of printable text)"
        ));
    }
    Ok(())
}

/// `<state_dir>/maintenance.json`.
pub fn flag_path(state_dir: &Path) -> PathBuf {
    state_dir.join("maintenance.json")
}

/// `<include>.maintenance.html`: beside the include, so nginx can read it.
pub fn page_path(include: &Path) -> PathBuf {
    let mut name = include.file_name().unwrap_or_default().to_os_string();
    name.push(".maintenance.html");
    include.with_file_name(name)
}

/// The mode as recorded in `state_dir` (None: off).
pub fn load(state_dir: &Path) -> anyhow::Result<Option<Maintenance>> {
    let path = flag_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is damaged (expected the maintenance flag as JSON); `cutover maintenance off` removes it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// `&<>"'` as entities: the message is text, never markup.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page nginx serves with the 503.
pub fn page_html(m: &Maintenance) -> String {
    let message = html_escape(&m.message);
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Down for maintenance</title></head>\n\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em\">\n\
         <h1>Down for maintenance</h1>\n<p>{message}</p>\n</body>\n</html>\n"
    )
}

/// What the include template gets as `maintenance` (None: off).
pub fn template_view(config: &crate::config::Config, m: Option<&Maintenance>) -> minijinja::Value {
    match m {
        None => minijinja::Value::from(()),
        Some(m) => minijinja::context! {
            page => page_path(&config.nginx.include).display().to_string(),
            page_uri => PAGE_URI,
            retry_after => m.retry_after_secs,
            health_path => config.app.health.path.as_str(),
        },
    }
}

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
    let color = include_port(&current)
        .and_then(|port| {
            Color::ALL
                .into_iter()
                .find(|c| config.colors.port(*c) == port)
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
    let text = renderer.include_with(config, color, wanted.as_ref())?;
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
    if let Err(why) = crate::engine::compose::probe_through_nginx(config, color) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked_and_escaped() {
        assert!(validate_message("Back at 10:00 <UTC> & soon").is_ok());
        assert!(validate_message("  ").unwrap_err().contains("empty"));
        assert!(validate_message("a\nb").unwrap_err().contains("control"));
        assert!(validate_message(&"x".repeat(501))
            .unwrap_err()
            .contains("at most 500"));
        let m = Maintenance {
            message: "<script>alert('x')</script> & \"more\"".into(),
            retry_after_secs: 60,
            since: "now".into(),
            by: "me".into(),
        };
        let page = page_html(&m);
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        );
        assert!(!page.contains("<script>"));
    }

    #[test]
    fn the_page_sits_beside_the_include() {
        assert_eq!(
            page_path(Path::new("/etc/nginx/conf.d/app-service-url.inc")),
            Path::new("/etc/nginx/conf.d/app-service-url.inc.maintenance.html")
        );
    }
}
