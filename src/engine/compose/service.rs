//! Which container `logs` and `exec` reach: the serving color by default, a color by name, an
//! accessory or a worker by its name. A name that is none of these is an error listing the
//! names that are.

use crate::config::{Color, Loaded};
use crate::docker::compose::Container;

use super::observe::observe;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The color nginx serves.
    Serving,
    Color(Color),
    /// `blue`/`green`, an accessory or a worker.
    Named(String),
}

/// The container picked, with the compose service it belongs to.
#[derive(Debug, Clone)]
pub struct Picked {
    /// What the user would call it: `blue`, `redis`, `scheduler (green)`.
    pub label: String,
    pub service: String,
    pub container: Container,
}

/// Why no container was picked (the command layer words it; a caller may branch).
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    #[error("no service `{name}` in this project; expected one of: {valid}")]
    Unknown { name: String, valid: String },
    #[error("{what} has no container (deploy first, or see `cutover status`)")]
    NoContainer { what: String },
    #[error("nothing is deployed yet: no color serves (deploy first, or name a service)")]
    NothingServes,
}

/// The names `logs`/`exec` accept, in the order they are listed.
pub fn names(loaded: &Loaded) -> Vec<String> {
    let config = &loaded.config;
    Color::ALL
        .iter()
        .map(|c| c.to_string())
        .chain(config.accessories.keys().map(|n| n.to_string()))
        .chain(config.workers.keys().map(|n| n.to_string()))
        .collect()
}

/// Finds the container for `pick`, preferring a running one.
pub fn pick(loaded: &Loaded, pick: &Pick) -> anyhow::Result<Picked> {
    let config = &loaded.config;
    let observed = observe(loaded)?;
    let newest_of = |services: &[String]| -> Option<Container> {
        let mine = || {
            observed
                .containers
                .iter()
                .filter(|c| services.contains(&c.service))
        };
        mine()
            .find(|c| c.running())
            .or_else(|| mine().next())
            .cloned()
    };
    let color = |c: Color| (c.to_string(), vec![config.service(c)]);
    let (label, services) = match pick {
        Pick::Serving => color(observed.active().ok_or(PickError::NothingServes)?),
        Pick::Color(c) => color(*c),
        Pick::Named(name) => match Color::ALL.into_iter().find(|c| c.as_str() == name) {
            Some(c) => color(c),
            None if config.accessories.keys().any(|a| a.as_str() == name) => {
                (name.clone(), vec![name.clone()])
            }
            None if config.has_worker(name) => (
                format!("worker {name}"),
                Color::ALL
                    .into_iter()
                    .map(|c| config.worker_service(name, c))
                    .collect(),
            ),
            None => {
                return Err(PickError::Unknown {
                    name: name.clone(),
                    valid: names(loaded).join(", "),
                }
                .into())
            }
        },
    };
    let container = newest_of(&services).ok_or_else(|| PickError::NoContainer {
        what: label.clone(),
    })?;
    Ok(Picked {
        label,
        service: container.service.clone(),
        container,
    })
}
