//! The images of the release-phase, hook and `cutover run` tests: the demo image's `task`
//! mode, in a repository of its own (other tests' deploys prune `cutover-demo`):
//! `cutover-demo-lifecycle:v1` / `:v2` (`scripts/demo-image.sh --repo cutover-demo-lifecycle
//! v1 v2`; scripts/test.sh builds them), their gate and their app.

use crate::harness::common::require_images;
use crate::harness::project::{ready, App};

pub const H1: &str = "cutover-demo-lifecycle:v1";
pub const H2: &str = "cutover-demo-lifecycle:v2";

/// The `scripts/demo-image.sh` call that builds [`H1`] and [`H2`].
pub const BUILD: &str = "scripts/demo-image.sh --repo cutover-demo-lifecycle v1 v2";

/// [`ready`] plus the `task`-mode images.
pub fn lifecycle_ready() -> bool {
    ready() && require_images(&[H1, H2], BUILD)
}

/// The app of the release and `run` tests: the `task`-mode repository, with the demo secrets.
pub fn lifecycle_app() -> App {
    App::compose().image("cutover-demo-lifecycle").secrets()
}
