//! Typed Docker Swarm CLI operations for the swarm engine (node, secrets, stacks, services,
//! tasks). Prints nothing; following a rollout to a verdict is the engine's
//! (`engine::swarm::rollout`).
//!
//! Everything is read through JSON (`--format '{{json .}}'`, `docker inspect`), never
//! tables. Secret values reach `docker secret create` on stdin only: never argv (visible in
//! `ps`), never a file.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::inspect::{self, DockerError};
pub use super::states::{NodeState, TaskState, UpdateState};
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
    pub state: NodeState,
    pub manager: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SwarmInfo {
    local_node_state: NodeState,
    /// Absent on a node outside any swarm.
    #[serde(default)]
    control_available: bool,
}

pub fn node() -> Result<Node, DockerError> {
    let cmd = docker("ask the Docker engine for its swarm state").args([
        "info",
        "--format",
        "{{json .Swarm}}",
    ]);
    let info: SwarmInfo = inspect::run_json(&cmd, "the swarm state")?;
    Ok(Node {
        state: info.local_node_state,
        manager: info.control_available,
    })
}

/// Fails with [`SwarmError`] unless this engine is an active swarm manager.
pub fn require_manager() -> anyhow::Result<()> {
    let n = node()?;
    if n.state != NodeState::Active {
        return Err(SwarmError::NotInSwarm {
            state: n.state.to_string(),
        }
        .into());
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

/// The secrets cutover created for `project`. `secret ls` shows no labels; inspect gives them
/// (and never the value: swarm never returns secret data through the API).
pub fn secrets_of(project: &str) -> Result<Vec<Secret>, DockerError> {
    let list = docker(format!("list the swarm secrets of {project}")).args([
        "secret",
        "ls",
        "-q",
        "--filter",
        &format!("label={PROJECT_LABEL}={project}"),
    ]);
    let inspect =
        docker(format!("inspect the swarm secrets of {project}")).args(["secret", "inspect"]);
    let raw: Vec<RawSecret> = inspect::list_and_inspect(list, inspect, "swarm secrets")?;
    let mut secrets: Vec<Secret> = raw
        .into_iter()
        .map(|s| Secret {
            key: s.spec.labels.get(KEY_LABEL).cloned().unwrap_or_default(),
            name: s.spec.name,
        })
        .collect();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(secrets)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSecret {
    spec: RawSecretSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSecretSpec {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
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

/// How a `docker stack deploy` runs.
#[derive(Debug, Clone, Copy)]
pub struct StackDeploy<'a> {
    pub resolve_image: &'a str,
    /// `--prune`: services no longer in the file are removed.
    pub prune: bool,
    /// `--with-registry-auth`: the client's credentials for the image's registry (from a
    /// `docker login`) go to the swarm, which hands them to the nodes that pull it.
    pub registry_auth: bool,
}

/// `docker stack deploy -c FILE --resolve-image R PROJECT`. Returns at once: swarm rolls the
/// update out in the background ([`wait_rollout`] follows it).
pub fn stack_deploy(file: &Path, project: &str, how: StackDeploy) -> Result<(), ProcessError> {
    let mut cmd = docker(format!(
        "deploy stack {project}{}",
        if how.prune { " (pruning)" } else { "" }
    ))
    .arg("stack")
    .arg("deploy");
    if how.prune {
        cmd = cmd.arg("--prune");
    }
    if how.registry_auth {
        cmd = cmd.arg("--with-registry-auth");
    }
    cmd.arg("--compose-file")
        .arg(file)
        .args(["--resolve-image", how.resolve_image, project])
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

/// A one-off `replicated-job` service: the release phase of the swarm engine.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub name: &'a str,
    pub project: &'a str,
    pub image: &'a str,
    /// The command, one argument each: no shell is involved unless the user runs one.
    pub argv: &'a [String],
    /// Plain `KEY=VALUE` entries (never a secret value: secrets are files).
    pub env: Vec<String>,
    /// `(versioned secret name, target file name under /run/secrets)`.
    pub secrets: Vec<(String, String)>,
    /// The stack's overlay network, when it exists.
    pub network: Option<String>,
    pub memory: String,
    pub registry_auth: bool,
    pub resolve_image: bool,
}

impl Job<'_> {
    /// The `docker service create` arguments: one task, never restarted (its exit code is
    /// the verdict), detached (cutover follows the task itself).
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "service",
            "create",
            "--detach",
            "--mode",
            "replicated-job",
            "--replicas",
            "1",
            "--restart-condition",
            "none",
            "--name",
            self.name,
            "--label",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(format!("{PROJECT_LABEL}={}", self.project));
        a.extend(["--limit-memory".to_string(), self.memory.clone()]);
        if let Some(net) = &self.network {
            a.extend(["--network".to_string(), net.clone()]);
        }
        for e in &self.env {
            a.extend(["--env".to_string(), e.clone()]);
        }
        for (source, target) in &self.secrets {
            a.extend([
                "--secret".to_string(),
                format!("source={source},target={target}"),
            ]);
        }
        if self.registry_auth {
            a.push("--with-registry-auth".to_string());
        }
        if !self.resolve_image {
            a.push("--no-resolve-image".to_string());
        }
        a.push(self.image.to_string());
        a.extend(self.argv.iter().cloned());
        a
    }
}

/// Creates the job's service; swarm schedules its one task in the background.
pub fn create_job(job: &Job) -> Result<(), ProcessError> {
    docker(format!("create the one-off job {}", job.name))
        .args(job.argv())
        .run()
        .map(|_| ())
}

/// `docker service rm NAME`; a service that is already gone is fine.
pub fn remove_service(name: &str) -> Result<(), ProcessError> {
    let cmd = docker(format!("remove service {name}")).args(["service", "rm", name]);
    let out = cmd.run_unchecked()?;
    if out.success() || out.stderr.to_lowercase().contains("not found") {
        return Ok(());
    }
    Err(cmd.failed(&out))
}

/// The last `lines` log lines of a service's tasks, stdout and stderr interleaved as the
/// nodes sent them (`--raw`: no task prefix).
pub fn service_logs(name: &str, lines: usize) -> Result<Vec<String>, ProcessError> {
    let out = docker(format!("read the logs of {name}"))
        .args(["service", "logs", "--raw", "--no-trunc", "--tail"])
        .arg(lines.to_string())
        .arg(name)
        .run()?;
    Ok(
        super::printable_log(&format!("{}{}", out.stdout, out.stderr))
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// Whether a network of that name exists (the stack's overlay network, before a first deploy).
pub fn network_exists(name: &str) -> Result<bool, ProcessError> {
    let cmd = docker(format!("inspect network {name}"))
        .args(["network", "inspect", "--format", "{{.Id}}", name]);
    let out = cmd.run_unchecked()?;
    if out.success() {
        return Ok(true);
    }
    if out.stderr.to_lowercase().contains("not found") {
        return Ok(false);
    }
    Err(cmd.failed(&out))
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
    pub state: UpdateState,
    pub message: String,
    pub started_at: String,
}

/// The parts of `docker service inspect` cutover reads. Fields swarm may leave out default;
/// anything else missing is a parse error, not an empty service.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawService {
    #[serde(rename = "ID")]
    id: String,
    version: RawVersion,
    spec: RawServiceSpec,
    #[serde(default)]
    previous_spec: Option<RawServiceSpec>,
    #[serde(default)]
    update_status: Option<RawUpdateStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVersion {
    index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawServiceSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: RawMode,
    task_template: RawTaskSpec,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawMode {
    #[serde(default)]
    replicated: Option<RawReplicated>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawReplicated {
    #[serde(default)]
    replicas: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTaskSpec {
    #[serde(default)]
    container_spec: RawContainerSpec,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainerSpec {
    #[serde(default)]
    image: String,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    secrets: Vec<RawSecretRef>,
}

impl RawContainerSpec {
    fn secret_names(&self) -> BTreeSet<String> {
        self.secrets.iter().map(|s| s.secret_name.clone()).collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSecretRef {
    secret_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUpdateStatus {
    #[serde(default)]
    state: Option<UpdateState>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    started_at: String,
}

impl From<RawService> for Service {
    fn from(raw: RawService) -> Service {
        let spec = &raw.spec.task_template.container_spec;
        let previous = raw
            .previous_spec
            .as_ref()
            .map(|p| &p.task_template.container_spec);
        Service {
            id: raw.id,
            version: raw.version.index,
            image: spec.image.clone(),
            replicas: raw.spec.mode.replicated.as_ref().and_then(|r| r.replicas),
            env: spec.env.clone(),
            secrets: spec.secret_names(),
            previous_secrets: previous.map(|p| p.secret_names()).unwrap_or_default(),
            previous_image: previous.map(|p| p.image.clone()),
            update: raw.update_status.and_then(|u| {
                Some(UpdateStatus {
                    state: u.state?,
                    message: u.message,
                    started_at: u.started_at,
                })
            }),
            name: raw.spec.name,
        }
    }
}

/// The image reference without a resolved digest: `app:v2@sha256:…` → `app:v2`.
pub fn display_image(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

/// A service by name; `None` when it does not exist.
pub fn service(name: &str) -> Result<Option<Service>, DockerError> {
    let cmd = docker(format!("inspect service {name}")).args(["service", "inspect", name]);
    let out = cmd.run_unchecked()?;
    if !out.success() {
        if out.stderr.to_lowercase().contains("no such service") {
            return Ok(None);
        }
        return Err(cmd.failed(&out).into());
    }
    let list: Vec<RawService> = inspect::parse(&cmd.display(), "services", &out.stdout)?;
    Ok(list.into_iter().next().map(Service::from))
}

/// Every service of a stack.
pub fn services_of(project: &str) -> Result<Vec<Service>, DockerError> {
    let list = docker(format!("list the services of stack {project}")).args([
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.stack.namespace={project}"),
    ]);
    let inspect =
        docker(format!("inspect the services of stack {project}")).args(["service", "inspect"]);
    let raw: Vec<RawService> = inspect::list_and_inspect(list, inspect, "services")?;
    Ok(raw.into_iter().map(Service::from).collect())
}

/// One task (a container slot) of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: String,
    pub slot: u64,
    pub state: TaskState,
    pub desired: TaskState,
    pub image: String,
    pub env: Vec<String>,
    pub secrets: BTreeSet<String>,
    pub error: String,
    pub container: Option<String>,
    pub exit_code: Option<i64>,
    /// The swarm node the task was scheduled on (empty while unassigned).
    pub node: String,
}

impl Task {
    /// Running, and meant to keep running (not one swarm is shutting down).
    pub fn serving(&self) -> bool {
        self.state == TaskState::Running && self.desired == TaskState::Running
    }

    /// Runs the service's current spec (the parts cutover changes: image, env, secrets).
    pub fn matches(&self, service: &Service) -> bool {
        self.image == service.image && self.env == service.env && self.secrets == service.secrets
    }
}

/// The tasks of a service (swarm keeps a few old ones as history). A task can vanish
/// between the two calls; inspect still prints the others.
pub fn tasks(service: &str) -> Result<Vec<Task>, DockerError> {
    let list = docker(format!("list the tasks of {service}")).args([
        "service",
        "ps",
        "-q",
        "--no-trunc",
        service,
    ]);
    let inspect =
        docker(format!("inspect the tasks of {service}")).args(["inspect", "--type", "task"]);
    let raw: Vec<RawTask> = inspect::list_and_inspect(list, inspect, "swarm tasks")?;
    Ok(raw.into_iter().map(Task::from).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTask {
    #[serde(rename = "ID")]
    id: String,
    /// Global services' tasks have no slot.
    #[serde(default)]
    slot: u64,
    #[serde(default)]
    desired_state: String,
    #[serde(rename = "NodeID", default)]
    node_id: String,
    spec: RawTaskSpec,
    status: RawTaskStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTaskStatus {
    state: String,
    #[serde(default)]
    err: String,
    #[serde(default)]
    container_status: Option<RawContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainerStatus {
    #[serde(rename = "ContainerID", default)]
    container_id: Option<String>,
    #[serde(default)]
    exit_code: Option<i64>,
}

impl From<RawTask> for Task {
    fn from(raw: RawTask) -> Task {
        let spec = raw.spec.container_spec;
        let container = raw.status.container_status;
        Task {
            id: raw.id,
            slot: raw.slot,
            state: TaskState::from(raw.status.state.as_str()),
            desired: TaskState::from(raw.desired_state.as_str()),
            secrets: spec.secret_names(),
            image: spec.image,
            env: spec.env,
            error: raw.status.err,
            container: container.as_ref().and_then(|c| c.container_id.clone()),
            exit_code: container.and_then(|c| c.exit_code),
            node: raw.node_id,
        }
    }
}

/// A task meant to run on a node, and the memory its spec holds there (the larger of its
/// limit and its reservation; `None` when it sets neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTask {
    pub node: String,
    pub service: String,
    pub memory: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeTask {
    #[serde(rename = "NodeID", default)]
    node_id: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
    spec: RawNodeTaskSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeTaskSpec {
    #[serde(default)]
    resources: Option<RawResources>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawResources {
    #[serde(default)]
    limits: Option<RawMemory>,
    #[serde(default)]
    reservations: Option<RawMemory>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawMemory {
    #[serde(default)]
    memory_bytes: Option<u64>,
}

/// Every task swarm means to run (desired state `running`) on `nodes` (ids), with the
/// memory its spec holds: `docker node ps -q` and `docker inspect --type task`, JSON.
pub fn tasks_on(nodes: &[&str]) -> Result<Vec<NodeTask>, DockerError> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let list = docker("list the tasks on the swarm's nodes")
        .args([
            "node",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
        ])
        .args(nodes);
    let inspect =
        docker("inspect the tasks on the swarm's nodes").args(["inspect", "--type", "task"]);
    let raw: Vec<RawNodeTask> = inspect::list_and_inspect(list, inspect, "swarm tasks")?;
    Ok(raw
        .into_iter()
        .map(|t| {
            let res = t.spec.resources.unwrap_or_default();
            let memory = [res.limits, res.reservations]
                .into_iter()
                .flatten()
                .filter_map(|m| m.memory_bytes)
                .filter(|m| *m > 0)
                .max();
            NodeTask {
                node: t.node_id,
                service: t.service_id,
                memory,
            }
        })
        .collect())
}

/// One node of the swarm, as `docker node inspect` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterNode {
    pub id: String,
    pub hostname: String,
    /// The address the node reached the manager from (`Status.Addr`): where its host-mode
    /// ports are published.
    pub addr: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub manager: bool,
    /// The node's memory in all (`Description.Resources.MemoryBytes`); `None` when the
    /// engine did not report it. Docker reports no free memory.
    #[serde(skip)]
    pub memory: Option<u64>,
}

impl ClusterNode {
    /// Up and accepting tasks: a global service runs one task here.
    pub fn schedulable(&self) -> bool {
        self.state == "ready" && self.availability == "active"
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNode {
    #[serde(rename = "ID")]
    id: String,
    spec: RawNodeSpec,
    description: RawNodeDescription,
    status: RawNodeStatus,
    #[serde(default)]
    manager_status: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeSpec {
    #[serde(default)]
    availability: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeDescription {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    resources: Option<RawNodeResources>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeResources {
    #[serde(default)]
    memory_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    addr: String,
}

impl From<RawNode> for ClusterNode {
    fn from(raw: RawNode) -> ClusterNode {
        ClusterNode {
            id: raw.id,
            hostname: raw.description.hostname,
            addr: raw.status.addr,
            state: raw.status.state,
            availability: raw.spec.availability,
            manager: raw.manager_status.is_some(),
            memory: raw
                .description
                .resources
                .and_then(|r| r.memory_bytes)
                .filter(|m| *m > 0),
        }
    }
}

/// Every node of the swarm (asked of a manager), by `docker node inspect`, never by parsing
/// `docker node ls`'s table.
pub fn nodes() -> Result<Vec<ClusterNode>, DockerError> {
    let list = docker("list the swarm's nodes").args(["node", "ls", "-q"]);
    let inspect = docker("inspect the swarm's nodes").args(["node", "inspect"]);
    let raw: Vec<RawNode> = inspect::list_and_inspect(list, inspect, "swarm nodes")?;
    Ok(raw.into_iter().map(ClusterNode::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_job_runs_once_never_restarted_with_its_command_as_separate_arguments() {
        let argv = vec!["task".to_string(), "say=a; b | $(c)".to_string()];
        let job = Job {
            name: "shop_release",
            project: "shop",
            image: "example/web:v2",
            argv: &argv,
            env: vec![
                "MODE=prod".into(),
                "DB_PASSWORD_FILE=/run/secrets/DB_PASSWORD".into(),
            ],
            secrets: vec![("shop_DB_PASSWORD_abc".into(), "DB_PASSWORD".into())],
            network: Some("shop_default".into()),
            memory: "128M".into(),
            registry_auth: true,
            resolve_image: false,
        };
        let got = job.argv();
        let joined = got.join(" ");
        for part in [
            "service create --detach --mode replicated-job --replicas 1 --restart-condition none --name shop_release",
            "--label dev.cutover.project=shop --limit-memory 128M --network shop_default",
            "--env MODE=prod --env DB_PASSWORD_FILE=/run/secrets/DB_PASSWORD",
            "--secret source=shop_DB_PASSWORD_abc,target=DB_PASSWORD",
            "--with-registry-auth --no-resolve-image",
        ] {
            assert!(joined.contains(part), "{part}: {joined}");
        }
        // The image, then the command, each argument whole: no shell reads it.
        assert_eq!(
            &got[got.len() - 3..],
            ["example/web:v2", "task", "say=a; b | $(c)"]
        );
    }

    #[test]
    fn service_from_inspect_json() {
        let v = serde_json::json!({
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
        let s = Service::from(serde_json::from_value::<RawService>(v).unwrap());
        assert_eq!(s.name, "shop_web");
        assert_eq!(s.replicas, Some(2));
        assert_eq!(display_image(&s.image), "app:v2");
        assert_eq!(s.secrets, BTreeSet::from(["shop_DB_2".to_string()]));
        assert_eq!(
            s.previous_secrets,
            BTreeSet::from(["shop_DB_1".to_string()])
        );
        assert_eq!(s.update.unwrap().state, UpdateState::RollbackCompleted);
    }

    #[test]
    fn a_service_without_its_spec_is_an_error_not_an_empty_service() {
        let Err(err) = inspect::parse::<RawService>(
            "docker service inspect shop_web",
            "services",
            r#"[{"ID": "abc", "Version": {"Index": 1}}]"#,
        ) else {
            panic!("a service without Spec parsed");
        };
        let err = err.to_string();
        assert!(err.contains("`docker service inspect shop_web`"), "{err}");
        assert!(err.contains("missing field `Spec`"), "{err}");
    }

    #[test]
    fn task_from_inspect_json() {
        let v = serde_json::json!({
            "ID": "t1",
            "Slot": 2,
            "DesiredState": "running",
            "Spec": {"ContainerSpec": {"Image": "app:v2", "Env": ["A=1"]}},
            "Status": {"State": "failed", "Err": "task: non-zero exit (1)",
                       "ContainerStatus": {"ContainerID": "c1", "ExitCode": 1}}
        });
        let t = Task::from(serde_json::from_value::<RawTask>(v).unwrap());
        assert_eq!(
            (t.slot, t.state.as_str(), t.exit_code),
            (2, "failed", Some(1))
        );
        assert_eq!(t.container.as_deref(), Some("c1"));
        assert!(t.secrets.is_empty());
    }
}
