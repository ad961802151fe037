//! Step 8a, the drain: wait until nothing can still reach the old color.
//!
//! Drained means no connection to the old port is open and every nginx worker that predates
//! the reload has exited: until then an old worker may still route a new request to the old
//! color, even though the reload returned.

use std::time::{Duration, Instant};

use crate::config::Color;
use crate::engine::{Step, StepClock};

use super::Run;

impl Run<'_, '_> {
    /// Step 8a: Drain the old color (or, on a first deploy, wait for the nginx workers from
    /// before the reload).
    pub(super) fn drain(&mut self, old: Option<Color>, old_workers: &[u32]) -> Option<String> {
        let config = &self.d.loaded.config;
        self.set_step(Step::Drain);
        let port = old.map(|c| config.colors.port(c));
        self.clock.start(
            Step::Drain,
            match (old, port) {
                (Some(c), Some(port)) => format!("{} on port {port}", config.service(c)),
                _ => "old nginx workers".to_string(),
            },
        );
        let limit = config.app.drain.get();
        let left = wait(port, old_workers, limit, &mut self.clock);
        let connections = match &left.connections {
            Ok(n) => n.to_string(),
            Err(_) => "an unknown number of".to_string(),
        };
        self.clock.done(
            Step::Drain,
            format!(
                "{connections} connections, {} old nginx workers left",
                left.workers
            ),
        );
        let old_name = old.map_or("the old color".to_string(), |c| c.to_string());
        match &left.connections {
            // Fail closed: a count that cannot be read is never taken for "drained"; the
            // drain waited its whole bound instead.
            Err(e) => Some(format!(
                "{e:#}; waited the whole drain limit ({}) before stopping {old_name}",
                config.app.drain
            )),
            Ok(_) if left.pending() => Some(format!(
                "{connections} connections to {old_name} and {} old nginx workers were left after the drain limit ({})",
                left.workers, config.app.drain
            )),
            Ok(_) => None,
        }
    }
}

/// What was still open when the drain ended.
pub(super) struct Left {
    /// Open connections to the old port; an error when they cannot be counted.
    pub connections: anyhow::Result<usize>,
    pub workers: usize,
}

impl Left {
    /// Whether anything may still reach the old color; an unknown count may.
    pub fn pending(&self) -> bool {
        !matches!(self.connections, Ok(0)) || self.workers > 0
    }
}

/// Polls every 20 ms until drained or `limit` passes. Without a `port` (a first deploy: no old
/// color) only the nginx workers from before the reload are waited for, so a request sent the
/// moment the deploy returns never meets a worker that still has the old include.
pub(super) fn wait(
    port: Option<u16>,
    old_workers: &[u32],
    limit: Duration,
    clock: &mut StepClock,
) -> Left {
    let started = Instant::now();
    let look = || Left {
        connections: port.map_or(Ok(0), crate::host::established_connections),
        workers: old_workers
            .iter()
            .filter(|pid| crate::nginx::process_alive(**pid))
            .count(),
    };
    let mut left = look();
    while left.pending() && started.elapsed() < limit {
        clock.waiting(
            Step::Drain,
            started.elapsed(),
            limit,
            match &left.connections {
                Ok(n) => format!("{n} open connections, {} old nginx workers", left.workers),
                Err(_) => format!(
                    "connections cannot be counted, {} old nginx workers",
                    left.workers
                ),
            },
        );
        std::thread::sleep(Duration::from_millis(20));
        left = look();
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncountable_port_is_never_drained() {
        let left = |connections, workers| Left {
            connections,
            workers,
        };
        assert!(!left(Ok(0), 0).pending());
        assert!(left(Ok(1), 0).pending());
        assert!(left(Ok(0), 1).pending());
        assert!(left(Err(anyhow::anyhow!("no socket table")), 0).pending());
    }
}
