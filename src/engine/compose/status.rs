//! `status` for the compose engine: which color nginx serves (asked through its probe) and
//! which one its include names, each color's container, image and health (asked directly),
//! the accessories, the last deploy (read from the end of the history, not the whole log),
//! and where nginx, the containers and the record disagree.

use std::time::Duration;

use serde::Serialize;

use crate::config::{Color, Loaded};
use crate::docker::compose::Container;
use crate::health::Prober;
use crate::state::{HistoryEntry, StateDir};

use super::observe::{color_health, observe, ColorHealth, Served};

#[derive(Serialize)]
pub struct ColorStatus {
    pub color: Color,
    pub service: String,
    pub port: u16,
    pub active: bool,
    pub container: Option<String>,
    pub image: Option<String>,
    pub health: String,
}

/// A worker as the engine runs it: its color (None: no running container) and image.
#[derive(Serialize)]
pub struct WorkerStatus {
    pub name: String,
    pub color: Option<Color>,
    pub service: Option<String>,
    /// `running`, `exited`, … of its container; None without one.
    pub state: Option<String>,
    pub image: Option<String>,
    /// The container healthcheck's verdict, when it has one.
    pub health: Option<String>,
    /// How many containers of this worker run (more than one only during an overlap).
    pub running: usize,
}

#[derive(Serialize)]
pub struct StatusReport {
    pub project: String,
    pub active: Option<Color>,
    /// The color nginx serves, asked through its probe.
    pub nginx_serves: Option<Color>,
    /// Why `nginx_serves` is null (no answer from its probe, or an answer naming neither
    /// color), as the text says it; null when it names a color.
    pub nginx_serves_reason: Option<String>,
    /// The color the include on disk points at.
    pub nginx_points_at: Option<Color>,
    pub colors: Vec<ColorStatus>,
    pub accessories: Vec<Container>,
    /// One entry per configured worker (`workers:`).
    pub workers: Vec<WorkerStatus>,
    pub last_deploy: Option<HistoryEntry>,
    pub problems: Vec<String>,
    /// Maintenance mode (`cutover maintenance on`), None when off.
    pub maintenance: Option<crate::maintenance::Maintenance>,
    /// Why the site is down, when the color nginx serves (or points at) has no running
    /// container after a deploy: `status` then exits 1, for monitors and scripts.
    pub down: Option<String>,
}

/// Observes the project and probes each running color once.
pub fn status(loaded: &Loaded) -> anyhow::Result<StatusReport> {
    let observed = observe(loaded)?;
    let active = observed.active();
    let prober = Prober::new(Duration::from_secs(1));
    let colors: Vec<ColorStatus> = Color::ALL
        .into_iter()
        .map(|color| {
            let service = loaded.config.service(color);
            let container = observed.containers.iter().find(|c| c.service == service);
            let health = match color_health(loaded, &observed.containers, color, &prober) {
                ColorHealth::Healthy => "healthy".to_string(),
                ColorHealth::Unhealthy(answer) => format!("unhealthy ({})", answer.describe()),
                ColorHealth::NotRunning(c) => format!("not running ({})", c.state),
                ColorHealth::NoContainer => "no container".to_string(),
            };
            ColorStatus {
                color,
                port: loaded.config.colors.port(color),
                active: active == Some(color),
                container: container.map(|c| c.state.to_string()),
                image: observed.image_of(loaded, color),
                health,
                service,
            }
        })
        .collect();
    let accessories = observed
        .containers
        .iter()
        .filter(|c| loaded.config.color_of_service(&c.service).is_none())
        .filter(|c| loaded.config.worker_of_service(&c.service).is_none())
        .cloned()
        .collect();
    let workers = workers(loaded, &observed.containers);
    let deployed_before = observed.recorded.active.is_some() || !observed.containers.is_empty();
    let down = observed
        .served
        .color()
        .or(observed.nginx_color)
        .or(active)
        .filter(|c| deployed_before && !observed.running.contains(c))
        .map(|c| {
            format!(
                "the site is down: nginx points at {c}, but no {c} container is running \
                 (`cutover deploy` redeploys what served)"
            )
        })
        .or_else(|| {
            // nft mode: nginx always connects to the switch's port; a rule that is gone (or
            // leads to neither color) leaves it nothing to reach.
            match &observed.switch_problem {
                Some(super::observe::SwitchProblem::Unreachable(why)) if deployed_before => {
                    Some(format!("the site is down: {why}"))
                }
                _ => None,
            }
        });
    Ok(StatusReport {
        project: loaded.config.project.to_string(),
        active,
        nginx_serves: observed.served.color(),
        nginx_serves_reason: served_reason(&observed.served),
        nginx_points_at: observed.nginx_color,
        colors,
        accessories,
        workers,
        last_deploy: StateDir::new(loaded.state_dir()).last_history(|_| true)?,
        problems: observed
            .disagreements()
            .into_iter()
            .chain(torn_history_problems(&StateDir::new(loaded.state_dir())))
            .collect(),
        maintenance: crate::maintenance::load(&loaded.state_dir())?,
        down,
    })
}

/// Why the probe named no color, for the text and `--json` alike.
fn served_reason(served: &Served) -> Option<String> {
    match served {
        Served::Color(_) => None,
        Served::Unreachable(why) => Some(format!("no answer from its probe: {why}")),
        Served::Unmarked(why) => Some(format!("its probe's answer names neither color: {why}")),
    }
}

/// Each configured worker: the running container (else the last one seen) of its services.
fn workers(loaded: &Loaded, containers: &[Container]) -> Vec<WorkerStatus> {
    let config = &loaded.config;
    config
        .workers
        .keys()
        .map(|name| {
            let mine: Vec<(&Container, Color)> = containers
                .iter()
                .filter_map(|c| match config.worker_of_service(&c.service) {
                    Some((n, color)) if n == name => Some((c, color)),
                    _ => None,
                })
                .collect();
            let shown = mine.iter().find(|(c, _)| c.running()).or(mine.first());
            WorkerStatus {
                name: name.to_string(),
                color: shown.filter(|(c, _)| c.running()).map(|(_, color)| *color),
                service: shown.map(|(c, _)| c.service.clone()),
                state: shown.map(|(c, _)| c.state.to_string()),
                image: shown.map(|(c, _)| c.image.clone()),
                health: shown.and_then(|(c, _)| c.health.as_ref().map(ToString::to_string)),
                running: mine.iter().filter(|(c, _)| c.running()).count(),
            }
        })
        .collect()
}

/// One problem line per torn history tail that was set aside (kept for inspection).
fn torn_history_problems(state_dir: &StateDir) -> Vec<String> {
    state_dir
        .torn_history()
        .into_iter()
        .map(|path| {
            format!(
                "{} holds a torn last line of the history (a crash or a full disk mid-append), set aside so later entries stay readable; inspect it, then delete it",
                path.display()
            )
        })
        .collect()
}
