//! The steps both engines report, as they are stored.
//!
//! Step names are part of cutover's interface: they appear in the step lines, in
//! `history.jsonl` and `--json` (`steps[].step`) and in `state.json`'s in-progress record,
//! so the serialized names never change. They live beside the records that store them; the
//! engine's clock that times them is `engine/step.rs`.

use serde::{Deserialize, Serialize};

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
