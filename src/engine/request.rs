//! What the user asked an engine for.

use std::time::Duration;

use crate::state::Action;

#[derive(Debug, Clone)]
pub struct Request {
    /// The image to deploy; `None` redeploys the running image (or, for a compose rollback,
    /// the previous one).
    pub image: Option<String>,
    pub action: Action,
    pub dry_run: bool,
    /// Deploy despite the memory budget (compose only).
    pub force: bool,
    pub lock_wait: Duration,
    /// Run the release phase (`app.release`): every deploy; a rollback only with `--release`.
    pub release: bool,
    /// How long decrypting the secrets took, in `cmd/` before the engine (a missing identity
    /// fails before anything is touched): the run's first step, `decrypt`, in its history
    /// entry and its document alike.
    pub decrypted: Duration,
}
