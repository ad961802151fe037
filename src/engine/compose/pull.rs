//! The `pull` step (after observe, before the memory budget and `up`): with `registry:` in
//! the config and an image from that registry, `docker login` with the password from the
//! decrypted secrets, then `docker pull`, so a bad credential, a missing tag or an unreachable
//! registry fails the deploy before anything changed, saying which.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{Run, Target};
use crate::docker::registry::{self, PULL_TIMEOUT};
use crate::engine::{Request, Step};

impl Run<'_, '_> {
    /// Whether this deploy pulls: `registry:` is set and serves the image.
    pub(super) fn pulls(&self, t: &Target) -> bool {
        self.d
            .loaded
            .config
            .registry
            .as_ref()
            .is_some_and(|reg| reg.serves(&t.image))
    }

    pub(super) fn pull(&mut self, req: &Request, t: &Target) -> anyhow::Result<()> {
        let Some(reg) = self
            .d
            .loaded
            .config
            .registry
            .as_ref()
            .filter(|_| self.pulls(t))
        else {
            return Ok(());
        };
        let server = &reg.server.0;
        if req.dry_run {
            self.clock.note(format!(
                "dry run: would log in to {server} as {} and pull {}",
                reg.username, t.image
            ));
            return Ok(());
        }
        let password = self
            .d
            .values()
            .get(&reg.password_secret.0)
            .with_context(|| {
                format!(
                    "registry.password_secret: `{}` is not a key of the decrypted secrets files \
                 (app.secrets / accessories); add it to one with `cutover secrets edit`",
                    reg.password_secret.0
                )
            })?;
        self.clock
            .start(Step::Pull, format!("{} from {server}", t.image));
        registry::login(reg, password, &t.image)?;
        let started = Instant::now();
        let image = t.image.clone();
        let worker = {
            let reg = reg.clone();
            std::thread::spawn(move || registry::pull(&reg, &image))
        };
        let mut last_report = Instant::now();
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                self.clock.waiting(
                    Step::Pull,
                    started.elapsed(),
                    PULL_TIMEOUT,
                    format!("pulling {}", t.image),
                );
            }
        }
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("the docker pull thread panicked"))??;
        self.clock.done(
            Step::Pull,
            format!("{} from {server} (logged in as {})", t.image, reg.username),
        );
        Ok(())
    }
}
