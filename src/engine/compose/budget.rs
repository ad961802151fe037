//! Step 3, the memory budget: what this deploy starts on top of what runs now must fit in
//! MemAvailable + SwapFree, or the deploy stops before anything changes (`--force` goes on).
//!
//! Both web colors run during the overlap, so a deploy needs one more `app.memory`; a first
//! deploy also starts the accessories. The workers move after the old color has stopped, so
//! they count against the same headroom: a worker that does not run yet, or one with
//! `overlap: true` (old and new side by side), counts once more. The larger of the two peaks
//! is what is asked for (a first deploy stops nothing, so there everything adds up).

use anyhow::bail;

use crate::engine::Request;
use crate::host::MemInfo;

use super::{workers, Run, Target};

impl Run<'_, '_> {
    pub(super) fn budget(&mut self, req: &Request, t: &Target) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        let accessories = if t.from.is_none() {
            config
                .accessories
                .values()
                .map(|a| a.memory.bytes())
                .sum::<u64>()
        } else {
            0
        };
        let workers = workers::extra_memory(&workers::moves(config, &t.observed));
        let app = config.app.memory.bytes();
        // With nothing running (a first deploy, a recovery) nothing stops before the workers
        // start.
        let need = if t.from.is_none() {
            app + accessories + workers
        } else {
            app.max(workers)
        };
        let mem = MemInfo::read()?;
        if mem.headroom() >= need {
            return Ok(());
        }
        let what = match (t.from.is_none(), workers > 0) {
            (true, false) => "app and its accessories",
            (true, true) => "app, its accessories and workers",
            (false, false) => "color during the overlap",
            (false, true) => "color during the overlap, or the workers after it",
        };
        let msg = format!(
            "not enough memory for another {what}: it needs {} MiB (deploy.resources.limits.memory{}), but MemAvailable {} MiB + SwapFree {} MiB = {} MiB",
            need >> 20,
            if workers > 0 { format!("; workers {} MiB", workers >> 20) } else { String::new() },
            mem.available >> 20,
            mem.swap_free >> 20,
            mem.headroom() >> 20
        );
        if !req.force {
            bail!("{msg}; add swap (`cutover bootstrap --swap auto`) or pass --force");
        }
        self.clock
            .note(format!("{msg}; going on because of --force"));
        Ok(())
    }
}
