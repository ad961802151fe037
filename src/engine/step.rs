//! The clock that times a run's steps ([`crate::state::Step`]) and forwards its events to
//! the command layer's reporter.

use std::time::{Duration, Instant};

use super::event::{Event, Reporter};
pub use crate::state::{Step, StepTiming};

/// Times a run's steps and forwards its events to the reporter.
pub struct StepClock<'r> {
    reporter: &'r mut dyn Reporter,
    steps: Vec<StepTiming>,
    started: Instant,
    step_started: Instant,
}

impl<'r> StepClock<'r> {
    pub fn new(reporter: &'r mut dyn Reporter) -> Self {
        StepClock {
            reporter,
            steps: Vec::new(),
            started: Instant::now(),
            step_started: Instant::now(),
        }
    }

    pub fn start(&mut self, step: Step, detail: impl Into<String>) {
        self.step_started = Instant::now();
        self.reporter.event(Event::Start {
            step,
            detail: detail.into(),
        });
    }

    pub fn done(&mut self, step: Step, detail: impl Into<String>) {
        let took = self.record(step);
        self.reporter.event(Event::Done {
            step,
            took,
            detail: detail.into(),
        });
    }

    /// Like [`StepClock::done`], for a step that failed: the line says so (no check mark).
    pub fn failed(&mut self, step: Step, detail: impl Into<String>) {
        let took = self.record(step);
        self.reporter.event(Event::Failed {
            step,
            took,
            detail: detail.into(),
        });
    }

    /// A step that ran before the engine (decrypting, in `cmd/`), recorded as it took.
    pub fn ran_before(&mut self, step: Step, took: Duration) {
        self.steps.push(StepTiming {
            step,
            ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        });
    }

    fn record(&mut self, step: Step) -> Duration {
        let took = self.step_started.elapsed();
        self.steps.push(StepTiming {
            step,
            ms: took.as_millis() as u64,
        });
        took
    }

    pub fn waiting(&mut self, step: Step, elapsed: Duration, limit: Duration, last: String) {
        self.reporter.event(Event::Waiting {
            step,
            elapsed,
            limit,
            last,
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.reporter.event(Event::Note(text.into()));
    }

    /// The reporter, for a wait loop that reports from inside a closure.
    pub fn reporter(&mut self) -> &mut dyn Reporter {
        &mut *self.reporter
    }

    pub fn steps(&self) -> Vec<StepTiming> {
        self.steps.clone()
    }

    pub fn total_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
