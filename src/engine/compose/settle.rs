//! Step 7b, the settle window (`app.settle`): after nginx serves the new color, the old one
//! keeps running, out of traffic, while the new one is watched. A new color that dies (or
//! stops answering its health check `healthy_checks` times in a row) inside the window is
//! switched away from: nginx goes back to the old color, which never stopped, so nothing has
//! to boot. Only a settled deploy drains and stops the old color.
//!
//! The window also serves the drain: by its end the nginx workers from before the reload have
//! usually finished their requests and exited, so the drain that follows is near zero.

use std::time::{Duration, Instant};

use crate::config::{Color, Loaded};
use crate::docker::compose::Project;
use crate::engine::{Step, StepClock};
use crate::health::{Answer, Prober};

use super::health_gate::Watcher;

/// Watches `to` for `window`; the error says how it failed.
pub(super) fn watch(
    loaded: &Loaded,
    project: &Project,
    to: Color,
    window: Duration,
    clock: &mut StepClock,
) -> Result<(), String> {
    let health = &loaded.config.app.health;
    let service = loaded.config.service(to);
    let url = super::health_url(loaded, to);
    let prober = Prober::new(health.probe_timeout.get());
    let watcher = Watcher::spawn(project.clone(), service, to);
    let started = Instant::now();
    let mut failures_in_a_row = 0;
    let result = loop {
        if let Some(why) = watcher.death() {
            break Err(why);
        }
        let elapsed = started.elapsed();
        if elapsed >= window {
            break Ok(());
        }
        let answer = prober.get(&url, None);
        let healthy = matches!(answer, Answer::Status { code, .. } if code == health.status);
        failures_in_a_row = if healthy { 0 } else { failures_in_a_row + 1 };
        if failures_in_a_row >= health.healthy_checks {
            break Err(format!(
                "{url} failed {failures_in_a_row} health checks in a row (last answered {})",
                answer.describe()
            ));
        }
        clock.waiting(Step::Settle, elapsed, window, answer.describe());
        std::thread::sleep(
            health
                .interval
                .get()
                .min(window.saturating_sub(started.elapsed())),
        );
    };
    watcher.finish();
    result
}
