#!/usr/bin/env bash
# What a switch costs clients that keep their connection (issue #26): 100 keep-alive HTTP/1.1
# clients (GETs and POSTs on one reused connection each, no retry) and 50 WebSockets opened
# before each deploy, through nginx, while cutover deploys blue <-> green; and nginx's floor:
# bare `nginx -s reload`s under the same load, no deploy. The clients are cutover's own
# (src/demo/keepalive.rs, src/demo/websocket.rs) run by examples/switch-load.rs. Prints a
# markdown table and writes bench/results/keepalive-<switch>.{json,md}.
#
#   bench/keepalive.sh [--deploys N] [--reloads N] [--clients N] [--sockets N] [--switch MODE]
#
#   --deploys N   deploys measured, alternating v2 -> green, v1 -> blue (default 4)
#   --reloads N   bare reloads for the floor, 2 s apart (default 10; 0: no floor)
#   --clients N   keep-alive clients (default 100); --sockets N WebSockets (default 50)
#   --switch MODE nginx.switch for the deploys: reload (default; today's include + reload) or
#                 nft (needs a cutover with the nftables switch, and root)
#
# Needs docker (engine running), the demo images (built when missing), nginx, python3. The
# site is cutover's rendered site plus what a WebSocket needs through nginx (HTTP/1.1 to the
# app, Upgrade and Connection passed on), as the project's own template. Everything runs on
# loopback, bounded, and is removed on exit.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEPLOYS=4
RELOADS=10
CLIENTS=100
SOCKETS=50
SWITCH=reload
while [[ $# -gt 0 ]]; do
    case "$1" in
        --deploys) DEPLOYS=$2; shift 2 ;;
        --reloads) RELOADS=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --sockets) SOCKETS=$2; shift 2 ;;
        --switch) SWITCH=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "keepalive.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $SWITCH == reload || $SWITCH == nft ]] || { echo "keepalive.sh: --switch is reload or nft, not $SWITCH" >&2; exit 2; }
# Each deploy (and its load) is bounded; nothing here should take minutes.
DEPLOY_LIMIT_S=120

need docker nginx python3
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable" >&2; exit 1; }
build_release
demo_images
log "build the load client (cargo build --release --example switch-load)"
cargo build --release --locked --quiet --example switch-load
LOAD_BIN=${CARGO_TARGET_DIR:-$repo_root/target}/release/examples/switch-load
v2_config=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/docker-config
if [[ -z "${DOCKER_CONFIG:-}" && -e "$v2_config/cli-plugins/docker-compose" ]]; then
    export DOCKER_CONFIG=$v2_config
fi

WORK=$(mktemp -d /tmp/cutover-keepalive.XXXXXX)
RAW=$WORK/raw
PROJECT=cutover-keepalive-$$
read -r BLUE GREEN NGINX_PORT SWITCH_A SWITCH_B < <(free_ports 5)
PREFIX=$WORK/nginx
CUT_DIR=$WORK/cutover
mkdir -p "$RAW" "$PREFIX" "$CUT_DIR/templates"
# The box-wide project registry and the nft switch's saved rulesets (the boot restore's): the
# run's own, never the box's.
export CUTOVER_REGISTRY_DIR=$WORK/registry CUTOVER_SWITCH_DIR=$WORK/switch
nginx_in "$PREFIX"
LOAD_PID=""

cleanup() {
    local rc=$?
    set +e
    [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null
    remove_compose_project "$PROJECT"
    if [[ -f "$PREFIX/nginx.pid" ]]; then
        "${NGINX[@]}" -s quit 2>/dev/null
        for _ in $(seq 50); do [[ -f "$PREFIX/nginx.pid" ]] || break; sleep 0.1; done
        [[ -f "$PREFIX/nginx.pid" ]] && kill -9 "$(cat "$PREFIX/nginx.pid")" 2>/dev/null
    fi
    # The nft switch's table (src/nft.rs names it cutover_<project>).
    [[ $SWITCH == nft ]] && nft delete table ip "cutover_$PROJECT" 2>/dev/null
    rm -rf "$WORK"
    [[ $rc -eq 0 ]] || echo "bench/keepalive.sh failed (exit $rc); containers, nginx and $WORK removed" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the stage ----------------------------------------------------------------------------
demo_project_yml "$PROJECT" 1000 "$BLUE" "$GREEN" "$PREFIX" "$NGINX_PORT" 60s "settle: 5s" \
    >"$CUT_DIR/cutover.yml"
if [[ $SWITCH == nft ]]; then
    # nft mode reads the site nginx loads (its upstream addresses).
    printf '  site: %s\n  switch: nft\n  switch_ports: [%s, %s]\n' "$PREFIX/site.conf" "$SWITCH_A" "$SWITCH_B" \
        >>"$CUT_DIR/cutover.yml"
fi
# The built-in site plus the WebSocket lines (the same override as tests/integration/switch_clients.rs).
python3 - templates/nginx-site.conf.j2 "$CUT_DIR/templates/nginx-site.conf.j2" <<'PY'
import sys
site = open(sys.argv[1]).read()
anchor = "        proxy_set_header X-Forwarded-Proto $scheme;\n"
assert anchor in site, "the site template changed"
upgrade = ("        proxy_http_version 1.1;\n"
           "        proxy_set_header Upgrade $http_upgrade;\n"
           "        proxy_set_header Connection $connection_upgrade;\n")
out = ("map $http_upgrade $connection_upgrade {\n    default upgrade;\n    '' close;\n}\n\n"
       + site.replace(anchor, anchor + upgrade))
open(sys.argv[2], "w").write(out)
PY
"$BIN" -q -C "$CUT_DIR" render --out rendered >/dev/null
write_nginx_conf "$PREFIX"
cp "$CUT_DIR/rendered/nginx-site.conf" "$PREFIX/site.conf"
cp "$CUT_DIR/rendered/service-url.inc" "$PREFIX/service-url.inc"
"${NGINX[@]}" -t -q
"${NGINX[@]}"

# start_load NAME: the clients (and sockets) in the background, on $RAW/NAME.json.
start_load() {
    "$LOAD_BIN" --port "$NGINX_PORT" --clients "$CLIENTS" --sockets "$SOCKETS" \
        --seconds "$DEPLOY_LIMIT_S" --out "$RAW/$1.json" 2>"$RAW/$1.err" &
    LOAD_PID=$!
    sleep 2
}
stop_load() {
    sleep 1
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" || { echo "the load client failed:" >&2; cat "$RAW/$1.err" >&2; exit 1; }
    LOAD_PID=""
}

log "first deploy (v1 -> blue, not measured)"
timeout "$DEPLOY_LIMIT_S" "$BIN" -q -C "$CUT_DIR" deploy --image cutover-demo:v1 >/dev/null

for n in $(seq 1 "$DEPLOYS"); do
    if (( n % 2 == 1 )); then tag=v2; to=green; else tag=v1; to=blue; fi
    start_load "deploy-$n"
    t0=$(now)
    rc=0
    timeout "$DEPLOY_LIMIT_S" "$BIN" -C "$CUT_DIR" deploy --image "cutover-demo:$tag" --json \
        >"$RAW/deploy-$n.out" 2>"$RAW/deploy-$n.log" || rc=$?
    t1=$(now)
    stop_load "deploy-$n"
    echo "{\"n\": $n, \"to\": \"$to\", \"t0\": $t0, \"t1\": $t1, \"exit\": $rc}" >>"$RAW/deploys.jsonl"
    note "deploy $n: $tag -> $to, exit $rc, $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
done

if (( RELOADS > 0 )); then
    log "nginx's floor: $RELOADS bare reloads under the same load"
    start_load floor
    for _ in $(seq 1 "$RELOADS"); do
        now >>"$RAW/reloads.txt"
        "${NGINX[@]}" -s reload
        sleep 2
    done
    stop_load floor
fi

# ---- the table ----------------------------------------------------------------------------
mkdir -p bench/results
python3 - "$RAW" "$SWITCH" "$DEPLOYS" "$RELOADS" "$CLIENTS" "$SOCKETS" "$(git rev-parse --short HEAD)" <<'PY'
import json, os, statistics, sys
raw, switch, deploys, reloads, clients, sockets, commit = sys.argv[1:]
deploys, reloads = int(deploys), int(reloads)

def load(name):
    return json.load(open(os.path.join(raw, name + ".json")))

def secs(v):
    return "–" if v is None else f"{v:.2f} s"

def kinds(k):
    return ", ".join(f"{n.replace('_', ' ')} {v}" for n, v in sorted(k.items())) or "–"

runs = []
if deploys:
    recs = [json.loads(l) for l in open(os.path.join(raw, "deploys.jsonl"))]
    docs = [load(f"deploy-{r['n']}") for r in recs]
    ka = [d["keepalive"] for d in docs]
    by_kind, ends, after_start = {}, {}, []
    for r, d in zip(recs, docs):
        for k, v in d["keepalive"]["failed_by_kind"].items():
            by_kind[k] = by_kind.get(k, 0) + v
        for o in d["websockets"]["outcomes"]:
            e = o["end"]
            key = e["kind"] if e["kind"] != "close_frame" else f"close frame {e['code']}, then {e['tcp']}"
            ends[key] = ends.get(key, 0) + 1
            if o["ended_ms"] is not None:
                after_start.append(d["started_unix"] + o["ended_ms"] / 1000 - r["t0"])
    walls = [r["t1"] - r["t0"] for r in recs]
    runs.append({
        "case": f"cutover deploys, switch: {switch}", "count": f"{deploys} deploys ({sum(r['exit'] == 0 for r in recs)} ok)",
        "sent": sum(k["sent"] for k in ka), "failed": sum(k["failed"] for k in ka),
        "kinds": by_kind, "posts": (sum(k["posts_sent"] for k in ka), sum(k["posts_answered"] for k in ka)),
        "per": sum(k["failed"] for k in ka) / deploys, "per_what": "deploy",
        "ws": ends, "ws_end": statistics.median(after_start) if after_start else None,
        "wall": statistics.median(walls),
    })
if reloads:
    d = load("floor")
    k = d["keepalive"]
    ends = {}
    for o in d["websockets"]["outcomes"]:
        ends[o["end"]["kind"]] = ends.get(o["end"]["kind"], 0) + 1
    runs.append({
        "case": "nginx's floor: bare `nginx -s reload`, no deploy", "count": f"{reloads} reloads",
        "sent": k["sent"], "failed": k["failed"], "kinds": k["failed_by_kind"],
        "posts": (k["posts_sent"], k["posts_answered"]), "per": k["failed"] / reloads, "per_what": "reload",
        "ws": ends, "ws_end": None, "wall": None,
    })

lines = [
    f"| case | runs | keep-alive requests ({clients} clients) | failed | failure kinds | POSTs failed | failed per deploy / reload | WebSockets ({sockets} per run): how they ended | socket end − deploy start, median | deploy wall time, median |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
for r in runs:
    ws = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(r["ws"].items()))
    lines.append(
        f"| {r['case']} | {r['count']} | {r['sent']:,} | {r['failed']:,} | {kinds(r['kinds'])} | "
        f"{r['posts'][0] - r['posts'][1]:,} of {r['posts'][0]:,} | {r['per']:.1f} per {r['per_what']} | {ws} | "
        f"{secs(r['ws_end'])} | {secs(r['wall'])} |")
table = "\n".join(lines)
print(table)
json.dump(runs, open(f"bench/results/keepalive-{switch}.json", "w"), indent=1)
open(f"bench/results/keepalive-{switch}.md", "w").write(table + f"\n\ncommit {commit}\n")
PY
