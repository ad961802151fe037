//! `status --engine swarm`: the stack's services with their tasks and last update, cutover's
//! swarm secrets, and the last swarm deploy (the history read back from its end only as far
//! as that entry).

use serde::Serialize;

use crate::config::Loaded;
use crate::docker::swarm::{self, TaskState};
use crate::state::{EngineKind, HistoryEntry, StateDir};

#[derive(Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub image: String,
    pub replicas: Option<u64>,
    pub running: usize,
    pub update: Option<swarm::UpdateStatus>,
    pub tasks: Vec<TaskStatus>,
}

#[derive(Serialize)]
pub struct TaskStatus {
    pub slot: u64,
    /// The hostname of the node the task runs on (its ID when the node is gone).
    pub node: String,
    /// Whether that node is `ready`: the manager keeps reporting a lost node's tasks as
    /// running until it gives up on them, so a task on a node that is not ready is not
    /// counted as running.
    pub node_ready: bool,
    pub state: String,
    pub desired: String,
    pub image: String,
    pub error: String,
}

#[derive(Serialize)]
pub struct StatusReport {
    pub engine: EngineKind,
    pub stack: String,
    /// Every node of the swarm: a lost one shows `state: down`.
    pub nodes: Vec<swarm::ClusterNode>,
    pub services: Vec<ServiceStatus>,
    pub secrets: Vec<swarm::Secret>,
    pub last_deploy: Option<HistoryEntry>,
}

/// Asks the swarm manager about the project's stack.
pub fn status(loaded: &Loaded) -> anyhow::Result<StatusReport> {
    swarm::require_manager()?;
    let project = loaded.config.project.to_string();
    let nodes = swarm::nodes()?;
    let hostname = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.hostname.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let ready = |id: &str| nodes.iter().any(|n| n.id == id && n.state == "ready");
    let mut services = Vec::new();
    for svc in swarm::services_of(&project)? {
        let tasks = swarm::tasks(&svc.name)?;
        let running = tasks
            .iter()
            .filter(|t| t.serving() && ready(&t.node))
            .count();
        services.push(ServiceStatus {
            name: svc.name.clone(),
            image: swarm::display_image(&svc.image).to_string(),
            replicas: svc.replicas,
            running,
            update: svc.update.clone(),
            tasks: tasks
                .iter()
                .filter(|t| t.desired == TaskState::Running || t.state == TaskState::Running)
                .map(|t| TaskStatus {
                    slot: t.slot,
                    node: hostname(&t.node),
                    node_ready: ready(&t.node),
                    state: t.state.to_string(),
                    desired: t.desired.to_string(),
                    image: swarm::display_image(&t.image).to_string(),
                    error: t.error.clone(),
                })
                .collect(),
        });
    }
    let last_deploy =
        StateDir::new(loaded.state_dir()).last_history(|e| e.engine == EngineKind::Swarm)?;
    Ok(StatusReport {
        engine: EngineKind::Swarm,
        stack: project,
        nodes,
        services,
        secrets: swarm::secrets_of(&loaded.config.project.to_string())?,
        last_deploy,
    })
}
