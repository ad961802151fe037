//! Progress events: what an engine tells the command layer while it runs, for step lines.

use std::time::Duration;

use crate::state::Step;

#[derive(Debug, Clone)]
pub enum Event {
    /// A step started.
    Start { step: Step, detail: String },
    /// A step finished.
    Done {
        step: Step,
        took: Duration,
        detail: String,
    },
    /// A step ended in a failure (timed and recorded like any step).
    Failed {
        step: Step,
        took: Duration,
        detail: String,
    },
    /// Still waiting inside a step.
    Waiting {
        step: Step,
        elapsed: Duration,
        limit: Duration,
        last: String,
    },
    /// Something the user should know that is not a failure.
    Note(String),
    /// A line a hook or the release command printed, secrets masked; `from` names it.
    Output { from: String, line: String },
}

pub trait Reporter {
    fn event(&mut self, event: Event);
}
