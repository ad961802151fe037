//! What the compose engine observes before it decides anything, and what `status` shows:
//! the color nginx's include points at, the project's containers, and the record, with
//! where they disagree.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::{Color, Loaded};
use crate::docker::compose::{containers_of, Container};
use crate::nginx::{include_port, Nginx};
use crate::state::{State, StateDir};

/// What `status` and `deploy` see: nginx's include, the containers, and the record.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    /// The color the nginx include points at (None: no include, or a port of neither color).
    pub nginx_color: Option<Color>,
    pub containers: Vec<Container>,
    pub running: BTreeSet<Color>,
    pub recorded: State,
}

impl Observed {
    /// The color serving traffic: nginx's, if it runs; else the only running color; else
    /// whatever nginx or the record says.
    pub fn active(&self) -> Option<Color> {
        if let Some(c) = self.nginx_color.filter(|c| self.running.contains(c)) {
            return Some(c);
        }
        if self.running.len() == 1 {
            return self.running.iter().next().copied();
        }
        self.nginx_color.or(self.recorded.active)
    }

    /// The image a color's container runs (falling back to the record).
    pub fn image_of(&self, loaded: &Loaded, color: Color) -> Option<String> {
        let service = loaded.config.service(color);
        self.containers
            .iter()
            .find(|c| c.service == service && c.running())
            .map(|c| c.image.clone())
            .or_else(|| self.recorded.images.get(&color).cloned())
    }

    /// Where nginx, the containers and the record disagree, in words.
    pub fn disagreements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let deployed_before = self.recorded.active.is_some() || !self.containers.is_empty();
        match self.nginx_color {
            Some(c) if !self.running.contains(&c) && deployed_before => out.push(format!(
                "nginx points at {c}, but no {c} container is running"
            )),
            None if !self.running.is_empty() => {
                out.push("containers run, but the nginx include points at neither color".into())
            }
            _ => {}
        }
        if self.running.len() == 2 {
            out.push("both colors are running (a deploy is in progress or was interrupted)".into());
        }
        if let (Some(rec), Some(active)) = (self.recorded.active, self.active()) {
            if rec != active {
                out.push(format!(
                    "the record says {rec} is active, but {active} serves"
                ));
            }
        }
        if let Some(p) = &self.recorded.in_progress {
            let alive = std::path::Path::new(&format!("/proc/{}", p.pid)).exists();
            out.push(format!(
                "a deploy of {} to {} (pid {}, started {}) {} at step `{}`",
                p.image,
                p.to,
                p.pid,
                p.started,
                if alive {
                    "is running"
                } else {
                    "did not finish; it stopped"
                },
                p.step
            ));
        }
        out
    }
}

/// Reads nginx's include and the engine's containers for a project.
pub fn observe(loaded: &Loaded) -> anyhow::Result<Observed> {
    let config = &loaded.config;
    // No include yet is a project never switched; an unreadable one is an error.
    let include = Nginx {
        include: config.nginx.include.clone(),
        test: Vec::new(),
        reload: Vec::new(),
    }
    .current_include()?;
    let nginx_color = include.as_deref().and_then(include_port).and_then(|port| {
        Color::ALL
            .into_iter()
            .find(|c| config.colors.port(*c) == port)
    });
    let containers = containers_of(config.project.as_str())?;
    let running = containers
        .iter()
        .filter(|c| c.running())
        .filter_map(|c| config.color_of_service(&c.service))
        .collect();
    let recorded = StateDir::new(loaded.state_dir()).load()?;
    Ok(Observed {
        nginx_color,
        containers,
        running,
        recorded,
    })
}

/// The URL of a color's health endpoint on this box.
pub fn health_url(loaded: &Loaded, color: Color) -> String {
    let config = &loaded.config;
    let host = match config.colors.upstream_host() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!(
        "http://{host}:{}{}",
        config.colors.port(color),
        config.app.health.path
    )
}
