//! The signals `cutover --host` catches while it runs: SIGINT, and SIGTERM/SIGHUP, held as
//! flags and forwarded to the box as control lines (`control.rs`), never acted on here. The
//! box's relay (`on_box.rs`) catches the same ones and forwards them to its worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

use super::control::Signal;

/// SIGINT, and SIGTERM/SIGHUP, caught as flags while `--host` runs, then forwarded.
pub(super) struct Signals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
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

    /// The signals caught since the last call, each once, to forward.
    pub(super) fn take(&self) -> Vec<Signal> {
        [
            (&self.interrupt, Signal::Interrupt),
            (&self.terminate, Signal::Terminate),
        ]
        .into_iter()
        .filter(|(flag, _)| flag.swap(false, Ordering::SeqCst))
        .map(|(_, signal)| signal)
        .collect()
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
