//! nft mode, as root: the table's replacement run beside a wait that follows anyway.
//!
//! A switch that moves the rule leads first (`crate::nft::lead`, an add-only transaction fed
//! to an `nft` primed ahead: ~2 ms), and from then on the kernel routes new connections as
//! wanted. The replacement that follows (the whole table rewritten, proven by nft's echo, and
//! saved for the boot restore) waits 8–20 ms for the kernel's readers of the old rules: it
//! deletes rules, and every deletion does. Where a wait follows the switch anyway, that
//! replacement runs on a thread beside the wait instead of before it, and is waited for where
//! its outcome decides something:
//!
//! - the switch into a watch window: beside the window, waited for at its end, when the old
//!   color still runs; a failed replacement fails the window, which switches back;
//! - the window's close: beside the probe, the drain and the stop, waited for before the
//!   record. A failure there cannot undo a stop, and needs no undo: the led rules route both
//!   ports to the new color, and the old rules they lead past go to the old color only as
//!   nginx's backup. It is a note, naming what is left (the saved ruleset may still name the
//!   old color as the backup), and the next deploy replaces the table.
//!
//! Nothing else writes or reads the rule while a replacement is pending: every write
//! (`nft_route`, `nft_undo`) waits for it first. A replacement still running when the run
//! ends is waited for when it drops, so no `nft` of this deploy outlives it.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::config::Color;
use crate::nft::Mapping;

use super::Run;

/// A table replacement running on a thread of its own; waited for by [`Replacing::wait`],
/// or when dropped.
pub(super) struct Replacing {
    table: String,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Replacing {
    /// Starts `crate::nft::switch` of `project` to `mapping`, saving into `dir`.
    fn start(project: &str, mapping: Mapping, dir: PathBuf) -> Replacing {
        let owned = project.to_string();
        Replacing {
            table: crate::nft::table(project),
            thread: Some(std::thread::spawn(move || {
                crate::nft::switch(&owned, &mapping, &dir)
            })),
        }
    }

    /// Its outcome: the replacement's error, or its panic in words.
    fn wait(mut self) -> anyhow::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(anyhow::anyhow!(
                "the replacement of table ip {} panicked",
                self.table
            )),
        }
    }
}

impl Drop for Replacing {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Run<'_, '_> {
    /// Leads the rule to `wanted` now (with `primed`, the `nft` started ahead, if any), after
    /// checking where its ruleset will be saved, then replaces the table beside what follows
    /// ([`Run::replaced`] waits for it). A lead that fails (no table, no chain) is followed
    /// by the replacement here and now, as a switch without a lead would be.
    pub(super) fn lead_then_replace_beside(
        &self,
        wanted: &Mapping,
        primed: Option<crate::nft::Primed>,
    ) -> anyhow::Result<()> {
        let project = self.d.loaded.config.project.as_str();
        let dir = crate::nft::saved_dir();
        crate::nft::save_path(&dir, project)?;
        if crate::nft::run_lead(project, wanted, primed).is_err() {
            return crate::nft::switch(project, wanted, &dir);
        }
        self.replacing
            .set(Some(Replacing::start(project, *wanted, dir)));
        Ok(())
    }

    /// Waits for a replacement begun beside ([`Run::lead_then_replace_beside`]); none
    /// pending is `Ok`. A failed one leaves the rule not known (the next write reads it).
    pub(super) fn replaced(&self) -> anyhow::Result<()> {
        let Some(replacing) = self.replacing.take() else {
            return Ok(());
        };
        replacing.wait().inspect_err(|_| self.rule.set(None))
    }

    /// After the old color stopped: the close's replacement waited for, a note when it
    /// failed (see the module doc: the led rules route `to` on both ports).
    pub(super) fn close_replaced(&self, to: Color, old: Option<Color>) -> Option<String> {
        let e = self.replaced().err()?;
        let config = &self.d.loaded.config;
        let table = crate::nft::table(config.project.as_str());
        let backup = old.map_or(String::new(), |old| {
            format!(
                " may still lead nginx's backup to port {} ({old}), and",
                config.colors.port(old)
            )
        });
        Some(format!(
            "the nft rule leads both switch ports to {to} (the watch window's close led them \
             there), but replacing table ip {table} after it failed ({e:#}): the ruleset saved \
             for the boot restore{backup} the table holds the close's rules in front of the \
             older ones; the next deploy replaces it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replacing(work: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> Replacing {
        Replacing {
            table: "cutover_p".into(),
            thread: Some(std::thread::spawn(work)),
        }
    }

    #[test]
    fn a_replacement_is_waited_for_with_its_outcome_and_its_panic_in_words() {
        assert!(replacing(|| Ok(())).wait().is_ok());
        let failed = replacing(|| anyhow::bail!("nft: Cannot allocate memory"));
        assert_eq!(
            failed.wait().unwrap_err().to_string(),
            "nft: Cannot allocate memory"
        );
        let panicked = replacing(|| panic!("boom")).wait().unwrap_err();
        assert_eq!(
            panicked.to_string(),
            "the replacement of table ip cutover_p panicked"
        );
    }

    /// Dropped unwaited (a run that ended early), it is waited for all the same: no `nft`
    /// of the run outlives it.
    #[test]
    fn a_replacement_dropped_unwaited_is_waited_for() {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::clone(&done);
        drop(replacing(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }));
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
