//! `swarm.routing: host`: cutover's blue/green model on a swarm, without the routing mesh.
//!
//! The mesh is IPVS, which many kernels (LXC, hardened, this test machine's) lack. Here blue
//! and green are two global services (`<app>-blue`, `<app>-green`), each publishing its color
//! port in host mode on every node, and a front nginx proxies to an `upstream` of node:port
//! for the active color, with passive health checks (`max_fails`, `fail_timeout`) and
//! `proxy_next_upstream`, so a node that dies is skipped without a deploy. Then the compose
//! engine's steps: wait for the new color's tasks, gate every task through its node's port,
//! switch the upstream (test + reload), watch the new color for `app.settle` and switch back
//! on failure (a wrong answer, or a gated task that died), wait for the old nginx workers to
//! drain, and scale the old color to 0 (drop it from the stack, `--prune`). A failure after
//! the stack deploy drops the new color the same way, unless nginx still routes to it.
//!
//! `mode: global` rather than replicas with placement: a host port can be bound by one task
//! per node anyway, global runs exactly that one task on every schedulable node, a node that
//! joins (or rejoins) gets its task without a deploy, and a lost node leaves no task pending.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::stack::color_service;
use super::Run;
use crate::config::{Color, Config};
use crate::docker::swarm::{self, ClusterNode};
use crate::engine::{Abort, Failed, Step};
use crate::health::{Answer, Prober};
use crate::nginx::Nginx;
use crate::render::{Renderer, SWARM_INCLUDE, SWARM_UPSTREAM};

/// The marker line of the upstream file that names the active color.
const ACTIVE_MARKER: &str = "# cutover-swarm-active: ";

/// What the front nginx routes to now, and what a host-routed deploy decided.
#[derive(Debug, Clone)]
pub struct Colors {
    /// The color in traffic and its image, when one is.
    pub active: Option<(Color, String)>,
    /// The color this deploy starts.
    pub new: Color,
}

/// The http-level file with the active color's upstream.
pub fn upstream_file(config: &Config) -> PathBuf {
    config
        .swarm
        .as_ref()
        .and_then(|s| s.upstream.clone())
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "/etc/nginx/conf.d/cutover-{}-swarm.conf",
                config.project
            ))
        })
}

/// The color the upstream file routes to (its marker line), `None` before the first switch.
pub fn routed_color(config: &Config) -> anyhow::Result<Option<Color>> {
    let path = upstream_file(config);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(ACTIVE_MARKER))
        .and_then(|c| match c.trim() {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        }))
}

/// The active color and its running image, and the color to deploy: the one nginx routes
/// to, else the only color service that exists; blue on a first deploy.
pub fn observe(config: &Config, project: &str) -> anyhow::Result<Colors> {
    let app = config.app.name.as_str();
    let image_of = |color: Color| -> anyhow::Result<Option<String>> {
        Ok(
            swarm::service(&swarm::service_name(project, &color_service(app, color)))?
                .map(|s| swarm::display_image(&s.image).to_string()),
        )
    };
    let (blue, green) = (image_of(Color::Blue)?, image_of(Color::Green)?);
    let active = match (routed_color(config)?, &blue, &green) {
        (Some(Color::Blue), Some(image), _) => Some((Color::Blue, image.clone())),
        (Some(Color::Green), _, Some(image)) => Some((Color::Green, image.clone())),
        (_, Some(image), None) => Some((Color::Blue, image.clone())),
        (_, None, Some(image)) => Some((Color::Green, image.clone())),
        _ => None,
    };
    let new = match &active {
        Some((color, _)) => color.other(),
        None => Color::Blue,
    };
    Ok(Colors { active, new })
}

#[derive(Serialize)]
struct NodeView<'a> {
    addr: &'a str,
    hostname: &'a str,
}

/// The upstream file routing to `color` (running `image`) on `nodes`.
pub fn render_upstream(
    renderer: &Renderer,
    config: &Config,
    color: Color,
    image: &str,
    nodes: &[ClusterNode],
) -> anyhow::Result<String> {
    let nodes: Vec<NodeView> = nodes
        .iter()
        .map(|n| NodeView {
            addr: &n.addr,
            hostname: &n.hostname,
        })
        .collect();
    renderer.render(
        SWARM_UPSTREAM,
        minijinja::context! {
            project => config.project.as_str(),
            color => color.as_str(),
            image => image,
            port => config.colors.port(color),
            nodes => nodes,
            max_fails => 1,
            fail_timeout => "5s",
        },
    )
}

/// The server-level include: `$service_url` names the upstream, and the retry rules.
pub fn render_include(renderer: &Renderer, config: &Config) -> anyhow::Result<String> {
    renderer.render(
        SWARM_INCLUDE,
        minijinja::context! {
            project => config.project.as_str(),
            upstream_file => upstream_file(config).display().to_string(),
            tries => 3,
            connect_timeout => "2s",
        },
    )
}

fn nginx_for(config: &Config, include: &Path) -> Nginx {
    Nginx {
        include: include.to_path_buf(),
        test: config.nginx.test.clone(),
        reload: config.nginx.reload.clone(),
    }
}

/// One GET of the health path on `node`'s port of `color`.
fn probe(prober: &Prober, config: &Config, node: &ClusterNode, color: Color) -> Answer {
    prober.get(
        &format!(
            "http://{}:{}{}",
            node.addr,
            config.colors.port(color),
            config.app.health.path
        ),
        None,
    )
}

fn healthy(config: &Config, answer: &Answer) -> bool {
    matches!(answer, Answer::Status { code, .. } if *code == config.app.health.status)
}

/// The nodes the color's service has a serving task on, of `nodes`.
fn serving_nodes(
    service: &str,
    nodes: &[ClusterNode],
) -> anyhow::Result<(Vec<ClusterNode>, Vec<String>)> {
    let svc = swarm::service(service)?
        .with_context(|| format!("service {service} disappeared during the deploy"))?;
    let tasks = swarm::tasks(service)?;
    let mut serving = Vec::new();
    let mut errors = Vec::new();
    for node in nodes {
        let here: Vec<_> = tasks.iter().filter(|t| t.node == node.id).collect();
        if here.iter().any(|t| t.matches(&svc) && t.serving()) {
            serving.push(node.clone());
        } else if let Some(e) = here
            .iter()
            .filter(|t| t.matches(&svc) && t.state.gave_up())
            .map(|t| t.error.clone())
            .find(|e| !e.is_empty())
        {
            errors.push(format!("{}: {e}", node.hostname));
        }
    }
    Ok((serving, errors))
}

/// The task of the service's current spec serving on each node, by node id.
fn serving_tasks(service: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let svc = swarm::service(service)?
        .with_context(|| format!("service {service} disappeared during the deploy"))?;
    Ok(swarm::tasks(service)?
        .into_iter()
        .filter(|t| t.matches(&svc) && t.serving())
        .map(|t| (t.node, t.id))
        .collect())
}

impl Run<'_, '_> {
    /// Steps 5–10 under host routing; `colors` from [`observe`].
    pub(super) fn host_steps(
        &mut self,
        t: &super::Target,
        colors: &Colors,
    ) -> anyhow::Result<super::Done> {
        self.login(t)?;
        let created = self.create_secrets(t)?;
        self.release(t)?;
        self.stop_if_interrupted("the stack deploy")?;
        // A stack deploy that fails part-way may have created (or updated) the new color's
        // service before another service failed (the CLI deploys them one by one, in no set
        // order): it goes as after a failed gate.
        let deployed_at = match self.stack_deploy(t) {
            Ok(at) => at,
            Err(e) => {
                self.teardown(t, colors);
                return Err(e);
            }
        };
        let (rollout_ms, workers_before) = match self.move_to_new(t, colors, deployed_at) {
            Ok(moved) => moved,
            Err(e) => {
                self.teardown(t, colors);
                return Err(e);
            }
        };
        self.drain(&workers_before);
        let kept = (colors.new, t.image.clone());
        // The stop step's stack deploy moves the workers too (they follow the web); a first
        // deploy has no stop step, so the workers step deploys them.
        let workers_moved = match &colors.active {
            Some((old, _)) => {
                let workers = super::stack::workers_on(&self.d.loaded.config, &t.image);
                self.keep_only(t, kept.clone(), Step::Stop, workers)?;
                self.clock.done(
                    Step::Stop,
                    format!("{old} scaled to 0 (removed from the stack)"),
                );
                true
            }
            None => false,
        };
        let workers = self.move_workers(t, (!workers_moved).then(|| vec![kept]));
        let (removed, notes) = self.prune(t);
        Ok(super::Done {
            rollout_ms: Some(rollout_ms),
            created,
            removed,
            notes,
            workers: workers?,
        })
    }

    /// From the stack deploy to a settled switch: the new color's tasks, the gate, the
    /// switch and the watch window (switching back on failure). Returns the rollout's time
    /// and the nginx workers from before the switch.
    fn move_to_new(
        &mut self,
        t: &super::Target,
        colors: &Colors,
        deployed_at: Instant,
    ) -> anyhow::Result<(u64, Vec<u32>)> {
        let config = &self.d.loaded.config;
        let service = swarm::service_name(
            &t.project,
            &color_service(config.app.name.as_str(), colors.new),
        );
        let nodes = self.wait_tasks(t, &service)?;
        let rollout_ms = deployed_at.elapsed().as_millis() as u64;
        self.gate(colors.new, &nodes)?;
        // From the switch on an interrupt no longer stops the deploy before it: the watch
        // window switches back instead.
        self.stop_if_interrupted("the switch")?;
        let upstream = nginx_for(config, &upstream_file(config));
        let workers_before = upstream.worker_pids();
        self.clock.start(Step::Switch, "");
        let text = render_upstream(&self.d.renderer, config, colors.new, &t.image, &nodes)?;
        let switch = upstream.switch(&text).map_err(|e| Failed {
            message: format!("{e:#}"),
            abort: Abort::SwitchFailed,
        })?;
        let include = nginx_for(config, &config.nginx.include);
        let include_text = render_include(&self.d.renderer, config)?;
        if include.current_include()?.as_deref() != Some(include_text.as_str()) {
            include.switch(&include_text).map_err(|e| Failed {
                message: format!("{e:#}"),
                abort: Abort::SwitchFailed,
            })?;
        }
        self.clock.done(
            Step::Switch,
            format!(
                "nginx → {} on {} node{}",
                colors.new,
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" }
            ),
        );
        if let Err(e) = self.watch(colors.new, &service, &nodes, colors.active.is_some()) {
            if colors.active.is_some() {
                switch.restore(&upstream).context("switching back failed")?;
            }
            return Err(e);
        }
        Ok((rollout_ms, workers_before))
    }

    /// After a failure: the new color goes to 0 (dropped from the stack), as the compose
    /// engine removes its new color, unless nginx still routes to it (a first deploy, or a
    /// switch back that failed: the upstream file's marker says so). Best effort: a failure
    /// here is a note beside the deploy's own failure.
    fn teardown(&mut self, t: &super::Target, colors: &Colors) {
        let Some((old, old_image)) = &colors.active else {
            return;
        };
        match routed_color(&self.d.loaded.config) {
            Ok(Some(routed)) if routed == *old => {}
            _ => return,
        }
        // The workers stay as they run (this deploy did not move them yet).
        let workers = super::workers::as_they_run(t);
        match self.keep_only(t, (*old, old_image.clone()), Step::Teardown, workers) {
            Ok(()) => self.clock.done(
                Step::Teardown,
                format!("{} scaled to 0 (removed from the stack)", colors.new),
            ),
            Err(e) => {
                self.clock.failed(Step::Teardown, "failed");
                self.clock.note(format!(
                    "could not remove {} after the failure: {e:#}",
                    colors.new
                ));
            }
        }
    }

    /// Waits until every schedulable node runs a healthy task of the new color's spec (swarm
    /// reports a task running only once its healthcheck passed). Returns those nodes.
    fn wait_tasks(&mut self, t: &super::Target, service: &str) -> anyhow::Result<Vec<ClusterNode>> {
        self.clock.start(Step::Rollout, "");
        let limit = t.swarm.timeout.get();
        let started = Instant::now();
        loop {
            let nodes: Vec<ClusterNode> = swarm::nodes()?
                .into_iter()
                .filter(|n| n.schedulable())
                .collect();
            let (serving, errors) = serving_nodes(service, &nodes)?;
            if !nodes.is_empty() && serving.len() == nodes.len() {
                self.clock.done(
                    Step::Rollout,
                    format!("{} healthy on {} nodes", t.image, serving.len()),
                );
                return Ok(serving);
            }
            if errors.len() >= 3 || started.elapsed() >= limit {
                return Err(Failed {
                    message: format!(
                        "{service}: {}/{} nodes run a healthy task of {} after {:.0?}{}",
                        serving.len(),
                        nodes.len(),
                        t.image,
                        started.elapsed(),
                        if errors.is_empty() {
                            String::new()
                        } else {
                            format!("; task errors: {}", errors.join("; "))
                        }
                    ),
                    abort: if errors.is_empty() {
                        Abort::RolloutTimedOut
                    } else {
                        Abort::RolloutFailing
                    },
                }
                .into());
            }
            if self.d.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Failed {
                    message: format!("deploy interrupted while {service} started; nginx still routes to the old color"),
                    abort: Abort::Interrupted,
                }
                .into());
            }
            self.clock.waiting(
                Step::Rollout,
                started.elapsed(),
                limit,
                format!("{}/{} nodes healthy", serving.len(), nodes.len()),
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The gate: every task answers its health path through its own node's port.
    fn gate(&mut self, color: Color, nodes: &[ClusterNode]) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        self.clock.start(Step::Health, "");
        let prober = Prober::new(config.app.health.probe_timeout.get());
        let deadline = Instant::now() + config.app.health.timeout.get();
        for node in nodes {
            loop {
                if self.d.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                    self.clock
                        .failed(Step::Health, "interrupted (SIGINT/SIGTERM)");
                    return Err(Failed {
                        message: format!(
                            "deploy interrupted (SIGINT/SIGTERM) while {color} was gated; nothing was switched"
                        ),
                        abort: Abort::Interrupted,
                    }
                    .into());
                }
                let answer = probe(&prober, config, node, color);
                if healthy(config, &answer) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Failed {
                        message: format!(
                            "{color} on {} ({}:{}) did not pass its health check: {}",
                            node.hostname,
                            node.addr,
                            config.colors.port(color),
                            answer.describe()
                        ),
                        abort: Abort::HealthTimedOut,
                    }
                    .into());
                }
                std::thread::sleep(config.app.health.interval.get());
            }
        }
        self.clock.done(
            Step::Health,
            format!(
                "{color} answers on every node's port {}",
                config.colors.port(color)
            ),
        );
        Ok(())
    }

    /// The watch window: the new color must keep answering on the nodes that are still up,
    /// and the task that passed the gate on each of them must still be the one running (a
    /// task that crashed is seen in swarm's task states even when swarm restarted it between
    /// two looks); a node that leaves the swarm is the front nginx's to skip, not the new
    /// color's fault. An interrupt ends the window: a failure (the caller switches back) when
    /// there is an old color to go back to, else the deploy finishes, as under compose.
    fn watch(
        &mut self,
        color: Color,
        service: &str,
        nodes: &[ClusterNode],
        old_running: bool,
    ) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        let window = config.app.settle.get();
        if window.is_zero() {
            return Ok(());
        }
        self.clock.start(Step::Settle, "");
        let prober = Prober::new(config.app.health.probe_timeout.get());
        let started = Instant::now();
        let gated = serving_tasks(service)?;
        let mut lost = 0;
        while started.elapsed() < window {
            if self.d.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                if !old_running {
                    self.clock.done(
                        Step::Settle,
                        format!(
                            "{color} watched until an interrupt (SIGINT/SIGTERM) ended the window"
                        ),
                    );
                    return Ok(());
                }
                self.clock
                    .failed(Step::Settle, "interrupted (SIGINT/SIGTERM)");
                return Err(Failed {
                    message: format!(
                        "deploy interrupted (SIGINT/SIGTERM) in the watch window of {color}; switched back"
                    ),
                    abort: Abort::Interrupted,
                }
                .into());
            }
            let up: Vec<String> = swarm::nodes()?
                .into_iter()
                .filter(|n| n.state == "ready")
                .map(|n| n.id)
                .collect();
            let watched: Vec<&ClusterNode> = nodes.iter().filter(|n| up.contains(&n.id)).collect();
            lost = nodes.len() - watched.len();
            // A wrong answer is the new color's fault; no answer at all is a node (or its
            // link) gone, which nginx's passive health skips and swarm notices seconds
            // later: the window fails on it only when no node answers.
            let answers: Vec<(String, Answer)> = watched
                .iter()
                .map(|n| (n.hostname.clone(), probe(&prober, config, n, color)))
                .collect();
            let mut failing: Vec<String> = answers
                .iter()
                .filter(|(_, a)| matches!(a, Answer::Status { .. }) && !healthy(config, a))
                .map(|(h, a)| format!("{h}: {}", a.describe()))
                .collect();
            let running = serving_tasks(service)?;
            failing.extend(
                watched
                    .iter()
                    .filter(|n| running.get(&n.id) != gated.get(&n.id))
                    .map(|n| match running.get(&n.id) {
                        Some(_) => format!("{}: its task died and swarm replaced it", n.hostname),
                        None => format!("{}: its task no longer runs", n.hostname),
                    }),
            );
            let answering = answers
                .iter()
                .filter(|(_, a)| matches!(a, Answer::Status { .. }))
                .count();
            lost = lost.max(nodes.len() - answering);
            if !answers.is_empty()
                && answers
                    .iter()
                    .all(|(_, a)| matches!(a, Answer::NoAnswer(_)))
            {
                failing.extend(
                    answers
                        .iter()
                        .map(|(h, a)| format!("{h}: {}", a.describe())),
                );
            }
            if watched.is_empty() || !failing.is_empty() {
                self.clock.failed(Step::Settle, "failing");
                return Err(Failed {
                    message: format!(
                        "{color} stopped answering within the watch window ({}); switched back",
                        if failing.is_empty() {
                            "no node left".to_string()
                        } else {
                            failing.join(", ")
                        }
                    ),
                    abort: Abort::SettleFailed,
                }
                .into());
            }
            std::thread::sleep(Duration::from_secs(1).min(window));
        }
        self.clock.done(
            Step::Settle,
            format!(
                "{color} healthy for {window:?}{}",
                if lost > 0 {
                    format!(" ({lost} node(s) lost meanwhile)")
                } else {
                    String::new()
                }
            ),
        );
        Ok(())
    }

    /// Waits (up to `app.drain`) for the nginx workers that ran before the switch to exit:
    /// they hold the requests still in flight to the old color.
    fn drain(&mut self, workers: &[u32]) {
        self.clock.start(Step::Drain, "");
        let limit = self.d.loaded.config.app.drain.get();
        let started = Instant::now();
        while started.elapsed() < limit && workers.iter().any(|p| crate::nginx::process_alive(*p)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.clock.done(
            Step::Drain,
            format!("old nginx workers gone after {:.1?}", started.elapsed()),
        );
    }

    /// One color left in the stack (`keep`, with its image) and `workers` (with theirs): the
    /// stack file without the other color, deployed with `--prune`. Starts `step`; the caller
    /// ends it.
    fn keep_only(
        &mut self,
        t: &super::Target,
        keep: (Color, String),
        step: Step,
        workers: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        self.clock.start(step, "");
        self.deploy_partial_stack(t, vec![keep], false, true, workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(upstream: &Path) -> Config {
        let text = format!(
            "project: shop\napp: {{ name: web, image: example/web, port: 3000, memory: 128M }}\n\
             colors: {{ blue: 9001, green: 9002 }}\n\
             swarm: {{ port: 80, routing: host, upstream: {} }}\n",
            upstream.display()
        );
        Config::from_yaml(&text, Path::new("cutover.yml")).unwrap()
    }

    fn node(n: u8, state: &str) -> ClusterNode {
        ClusterNode {
            id: format!("id{n}"),
            hostname: format!("node{n}"),
            addr: format!("10.0.0.{n}"),
            state: state.into(),
            availability: "active".into(),
            manager: n == 1,
            memory: None,
        }
    }

    #[test]
    fn the_upstream_lists_every_node_on_the_color_port_and_names_the_active_color() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("up.conf");
        let config = config(&file);
        assert_eq!(upstream_file(&config), file);
        assert_eq!(routed_color(&config).unwrap(), None, "no file yet");
        let renderer = Renderer::new(dir.path()).unwrap();
        let text = render_upstream(
            &renderer,
            &config,
            Color::Green,
            "example/web:v2",
            &[node(1, "ready"), node(2, "ready")],
        )
        .unwrap();
        assert!(text.contains("upstream cutover_shop_swarm {"), "{text}");
        assert!(
            text.contains("server 10.0.0.1:9002 max_fails=1 fail_timeout=5s; # node1"),
            "{text}"
        );
        assert!(text.contains("server 10.0.0.2:9002"), "{text}");
        std::fs::write(&file, &text).unwrap();
        assert_eq!(routed_color(&config).unwrap(), Some(Color::Green));

        let include = render_include(&renderer, &config).unwrap();
        assert!(include.contains("set $service_url http://cutover_shop_swarm;"));
        assert!(include.contains("proxy_next_upstream error timeout"));
    }

    #[test]
    fn only_ready_active_nodes_get_tasks() {
        assert!(node(1, "ready").schedulable());
        assert!(!node(1, "down").schedulable());
        let drained = ClusterNode {
            availability: "drain".into(),
            ..node(2, "ready")
        };
        assert!(!drained.schedulable());
    }
}
