//! `workers:`: processes from the app's image that are not the web app (a collector, a
//! scheduler, a queue consumer). Each runs as its own compose service per color
//! (`<app>-<worker>-blue` / `-green`), with the app's environment and secrets, a memory
//! limit, and no port: nginx never routes to a worker.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::scalars::{deserialize_memory, deserialize_positive_dur, CommandLine, Dur, Size};

/// One worker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// What the container runs (the image's entrypoint stays).
    pub command: CommandLine,
    /// `deploy.resources.limits.memory`.
    #[serde(deserialize_with = "deserialize_memory")]
    pub memory: Size,
    /// false (default): the old worker stops before the new one starts (a scheduler must
    /// never run twice); true: the new one starts first, then the old one stops.
    #[serde(default, deserialize_with = "deserialize_overlap")]
    pub overlap: bool,
    /// A container healthcheck; the worker counts as up once it reports healthy.
    #[serde(default)]
    pub health: Option<WorkerHealth>,
    /// Without `health`: how long the new worker must keep running to count as up.
    #[serde(default = "default_settle")]
    pub settle: Dur,
}

/// `workers.NAME.health`: the container healthcheck (`healthcheck:` in the compose file).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerHealth {
    /// Run inside the container: a list is exec'd (`CMD`), a string goes to `sh -c`
    /// (`CMD-SHELL`, so the image needs a shell).
    pub command: CommandLine,
    #[serde(
        default = "default_interval",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub interval: Dur,
    /// How long the deploy waits for `healthy`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub timeout: Dur,
}

/// `true`/`false` with a message that says so (the YAML layer's own is "invalid boolean").
fn deserialize_overlap<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("`true` or `false`")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
            Err(E::custom(format!(
                "expected `true` (start the new worker first) or `false` (stop the old one first), got `{v}`"
            )))
        }
    }
    d.deserialize_any(V)
}

fn default_settle() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
