//! What both deploy commands (and the demo) share at the command layer: the step lines on
//! stderr, the one-line step summary, the interrupt flag, `--lock-wait`, and the end of a
//! failed deploy.
//!
//! Step lines go to stderr (a spinner while waiting on a terminal, plain lines otherwise, as
//! in CI logs).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cli::DeployCommon;
use crate::engine::{Event, Reporter, Step, StepTiming};
use crate::report::duration;
use crate::state::{EngineKind, RunResult};

/// Prints deploy events as step lines.
pub struct StepPrinter {
    quiet: bool,
    spinner: Option<indicatif::ProgressBar>,
    tty: bool,
    last_wait_line: Option<Instant>,
}

impl StepPrinter {
    pub fn new(quiet: bool) -> Self {
        StepPrinter {
            quiet,
            spinner: None,
            tty: std::io::stderr().is_terminal(),
            last_wait_line: None,
        }
    }

    pub fn clear_spinner(&mut self) {
        if let Some(sp) = self.spinner.take() {
            sp.finish_and_clear();
        }
    }
}

impl Reporter for StepPrinter {
    fn event(&mut self, event: Event) {
        if self.quiet {
            return;
        }
        match event {
            Event::Start { .. } => {}
            Event::Done { step, took, detail } => {
                self.clear_spinner();
                self.last_wait_line = None;
                eprintln!("  ✓ {step:<12} {:>7}  {detail}", duration(took));
            }
            Event::Failed { step, took, detail } => {
                self.clear_spinner();
                self.last_wait_line = None;
                eprintln!("  ✗ {step:<12} {:>7}  {detail}", duration(took));
            }
            Event::Waiting {
                step,
                elapsed,
                limit,
                last,
            } => {
                let line = format!(
                    "{step}: waiting {} of {}{}",
                    duration(elapsed),
                    duration(limit),
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (last: {last})")
                    }
                );
                if self.tty {
                    let sp = self.spinner.get_or_insert_with(|| {
                        let sp = indicatif::ProgressBar::new_spinner();
                        sp.enable_steady_tick(Duration::from_millis(100));
                        sp
                    });
                    sp.set_message(line);
                } else if self
                    .last_wait_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    // Plain logs get a line every 5 s, not one per poll.
                    self.last_wait_line = Some(Instant::now());
                    eprintln!("  … {line}");
                }
            }
            Event::Note(text) => {
                self.clear_spinner();
                eprintln!("  ! {text}");
            }
            Event::Output { from, line } => {
                self.clear_spinner();
                eprintln!("    {from} | {line}");
            }
        }
    }
}

/// `--lock-wait 30s` as a duration; absent means fail at once when another deploy runs.
pub fn lock_wait(common: &DeployCommon) -> anyhow::Result<Duration> {
    Ok(common.lock_wait.unwrap_or(Duration::ZERO))
}

/// What a finished deploy of either engine prints on stdout: its JSON; or, for a dry run,
/// `plan_head` and the plan; or the notes (stderr), `done_head`, the steps line and `extra`.
/// Decrypting happens in `cmd/`, before the engine, which records its time (`Request::
/// decrypted`) as the first of `steps`, in history too; it is the first of `plan_steps` (the
/// steps a deploy's document will list), as the text prints it as the first line.
pub fn print_summary<D: serde::Serialize>(
    ctx: &crate::context::Context,
    json: bool,
    summary: crate::engine::Summary<D>,
    plan_head: &str,
    done_head: &str,
    extra: &[String],
) -> anyhow::Result<()> {
    if json {
        /// The fields a history entry has too: the run's verdict and when it ended.
        #[derive(serde::Serialize)]
        struct Finished<'a, D: serde::Serialize> {
            result: RunResult,
            time: String,
            #[serde(flatten)]
            summary: &'a crate::engine::Summary<D>,
        }
        let doc = Finished {
            result: RunResult::Ok,
            time: crate::state::now_rfc3339(),
            summary: &summary,
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Deploy,
                &doc
            ))?
        )?;
    } else if summary.dry_run {
        outln!("{plan_head}")?;
        for item in &summary.plan {
            outln!("  {}", item.detail)?;
        }
    } else if !ctx.quiet() {
        for note in &summary.notes {
            eprintln!("  ! {note}");
        }
        outln!("{done_head}")?;
        outln!("  {}", steps_line(&summary.steps))?;
        for line in extra {
            outln!("  {line}")?;
        }
    }
    Ok(())
}

/// `lock 1ms · observe 84ms · up 680ms · …`: a deploy's steps with their durations.
pub fn steps_line(steps: &[StepTiming]) -> String {
    steps
        .iter()
        .map(|s| format!("{} {}", s.step, duration(Duration::from_millis(s.ms))))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// SIGINT/SIGTERM set a flag instead of killing cutover mid-step; the deploy decides what a
/// consistent stop is.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .context("could not install signal handlers")?;
    }
    Ok(flag)
}

/// The end of a failed deploy on either engine: a JSON verdict for scripts, and exit 130
/// (after printing the error chain) when it was interrupted before its switch.
pub fn failed(err: anyhow::Error, json: bool, engine: EngineKind) -> anyhow::Result<ExitCode> {
    let interrupted = crate::engine::failure::is_interrupted(&err);
    if json {
        let result = if interrupted {
            RunResult::Interrupted
        } else {
            RunResult::Failed
        };
        let error = serde_json::json!({
            "kind": super::failure::kind(&err),
            "message": format!("{err:#}"),
        });
        outln!(
            "{}",
            serde_json::json!({
                "schema": super::failure::Document::Deploy.version(),
                "engine": engine,
                "result": result,
                // The line history records for this run, under the same name.
                "reason": crate::state::one_line_reason(&format!("{err:#}")),
                "time": crate::state::now_rfc3339(),
                "error": error,
            })
        )?;
    }
    if interrupted {
        eprintln!("{}", crate::report::error_chain(&err));
        return Ok(ExitCode::from(130));
    }
    Err(err)
}

/// The decrypt step's line, printed before the engine runs (decryption happens in `cmd/`,
/// before anything is touched, so a missing identity fails first).
pub fn decrypt_line(took: Duration, keys: usize) {
    eprintln!(
        "  ✓ {:<12} {:>7}  {}",
        Step::Decrypt,
        duration(took),
        crate::report::count(keys, "key")
    );
}
