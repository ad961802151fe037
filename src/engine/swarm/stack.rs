//! The swarm engine's stack file: cutover.yml as one `docker stack deploy` file.
//!
//! The app is one replicated service (`<app.name>`) updated by swarm itself: start-first,
//! one task at a time, gated by the container healthcheck, rolled back automatically on
//! failure. Swarm has no blue/green colors and no nginx switch, so `colors` and `nginx` do
//! not appear here. Only keys `docker stack deploy` honours are emitted: no `container_name`,
//! `depends_on`, `restart` or `mem_limit` (stack deploy ignores or rejects them); memory
//! limits and restart policies live under `deploy`.
//!
//! Each worker (`workers:`, `overlap: true` only: see `Config::compose_only`) is one more
//! replicated service, `<app>-<worker>`, one task of the app's image with the app's
//! environment and secrets and no port, updated start-first and rolled back by swarm when
//! the new task fails within `monitor`. With a healthcheck (`workers.NAME.health`) swarm
//! counts the new task up only once healthy, so the old one stops only then and a new one
//! that fails never stopped it, as under compose. Without one swarm counts the new task up
//! as soon as its process runs and stops the old one then; `monitor` is its `settle`, and a
//! new task that fails within it is rolled back by starting a task of the old spec again
//! (the same image, a new container): a moment with no copy, which compose avoids.
//!
//! Secrets are referenced by versioned names (`super::secrets::secret_name`): the name carries a hash of
//! the value, so rotating a value yields a new name, a changed service spec and therefore a
//! rolling update, never an in-place edit (swarm secrets are immutable).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::config::{Color, Config, Routing, Swarm};
use crate::render::{
    checked_image, command_json, env_items, literal, literals, named_volumes, EnvItem, Renderer,
    STACK,
};
use crate::secrets::SecretKeys;

/// What the caller decided: the image the app runs and the swarm secret name of every key.
#[derive(Debug, Clone)]
pub struct StackPlan {
    pub image: String,
    /// `KEY` → versioned swarm secret name, for every secret key of every service.
    pub secret_names: BTreeMap<String, String>,
    pub secret_keys: SecretKeys,
    /// `routing: host`: the colors to run, each with its image (the app becomes
    /// `<app>-blue` / `<app>-green`, global, on the color ports in host mode). Empty under
    /// `routing: ingress`: one service, `<app>`, running `image` through the mesh.
    pub colors: Vec<(Color, String)>,
    /// The stack without the app: its network, secrets and accessories, deployed before a
    /// first deploy's release job needs them.
    pub accessories_only: bool,
    /// The workers to put in the stack, each with its image (`workers:` key → image). A
    /// worker left out is left as it runs (a stack deploy without `--prune` does not touch a
    /// service its file does not name).
    pub workers: BTreeMap<String, String>,
}

/// A rendered stack file, with what the render decided to leave out and why.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub notes: Vec<String>,
}

/// Swarm refuses secret names longer than 64 characters.
pub const MAX_SECRET_NAME: usize = 64;

/// The stack file for `plan`. Fails when the config has no `swarm:` section.
pub fn render(renderer: &Renderer, config: &Config, plan: &StackPlan) -> anyhow::Result<Rendered> {
    let Some(swarm) = &config.swarm else {
        bail!("cutover.yml has no `swarm:` section; add at least `swarm: {{ port: 80 }}` to use --engine swarm");
    };
    let mut notes = Vec::new();
    let ctx = StackContext::new(config, swarm, plan, &mut notes)?;
    let text = renderer.render(STACK, ctx)?;
    Ok(Rendered { text, notes })
}

#[derive(Serialize)]
struct SecretRef {
    name: String,
    target: String,
}

#[derive(Serialize)]
struct Restart {
    condition: &'static str,
    max_attempts: Option<u32>,
}

#[derive(Serialize)]
struct HealthView {
    test: serde_json::Value,
    interval: String,
    timeout: String,
    retries: u32,
    start_period: String,
}

/// One swarm service of the app: the single one under the mesh, or one per color.
#[derive(Serialize)]
struct Instance {
    name: String,
    image: String,
    published: u16,
    /// Host routing: one task on every schedulable node (each node's color port must
    /// answer, and a node that joins gets its task without a deploy), the port published in
    /// host mode, and updates stop-first (a host port is bound by one task per node; the
    /// mesh lets a new task start before the old one stops).
    global: bool,
}

#[derive(Serialize)]
struct AppView {
    name: String,
    instances: Vec<Instance>,
    port: u16,
    replicas: u32,
    memory: String,
    command: Option<serde_json::Value>,
    volumes: Vec<String>,
    environment: Vec<EnvItem>,
    secrets: Vec<SecretRef>,
    health: HealthView,
    stop_grace: String,
    update_delay: String,
    monitor: String,
    restart: Restart,
}

/// One worker's service.
#[derive(Serialize)]
struct WorkerView {
    service: String,
    name: String,
    image: String,
    command: serde_json::Value,
    memory: String,
    /// `workers.NAME.health` as a swarm healthcheck; `None`: no healthcheck (one the image
    /// declares is switched off, so it cannot judge the worker instead of `settle`).
    health: Option<HealthView>,
    /// How long swarm watches a new task for a failure before the update counts as done:
    /// `settle` without a healthcheck (the worker must keep running that long), else
    /// `swarm.monitor`.
    monitor: String,
}

#[derive(Serialize)]
struct AccessoryView {
    name: String,
    image: String,
    memory: String,
    command: Option<serde_json::Value>,
    volumes: Vec<String>,
    ports: Vec<String>,
    environment: Vec<EnvItem>,
    secrets: Vec<SecretRef>,
    restart: Restart,
}

#[derive(Serialize)]
struct StackContext {
    project: String,
    app: AppView,
    workers: Vec<WorkerView>,
    accessories: Vec<AccessoryView>,
    secrets: Vec<String>,
    volumes: Vec<String>,
}

impl StackContext {
    fn new(
        config: &Config,
        swarm: &Swarm,
        plan: &StackPlan,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Self> {
        let app = &config.app;
        let mut used = BTreeSet::new();
        let mut refs = |keys: &BTreeSet<String>, owner: &str| -> anyhow::Result<Vec<SecretRef>> {
            keys.iter()
                .map(|key| {
                    let Some(name) = plan.secret_names.get(key) else {
                        bail!("{owner}: no swarm secret name for secret key `{key}`");
                    };
                    if name.len() > MAX_SECRET_NAME {
                        bail!(
                            "{owner}: swarm secret name `{name}` is longer than {MAX_SECRET_NAME} characters; use a shorter project name or key"
                        );
                    }
                    used.insert(name.clone());
                    Ok(SecretRef {
                        name: name.clone(),
                        target: key.clone(),
                    })
                })
                .collect()
        };
        let app_secrets = refs(&plan.secret_keys.app, "app.secrets")?;
        let mut accessories = Vec::new();
        for (name, acc) in &config.accessories {
            let keys = plan.secret_keys.accessory(name.as_str());
            let owner = format!("accessories.{name}");
            let ports = mesh_ports(&acc.ports, &owner, name.as_str(), notes);
            accessories.push(AccessoryView {
                name: name.to_string(),
                image: checked_image(&acc.image, &format!("{owner}.image"))?,
                memory: acc.memory.to_string(),
                command: acc.command.as_ref().map(command_json),
                volumes: literals(&acc.volumes),
                ports,
                environment: with_file_vars(
                    env_items(&acc.environment.0, keys, &owner)?,
                    keys,
                    &owner,
                )?,
                secrets: refs(keys, &format!("{owner}.secrets"))?,
                restart: restart_policy(&acc.restart),
            });
        }
        Ok(StackContext {
            project: config.project.to_string(),
            app: AppView {
                name: app.name.to_string(),
                instances: instances(config, swarm, plan)?,
                port: app.port.0,
                replicas: swarm.replicas.0,
                memory: app.memory.to_string(),
                command: app.command.as_ref().map(command_json),
                volumes: literals(&app.volumes),
                environment: with_file_vars(
                    env_items(&app.environment.0, &plan.secret_keys.app, "app")?,
                    &plan.secret_keys.app,
                    "app",
                )?,
                secrets: app_secrets,
                health: HealthView::of(app),
                stop_grace: go_duration(app.stop_grace.get()),
                update_delay: go_duration(swarm.update_delay.map(|d| d.get()).unwrap_or_default()),
                monitor: go_duration(swarm.monitor.get()),
                restart: restart_policy(&app.restart),
            },
            workers: worker_views(config, swarm, plan)?,
            accessories,
            secrets: used.into_iter().collect(),
            volumes: named_volumes(
                app.volumes
                    .iter()
                    .chain(config.accessories.values().flat_map(|a| &a.volumes)),
            ),
        })
    }
}

/// The app's swarm services: one through the mesh, or one per color in `plan.colors`.
fn instances(config: &Config, swarm: &Swarm, plan: &StackPlan) -> anyhow::Result<Vec<Instance>> {
    let app = config.app.name.as_str();
    if plan.accessories_only {
        return Ok(Vec::new());
    }
    match swarm.routing {
        Routing::Ingress => Ok(vec![Instance {
            name: app.to_string(),
            image: checked_image(&plan.image, "the image")?,
            published: swarm.port.0,
            global: false,
        }]),
        Routing::Host => plan
            .colors
            .iter()
            .map(|(color, image)| {
                Ok(Instance {
                    name: color_service(app, *color),
                    image: checked_image(image, &format!("the {color} image"))?,
                    published: config.colors.port(*color),
                    global: true,
                })
            })
            .collect(),
    }
}

/// The workers `plan` names, as services.
fn worker_views(
    config: &Config,
    swarm: &Swarm,
    plan: &StackPlan,
) -> anyhow::Result<Vec<WorkerView>> {
    let mut views = Vec::new();
    for (name, worker) in &config.workers {
        let Some(image) = plan
            .workers
            .get(name.as_str())
            .filter(|_| !plan.accessories_only)
        else {
            continue;
        };
        let health = worker.health.as_ref().map(|h| {
            let interval = h.interval.get().max(Duration::from_secs(1));
            HealthView {
                test: crate::render::health_test(&h.command),
                interval: go_duration(interval),
                timeout: go_duration(interval),
                retries: 3,
                // Failures while it boots do not count, up to the deploy's own wait.
                start_period: go_duration(h.timeout.get()),
            }
        });
        let monitor = match &health {
            Some(_) => swarm.monitor.get(),
            None => worker.settle.get(),
        };
        views.push(WorkerView {
            service: worker_service(config.app.name.as_str(), name.as_str()),
            name: name.to_string(),
            image: checked_image(image, &format!("the image of worker {name}"))?,
            command: command_json(&worker.command),
            memory: worker.memory.to_string(),
            health,
            monitor: go_duration(monitor),
        });
    }
    Ok(views)
}

/// Every worker of `config` on `image`: the [`StackPlan::workers`] of a deploy that moves them.
pub fn workers_on(config: &Config, image: &str) -> BTreeMap<String, String> {
    config
        .workers
        .keys()
        .map(|name| (name.to_string(), image.to_string()))
        .collect()
}

/// The stack service of a worker: `<app>-<worker>` (one service; it has no colors).
pub fn worker_service(app: &str, worker: &str) -> String {
    format!("{app}-{worker}")
}

/// A worker whose service would be another service of the stack (a color's under host
/// routing, an accessory), said for an error naming the key; `None` when none clashes.
pub fn worker_name_clash(config: &Config, routing: Routing) -> Option<String> {
    let app = config.app.name.as_str();
    for name in config.workers.keys() {
        let service = worker_service(app, name.as_str());
        let colors = Color::ALL.map(|c| color_service(app, c));
        let clash = if config.accessories.keys().any(|a| a.as_str() == service) {
            "an accessory"
        } else if routing == Routing::Host && colors.contains(&service) {
            "the app's color service under `routing: host`"
        } else {
            continue;
        };
        return Some(format!(
            "workers.{name}: under the swarm engine worker `{name}` runs as the service `{service}`, which is also {clash}; rename one"
        ));
    }
    None
}

/// A stack service whose swarm name (`<project>_<service>`) swarm would refuse at create
/// time, said for an error naming the key; `None` when every name is valid. swarmkit takes a
/// service name as a DNS label: at most 63 characters, ending in a letter or digit
/// (`manager/controlapi/common.go`, `validateAnnotations`). Found by the daemon instead, a
/// worker's bad name would fail the workers' stack deploy after the web had moved.
pub fn invalid_service_name(config: &Config, routing: Routing) -> Option<String> {
    let app = config.app.name.as_str();
    let mut services: Vec<(String, String)> = match routing {
        Routing::Host => Color::ALL
            .iter()
            .map(|c| ("app.name".to_string(), color_service(app, *c)))
            .collect(),
        Routing::Ingress => vec![("app.name".to_string(), app.to_string())],
    };
    for name in config.workers.keys() {
        services.push((
            format!("workers.{name}"),
            worker_service(app, name.as_str()),
        ));
    }
    for name in config.accessories.keys() {
        services.push((format!("accessories.{name}"), name.to_string()));
    }
    if config.app.release.is_some() {
        services.push(("app.release".to_string(), "release".to_string()));
    }
    services.into_iter().find_map(|(key, service)| {
        let full = crate::docker::swarm::service_name(config.project.as_str(), &service);
        let why = if full.len() > 63 {
            format!("is {} characters; swarm allows 63", full.len())
        } else if !full.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            "does not end in a letter or digit, as swarm requires".to_string()
        } else {
            return None;
        };
        Some(format!(
            "{key}: under the swarm engine this runs as the service `{full}` (`<project>_<service>`), which {why}; shorten or rename it (or the project)"
        ))
    })
}

/// The stack service of a color under host routing: `<app>-blue` / `<app>-green`.
pub fn color_service(app: &str, color: Color) -> String {
    format!("{app}-{color}")
}

impl HealthView {
    fn of(app: &crate::config::App) -> HealthView {
        let health = &app.health;
        let test = health.command.clone().unwrap_or_else(|| {
            vec![
                "CMD-SHELL".to_string(),
                format!(
                    "curl -fsS http://127.0.0.1:{}{} || exit 1",
                    app.port, health.path
                ),
            ]
        });
        HealthView {
            test: serde_json::json!(literals(&test)),
            // A healthcheck runs a process in the container every interval, for the task's
            // whole life: not more often than once a second.
            interval: go_duration(health.interval.get().max(Duration::from_secs(1))),
            timeout: go_duration(health.probe_timeout.get()),
            retries: 3,
            // Failures while the app boots do not count; a pass ends the period.
            start_period: go_duration(health.timeout.get()),
        }
    }
}

/// An accessory's ports as the routing mesh may publish them. The mesh ignores a host
/// address and would publish the port on every interface of every node: a database bound to
/// 127.0.0.1 on one box must not become public on a cluster. Services reach it by name
/// instead, so such ports are left out, with a note.
fn mesh_ports(specs: &[String], owner: &str, name: &str, notes: &mut Vec<String>) -> Vec<String> {
    let mut ports = Vec::new();
    for spec in specs {
        if binds_host_address(spec) {
            notes.push(format!(
                "{owner}.ports: left out `{spec}`: swarm publishes on every node and interface, not on one address; the app reaches `{name}` by service name"
            ));
        } else {
            ports.push(literal(spec));
        }
    }
    ports
}

/// Adds `<KEY>_FILE=/run/secrets/<KEY>` for every secret key: under swarm a secret is a file,
/// and the `_FILE` convention is what official images (mysql, postgres, …) read.
fn with_file_vars(
    mut items: Vec<EnvItem>,
    keys: &BTreeSet<String>,
    owner: &str,
) -> anyhow::Result<Vec<EnvItem>> {
    for key in keys {
        let var = format!("{key}_FILE");
        if items.iter().any(|i| i.key == var) {
            bail!("{owner}.environment.{var}: cutover sets `{var}` to the swarm secret file of `{key}`; remove it from the environment");
        }
        items.push(EnvItem {
            key: var,
            value: format!("/run/secrets/{key}"),
        });
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(items)
}

/// compose `restart` → swarm `restart_policy` (`no` → none, `always`/`unless-stopped` → any,
/// `on-failure[:N]` → on-failure with at most N attempts).
fn restart_policy(restart: &crate::config::Restart) -> Restart {
    use crate::config::Restart as Policy;
    let (condition, max_attempts) = match *restart {
        Policy::No => ("none", None),
        Policy::Always | Policy::UnlessStopped => ("any", None),
        Policy::OnFailure { max_attempts } => ("on-failure", max_attempts),
    };
    Restart {
        condition,
        max_attempts,
    }
}

/// `127.0.0.1:3306:3306` binds a host address; `3306:3306` and `3306` do not.
fn binds_host_address(spec: &str) -> bool {
    let without_proto = spec.split('/').next().unwrap_or(spec);
    without_proto.starts_with('[') || without_proto.matches(':').count() >= 2
}

/// A duration as compose files write it (Go's syntax): `1s`, `500ms`, `1m30s` is `90s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_map() {
        let c = |r: &str| {
            let p = restart_policy(&crate::config::Restart::parse(r).unwrap());
            (p.condition, p.max_attempts)
        };
        assert_eq!(c("on-failure"), ("on-failure", None));
        assert_eq!(c("on-failure:5"), ("on-failure", Some(5)));
        assert_eq!(c("always"), ("any", None));
        assert_eq!(c("unless-stopped"), ("any", None));
        assert_eq!(c("no"), ("none", None));
        // A typo is refused at parse time, never guessed as on-failure.
        for bad in [
            "on-falure",
            "any",
            "on-failure:0",
            "on-failure:x",
            "always:3",
            "",
        ] {
            assert!(crate::config::Restart::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            crate::config::Restart::default().to_string(),
            "unless-stopped",
            "the default survives a reboot"
        );
    }

    #[test]
    fn host_bound_ports_are_detected() {
        assert!(binds_host_address("127.0.0.1:3306:3306"));
        assert!(binds_host_address("[::1]:3306:3306"));
        assert!(!binds_host_address("3306:3306"));
        assert!(!binds_host_address("3306"));
        assert!(!binds_host_address("53:53/udp"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
