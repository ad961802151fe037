//! Maintenance mode: nginx answers 503, a page and `Retry-After` to everyone except cutover's
//! own loopback probes (`/.cutover/active` and the health path), so a deploy during
//! maintenance still proves the new color through nginx.
//!
//! The mode lives in three files, each written atomically:
//! - the flag, `<state_dir>/maintenance.json` (0600): the message, `Retry-After`, since when,
//!   by whom. Whoever renders the include loads it ([`load`]) and passes it to
//!   [`crate::render::Renderer::include`], so a deploy or a switch back during maintenance
//!   keeps the 503 block;
//! - the page, `<include>.maintenance.html` (0644, beside the include, where nginx's workers
//!   can read it; the state dir is private), the message HTML-escaped;
//! - the include itself, switched as a deploy switches it, under the deploy lock
//!   (`engine/maintenance.rs`).
//!
//! This module is the flag and the page: what the mode is, and what nginx shows. Nothing here
//! touches nginx or prints.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

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
            // ACME challenges stay answerable only where the site serves them from the
            // webroot (every server block of a TLS site); never let through to the app.
            acme => config.nginx.tls.is_some(),
        },
    }
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
