//! The memory budget on a swarm, per node: every schedulable node must hold the tasks a
//! deploy puts on it at once, in the memory the node has free for them, checked before
//! anything changes.
//!
//! During a deploy a node runs the old task and the new one side by side (under `routing:
//! host` one task of each color on every node; under `ingress` a start-first update, one
//! task at a time, on top of the node's share of `swarm.replicas`), so a node needs
//! `app.memory` twice under host routing (once on a first deploy), and its share of the
//! replicas plus one under ingress ([`tasks_per_node`]).
//!
//! **Free memory.** Docker reports a node's memory in all (`docker node inspect`:
//! `Description.Resources.MemoryBytes`), never what is free on it, and the manager (the only
//! engine cutover talks to) cannot read another node's `/proc/meminfo`; `docker info` on each
//! node would need every node's engine reachable from where cutover runs, which a cluster
//! does not give. What the manager does know is every task it placed: `docker node ps` lists
//! the tasks meant to run on each node and `docker inspect --type task` gives each one's
//! memory limit and reservation, as JSON. So a node's free memory here is its total less
//! what the tasks of *other* services hold there (the larger of each task's limit and
//! reservation) — the same bookkeeping swarm's own scheduler does with reservations, with
//! limits counted too, since a limit is what a task may take. This project's own tasks are
//! left out because [`tasks_per_node`] already counts them (the old color or the running
//! replicas) and [`workers_need`] counts the workers'; its accessories are not left out (they
//! stay up through the deploy, holding their memory like any other service).
//!
//! **Workers.** A worker is one replica with no placement, so swarm may put it on any
//! node: every node is budgeted for every worker, twice for one that runs and moves (a
//! start-first update runs the old task and the new one side by side), once for one this
//! deploy creates. That is the worst case (all workers on one node), which a one-node swarm
//! is. What it cannot see: tasks that set neither (counted as 0) and containers
//! started on a node outside swarm. A node whose memory is not reported fails the check (fail
//! closed), naming the node.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, Routing};
use crate::docker::swarm::{ClusterNode, NodeTask};

use super::workers::WorkerTarget;

/// What one node must hold at once during a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// `app.memory`, in bytes.
    pub memory: u64,
    /// App tasks at once ([`tasks_per_node`]).
    pub tasks: u64,
    /// The workers' tasks, in bytes ([`workers_need`]).
    pub workers: u64,
}

impl Need {
    fn bytes(&self) -> u64 {
        self.memory
            .saturating_mul(self.tasks)
            .saturating_add(self.workers)
    }
}

/// The memory the workers' tasks may take on one node during this deploy: each worker's
/// memory twice when it runs already (its start-first move), once when this deploy creates
/// it.
pub(super) fn workers_need(config: &Config, running: &[WorkerTarget]) -> u64 {
    worker_bytes(
        config
            .workers
            .iter()
            .map(|(name, worker)| (name.as_str(), worker.memory.bytes())),
        running,
    )
}

fn worker_bytes<'a>(
    workers: impl Iterator<Item = (&'a str, u64)>,
    running: &[WorkerTarget],
) -> u64 {
    workers
        .map(|(name, memory)| {
            let runs = running
                .iter()
                .any(|w| w.name == name && w.from_image.is_some());
            memory.saturating_mul(if runs { 2 } else { 1 })
        })
        .fold(0u64, u64::saturating_add)
}

/// How many app tasks the fullest schedulable node holds at once during this deploy:
/// `routing: host` runs one task per color on every node (a global service each); `ingress`
/// spreads `replicas` over the nodes (swarm's spread strategy: the fullest gets the share
/// rounded up) and a start-first update adds one new task beside them. With no schedulable
/// node every replica would land on one, so the share is all of them.
pub fn tasks_per_node(routing: Routing, replicas: u32, nodes: &[ClusterNode], first: bool) -> u64 {
    let update = if first { 0 } else { 1 };
    match routing {
        Routing::Host => 1 + update,
        Routing::Ingress => {
            let schedulable = nodes.iter().filter(|n| n.schedulable()).count().max(1) as u64;
            u64::from(replicas).div_ceil(schedulable) + update
        }
    }
}

/// The ids of the stack's services whose tasks [`Need`] counts (the app's colors, its
/// workers, a leftover release job): every one of `services` (id, name) but the
/// `accessories` (full service names), which stay up through a deploy and are held memory.
pub(super) fn counted_by_need<'a>(
    services: impl Iterator<Item = (&'a str, &'a str)>,
    accessories: &BTreeSet<String>,
) -> BTreeSet<String> {
    services
        .filter(|(_, name)| !accessories.contains(*name))
        .map(|(id, _)| id.to_string())
        .collect()
}

/// What the tasks of services other than `own` (ids) hold on each node (id), in bytes.
pub fn held_by_others(tasks: &[NodeTask], own: &BTreeSet<String>) -> BTreeMap<String, u64> {
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks.iter().filter(|t| !own.contains(&t.service)) {
        let slot = held.entry(task.node.clone()).or_default();
        *slot = slot.saturating_add(task.memory.unwrap_or(0));
    }
    held
}

/// The nodes that cannot hold `need` in their free memory (the total less `held`, what other
/// services' tasks hold there), said for an error; empty when every schedulable node can.
pub fn short_nodes(
    nodes: &[ClusterNode],
    need: &Need,
    held: &BTreeMap<String, u64>,
) -> Vec<String> {
    let Need {
        memory,
        tasks,
        workers,
    } = *need;
    let need = need.bytes();
    let with_workers = match workers {
        0 => String::new(),
        w => format!(" and the workers' tasks {} MiB", w >> 20),
    };
    nodes
        .iter()
        .filter(|n| n.schedulable())
        .filter_map(|n| {
            let Some(total) = n.memory else {
                return Some(format!(
                    "{}: docker node inspect reports no memory (Description.Resources.MemoryBytes), so the budget cannot be checked",
                    n.hostname
                ));
            };
            let others = held.get(&n.id).copied().unwrap_or(0);
            let free = total.saturating_sub(others);
            (free < need).then(|| {
                format!(
                    "{}: {} MiB free ({} MiB in all, {} MiB held by other services' tasks), {tasks} task(s) of app.memory {} MiB{with_workers} need {} MiB",
                    n.hostname,
                    free >> 20,
                    total >> 20,
                    others >> 20,
                    memory >> 20,
                    need >> 20
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(memory: u64, tasks: u64) -> Need {
        Need {
            memory,
            tasks,
            workers: 0,
        }
    }

    fn node(name: &str, memory: Option<u64>, state: &str) -> ClusterNode {
        ClusterNode {
            id: name.into(),
            hostname: name.into(),
            addr: "10.0.0.1".into(),
            state: state.into(),
            availability: "active".into(),
            manager: false,
            memory,
        }
    }

    #[test]
    fn a_node_too_small_or_silent_is_named_and_a_down_node_is_not_counted() {
        let gib = 1 << 30;
        let nodes = [
            node("big", Some(4 * gib), "ready"),
            node("small", Some(gib), "ready"),
            node("silent", None, "ready"),
            node("gone", Some(1), "down"),
        ];
        let none = BTreeMap::new();
        let short = short_nodes(&nodes, &need(600 << 20, 2), &none);
        assert_eq!(short.len(), 2, "{short:?}");
        assert!(
            short[0].starts_with(
                "small: 1024 MiB free (1024 MiB in all, 0 MiB held by other services' tasks), 2 task(s) of app.memory 600 MiB need 1200 MiB"
            ),
            "{short:?}"
        );
        assert!(
            short[1].starts_with("silent: docker node inspect reports no memory"),
            "{short:?}"
        );
        assert!(short_nodes(&nodes[..1], &need(600 << 20, 2), &none).is_empty());
        // An absurd limit does not overflow into a pass.
        assert_eq!(short_nodes(&nodes[..1], &need(u64::MAX, 2), &none).len(), 1);
    }

    #[test]
    fn under_ingress_a_node_holds_its_share_of_the_replicas_plus_the_new_task() {
        let gib = 1 << 30;
        let one = [node("only", Some(2 * gib), "ready")];
        // 4 replicas of 600 MiB on one 2 GiB node: 4 running + 1 starting = 3000 MiB.
        let tasks = tasks_per_node(Routing::Ingress, 4, &one, false);
        assert_eq!(tasks, 5);
        assert_eq!(
            short_nodes(&one, &need(600 << 20, tasks), &BTreeMap::new()).len(),
            1
        );
        let three = [
            node("a", Some(gib), "ready"),
            node("b", Some(gib), "ready"),
            node("c", Some(gib), "ready"),
            node("gone", Some(gib), "down"),
        ];
        assert_eq!(tasks_per_node(Routing::Ingress, 4, &three, false), 3);
        assert_eq!(tasks_per_node(Routing::Ingress, 4, &three, true), 2);
        assert_eq!(tasks_per_node(Routing::Ingress, 2, &three, false), 2);
        assert_eq!(tasks_per_node(Routing::Ingress, 100, &[], false), 101);
        // Host routing: one global task per color, whatever swarm.replicas says.
        assert_eq!(tasks_per_node(Routing::Host, 100, &three, false), 2);
        assert_eq!(tasks_per_node(Routing::Host, 100, &three, true), 1);
    }

    #[test]
    fn free_memory_is_the_total_less_what_other_services_tasks_hold() {
        let gib: u64 = 1 << 30;
        let task = |node: &str, service: &str, memory: Option<u64>| NodeTask {
            node: node.into(),
            service: service.into(),
            memory,
        };
        let tasks = [
            task("a", "other", Some(gib)),
            task("a", "other", Some(gib / 2)),
            task("a", "unlimited", None),
            task("a", "mine", Some(3 * gib)),
            task("b", "other", Some(gib / 4)),
        ];
        let own: BTreeSet<String> = ["mine".to_string()].into();
        let held = held_by_others(&tasks, &own);
        assert_eq!(held.get("a"), Some(&(gib + gib / 2)), "own tasks left out");
        assert_eq!(held.get("b"), Some(&(gib / 4)));
        assert_eq!(held.get("c"), None);
        let nodes = [
            node("a", Some(4 * gib), "ready"),
            node("b", Some(4 * gib), "ready"),
        ];
        // 2 tasks of 1 GiB: both nodes' totals hold them; a's free 2.5 GiB does too.
        assert!(short_nodes(&nodes, &need(gib, 2), &held).is_empty());
        // 2 tasks of 1.5 GiB (3 GiB): a has 2.5 GiB free of 4, b 3.75 GiB.
        let short = short_nodes(&nodes, &need(3 * gib / 2, 2), &held);
        assert_eq!(
            short,
            vec!["a: 2560 MiB free (4096 MiB in all, 1536 MiB held by other services' tasks), 2 task(s) of app.memory 1536 MiB need 3072 MiB".to_string()]
        );
        // More held than the node has is 0 free, not an overflow.
        let full = held_by_others(
            &[
                task("a", "other", Some(u64::MAX)),
                task("a", "x", Some(gib)),
            ],
            &own,
        );
        assert_eq!(full.get("a"), Some(&u64::MAX));
        assert_eq!(short_nodes(&nodes[..1], &need(1, 1), &full).len(), 1);
    }

    #[test]
    fn every_node_holds_each_worker_twice_when_it_moves_and_once_when_it_is_created() {
        let mib: u64 = 1 << 20;
        let gib: u64 = 1 << 30;
        let running = |name: &str, image: Option<&str>| WorkerTarget {
            name: name.into(),
            service: format!("p_web-{name}"),
            from_image: image.map(str::to_string),
        };
        let targets = [running("mover", Some("app:v1")), running("fresh", None)];
        let workers = [
            ("mover", 100 * mib),
            ("fresh", 50 * mib),
            ("huge", u64::MAX),
        ];
        assert_eq!(
            worker_bytes(workers[..2].iter().copied(), &targets),
            250 * mib
        );
        // An absurd worker memory saturates into a refusal, not an overflow into a pass.
        assert_eq!(worker_bytes(workers.iter().copied(), &targets), u64::MAX);
        let nodes = [node("a", Some(gib), "ready")];
        // 2 app tasks of 400 MiB fit 1 GiB; with the workers' 250 MiB they do not.
        assert!(short_nodes(&nodes, &need(400 * mib, 2), &BTreeMap::new()).is_empty());
        let with = Need {
            memory: 400 * mib,
            tasks: 2,
            workers: 250 * mib,
        };
        assert_eq!(
            short_nodes(&nodes, &with, &BTreeMap::new()),
            vec!["a: 1024 MiB free (1024 MiB in all, 0 MiB held by other services' tasks), 2 task(s) of app.memory 400 MiB and the workers' tasks 250 MiB need 1050 MiB".to_string()]
        );
    }

    #[test]
    fn the_stacks_accessories_hold_memory_its_app_and_workers_are_counted_by_need() {
        let accessories: BTreeSet<String> = ["shop_db".to_string()].into();
        let stack = [
            ("id-blue", "shop_web-blue"),
            ("id-mail", "shop_web-mail"),
            ("id-db", "shop_db"),
        ];
        let own = counted_by_need(stack.iter().copied(), &accessories);
        assert_eq!(own, ["id-blue".to_string(), "id-mail".to_string()].into());
        let tasks = [
            NodeTask {
                node: "a".into(),
                service: "id-db".into(),
                memory: Some(512 << 20),
            },
            NodeTask {
                node: "a".into(),
                service: "id-blue".into(),
                memory: Some(256 << 20),
            },
        ];
        assert_eq!(held_by_others(&tasks, &own).get("a"), Some(&(512 << 20)));
    }
}
