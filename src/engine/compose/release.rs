//! The release phase (`app.release`): the user's command (migrations, asset uploads) runs
//! once per deploy in a one-off container of the NEW color's service (`compose run --rm
//! --no-deps -T`, see `docker/oneoff.rs`), after the accessories are up and before the new
//! color starts, with the app's environment and secrets.
//!
//! Its failure (non-zero exit, `app.release_timeout`, an interrupt) fails the deploy with
//! nothing changed: the new color never started, nginx was not touched, the one-off
//! container is killed and removed. Its output is shown as it comes and its last lines are in
//! the error, every decrypted value masked as `***`. A rollback skips it unless `--release`.

use crate::docker::oneoff::OneOff;
use crate::engine::{Abort, Event, Failed, Step};
use crate::process::Bounded;
use crate::secrets::deploy_env::redact;

use super::{Run, Target};

impl Run<'_, '_> {
    /// The release command, when configured; `run` is false on a rollback without
    /// `--release`, which only says so.
    pub(super) fn release(&mut self, run: bool, t: &Target) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        let Some(argv) = &config.app.release else {
            return Ok(());
        };
        let shown = argv.0.join(" ");
        if !run {
            self.clock.note(format!(
                "release phase `{shown}` not run (a rollback runs it only with --release)"
            ));
            return Ok(());
        }
        self.set_step(Step::Release);
        let service = config.service(t.to);
        let detail = format!("{service} ({}): {shown}", t.image);
        self.clock.start(Step::Release, detail);
        let oneoff = OneOff::new(
            &self.project,
            service,
            "release",
            &argv.0,
            super::secret_files::compose_env(self.d),
        );
        let secrets = self.d.values();
        let reporter = self.clock.reporter();
        let ran = oneoff.run_bounded(
            config.app.release_timeout.get(),
            &self.d.interrupted,
            "run the release command",
            &mut |line| {
                reporter.event(Event::Output {
                    from: "release".into(),
                    line: redact(line, secrets),
                })
            },
        );
        let verdict = match &ran {
            Ok(out) if out.success() => None,
            Ok(out) => Some(self.release_failure(&shown, out)),
            Err(e) => Some((
                format!("could not run `{shown}`: {e}"),
                Abort::ReleaseFailed,
            )),
        };
        let Some((why, abort)) = verdict else {
            self.clock
                .done(Step::Release, format!("`{shown}` exited 0"));
            return Ok(());
        };
        // Timed like any step, so history records how long a failed release ran.
        self.clock.failed(Step::Release, "failed");
        // The new color never starts: its secret files (files mode) go too.
        if let Some(note) = self.remove_secret_files(&config.service(t.to)) {
            self.clock.note(note);
        }
        let unchanged = match self.from {
            Some(old) => format!("nginx still serves {old}"),
            None => "nothing served before this deploy".to_string(),
        };
        Err(Failed {
            message: format!(
                "deploy failed: {why}\nthe new color was not started; {unchanged}; the one-off container was removed"
            ),
            abort,
        }
        .into())
    }

    fn release_failure(&self, shown: &str, out: &Bounded) -> (String, Abort) {
        let interrupted = out.cancelled;
        let how = match (out.timed_out, out.code) {
            _ if interrupted => "was interrupted and killed".to_string(),
            (true, _) => format!(
                "timed out after {} (app.release_timeout) and was killed",
                self.d.loaded.config.app.release_timeout
            ),
            (false, Some(code)) => format!("exited {code}"),
            (false, None) => "was killed by a signal".to_string(),
        };
        let mut why = format!("the release command `{shown}` {how}");
        if !out.tail.is_empty() {
            why.push_str("\nlast output lines of the release command:");
            for line in &out.tail {
                why.push_str(&format!("\n    {}", redact(line, self.d.values())));
            }
        }
        let abort = if interrupted {
            Abort::Interrupted
        } else {
            Abort::ReleaseFailed
        };
        (why, abort)
    }
}
