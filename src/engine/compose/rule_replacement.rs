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
//!   color still runs; a failed replacement is tried once more there, and failing again it
//!   fails the window, which switches back;
//! - the window's close: beside the probe, the drain and the stop, waited for before the
//!   record. A failure there cannot undo a stop, and needs no undo: the led rules route both
//!   ports to the new color, and the old rules they lead past go to the old color only as
//!   nginx's backup. It is a note, naming what is left (the saved ruleset may still name the
//!   old color as the backup), and the next deploy replaces the table.
//!
//! Nothing else of this run writes the rule while a replacement is pending: every write
//! (`nft_route`, `nft_undo`) waits for it first. A replacement still running when the run
//! ends is waited for when it drops, so no `nft` of this deploy outlives it. Another process
//! that reads the rule meanwhile (`cutover status`) reads the led rules: the first rule for a
//! port is the one the kernel applies, and the one `crate::nft::read` takes. The ruleset is
//! written to its temp file before the lead, so a full or read-only disk fails the route
//! before the kernel changes, as it did when the replacement came first.

use std::thread::JoinHandle;

use crate::config::Color;
use crate::nft::Mapping;

use super::nft_switch::{mapping, read};
use super::Run;

/// A table replacement running on a thread of its own; waited for by [`Replacing::wait`],
/// or when dropped.
pub(super) struct Replacing {
    table: String,
    /// What it replaces the table with: what the lead before it routed to.
    mapping: Mapping,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How a replacement on its thread failed.
enum Failure {
    /// It returned this error: worth one more try where the old color still runs.
    Failed(anyhow::Error),
    /// It panicked: the same code again would too.
    Panicked,
}

impl Failure {
    fn into_error(self, table: &str) -> anyhow::Error {
        match self {
            Failure::Failed(e) => e,
            Failure::Panicked => {
                anyhow::anyhow!("the replacement of table ip {table} panicked")
            }
        }
    }
}

impl Replacing {
    /// Starts applying `prepared` (of `project`, to `mapping`) on a thread.
    fn start(project: &str, mapping: Mapping, prepared: crate::nft::Prepared) -> Replacing {
        Replacing {
            table: crate::nft::table(project),
            mapping,
            thread: Some(std::thread::spawn(move || prepared.apply())),
        }
    }

    /// Its outcome.
    fn wait(mut self) -> Result<(), Failure> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(Failure::Failed(e)),
            Some(Err(_)) => Err(Failure::Panicked),
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
    /// Leads the rule to `wanted` now (with `primed`, the `nft` started ahead, if any), once
    /// its ruleset is written where it will be saved from (a full or read-only disk fails the
    /// route before the kernel changes, as a switch without a lead would), then replaces the
    /// table beside what follows ([`Run::replaced`] waits for it). A lead that fails (no
    /// table, no chain) is followed by the replacement here and now.
    pub(super) fn lead_then_replace_beside(
        &self,
        wanted: &Mapping,
        primed: Option<crate::nft::Primed>,
    ) -> anyhow::Result<()> {
        let project = self.d.loaded.config.project.as_str();
        let prepared = crate::nft::prepare(project, wanted, &crate::nft::saved_dir())?;
        if crate::nft::run_lead(project, wanted, primed).is_err() {
            return prepared.apply();
        }
        self.replacing
            .set(Some(Replacing::start(project, *wanted, prepared)));
        Ok(())
    }

    /// Waits for a replacement begun beside ([`Run::lead_then_replace_beside`]); none
    /// pending is `Ok`. A failed one leaves the rule not known (the next write reads it).
    pub(super) fn replaced(&self) -> anyhow::Result<()> {
        let Some(replacing) = self.replacing.take() else {
            return Ok(());
        };
        let table = replacing.table.clone();
        replacing.wait().map_err(|failure| {
            self.rule.set(None);
            failure.into_error(&table)
        })
    }

    /// The switch's replacement, waited for at the watch window's end; one that failed (not
    /// one that panicked) is tried once more, here, while the old color still runs (a disk
    /// that filled for a moment, an `nft` killed), to the mapping the switch led to. A note
    /// says it was.
    pub(super) fn replaced_or_again(&mut self) -> anyhow::Result<()> {
        let Some(replacing) = self.replacing.take() else {
            return Ok(());
        };
        let (table, wanted) = (replacing.table.clone(), replacing.mapping);
        let first = match replacing.wait() {
            Ok(()) => return Ok(()),
            Err(Failure::Failed(e)) => e,
            Err(panicked) => {
                self.rule.set(None);
                return Err(panicked.into_error(&table));
            }
        };
        let project = self.d.loaded.config.project.as_str();
        match crate::nft::switch(project, &wanted, &crate::nft::saved_dir()) {
            Ok(()) => {
                self.rule.set(Some(Some(wanted)));
                self.clock.note(format!(
                    "replacing the nft rule's table beside the watch window failed ({first:#}); \
                     it was replaced at the window's end"
                ));
                Ok(())
            }
            Err(again) => {
                self.rule.set(None);
                Err(anyhow::anyhow!(
                    "{first:#}; and again at the window's end: {again:#}"
                ))
            }
        }
    }

    /// After the old color stopped: the close's replacement waited for, a note when it
    /// failed, with the rule read back (see the module doc: the led rules route `to` on both
    /// ports, whatever the replacement left).
    pub(super) fn close_replaced(&self, to: Color, old: Option<Color>) -> Option<String> {
        let e = self.replaced().err()?;
        let config = &self.d.loaded.config;
        let table = crate::nft::table(config.project.as_str());
        let read = match read(config) {
            Ok(Some(m)) if Some(m) == mapping(config, to, to) => format!(
                "the kernel leads both switch ports to {to} (read back), as the window's close led them"
            ),
            Ok(Some(m)) => format!(
                "the kernel leads port {} to port {} and port {} to port {} (read back)",
                m.primary, m.primary_to, m.backup, m.backup_to
            ),
            Ok(None) => format!("table ip {table} is gone (read back)"),
            Err(e) => format!("reading the rule back failed too ({e:#})"),
        };
        let backup = old.map_or(String::new(), |old| {
            format!(
                " may still lead nginx's backup to port {} ({old}), and",
                config.colors.port(old)
            )
        });
        Some(format!(
            "replacing table ip {table} after the watch window's close failed ({e:#}): {read}; \
             the ruleset saved for the boot restore{backup} the table may hold the close's rules \
             in front of older ones; the next deploy replaces both"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replacing(work: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> Replacing {
        Replacing {
            table: "cutover_p".into(),
            mapping: Mapping {
                primary: 9100,
                primary_to: 9012,
                backup: 9101,
                backup_to: 9011,
            },
            thread: Some(std::thread::spawn(work)),
        }
    }

    /// A failure is told apart from a panic: only the first is worth a second try.
    #[test]
    fn a_replacement_is_waited_for_with_its_outcome_and_its_panic_in_words() {
        assert!(replacing(|| Ok(())).wait().is_ok());
        match replacing(|| anyhow::bail!("nft: Cannot allocate memory")).wait() {
            Err(Failure::Failed(e)) => assert_eq!(e.to_string(), "nft: Cannot allocate memory"),
            _ => panic!("a failure is Failed"),
        }
        match replacing(|| panic!("boom")).wait() {
            Err(panicked @ Failure::Panicked) => assert_eq!(
                panicked.into_error("cutover_p").to_string(),
                "the replacement of table ip cutover_p panicked"
            ),
            _ => panic!("a panic is Panicked"),
        }
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
