//! How errors and step lines look on a terminal.
//!
//! Errors print as minijinja-cli does: `error:` for the outermost context, then one
//! `caused by:` line per cause, so a failure names the action first and the root cause last.

use std::fmt::Write as _;

/// Formats an error and its causes as `error: …` / `caused by: …` lines.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        let _ = write!(out, "\ncaused by: {cause}");
    }
    out
}

/// How much the command layer prints besides its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

impl Verbosity {
    pub fn from_flags(quiet: bool, verbose: u8) -> Self {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            _ => Verbosity::Verbose,
        }
    }
}

/// Formats a duration for step lines: `850ms`, `1.42s`, `2m05s`.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}
