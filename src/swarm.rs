//! Typed Docker Swarm operations for the swarm engine, and the rollout wait. Prints nothing.
//!
//! Everything is read through JSON (`--format '{{json .}}'`, `docker inspect`), never
//! tables. Secret values reach `docker secret create` on stdin only: never argv (visible in
//! `ps`), never a file.
//!
//! Whether a rollout converged is read from the service's `UpdateStatus`, which swarm resets
//! on every spec update and sets again when its updater has work to do (`updating` →
//! `completed`, or `rollback_started` → `rollback_completed`, or `paused`). A service just
//! created, or updated without any task to replace, has no `UpdateStatus`: then the tasks
//! themselves are counted against the desired replicas.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use crate::process::{Cmd, ProcessError};

/// Labels cutover puts on the secrets it creates, so it can find (and prune) its own.
pub const PROJECT_LABEL: &str = "dev.cutover.project";
pub const KEY_LABEL: &str = "dev.cutover.key";

/// Variables `docker` needs to reach the engine; nothing else of cutover's environment (such
/// as `CUTOVER_AGE_KEY`) is passed on, and `stack deploy` interpolates nothing unexpected.
const DOCKER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "DOCKER_API_VERSION",
];

fn docker(summary: impl Into<String>) -> Cmd {
    Cmd::new("docker", summary)
        .env_clear_except(DOCKER_ENV)
        .timeout(Duration::from_secs(120))
}

/// Why the swarm engine cannot run here. Callers branch on it (the tests skip or fail).
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("this Docker engine is not part of a swarm (LocalNodeState: {state}); run `docker swarm init` on this box, or point DOCKER_HOST at a swarm manager")]
    NotInSwarm { state: String },
    #[error("this Docker engine is a swarm worker, not a manager: stack deploys must run on a manager node")]
    NotManager,
}

/// This engine's swarm membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `inactive`, `pending`, `active`, `error`, `locked`.
    pub state: String,
    pub manager: bool,
}

pub fn node() -> anyhow::Result<Node> {
    let out = docker("ask the Docker engine for its swarm state")
        .args(["info", "--format", "{{json .Swarm}}"])
        .run()?;
    let v: Value = serde_json::from_str(out.stdout.trim())
        .map_err(|e| anyhow::anyhow!("`docker info` gave unexpected swarm JSON: {e}"))?;
    Ok(Node {
        state: v["LocalNodeState"].as_str().unwrap_or("").to_string(),
        manager: v["ControlAvailable"].as_bool().unwrap_or(false),
    })
}

/// Fails with [`SwarmError`] unless this engine is an active swarm manager.
pub fn require_manager() -> anyhow::Result<()> {
    let n = node()?;
    if n.state != "active" {
        return Err(SwarmError::NotInSwarm { state: n.state }.into());
    }
    if !n.manager {
        return Err(SwarmError::NotManager.into());
    }
    Ok(())
}

/// A swarm secret cutover created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Secret {
    pub name: String,
    pub key: String,
}

/// The secrets cutover created for `project`.
pub fn secrets_of(project: &str) -> anyhow::Result<Vec<Secret>> {
    let out = docker(format!("list the swarm secrets of {project}"))
        .args([
            "secret",
            "ls",
            "--filter",
            &format!("label={PROJECT_LABEL}={project}"),
            "--format",
            "{{json .}}",
        ])
        .run()?;
    let names: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["Name"].as_str().map(str::to_string))
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // `secret ls` shows no labels; inspect gives them (and never the value: swarm never
    // returns secret data through the API).
    let out = docker(format!("inspect the swarm secrets of {project}"))
        .args(["secret", "inspect"])
        .args(&names)
        .run()?;
    let list: Vec<Value> = serde_json::from_str(&out.stdout)
        .map_err(|e| anyhow::anyhow!("`docker secret inspect` gave unexpected JSON: {e}"))?;
    Ok(list
        .iter()
        .filter_map(|v| {
            Some(Secret {
                name: v["Spec"]["Name"].as_str()?.to_string(),
                key: v["Spec"]["Labels"][KEY_LABEL]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
        })
        .collect())
}

/// `docker secret create NAME -` with the value on stdin.
pub fn create_secret(
    project: &str,
    key: &str,
    name: &str,
    value: &SecretString,
) -> Result<(), ProcessError> {
    docker(format!("create swarm secret {name} (for {key})"))
        .args([
            "secret",
            "create",
            "--label",
            &format!("{PROJECT_LABEL}={project}"),
            "--label",
            &format!("{KEY_LABEL}={key}"),
            name,
            "-",
        ])
        .stdin_bytes(value.expose_secret().as_bytes().to_vec())
        .run()
        .map(|_| ())
}

pub fn remove_secret(name: &str) -> Result<(), ProcessError> {
    docker(format!("remove swarm secret {name}"))
        .args(["secret", "rm", name])
        .run()
        .map(|_| ())
}

/// `docker stack deploy -c FILE --resolve-image R PROJECT`. Returns at once: swarm rolls the
/// update out in the background ([`wait_rollout`] follows it).
pub fn stack_deploy(file: &Path, project: &str, resolve_image: &str) -> Result<(), ProcessError> {
    docker(format!("deploy stack {project}"))
        .arg("stack")
        .arg("deploy")
        .arg("--compose-file")
        .arg(file)
        .args(["--resolve-image", resolve_image, project])
        .run()
        .map(|_| ())
}

/// `docker stack rm PROJECT` (services, networks; not the external secrets).
pub fn stack_rm(project: &str) -> Result<(), ProcessError> {
    docker(format!("remove stack {project}"))
        .args(["stack", "rm", project])
        .run()
        .map(|_| ())
}

/// `docker stack config -c FILE`: the client's own validation of a stack file (client ≥ 25).
pub fn stack_config(file: &Path) -> Result<String, ProcessError> {
    docker("validate the stack file")
        .args(["stack", "config", "--compose-file"])
        .arg(file)
        .run()
        .map(|o| o.stdout)
}

/// The service name of a stack's service: `<project>_<service>`.
pub fn service_name(project: &str, service: &str) -> String {
    format!("{project}_{service}")
}

/// What cutover reads of a swarm service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub version: u64,
    /// The image of the current spec, as swarm holds it (with `@sha256:…` when resolved).
    pub image: String,
    pub replicas: Option<u64>,
    pub env: Vec<String>,
    pub secrets: BTreeSet<String>,
    /// Secrets of the spec before the last update (what `docker service rollback` returns to).
    pub previous_secrets: BTreeSet<String>,
    pub previous_image: Option<String>,
    pub update: Option<UpdateStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateStatus {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
    /// `rollback_completed`.
    pub state: String,
    pub message: String,
    pub started_at: String,
}

fn secret_names(container_spec: &Value) -> BTreeSet<String> {
    container_spec["Secrets"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| s["SecretName"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Service {
    fn from_json(v: &Value) -> Option<Service> {
        let spec = &v["Spec"]["TaskTemplate"]["ContainerSpec"];
        let previous = &v["PreviousSpec"]["TaskTemplate"]["ContainerSpec"];
        let update = &v["UpdateStatus"];
        Some(Service {
            id: v["ID"].as_str()?.to_string(),
            name: v["Spec"]["Name"].as_str()?.to_string(),
            version: v["Version"]["Index"].as_u64().unwrap_or(0),
            image: spec["Image"].as_str().unwrap_or("").to_string(),
            replicas: v["Spec"]["Mode"]["Replicated"]["Replicas"].as_u64(),
            env: strings(&spec["Env"]),
            secrets: secret_names(spec),
            previous_secrets: secret_names(previous),
            previous_image: previous["Image"].as_str().map(str::to_string),
            update: update["State"].as_str().map(|state| UpdateStatus {
                state: state.to_string(),
                message: update["Message"].as_str().unwrap_or("").to_string(),
                started_at: update["StartedAt"].as_str().unwrap_or("").to_string(),
            }),
        })
    }
}

/// The image reference without a resolved digest: `app:v2@sha256:…` → `app:v2`.
pub fn display_image(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

/// A service by name; `None` when it does not exist.
pub fn service(name: &str) -> anyhow::Result<Option<Service>> {
    let out = docker(format!("inspect service {name}"))
        .args(["service", "inspect", name])
        .run_unchecked()?;
    if !out.success() {
        if out.stderr.to_lowercase().contains("no such service") {
            return Ok(None);
        }
        return Err(docker(format!("inspect service {name}"))
            .failed(&out)
            .into());
    }
    let list: Vec<Value> = serde_json::from_str(&out.stdout)
        .map_err(|e| anyhow::anyhow!("`docker service inspect` gave unexpected JSON: {e}"))?;
    Ok(list.first().and_then(Service::from_json))
}

/// Every service of a stack.
pub fn services_of(project: &str) -> anyhow::Result<Vec<Service>> {
    let out = docker(format!("list the services of stack {project}"))
        .args([
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={project}"),
        ])
        .run()?;
    let ids: Vec<&str> = out.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = docker(format!("inspect the services of stack {project}"))
        .args(["service", "inspect"])
        .args(&ids)
        .run()?;
    let list: Vec<Value> = serde_json::from_str(&out.stdout)
        .map_err(|e| anyhow::anyhow!("`docker service inspect` gave unexpected JSON: {e}"))?;
    Ok(list.iter().filter_map(Service::from_json).collect())
}

/// One task (a container slot) of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: String,
    pub slot: u64,
    /// `new`, `pending`, `assigned`, `preparing`, `starting`, `running`, `complete`,
    /// `failed`, `shutdown`, `rejected`, `orphaned`, `remove`.
    pub state: String,
    pub desired: String,
    pub image: String,
    pub env: Vec<String>,
    pub secrets: BTreeSet<String>,
    pub error: String,
    pub container: Option<String>,
    pub exit_code: Option<i64>,
}

impl Task {
    /// Runs the service's current spec (the parts cutover changes: image, env, secrets).
    pub fn matches(&self, service: &Service) -> bool {
        self.image == service.image && self.env == service.env && self.secrets == service.secrets
    }
}

/// The tasks of a service (swarm keeps a few old ones as history).
pub fn tasks(service: &str) -> anyhow::Result<Vec<Task>> {
    let out = docker(format!("list the tasks of {service}"))
        .args(["service", "ps", "-q", "--no-trunc", service])
        .run()?;
    let ids: Vec<&str> = out.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = docker(format!("inspect the tasks of {service}"))
        .args(["inspect", "--type", "task"])
        .args(&ids)
        .run_unchecked()?;
    // A task can vanish between the two calls; inspect still prints the others.
    let list: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|v| {
            let spec = &v["Spec"]["ContainerSpec"];
            let status = &v["Status"];
            Some(Task {
                id: v["ID"].as_str()?.to_string(),
                slot: v["Slot"].as_u64().unwrap_or(0),
                state: status["State"].as_str().unwrap_or("").to_string(),
                desired: v["DesiredState"].as_str().unwrap_or("").to_string(),
                image: spec["Image"].as_str().unwrap_or("").to_string(),
                env: strings(&spec["Env"]),
                secrets: secret_names(spec),
                error: status["Err"].as_str().unwrap_or("").to_string(),
                container: status["ContainerStatus"]["ContainerID"]
                    .as_str()
                    .map(str::to_string),
                exit_code: status["ContainerStatus"]["ExitCode"].as_i64(),
            })
        })
        .collect())
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Rollout {
    /// Every replica runs the new spec (and swarm says the update completed, if it ran one).
    Converged {
        running: u64,
    },
    /// Swarm's updater saw a task fail and rolled the service back to the previous spec.
    RolledBack {
        message: String,
    },
    /// The update (or its rollback) paused on a failure; the service is half-updated.
    Paused {
        state: String,
        message: String,
    },
    /// A first deploy whose tasks keep failing (there is nothing to roll back to).
    Failing {
        failed: usize,
        error: String,
    },
    TimedOut {
        running: u64,
        wanted: u64,
    },
}

/// One poll of a rollout, for progress lines.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    /// Running tasks on the new spec / replicas wanted.
    pub running: u64,
    pub wanted: u64,
    /// swarm's `UpdateStatus.State`, or `-` when it set none.
    pub update_state: String,
}

impl Progress {
    pub fn describe(&self) -> String {
        format!(
            "{}/{} tasks on the new spec, update {}",
            self.running, self.wanted, self.update_state
        )
    }
}

/// Polls `service` until the rollout started by the last stack deploy converges, rolls back,
/// pauses, keeps failing (first deploy) or `timeout` passes. `on_poll` returning false stops
/// the wait (interrupt) with `Ok(None)`.
pub fn wait_rollout(
    service_name: &str,
    timeout: Duration,
    on_poll: &mut dyn FnMut(&Progress) -> bool,
) -> anyhow::Result<Option<Rollout>> {
    let started = Instant::now();
    // Swarm's updater picks a spec change up within milliseconds; a status-less service is
    // judged by its tasks only after this, so a just-starting update is not mistaken for
    // "nothing to do".
    let settle = Duration::from_millis(1500);
    loop {
        let service = service(service_name)?.ok_or_else(|| {
            anyhow::anyhow!("service {service_name} disappeared during the rollout")
        })?;
        let wanted = service.replicas.unwrap_or(1);
        let tasks = tasks(service_name)?;
        let current: Vec<&Task> = tasks.iter().filter(|t| t.matches(&service)).collect();
        let running = current
            .iter()
            .filter(|t| t.state == "running" && t.desired == "running")
            .count() as u64;
        let others_running = tasks
            .iter()
            .filter(|t| !t.matches(&service) && t.state == "running")
            .count();
        let update_state = service
            .update
            .as_ref()
            .map(|u| u.state.clone())
            .unwrap_or_else(|| "-".to_string());
        let progress = Progress {
            elapsed: started.elapsed(),
            running,
            wanted,
            update_state: update_state.clone(),
        };
        match service.update.as_ref().map(|u| u.state.as_str()) {
            Some("completed") if running >= wanted => {
                return Ok(Some(Rollout::Converged { running }))
            }
            Some("rollback_completed") => {
                let u = service.update.unwrap_or_else(|| unreachable!());
                return Ok(Some(Rollout::RolledBack { message: u.message }));
            }
            Some(state @ ("paused" | "rollback_paused")) => {
                let message = service
                    .update
                    .as_ref()
                    .map(|u| u.message.clone())
                    .unwrap_or_default();
                return Ok(Some(Rollout::Paused {
                    state: state.to_string(),
                    message,
                }));
            }
            None if started.elapsed() >= settle => {
                if running >= wanted && others_running == 0 {
                    return Ok(Some(Rollout::Converged { running }));
                }
                // No update in flight: a first deploy. Swarm retries failing tasks forever;
                // three failures of the current spec are a verdict, not bad luck.
                let failed: Vec<&&Task> = current
                    .iter()
                    .filter(|t| matches!(t.state.as_str(), "failed" | "rejected"))
                    .collect();
                if failed.len() >= 3 {
                    let error = failed
                        .iter()
                        .map(|t| t.error.clone())
                        .find(|e| !e.is_empty())
                        .unwrap_or_default();
                    return Ok(Some(Rollout::Failing {
                        failed: failed.len(),
                        error,
                    }));
                }
            }
            _ => {}
        }
        if !on_poll(&progress) {
            return Ok(None);
        }
        if started.elapsed() >= timeout {
            return Ok(Some(Rollout::TimedOut { running, wanted }));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_from_inspect_json() {
        let v: Value = serde_json::json!({
            "ID": "abc",
            "Version": {"Index": 58},
            "Spec": {
                "Name": "shop_web",
                "Mode": {"Replicated": {"Replicas": 2}},
                "TaskTemplate": {"ContainerSpec": {
                    "Image": "app:v2@sha256:00",
                    "Env": ["A=1"],
                    "Secrets": [{"SecretName": "shop_DB_2", "File": {"Name": "DB"}}]
                }}
            },
            "PreviousSpec": {"TaskTemplate": {"ContainerSpec": {
                "Image": "app:v1",
                "Secrets": [{"SecretName": "shop_DB_1"}]
            }}},
            "UpdateStatus": {"State": "rollback_completed", "StartedAt": "t", "Message": "rollback completed"}
        });
        let s = Service::from_json(&v).unwrap();
        assert_eq!(s.name, "shop_web");
        assert_eq!(s.replicas, Some(2));
        assert_eq!(display_image(&s.image), "app:v2");
        assert_eq!(s.secrets, BTreeSet::from(["shop_DB_2".to_string()]));
        assert_eq!(
            s.previous_secrets,
            BTreeSet::from(["shop_DB_1".to_string()])
        );
        assert_eq!(s.update.unwrap().state, "rollback_completed");
    }
}
