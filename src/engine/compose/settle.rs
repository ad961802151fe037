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
use super::{drain, switch, Run, Target};
use crate::engine::{Abort, Failed};

impl Run<'_, '_> {
    /// Step 7b: The settle window: the new color must stay up while the old one still runs;
    /// if it fails, nginx switches back and the new color is removed.
    pub(super) fn settle(&mut self, t: &Target, old: Color) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        let window = config.app.settle.get();
        if window.is_zero() {
            return Ok(());
        }
        self.set_step(Step::Settle);
        let service = config.service(t.to);
        self.clock.start(
            Step::Settle,
            format!(
                "{service} watched for {}, {old} kept running",
                config.app.settle
            ),
        );
        match watch(self.d.loaded, &self.project, t.to, window, &mut self.clock) {
            Ok(()) => {
                self.clock
                    .done(Step::Settle, format!("{service} stayed up and healthy"));
                Ok(())
            }
            Err(why) => {
                self.clock
                    .done(Step::Settle, format!("{service} failed: {why}"));
                Err(self.switch_back(t, old, &why))
            }
        }
    }

    /// After a failed settle window: nginx back to `old` (it never stopped), proven through
    /// nginx, the workers that routed to the new color gone, then the new color removed.
    fn switch_back(&mut self, t: &Target, old: Color, why: &str) -> anyhow::Error {
        let config = &self.d.loaded.config;
        let idle_service = config.service(t.to);
        self.clock.start(Step::Switch, format!("back to {old}"));
        let workers = self.nginx.worker_pids();
        let back = self
            .include_text(old)
            .and_then(|text| self.nginx.switch(&text))
            .and_then(|_| switch::probe_through_nginx(config, old).map_err(|e| anyhow::anyhow!(e)));
        if let Err(e) = back {
            self.clock
                .done(Step::Switch, format!("could not go back to {old}"));
            return Failed {
                message: format!(
                    "deploy failed: {} failed in the settle window after the switch ({why}), \
                     and switching nginx back to {old} failed too: {e:#}\n\
                     {old} ({}) still runs; {idle_service} was left in place",
                    t.to,
                    t.from_image.as_deref().unwrap_or("?")
                ),
                abort: Abort::SettleFailed,
            }
            .into();
        }
        self.clock
            .done(Step::Switch, format!("nginx serves {old} again"));
        // Workers from before the switch back may still route to the new color: let them
        // finish before it goes away.
        let port = config.colors.port(t.to);
        drain::wait(
            Some(port),
            &workers,
            config.app.drain.get(),
            &mut self.clock,
        );
        self.abort_before_switch(
            &idle_service,
            &format!(
                "{} failed in the settle window after the switch: {why}\n\
                 nginx switched back to {old} ({}), which kept running",
                t.to,
                t.from_image.as_deref().unwrap_or("?")
            ),
            Abort::SettleFailed,
        )
    }
}

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
        // Sliced, so a death the watcher sees ends the window within a slice.
        let wake = Instant::now()
            + health
                .interval
                .get()
                .min(window.saturating_sub(started.elapsed()));
        while let Some(left) = wake.checked_duration_since(Instant::now()) {
            if watcher.death().is_some() {
                break;
            }
            std::thread::sleep(left.min(crate::health::SLICE));
        }
    };
    watcher.finish();
    result
}
