//! The images of the workers tests (and of `logs`/`exec`): `cutover-demo-workers:v1` / `:v2`
//! (`scripts/demo-image.sh --repo cutover-demo-workers v1 v2`: the demo binary, whose `worker`
//! mode ticks and `exit N` mode exits with N), a repository of their own: other tests prune
//! `cutover-demo`, and which tree last rebuilt the shared v1/v2 must not matter here. Their
//! gate and their app.

use serde_json::Value;

use crate::harness::common::{loud, require};
use crate::harness::project::App;

pub const REPO: &str = "cutover-demo-workers";
pub const W1: &str = "cutover-demo-workers:v1";
pub const W2: &str = "cutover-demo-workers:v2";

/// Docker, nginx and [`W1`] / [`W2`]; without them the test is skipped loudly (and fails
/// under CI).
pub fn ready() -> bool {
    if !require("docker", "run end-to-end deploys") || !require("nginx", "run end-to-end deploys") {
        return false;
    }
    if [W1, W2].iter().all(|i| cutover::docker::images::exists(i)) {
        return true;
    }
    let msg = "demo images cutover-demo-workers:v1/v2 are missing (run scripts/demo-image.sh --repo cutover-demo-workers v1 v2)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI is set, so this is a failure");
    }
    loud(&format!("*** SKIPPED: {msg} ***"));
    false
}

/// The demo app of the workers repository, with `workers`.
pub fn app(workers: Value) -> App {
    App::compose()
        .image(REPO)
        .startup_delay_ms(200)
        .workers(workers)
}
