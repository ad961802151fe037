//! Unit tests only: stand-ins for captured subprocesses, so engine tests walk the deploy
//! state machine without docker or nginx, in milliseconds. A stand-in answers only the
//! commands it claims (its project name, container ids or program names appear in them), so
//! tests running in parallel, each with its own stand-in, never answer each other's commands,
//! and every other command runs for real.

use std::sync::{Arc, Mutex};

use super::{Cmd, Output, ProcessError};

/// A stand-in for some subprocesses.
pub(crate) trait Fake: Send + Sync {
    /// The answer to `argv`, or None when the command is not this stand-in's.
    fn answer(&self, argv: &[String], cmd: &Cmd) -> Option<Result<Output, ProcessError>>;
}

static FAKES: Mutex<Vec<Arc<dyn Fake>>> = Mutex::new(Vec::new());

/// Puts `fake` in front of the subprocesses it claims until the guard drops.
pub(crate) fn install(fake: Arc<dyn Fake>) -> Installed {
    FAKES.lock().unwrap().push(Arc::clone(&fake));
    Installed(fake)
}

pub(crate) struct Installed(Arc<dyn Fake>);

impl Drop for Installed {
    fn drop(&mut self) {
        FAKES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|f| !Arc::ptr_eq(f, &self.0));
    }
}

/// The answer of the stand-in that claims `cmd`, if one does.
pub(super) fn answer(cmd: &Cmd) -> Option<Result<Output, ProcessError>> {
    let fakes: Vec<Arc<dyn Fake>> = FAKES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let argv = cmd.argv();
    fakes.iter().find_map(|f| f.answer(&argv, cmd))
}

/// A finished command's output.
pub(crate) fn exited(code: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}
