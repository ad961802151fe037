//! The signals `cutover --host` catches while it runs: SIGINT, and SIGTERM/SIGHUP, held as
//! flags and forwarded to the box as control lines (see `on_box.rs`), never acted on here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

/// SIGINT, and SIGTERM/SIGHUP, caught as flags while `--host` runs, then forwarded.
pub(super) struct Signals {
    pub(super) interrupt: Arc<AtomicBool>,
    pub(super) terminate: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    pub(super) fn install() -> anyhow::Result<Signals> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for (signal, flag) in [
            (signal_hook::consts::SIGINT, &interrupt),
            (signal_hook::consts::SIGTERM, &terminate),
            (signal_hook::consts::SIGHUP, &terminate),
        ] {
            ids.push(
                signal_hook::flag::register(signal, Arc::clone(flag))
                    .context("could not install signal handlers")?,
            );
        }
        Ok(Signals {
            interrupt,
            terminate,
            ids,
        })
    }

    pub(super) fn any(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst) || self.terminate.load(Ordering::SeqCst)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
