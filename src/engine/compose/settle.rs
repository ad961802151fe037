//! Step 7b, the settle window (`app.settle`): after nginx serves the new color, the old one
//! keeps running, out of traffic, while the new one is watched. A new color that dies (or
//! stops answering its health check `healthy_checks` times in a row) inside the window is
//! switched away from: nginx goes back to the old color, which never stopped, so nothing has
//! to boot. Only a settled deploy drains and stops the old color.
//!
//! The window also serves the drain: by its end the nginx workers from before the reload have
//! usually finished their requests and exited, so the drain that follows is near zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Color, Loaded};
use crate::docker::compose::Project;
use crate::engine::{Step, StepClock};
use crate::health::{Answer, Prober};
use crate::render::Route;

use super::health_gate::Watcher;
use super::observe::{color_health, ColorHealth};
use super::{drain, switch, Run, Target};
use crate::engine::{Abort, Failed};

impl Run<'_, '_> {
    /// Step 7b: The settle window: the new color must stay up while the old one still runs;
    /// if it fails, nginx switches back and the new color is removed. On a first deploy
    /// (`old: None`) there is nothing to switch back to: a failure fails the deploy.
    /// `route`: how the switch routed; with the fallback open, a settled window closes it.
    pub(super) fn settle(
        &mut self,
        t: &Target,
        old: Option<Color>,
        route: Route,
    ) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        // `Ops::decide` plans no settle for a zero window.
        let window = config.app.settle.get();
        self.set_step(Step::Settle);
        let service = config.service(t.to);
        self.clock.start(
            Step::Settle,
            match old {
                Some(old) => format!(
                    "{service} watched for {}, {old} kept running",
                    config.app.settle
                ),
                None => format!("{service} watched for {}", config.app.settle),
            },
        );
        let interrupted = Arc::clone(&self.d.interrupted);
        // The window's end routes again: to the new color alone, or back to the old one.
        if route == Route::Fallback && old.is_some() {
            self.prime_lead(t.to, t.to);
        }
        let watched = watch(
            self.d.loaded,
            &self.project,
            t.to,
            window,
            &mut self.clock,
            &interrupted,
        );
        // The switch's table replacement ran beside the window (`rule_replacement.rs`): one
        // that failed is tried again here, and failing again it fails the window while the
        // old color still runs. After a window that failed anyway, the switch back replaces
        // the table itself.
        let replaced = match watched {
            Ok(()) => self.replaced_or_again(),
            Err(_) => self.replaced(),
        };
        let watched = match (watched, replaced) {
            (Ok(()), Err(e)) => Err(Unsettled::Failed(format!(
                "the nft rule's table could not be replaced after the switch ({e:#})"
            ))),
            (watched, Err(e)) => {
                self.clock.note(format!(
                    "the nft rule's table could not be replaced after the switch either \
                     ({e:#})"
                ));
                watched
            }
            (watched, Ok(())) => watched,
        };
        match watched {
            Ok(()) => match (route, old) {
                (Route::Fallback, Some(old)) => self.close_fallback(t, old),
                _ => {
                    self.clock
                        .done(Step::Settle, format!("{service} stayed up and healthy"));
                    Ok(())
                }
            },
            // With the old color still running, an interrupt undoes the deploy: back to it.
            Err(Unsettled::Interrupted) if old.is_some() => {
                let old = old.unwrap_or(t.to.other());
                self.clock
                    .failed(Step::Settle, "interrupted (SIGINT/SIGTERM)".to_string());
                Err(self.switch_back(t, old, "interrupted", Abort::Interrupted))
            }
            // Nothing to go back to: the window ends early and the deploy finishes.
            Err(Unsettled::Interrupted) => {
                self.clock.done(
                    Step::Settle,
                    format!(
                        "{service} watched until an interrupt (SIGINT/SIGTERM) ended the window"
                    ),
                );
                Ok(())
            }
            Err(Unsettled::Failed(why)) => {
                self.clock
                    .failed(Step::Settle, format!("{service} failed: {why}"));
                Err(match old {
                    Some(old) => self.switch_back(t, old, &why, Abort::SettleFailed),
                    None => self.unsettled_first_deploy(t, &why),
                })
            }
        }
    }

    /// The window passed: nginx goes to the new color's address alone, so the old color, about
    /// to drain and stop, is nobody's backup, and the next deploy's new color, while it is not
    /// yet gated, never is. Proven through nginx like any switch; a failure to close it
    /// fails the window (the old color still runs: nginx goes back to it).
    fn close_fallback(&mut self, t: &Target, old: Color) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        let service = config.service(t.to);
        let workers = self.workers_before_switch();
        // The table's replacement runs beside the probe, the drain and the stop, and is
        // waited for once the old color stopped (`rule_replacement.rs`).
        let closed = self.switch_to(t.to, true);
        let why = match closed {
            Ok((switched, text)) => {
                match switch::probe_through_nginx(config, t.to, &text, &workers) {
                    Ok(_) => {
                        self.clock.done(
                            Step::Settle,
                            format!(
                                "{service} stayed up and healthy; nginx → {} alone",
                                crate::render::upstream_url(config, t.to)
                            ),
                        );
                        return Ok(());
                    }
                    Err(probe) => match self.undo(switched) {
                        Ok(()) => format!(
                            "nginx did not serve {} without {old} as its backup ({probe})",
                            t.to
                        ),
                        Err(e) => format!(
                            "nginx did not serve {} without {old} as its backup ({probe}), and \
                         putting the include back failed too ({e:#})",
                            t.to
                        ),
                    },
                }
            }
            Err(e) => format!("could not route nginx to {} alone: {e:#}", t.to),
        };
        self.clock.failed(Step::Settle, format!("{service}: {why}"));
        Err(self.switch_back(t, old, &why, Abort::SettleFailed))
    }

    /// A color that failed in the settle window with nothing to switch back to (a first
    /// deploy, or a recovery with nothing running): it keeps serving what it can, and the
    /// deploy fails saying what was seen.
    fn unsettled_first_deploy(&mut self, t: &Target, why: &str) -> anyhow::Error {
        let service = self.d.loaded.config.service(t.to);
        let logs =
            crate::secrets::deploy_env::redact(&self.project.logs(&service, 20), self.d.values());
        let what = if t.first_deploy {
            "this was the first deploy"
        } else {
            "nothing else was running"
        };
        let mut message = format!(
            "deploy failed: {service} ({}) failed in the settle window after the switch: {why}\n\
             {what}, so there is no older color to switch back to: nginx points at {}, and \
             {service} was left in place (see `cutover status`, `cutover logs`)",
            t.image, t.to
        );
        if !logs.trim().is_empty() {
            message.push_str(&format!("\nlast log lines of {service}:"));
            for line in logs.lines() {
                message.push_str(&format!("\n    {line}"));
            }
        }
        Failed {
            message,
            abort: Abort::SettleFailed,
        }
        .into()
    }

    /// After a failed settle window: nginx back to `old` (it never stopped), proven through
    /// nginx, the workers that routed to the new color gone, then the new color removed.
    /// Only to an `old` that still runs and answers its health check: when neither color is
    /// healthy, nginx stays on the new one, which may still answer some requests, and the
    /// error says so. A switch back whose probe fails puts the new include back.
    /// `abort`: [`Abort::Interrupted`] when an interrupt, not a failure, ended the window.
    fn switch_back(&mut self, t: &Target, old: Color, why: &str, abort: Abort) -> anyhow::Error {
        let config = &self.d.loaded.config;
        let idle_service = config.service(t.to);
        let old_image = t.from_image.as_deref().unwrap_or("?");
        let failed = |message: String| -> anyhow::Error { Failed { message, abort }.into() };
        if let Err(old_why) = self.healthy_now(old) {
            self.clock.note(format!(
                "not switching back: {old} is not healthy either ({old_why})"
            ));
            return failed(format!(
                "deploy failed: {} failed in the settle window after the switch ({why}), and \
                 {old} ({old_image}) is not healthy either ({old_why}): no healthy color exists\n\
                 nginx stays on {}, which may still answer some requests; neither color was \
                 stopped (see `cutover status`)",
                t.to, t.to
            ));
        }
        self.clock.start(Step::Switch, format!("back to {old}"));
        let workers = self.workers_before_switch();
        let switched = self.switch_to(old, false);
        let (switched, old_include) = match switched {
            Ok(pair) => pair,
            Err(e) => {
                self.clock
                    .failed(Step::Switch, format!("could not go back to {old}"));
                return failed(format!(
                    "deploy failed: {} failed in the settle window after the switch ({why}), and \
                     switching nginx back to {old} failed too: {e:#}\n\
                     nginx still points at {}; {old} ({old_image}) runs; {idle_service} was left in place",
                    t.to, t.to
                ));
            }
        };
        if let Err(probe) = switch::probe_through_nginx(config, old, &old_include, &workers) {
            let restored = match self.undo(switched) {
                Ok(()) => format!("the include is back on {}", t.to),
                Err(e) => format!(
                    "putting the include back on {} failed too ({e:#}): check nginx by hand",
                    t.to
                ),
            };
            self.clock
                .failed(Step::Switch, format!("nginx did not serve {old}"));
            return failed(format!(
                "deploy failed: {} failed in the settle window after the switch ({why}), and \
                 nginx did not serve {old} after switching back ({probe}); {restored}\n\
                 {old} ({old_image}) runs; {idle_service} was left in place",
                t.to
            ));
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
        let what = match abort {
            Abort::Interrupted => format!("{} was being watched after the switch", t.to),
            _ => format!(
                "{} failed in the settle window after the switch: {why}",
                t.to
            ),
        };
        self.abort_before_switch(
            &idle_service,
            &format!(
                "{what}\nnginx switched back to {old} ({old_image}), which kept running and \
                 answers its health check"
            ),
            abort,
        )
    }

    /// nginx to `color`'s address alone (written, tested, reloaded; in nft mode the rule's
    /// both ports to `color`, no reload), with the include's text for the probe that proves
    /// it. `beside`: in nft mode, the table's replacement may run beside what follows
    /// (`Run::nft_route`).
    fn switch_to(&self, color: Color, beside: bool) -> anyhow::Result<(Undo, String)> {
        if self.switch_used == super::nft_switch::Used::Nft {
            let (text, _reloaded, undo) = self.nft_route(color, color, beside)?;
            return Ok((Undo::Nft(undo), text));
        }
        let text = self.include_text(color, Route::Direct)?;
        Ok((Undo::Include(self.nginx.switch(&text)?), text))
    }

    /// The nginx workers that may still route by the include before a switch: none in nft
    /// mode, where a switch reloads nothing (only connections can hold the old color).
    fn workers_before_switch(&self) -> Vec<u32> {
        match self.switch_used {
            super::nft_switch::Used::Nft => Vec::new(),
            super::nft_switch::Used::Reload => self.nginx.worker_pids(),
        }
    }

    fn undo(&self, undo: Undo) -> anyhow::Result<()> {
        match undo {
            Undo::Include(sw) => sw.restore(&self.nginx),
            Undo::Nft(undo) => self.nft_undo(undo),
        }
    }

    /// Whether `color` runs and answers its health check right now, in words when not.
    fn healthy_now(&self, color: Color) -> Result<(), String> {
        let loaded = self.d.loaded;
        let service = loaded.config.service(color);
        let containers = self
            .project
            .containers()
            .map_err(|e| format!("docker could not say whether {service} runs: {e}"))?;
        let health = &loaded.config.app.health;
        let prober = Prober::new(health.probe_timeout.get());
        match color_health(loaded, &containers, color, &prober) {
            ColorHealth::Healthy => Ok(()),
            ColorHealth::Unhealthy(answer) => Err(format!(
                "{} answered {}",
                super::health_url(loaded, color),
                answer.describe()
            )),
            ColorHealth::NotRunning(c) => Err(format!(
                "{service} is {} (exit code {})",
                c.state,
                c.exit_code.unwrap_or_default()
            )),
            ColorHealth::NoContainer => Err(format!("{service} is gone")),
        }
    }
}

/// What puts a settle-window switch back.
pub(super) enum Undo {
    Include(crate::nginx::Switch),
    Nft(super::nft_switch::Undo),
}

/// How a watch window ended early.
#[derive(Debug)]
pub(super) enum Unsettled {
    /// The new color died or failed its checks: why, in words.
    Failed(String),
    /// SIGINT/SIGTERM: the user wants out, and the old color still runs.
    Interrupted,
}

/// Watches `to` for `window`, ending within a slice of an interrupt (`interrupted`).
pub(super) fn watch(
    loaded: &Loaded,
    project: &Project,
    to: Color,
    window: Duration,
    clock: &mut StepClock,
    interrupted: &std::sync::atomic::AtomicBool,
) -> Result<(), Unsettled> {
    let is_interrupted = || interrupted.load(std::sync::atomic::Ordering::SeqCst);
    let health = &loaded.config.app.health;
    let service = loaded.config.service(to);
    let url = super::health_url(loaded, to);
    let prober = Prober::new(health.probe_timeout.get());
    let watcher = Watcher::spawn(project.clone(), service, to);
    let started = Instant::now();
    let mut failures_in_a_row = 0;
    // At most as many failed checks in a row as the window can see at the poll interval,
    // less the first (taken at once, while the new color may still answer): with
    // `healthy_checks` above that, a color failing every later poll would have settled.
    let polls = window.as_nanos() / health.interval.get().as_nanos().max(1);
    let can_see = polls.saturating_sub(1).max(1);
    let fail_after = u32::try_from(can_see)
        .unwrap_or(u32::MAX)
        .min(health.healthy_checks);
    let result = loop {
        if let Some(why) = watcher.death() {
            break Err(Unsettled::Failed(why));
        }
        if is_interrupted() {
            break Err(Unsettled::Interrupted);
        }
        let elapsed = started.elapsed();
        if elapsed >= window {
            break match watcher.final_look() {
                Some(why) => Err(Unsettled::Failed(why)),
                None => Ok(()),
            };
        }
        let answer = prober.get(&url, None);
        let healthy = matches!(answer, Answer::Status { code, .. } if code == health.status);
        failures_in_a_row = if healthy { 0 } else { failures_in_a_row + 1 };
        if failures_in_a_row >= fail_after {
            break Err(Unsettled::Failed(format!(
                "{url} failed {failures_in_a_row} health checks in a row (last answered {})",
                answer.describe()
            )));
        }
        clock.waiting(Step::Settle, elapsed, window, answer.describe());
        // Sliced, so a death the watcher sees ends the window within a slice.
        let rest = window.saturating_sub(started.elapsed());
        crate::health::sleep_unless(
            health.interval.get().min(rest),
            crate::health::SLICE,
            || watcher.death().is_some() || is_interrupted(),
        );
    };
    watcher.finish();
    result
}
