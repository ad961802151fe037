#!/usr/bin/env bash
# A real three-node Docker Swarm on this one machine, for the swarm engine's cluster tests
# (tests/integration/harness/cluster.rs) and for trying the engine by hand.
#
#   scripts/cluster.sh up DIR [--id N] [--nodes 3] [--owner PID]
#   scripts/cluster.sh down DIR
#   scripts/cluster.sh load DIR IMAGE...     # docker save (this engine) | docker load (every node)
#   scripts/cluster.sh kill DIR NODE         # the node dies: dockerd SIGKILLed, its link cut
#   scripts/cluster.sh revive DIR NODE       # link up, dockerd started again: it rejoins
#   scripts/cluster.sh env DIR               # the cluster's facts as shell variables
#
# Each node is a `dockerd` in a network namespace of its own (cutover-cN-nI), with its own
# address 10.213.N.(10+I) on one bridge, and its own data root, exec root, pidfile and socket
# under DIR/nI. Node 1 runs `docker swarm init` (the manager), the others join as workers,
# over those addresses: the control plane (2377), gossip (7946) and VXLAN overlay traffic
# (4789) really cross the bridge. The host reaches every node at its address (10.213.N.1 on
# its side), so a front nginx on the host can proxy to node:port.
#
# Why nothing here fights the host's Docker engine:
#   - The bridge lives in a "switch" namespace of its own (cutover-cN-sw), linked to the host
#     by one veth pair. The host engine sets the host's FORWARD policy to DROP and the kernel
#     passes bridged frames through iptables (bridge-nf-call-iptables=1): a bridge in the host
#     namespace would drop node-to-node traffic unless we edited the host's rules. In its own
#     namespace the bridge meets an empty ruleset.
#   - Every dockerd keeps `--iptables` on: iptables rules are per network namespace, so each
#     node's NAT and filter rules (which swarm's docker_gwbridge and host-mode ports need)
#     stay inside that node and never touch the host's tables.
#   - dockerd is started with `nsenter --net` (only the network namespace), not `ip netns
#     exec`, which also unshares the mount namespace and would hide the tmpfs dockerd mounts
#     for swarm secrets from the container runtime).
#   - Every dockerd runs with HTTPS_PROXY/HTTP_PROXY at a closed port of its own loopback and
#     NO_PROXY for the cluster's subnet: swarm tries to pull a task's image (a tag, not a
#     digest) before every task start, and here that pull cannot succeed (no route out); the
#     nodes share the host's /etc/resolv.conf, whose nameserver they cannot reach, so each
#     attempt waited ~20 s for DNS timeouts before swarm used the node's loaded copy. Through
#     the refused proxy it fails at once, as a node with a route out finds the image at once;
#     the registry on the host's bridge address (10.213.N.1) is reached directly.
#   - Each dockerd starts a containerd of its own (under its exec root): a node's containers
#     are that node's alone, and dying with the node is theirs to do (`kill`).
#   - `--bridge=none` (no docker0 per node; swarm makes docker_gwbridge itself), vfs storage
#     (the host engine's storage driver is not guaranteed to nest), and a default address pool
#     (local: 10.215.0.0/16, overlay:
#     10.214.0.0/16) apart from the node subnet and from each other.
#
# Every wait is bounded (CLUSTER_TIMEOUT seconds, default 60). `up` tears down what it built
# when it fails; with --owner PID a watcher runs `down` once that process is gone, so a killed
# test run leaves nothing behind.
set -euo pipefail

timeout_s=${CLUSTER_TIMEOUT:-60}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,12p' "$0" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
cmd=$1
dir=$2
shift 2

# ---- the cluster's facts, from DIR/cluster.env once `up` wrote it --------------------------
load_env() {
    [[ -f "$dir/cluster.env" ]] || die "$dir/cluster.env not found: no cluster was brought up in $dir"
    # shellcheck disable=SC1091
    . "$dir/cluster.env"
}

ns_of() { echo "cutover-c${CLUSTER_ID}-n$1"; }
sw_ns() { echo "cutover-c${CLUSTER_ID}-sw"; }
ip_of() { echo "10.213.${CLUSTER_ID}.$((10 + $1))"; }
sock_of() { echo "unix://$dir/n$1/docker.sock"; }
node_docker() {
    local n=$1
    shift
    DOCKER_HOST=$(sock_of "$n") docker "$@"
}

# Polls `$@` every 0.2 s until it succeeds or CLUSTER_TIMEOUT passes.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + timeout_s))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout_s}s waiting for $what"
        sleep 0.2
    done
}

start_dockerd() {
    local n=$1 d="$dir/n$1"
    mkdir -p "$d"
    [[ -f "$d/daemon.json" ]] || echo '{}' >"$d/daemon.json"
    # Only the network namespace: see the header.
    # A UTS namespace too, so each node has its own hostname in `docker node ls`.
    # shellcheck disable=SC2016 # $0 and $@ are expanded by that inner sh
    HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
        NO_PROXY="10.213.${CLUSTER_ID}.0/24,127.0.0.1,localhost" \
        nsenter --net="/run/netns/$(ns_of "$n")" -- unshare --uts -- sh -c \
        'hostname "$0" && exec "$@"' "$(ns_of "$n")" /usr/sbin/dockerd \
        --config-file "$d/daemon.json" \
        --data-root "$d/root" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
        -H "$(sock_of "$n")" \
        --bridge=none --storage-driver=vfs \
        --default-address-pool base=10.215.0.0/16,size=24 \
        --insecure-registry "10.213.${CLUSTER_ID}.0/24" \
        >>"$d/dockerd.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$d/dockerd.spawned"
    wait_for_dockerd "$n" "$pid" "${2:-$timeout_s}"
}

# Polls node N's engine until it answers. Fails at once, with the log's tail, when its dockerd
# has exited; and with the log's tail when the bound passes, so a CI failure is readable.
wait_for_dockerd() {
    local n=$1 pid=$2 bound=$3 log="$dir/n$1/dockerd.log"
    local deadline=$((SECONDS + bound))
    # `timeout`: /info takes the swarm component's lock, which a rejoin may hold.
    until DOCKER_HOST=$(sock_of "$n") timeout 10 docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "dockerd on node $n exited before it answered; the end of $log:
$(tail -n 30 "$log" 2>/dev/null)"
        fi
        if ((SECONDS >= deadline)); then
            die "timed out after ${bound}s waiting for dockerd on node $n; the end of $log:
$(tail -n 30 "$log" 2>/dev/null)"
        fi
        sleep 0.2
    done
}

node_ready() {
    local want=$1
    [[ $(node_docker 1 node ls --format '{{.Status}}' | grep -c '^Ready$') -ge $want ]]
}

up() {
    local id=1 nodes=3 owner=""
    while [[ $# -gt 0 ]]; do
        case $1 in
        --id) id=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --owner) owner=$2; shift 2 ;;
        *) die "up: unknown option $1" ;;
        esac
    done
    [[ $id =~ ^[0-9]+$ && $id -ge 1 && $id -le 250 ]] || die "--id must be 1..250, got $id"
    [[ $nodes =~ ^[0-9]+$ && $nodes -ge 1 && $nodes -le 9 ]] || die "--nodes must be 1..9, got $nodes"
    [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, dockerd)"
    for tool in ip nsenter dockerd docker; do
        command -v "$tool" >/dev/null || die "$tool is not installed"
    done
    CLUSTER_ID=$id
    [[ -e /run/netns/$(sw_ns) ]] && die "cluster id $id is in use (namespace $(sw_ns) exists); pick another --id or run down"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cat >"$dir/cluster.env" <<EOF
CLUSTER_ID=$id
CLUSTER_NODES=$nodes
EOF
    trap 'echo "cluster.sh: up failed; tearing down" >&2; down_quiet' ERR
    # The switch: a bridge in its own namespace, and the host's leg into it.
    ip netns add "$(sw_ns)"
    ip -n "$(sw_ns)" link add br0 type bridge
    ip -n "$(sw_ns)" link set br0 up
    ip -n "$(sw_ns)" link set lo up
    ip link add "cvc${id}h" type veth peer name up0 netns "$(sw_ns)"
    ip -n "$(sw_ns)" link set up0 master br0 up
    ip addr add "10.213.${id}.1/24" dev "cvc${id}h"
    ip link set "cvc${id}h" up
    local n
    for n in $(seq 1 "$nodes"); do
        ip netns add "$(ns_of "$n")"
        ip link add "cvc${id}n${n}" netns "$(sw_ns)" type veth peer name eth0 netns "$(ns_of "$n")"
        ip -n "$(sw_ns)" link set "cvc${id}n${n}" master br0 up
        ip -n "$(ns_of "$n")" link set lo up
        ip -n "$(ns_of "$n")" addr add "$(ip_of "$n")/24" dev eth0
        ip -n "$(ns_of "$n")" link set eth0 up
        ip -n "$(ns_of "$n")" route add default via "10.213.${id}.1"
    done
    for n in $(seq 1 "$nodes"); do
        start_dockerd "$n" &
    done
    wait_all_or_die
    node_docker 1 swarm init --advertise-addr "$(ip_of 1)" --listen-addr "$(ip_of 1):2377" \
        --default-addr-pool 10.214.0.0/16 >/dev/null
    local token
    token=$(node_docker 1 swarm join-token -q worker)
    for n in $(seq 2 "$nodes"); do
        node_docker "$n" swarm join --token "$token" --advertise-addr "$(ip_of "$n")" \
            --listen-addr "$(ip_of "$n"):2377" "$(ip_of 1):2377" >/dev/null &
    done
    wait_all_or_die
    wait_for "$nodes nodes Ready" node_ready "$nodes"
    {
        echo "CLUSTER_MANAGER=$(sock_of 1)"
        for n in $(seq 1 "$nodes"); do
            echo "CLUSTER_N${n}_HOST=$(sock_of "$n")"
            echo "CLUSTER_N${n}_ADDR=$(ip_of "$n")"
        done
    } >>"$dir/cluster.env"
    if [[ -n $owner ]]; then
        # Tear down once the owner is gone (a test run killed before its cleanup).
        setsid bash -c "while kill -0 $owner 2>/dev/null && [ -f '$dir/cluster.env' ]; do sleep 1; done; \
            [ -f '$dir/cluster.env' ] && '$0' down '$dir'" >/dev/null 2>&1 </dev/null &
        disown
    fi
    trap - ERR
    echo "cluster $id up: $nodes nodes, manager $(sock_of 1) ($(ip_of 1))"
}

wait_all_or_die() {
    local pid rc=0
    for pid in $(jobs -p); do
        wait "$pid" || rc=1
    done
    [[ $rc -eq 0 ]] || die "a node failed to start (see $dir/n*/dockerd.log)"
}

stop_dockerd() {
    local n=$1 signal=${2:-TERM} d="$dir/n$1" pid
    pid=$(cat "$d/dockerd.spawned" 2>/dev/null || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

# Everything still running on node N: its containers (through the containerd dockerd
# started for it, when that is still up), then every process in its network namespace
# (containerd, shims, docker-proxy). A SIGKILLed dockerd stops none of these by itself.
kill_node_processes() {
    local n=$1 sock="$dir/n$1/exec/containerd/containerd.sock" task pid
    if [[ -S $sock ]] && command -v ctr >/dev/null; then
        for task in $(ctr --address "$sock" --timeout 2s -n moby tasks ls -q 2>/dev/null); do
            ctr --address "$sock" --timeout 2s -n moby tasks kill -s KILL "$task" >/dev/null 2>&1 || true
        done
    fi
    for pid in $(ip netns pids "$(ns_of "$n")" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

down_quiet() {
    local n
    [[ -n ${CLUSTER_ID:-} ]] || return 0
    for n in $(seq 1 "${CLUSTER_NODES:-3}"); do
        stop_dockerd "$n" TERM &
    done
    wait
    for n in $(seq 1 "${CLUSTER_NODES:-3}"); do
        kill_node_processes "$n"
        ip netns del "$(ns_of "$n")" 2>/dev/null || true
    done
    ip link del "cvc${CLUSTER_ID}h" 2>/dev/null || true
    ip netns del "$(sw_ns)" 2>/dev/null || true
    # Secrets tmpfs and sandbox netns files dockerd mounted under the node directories.
    { grep -o " $dir/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir"
}

down() {
    [[ -d "$dir" ]] || return 0
    load_env
    down_quiet
    echo "cluster $CLUSTER_ID down"
}

kill_node() {
    local n=$1
    load_env
    # As when the machine dies: its engine stops at once and nothing reaches it any more.
    ip -n "$(sw_ns)" link set "cvc${CLUSTER_ID}n${n}" down
    stop_dockerd "$n" KILL
    kill_node_processes "$n"
    echo "node $n ($(ip_of "$n")) killed"
}

revive_node() {
    local n=$1
    load_env
    ip -n "$(sw_ns)" link set "cvc${CLUSTER_ID}n${n}" up
    # A node that was in a swarm serves its API only once its swarm component has rejoined or
    # dockerd's own 20 s wait for it (swarmConnectTimeout) has passed, after it restored its
    # dead task containers: on a loaded 2-core CI machine that once took over 60 s.
    start_dockerd "$n" $((timeout_s * 3))
    echo "node $n ($(ip_of "$n")) back"
}

case $cmd in
up) up "$@" ;;
down) down ;;
env) load_env; cat "$dir/cluster.env" ;;
load)
    load_env
    [[ $# -ge 1 ]] || die "load: name at least one image"
    for n in $(seq 1 "$CLUSTER_NODES"); do
        docker save "$@" | node_docker "$n" load -q >/dev/null &
    done
    wait_all_or_die
    ;;
kill) [[ $# -eq 1 ]] || usage; kill_node "$1" ;;
revive) [[ $# -eq 1 ]] || usage; revive_node "$1" ;;
*) usage ;;
esac
