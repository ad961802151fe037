//! The steps both engines report, and the clock that times them.
//!
//! Step names are part of cutover's interface: they appear in the step lines, in
//! `history.jsonl` and `--json` (`steps[].step`) and in `state.json`'s in-progress record,
//! so the serialized names never change.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::event::{Event, Reporter};

/// One step of a deploy, on either engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Decrypting the secrets files (both engines, before anything else). Never recorded in
    /// history; swarm's `secrets` step is a different one (creating swarm secrets).
    Decrypt,
    Lock,
    Observe,
    /// `docker login` + `docker pull` from `registry:`, before anything starts.
    Pull,
    // The compose engine.
    Accessories,
    /// The release phase (`app.release`): a one-off container of the new image, before the
    /// new color starts.
    Release,
    Up,
    Health,
    Switch,
    Probe,
    /// The watch window after the switch: the new color must stay up while the old one
    /// still runs, out of traffic (`app.settle`).
    Settle,
    Drain,
    Stop,
    /// Moving the workers (`workers:`) to the new image, after the old color stopped.
    Workers,
    /// Removing the new color after a failure before the switch.
    Teardown,
    // The swarm engine.
    /// Creating the swarm secret versions this deploy needs.
    Secrets,
    Stack,
    Rollout,
    Prune,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Decrypt => "decrypt",
            Step::Lock => "lock",
            Step::Observe => "observe",
            Step::Pull => "pull",
            Step::Accessories => "accessories",
            Step::Release => "release",
            Step::Up => "up",
            Step::Health => "health",
            Step::Switch => "switch",
            Step::Probe => "probe",
            Step::Settle => "settle",
            Step::Drain => "drain",
            Step::Stop => "stop",
            Step::Workers => "workers",
            Step::Teardown => "teardown",
            Step::Secrets => "secrets",
            Step::Stack => "stack",
            Step::Rollout => "rollout",
            Step::Prune => "prune",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so `{step:<12}` in the step lines aligns.
        f.pad(self.as_str())
    }
}

/// How long one step took, as recorded in history and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    pub step: Step,
    pub ms: u64,
}

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
        let took = self.step_started.elapsed();
        self.steps.push(StepTiming {
            step,
            ms: took.as_millis() as u64,
        });
        self.reporter.event(Event::Done {
            step,
            took,
            detail: detail.into(),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_the_recorded_ones() {
        for step in [
            Step::Lock,
            Step::Up,
            Step::Health,
            Step::Secrets,
            Step::Decrypt,
            Step::Release,
        ] {
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(json, format!("\"{}\"", step.as_str()));
            assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), step);
        }
        assert_eq!(format!("{:<8}|", Step::Up), "up      |");
    }
}
