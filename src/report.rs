//! How errors and step lines look on a terminal.
//!
//! Errors print as minijinja-cli does: `error:` for the outermost context, then one
//! `caused by:` line per cause, so a failure names the action first and the root cause last.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// `1 key`, `0 keys`, `3 keys`: a count and its noun, plural unless the count is one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
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

/// Results go to stdout through [`outln!`]/[`out!`]/[`stdout`], never `println!`, which
/// panics ("failed printing to stdout: Broken pipe") when the reader went away, as in
/// `cutover history | head -1`. A reader going away stops the output, not the command: later
/// writes are dropped and the command ends with the exit status its outcome earns, so a
/// failed deploy or bootstrap still exits non-zero and a render still writes every file.
/// Every other write error (a full disk behind `> file`) is a [`StdoutError`].
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Set by the first byte a command writes to stdout: a `--json` command that fails before
/// printing its document gets the failure document instead (`cmd/failure.rs`), and one that
/// printed its own gets nothing more, so stdout holds exactly one document either way.
static STDOUT_WRITTEN: AtomicBool = AtomicBool::new(false);

/// Whether anything was written to stdout through [`stdout`].
pub fn stdout_written() -> bool {
    STDOUT_WRITTEN.load(Ordering::Relaxed)
}

/// Stdout could not be written for a reason other than its reader going away.
#[derive(Debug, thiserror::Error)]
#[error("could not write to stdout")]
pub struct StdoutError(#[source] pub std::io::Error);

/// True once a write found stdout's reader gone.
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// Stdout for results: `writeln!(report::stdout(), …)?` works as with `io::Stdout`, with
/// the closed-reader rule above.
pub struct Stdout(std::io::StdoutLock<'static>);

/// Locks stdout for a run of writes.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

impl Stdout {
    /// What `write!`/`writeln!` call: the error names stdout.
    pub fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
        std::io::Write::write_fmt(self, args).map_err(StdoutError)
    }
}

/// For writers that take `io::Write` (clap_complete); same closed-reader rule.
impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            STDOUT_WRITTEN.store(true, Ordering::Relaxed);
        }
        if stdout_gone() {
            return Ok(buf.len());
        }
        self.0
            .write(buf)
            .or_else(|e| reader_gone(e).map(|()| buf.len()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if stdout_gone() {
            return Ok(());
        }
        self.0.flush().or_else(reader_gone)
    }
}

/// A closed reader is not an error: remember it and drop what follows.
fn reader_gone(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        Ok(())
    } else {
        Err(e)
    }
}

/// `print!` returning `Result<(), StdoutError>`; see [`stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::report::stdout().write_fmt(format_args!($($arg)*))
    };
}

/// `println!` returning `Result<(), StdoutError>`; see [`stdout`].
macro_rules! outln {
    () => {
        $crate::report::stdout().write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::report::stdout().write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_say_one_key_and_two_keys() {
        assert_eq!(super::count(1, "key"), "1 key");
        assert_eq!(super::count(0, "key"), "0 keys");
        assert_eq!(super::count(2, "key"), "2 keys");
    }
}
