//! The two deploy engines and what they share.
//!
//! [`compose`] is cutover's own blue/green switch behind nginx (docs/ARCHITECTURE.md, "The
//! deploy state machine"); [`swarm`] hands the rolling update to docker swarm and follows it
//! to a verdict.
//! Both take the same [`Request`], report the same [`Event`]s (named by [`Step`]) to a
//! [`Reporter`], time their steps with a [`StepClock`], fail with [`Failed`] (carrying an
//! [`Abort`] saying why), and take the same lock and append to the same history
//! ([`record`]). The engines print nothing; `cmd/` does.

pub mod compose;
pub mod event;
pub mod failure;
pub mod hooks;
pub mod maintenance;
pub mod record;
pub mod request;
pub mod step;
pub mod swarm;

pub use event::{Event, Reporter};
pub use failure::{Abort, Failed};
pub use request::Request;
pub use step::{Step, StepClock, StepTiming};

use serde::Serialize;

use crate::state::{Action, EngineKind};

/// The outcome of a deploy (or its plan, for `--dry-run`), on either engine: the shared
/// fields, and the engine's own (`D`) flattened beside them in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary<D> {
    pub engine: EngineKind,
    pub action: Action,
    pub image: String,
    pub first_deploy: bool,
    pub dry_run: bool,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
    pub notes: Vec<String>,
    /// For --dry-run: what would run, in order.
    pub plan: Vec<PlanItem>,
    /// For --dry-run: the steps the deploy will record when it succeeds, in order (the
    /// same list it runs; the compose engine).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan_steps: Vec<Step>,
    #[serde(flatten)]
    pub detail: D,
}

/// One operation of a `--dry-run` plan: the step it is recorded as (None: an operation that
/// is no step of its own, such as writing the compose file, a hook or the record) and what
/// it does, for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub step: Option<Step>,
    pub detail: String,
}

impl PlanItem {
    pub fn new(step: impl Into<Option<Step>>, detail: String) -> PlanItem {
        PlanItem {
            step: step.into(),
            detail,
        }
    }
}

/// How this box's nginx site lets an include route (`render::Route`): read from the site
/// file as installed (`nginx.site`), since `bootstrap` installs it once and an older
/// cutover's site declares no upstream groups. An include naming a group the site lacks
/// would fail every request, so an unreadable site means the direct route.
pub fn site_route(config: &crate::config::Config) -> crate::render::Route {
    let site = std::fs::read_to_string(&config.nginx.site).ok();
    crate::render::Route::for_site(config, site.as_deref())
}
