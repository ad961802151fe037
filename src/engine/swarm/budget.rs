//! The memory budget on a swarm, per node: every schedulable node must hold the tasks a
//! deploy puts on it at once, checked before anything changes.
//!
//! During a deploy a node runs the old task and the new one side by side (under `routing:
//! host` one task of each color on every node; under `ingress` a start-first update, one
//! task at a time, on top of the node's share of `swarm.replicas`), so a node needs
//! `app.memory` twice under host routing (once on a first deploy), and its share of the
//! replicas plus one under ingress ([`tasks_per_node`]). Docker reports a node's memory in
//! all (`docker node inspect`: `Description.Resources.MemoryBytes`), not what is free, so
//! this is checked against the total: it catches a limit no node can ever hold, which swarm
//! would otherwise leave pending until the rollout's timeout. A node whose memory is not
//! reported fails the check (fail closed), naming the node.

use crate::config::Routing;
use crate::docker::swarm::ClusterNode;

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

/// The nodes that cannot hold `tasks` tasks of `memory` bytes each, said for an error; empty
/// when every schedulable node can.
pub fn short_nodes(nodes: &[ClusterNode], memory: u64, tasks: u64) -> Vec<String> {
    let need = memory.saturating_mul(tasks);
    nodes
        .iter()
        .filter(|n| n.schedulable())
        .filter_map(|n| match n.memory {
            None => Some(format!(
                "{}: docker node inspect reports no memory (Description.Resources.MemoryBytes), so the budget cannot be checked",
                n.hostname
            )),
            Some(total) if total < need => Some(format!(
                "{}: {} MiB of memory in all, {tasks} task(s) of app.memory {} MiB need {} MiB",
                n.hostname,
                total >> 20,
                memory >> 20,
                need >> 20
            )),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let short = short_nodes(&nodes, 600 << 20, 2);
        assert_eq!(short.len(), 2, "{short:?}");
        assert!(
            short[0].starts_with(
                "small: 1024 MiB of memory in all, 2 task(s) of app.memory 600 MiB need 1200 MiB"
            ),
            "{short:?}"
        );
        assert!(
            short[1].starts_with("silent: docker node inspect reports no memory"),
            "{short:?}"
        );
        assert!(short_nodes(&nodes[..1], 600 << 20, 2).is_empty());
        // An absurd limit does not overflow into a pass.
        assert_eq!(short_nodes(&nodes[..1], u64::MAX, 2).len(), 1);
    }

    #[test]
    fn under_ingress_a_node_holds_its_share_of_the_replicas_plus_the_new_task() {
        let gib = 1 << 30;
        let one = [node("only", Some(2 * gib), "ready")];
        // 4 replicas of 600 MiB on one 2 GiB node: 4 running + 1 starting = 3000 MiB.
        let tasks = tasks_per_node(Routing::Ingress, 4, &one, false);
        assert_eq!(tasks, 5);
        assert_eq!(short_nodes(&one, 600 << 20, tasks).len(), 1);
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
}
