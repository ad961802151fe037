#!/usr/bin/env bash
# A new color that dies in the watch window (issue #21): deploy v1 (blue), then v2 (green)
# with `settle: 5s` under load through nginx; once the deploy is in its settle step, green is
# killed (`docker kill -s KILL`) and the deploy switches nginx back to blue and exits 1. The
# load client counts every request that failed, for the site's two routes and both loads.
# Prints the markdown table; writes it to bench/results/watch-death.md and the raw runs to
# bench/results/watch-death.json.
#
#   bench/watch-death.sh [--runs N] [--bin BIN] [--kill-after-ms MS] [--no-floor]
#
#   --runs N           runs per case (default 5); 4 cases, interleaved run by run
#   --bin BIN          measure BIN instead of the release build of this checkout
#   --kill-after-ms MS how long into the settle window green is killed (default 1000), so
#                      the load is on green when it dies
#   --no-floor         skip nginx's own keep-alive floor (10 bare reloads, same load, no deploy)
#
# Cases: route **fallback** (the site as cutover renders it: each color's `upstream
# cutover_<project>_<color>` group with the other color as `backup`, the include naming the
# group) and **direct** (the same site with those groups removed, as an older site: cutover
# then writes the color's own address into the include), each under one connection per
# request (4 connections) and under --keepalive (4 connections), bench/load.py, no retries.
#
# Per run: the stage is reset (no containers, no .cutover/), v1 is deployed (not measured),
# the load starts, the v2 deploy starts; `.cutover/state.json` (what `cutover status` reads,
# written at each step) is polled every 20 ms for `"step": "settle"`; --kill-after-ms later
# green is killed; the deploy must exit 1 saying it switched back to blue. The load stops
# 1.5 s after the deploy exits. Reloads are nginx's own count (its "SIGHUP received" log
# lines) over the load; their times come from a wrapper around the reload command.
#
# Needs: docker (engine running), the demo images (built when missing), nginx, python3.
# Compose v2 from DOCKER_CONFIG as set up by scripts/test.sh. ~70 s per run of the 4 cases
# on the shared 2-core machine (~6 min at --runs 5); every deploy, load client and wait is
# bounded; containers, nginx and the temp dir are removed on exit. Set-up shared with run.sh
# and history.sh: bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=5
BIN=""
KILL_AFTER_MS=1000
FLOOR=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --kill-after-ms) KILL_AFTER_MS=$2; shift 2 ;;
        --no-floor) FLOOR=0; shift ;;
        -h|--help) sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "watch-death.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "watch-death.sh: --runs takes a positive number, not $RUNS" >&2; exit 2; }
[[ "$KILL_AFTER_MS" =~ ^[0-9]+$ ]] || { echo "watch-death.sh: --kill-after-ms takes milliseconds, not $KILL_AFTER_MS" >&2; exit 2; }
SETTLE_S=5
DELAY_MS=1000
CONNS=4
DEPLOY_LIMIT_S=120

# ---- prerequisites ------------------------------------------------------------------------
need docker nginx python3
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable" >&2; exit 1; }
if [[ -z "$BIN" ]]; then
    build_release
fi
[[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }
demo_images
v2_config=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/docker-config
if [[ -z "${DOCKER_CONFIG:-}" && -e "$v2_config/cli-plugins/docker-compose" ]]; then
    export DOCKER_CONFIG=$v2_config
fi
COMPOSE_VERSION=$(docker compose version --short 2>/dev/null || docker-compose version --short 2>/dev/null || echo unknown)

# ---- the stage ----------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/cutover-bench-watch.XXXXXX)
RAW=$WORK/raw
PROJECT=cutover-wd-$$
read -r BLUE GREEN NGINX_PORT < <(free_ports 3)
PREFIX=$WORK/nginx
CUT_DIR=$WORK/cutover
mkdir -p "$RAW" "$PREFIX" "$CUT_DIR"
nginx_in "$PREFIX"
BG_PIDS=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    remove_compose_project "$PROJECT"
    if [[ -f "$PREFIX/nginx.pid" ]]; then
        "${NGINX[@]}" -s quit 2>/dev/null
        for _ in $(seq 50); do [[ -f "$PREFIX/nginx.pid" ]] || break; sleep 0.1; done
        [[ -f "$PREFIX/nginx.pid" ]] && kill -9 "$(cat "$PREFIX/nginx.pid")" 2>/dev/null
    fi
    [[ -z "${BENCH_RAW_COPY:-}" ]] || { rm -rf "$BENCH_RAW_COPY"; cp -r "$RAW" "$BENCH_RAW_COPY"; }
    rm -rf "$WORK"
    [[ $rc -eq 0 ]] || echo "bench/watch-death.sh failed (exit $rc); containers, nginx and $WORK removed" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cutover's reload command: note the time, then nginx's own reload.
cat >"$WORK/reload.sh" <<EOF
#!/bin/sh
date +%s.%N >>"$RAW/reloads.log"
exec ${NGINX[*]} -s reload
EOF
chmod +x "$WORK/reload.sh"

# cutover.yml: the demo app, settle 5 s, the site at $PREFIX/site.conf (which cutover reads
# to pick the route), the reload through the wrapper.
demo_project_yml "$PROJECT" "$DELAY_MS" "$BLUE" "$GREEN" "$PREFIX" "$NGINX_PORT" 60s \
    "settle: ${SETTLE_S}s" | sed "s|^  reload: .*|  reload: $(argv_yaml "$WORK/reload.sh")|" \
    >"$CUT_DIR/cutover.yml"
echo "  site: $PREFIX/site.conf" >>"$CUT_DIR/cutover.yml"
grep -q "reload.sh" "$CUT_DIR/cutover.yml" || { echo "could not set the reload wrapper" >&2; exit 1; }
"$BIN" -q -C "$CUT_DIR" render --out rendered >/dev/null
grep -q "^upstream cutover_${PROJECT}_green {" "$CUT_DIR/rendered/nginx-site.conf" \
    || { echo "the rendered site declares no upstream cutover_${PROJECT}_green: not a fallback build" >&2; exit 1; }
# The older site: the same, without the upstream groups.
cp "$CUT_DIR/rendered/nginx-site.conf" "$WORK/site-fallback.conf"
sed "/^upstream cutover_${PROJECT}_[a-z]* {/,/^}/d" "$WORK/site-fallback.conf" >"$WORK/site-direct.conf"
if grep -q '^upstream ' "$WORK/site-direct.conf"; then echo "could not strip the upstream groups" >&2; exit 1; fi

write_nginx_conf "$PREFIX"
# notice: nginx logs each reload it receives ("signal 1 (SIGHUP) received").
sed -i 's|^error_log \(.*\) warn;|error_log \1 notice;|' "$PREFIX/nginx.conf"
cp "$WORK/site-fallback.conf" "$PREFIX/site.conf"
# Between runs the include points at blue's own address (valid for either site); v1's
# deploy rewrites it for the route the installed site allows.
# shellcheck disable=SC2016 # nginx variables, for nginx
printf 'set $cutover_upstream http://127.0.0.1:%s;\nset $service_url http://127.0.0.1:%s;\n' \
    "$BLUE" "$BLUE" >"$WORK/include-blue.inc"
cp "$WORK/include-blue.inc" "$PREFIX/service-url.inc"
"${NGINX[@]}" -t -q
"${NGINX[@]}"

# reset_stage ROUTE: no containers, no cutover state, the ROUTE's site installed, nginx on it.
reset_stage() {
    remove_compose_project "$PROJECT"
    rm -rf "$CUT_DIR/.cutover"
    cp "$WORK/site-$1.conf" "$PREFIX/site.conf"
    cp "$WORK/include-blue.inc" "$PREFIX/service-url.inc"
    "${NGINX[@]}" -t -q
    "${NGINX[@]}" -s reload
    sleep 0.5
}

# ---- load ---------------------------------------------------------------------------------
LOAD_PID=""
start_load() { # start_load OUT MODE(close|keepalive)
    local args=(--port "$NGINX_PORT" --conns "$CONNS" --max-s 300 --out "$1")
    [[ $2 == keepalive ]] && args+=(--keepalive)
    python3 bench/load.py load "${args[@]}" &
    LOAD_PID=$!
    BG_PIDS+=("$LOAD_PID")
    sleep 1
}
stop_load() { # stop_load OUT
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    for _ in $(seq 400); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
    [[ -s "$1" ]] || { echo "load client wrote no result ($1)" >&2; exit 1; }
}
sighups() { grep -c '(SIGHUP) received' "$PREFIX/logs/error.log" || true; }

# ---- one run ------------------------------------------------------------------------------
# run_one ROUTE MODE RUN: v1, then v2 killed in its settle window under load; appends a
# JSON line to $RAW/runs.jsonl.
run_one() {
    local route=$1 mode=$2 run=$3
    local id="$route-$mode-$run" rc=0 killed_at="" settle_at="" green="" t0 t1
    reset_stage "$route"
    timeout "$DEPLOY_LIMIT_S" "$BIN" -C "$CUT_DIR" deploy --image cutover-demo:v1 --json \
        >"$RAW/$id.v1.out" 2>"$RAW/$id.v1.err" \
        || { echo "$id: the v1 deploy failed:" >&2; tail -n 5 "$RAW/$id.v1.err" >&2; exit 1; }
    local want
    if [[ $route == fallback ]]; then want="http://cutover_${PROJECT}_blue;"; else want="http://127.0.0.1:$BLUE;"; fi
    grep -qF "set \$service_url $want" "$PREFIX/service-url.inc" \
        || { echo "$id: the include is not the $route route:" >&2; cat "$PREFIX/service-url.inc" >&2; exit 1; }
    : >"$RAW/reloads.log"
    local hups0
    hups0=$(sighups)
    start_load "$RAW/$id.load.json" "$mode"
    t0=$(now)
    timeout "$DEPLOY_LIMIT_S" "$BIN" -C "$CUT_DIR" deploy --image cutover-demo:v2 --json \
        >"$RAW/$id.v2.out" 2>"$RAW/$id.v2.err" &
    local deploy=$!
    BG_PIDS+=("$deploy")
    # The settle step, from the state file the deploy writes at each step (bounded).
    for _ in $(seq 3000); do
        if grep -q '"step": "settle"' "$CUT_DIR/.cutover/state.json" 2>/dev/null; then
            settle_at=$(now)
            break
        fi
        kill -0 "$deploy" 2>/dev/null || break
        sleep 0.02
    done
    if [[ -n "$settle_at" ]]; then
        sleep "$(awk -v ms="$KILL_AFTER_MS" 'BEGIN{print ms/1000}')"
        green=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
            --filter "label=com.docker.compose.service=web-green")
        if [[ -n "$green" ]] && grep -qF ":$GREEN;" "$PREFIX/service-url.inc"; then
            killed_at=$(now)
            docker kill -s KILL "$green" >/dev/null
        fi
    fi
    wait "$deploy" || rc=$?
    t1=$(now)
    sleep 1.5
    stop_load "$RAW/$id.load.json"
    local hups=$(( $(sighups) - hups0 ))
    [[ -n "$killed_at" ]] || note "$id: green was not killed (no settle step, or green not serving)"
    python3 - "$RAW/runs.jsonl" <<EOF
import json, sys
load = json.load(open("$RAW/$id.load.json"))
err = open("$RAW/$id.v2.err", errors="replace").read()
reloads = [float(l) for l in open("$RAW/reloads.log") if l.strip()]
answers = {a for thread in load["transitions"] for _, a in thread}
rec = dict(route="$route", mode="$mode", run=$run, exit=$rc,
           switched_back="switched back to blue" in err, green_killed=bool("$killed_at"),
           t_start=$t0, t_end=$t1, settle_at=float("${settle_at:-0}") or None,
           killed_at=float("${killed_at:-0}") or None, reload_times=reloads, reloads=$hups,
           saw_green="version=v2 color=green" in answers,
           sent=load["sent"], ok=load["ok"], failed=load["failed"],
           failure_kinds=load["failure_kinds"], fail_times=load["fail_times"])
with open(sys.argv[1], "a") as f: f.write(json.dumps(rec) + "\n")
kinds = ", ".join(f"{k} {v}" for k, v in sorted(rec["failure_kinds"].items())) or "-"
print(f"    {rec['route']:8} {rec['mode']:9} run {rec['run']}: exit {rec['exit']}, switched back: "
      f"{rec['switched_back']}, {rec['failed']} of {rec['sent']} failed ({kinds}), {rec['reloads']} reloads",
      file=sys.stderr)
EOF
}

log "stage: project $PROJECT, colors 127.0.0.1:$BLUE/$GREEN, nginx 127.0.0.1:$NGINX_PORT, $WORK"
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T_BEGIN=$(date +%s)
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
: >"$RAW/runs.jsonl"
for run in $(seq 1 "$RUNS"); do
    log "run $run of $RUNS"
    for route in fallback direct; do
        for mode in close keepalive; do
            run_one "$route" "$mode" "$run"
        done
    done
done

# nginx's own floor: bare reloads under the same keep-alive load, blue serving, no deploy.
echo '{}' >"$RAW/floor.json"
if [[ $FLOOR == 1 ]]; then
    log "nginx's floor: 10 × nginx -s reload under the same keep-alive load, no deploy"
    reset_stage fallback
    timeout "$DEPLOY_LIMIT_S" "$BIN" -q -C "$CUT_DIR" deploy --image cutover-demo:v1 >/dev/null 2>&1
    : >"$RAW/reloads.log"
    hups0=$(sighups)
    start_load "$RAW/floor.load.json" keepalive
    for _ in $(seq 10); do
        sleep 2
        "$WORK/reload.sh"
    done
    sleep 1.5
    stop_load "$RAW/floor.load.json"
    python3 - "$RAW/floor.json" "$(( $(sighups) - hups0 ))" <<EOF
import json, sys
load = json.load(open("$RAW/floor.load.json"))
reloads = [float(l) for l in open("$RAW/reloads.log") if l.strip()]
json.dump(dict(reloads=int(sys.argv[2]), reload_times=reloads, sent=load["sent"], failed=load["failed"],
               failure_kinds=load["failure_kinds"], fail_times=load["fail_times"]), open(sys.argv[1], "w"))
EOF
fi
remove_compose_project "$PROJECT"

# ---- report -------------------------------------------------------------------------------
mkdir -p bench/results
python3 - "$RAW" bench/results/watch-death.json <<EOF >bench/results/watch-death.md
import json, os, statistics, sys
raw, out = sys.argv[1], sys.argv[2]
runs = [json.loads(l) for l in open(os.path.join(raw, "runs.jsonl"))]
floor = json.load(open(os.path.join(raw, "floor.json")))

RESETS = ("reset", "closed-without-response", "broken-pipe")

def beyond_floor(r):
    # nginx's own cost: a reset (or a close without answer) within 1 s after a reload, when
    # it closes idle keep-alive client connections. Everything else is the deploy's: 502s,
    # and resets beyond the number that fall near a reload. (load.py keeps each failure's
    # time but not its kind, hence the count rather than a match per failure.)
    near = sum(1 for t in r["fail_times"] if any(0 <= t - x <= 1.0 for x in r["reload_times"]))
    resets = sum(v for k, v in r["failure_kinds"].items() if k in RESETS)
    return r["failed"] - min(resets, near)

for r in runs:
    r["failed_beyond_floor"] = beyond_floor(r)
    back = r["reload_times"][1] if len(r["reload_times"]) > 1 else None
    r["kill_to_switch_back_ms"] = round((back - r["killed_at"]) * 1000) if back and r["killed_at"] else None
    r["deploy_wall_ms"] = round((r["t_end"] - r["t_start"]) * 1000)
if floor:
    floor["failed_beyond_floor"] = beyond_floor(floor)

def spread(xs, fmt="{:.0f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))} – {fmt.format(max(xs))})"

print("| route (site) | load (4 connections) | runs: exit 1, switched back to blue | requests sent | failed per run, median (min – max) | failed, total | failure kinds | reloads, total | resets per reload | failed beyond nginx's reload resets | green killed → switch-back reload, ms, median (min – max) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
summary = []
for route in ("fallback", "direct"):
    for mode in ("close", "keepalive"):
        rs = [r for r in runs if (r["route"], r["mode"]) == (route, mode)]
        if not rs:
            continue
        good = sum(1 for r in rs if r["exit"] == 1 and r["switched_back"] and r["green_killed"] and r["saw_green"])
        kinds = {}
        for r in rs:
            for k, v in r["failure_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
        sent, failed, reloads = (sum(r[k] for r in rs) for k in ("sent", "failed", "reloads"))
        elsewhere = sum(r["failed_beyond_floor"] for r in rs)
        resets = sum(v for k, v in kinds.items() if k in RESETS)
        summary.append(dict(route=route, mode=mode, runs=len(rs), switched_back=good, sent=sent,
                            failed=failed, failure_kinds=kinds, reloads=reloads,
                            failed_beyond_floor=elsewhere, resets=resets,
                            failed_per_run_median=statistics.median(r["failed"] for r in rs)))
        site = "fallback (upstream groups, blue as backup)" if route == "fallback" else "direct (groups removed: an older site)"
        load = "one connection per request" if mode == "close" else "keep-alive"
        print(f"| {site} | {load} | {good} of {len(rs)} | {sent:,} | {spread([r['failed'] for r in rs])} | "
              f"{failed:,} | {', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) or '–'} | {reloads} | "
              f"{resets / reloads if reloads else 0:.1f} | {elsewhere} | {spread([r['kill_to_switch_back_ms'] for r in rs])} |")
if floor:
    fk = ", ".join(f"{k} {v}" for k, v in sorted(floor["failure_kinds"].items())) or "–"
    print(f"| nginx's floor: bare \`nginx -s reload\`, no deploy | keep-alive | – | {floor['sent']:,} | – | "
          f"{floor['failed']} | {fk} | {floor['reloads']} | "
          f"{sum(v for k, v in floor['failure_kinds'].items() if k in RESETS) / max(floor['reloads'], 1):.1f} | "
          f"{floor['failed_beyond_floor']} | – |")
print()
print(f"deploy wall (v2, killed, switched back), ms, median (min – max): " + "; ".join(
    f"{route}/{mode} {spread([r['deploy_wall_ms'] for r in runs if (r['route'], r['mode']) == (route, mode)])}"
    for route in ("fallback", "direct") for mode in ("close", "keepalive")))
print()
meta = dict(date="$STARTED_AT", command="bench/watch-death.sh --runs $RUNS", runs=$RUNS,
            kill_after_ms=$KILL_AFTER_MS, settle_s=$SETTLE_S, startup_delay_ms=$DELAY_MS, conns=$CONNS,
            duration_s=$(( $(date +%s) - T_BEGIN )),
            commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src templates Cargo.toml Cargo.lock || echo '+dirty')",
            binary="$BIN", nproc=$(nproc), loadavg_start=$LOAD0, loadavg_end=$(cut -d' ' -f1 /proc/loadavg),
            docker="$(docker version -f '{{.Server.Version}}')", compose="$COMPOSE_VERSION",
            nginx="$(nginx -v 2>&1 | sed 's|.*/||')")
print(f"run: \`{meta['command']}\` at {meta['date']} (checkout {meta['commit']}, binary {meta['binary']}), "
      f"{meta['duration_s']} s in all; {meta['nproc']} CPUs shared with other builds, load average "
      f"{meta['loadavg_start']} at the start, {meta['loadavg_end']} at the end: timings are upper bounds, the failure counts are what this measures.")
json.dump(dict(meta=meta, summary=summary, floor=floor, runs=runs), open(out, "w"), indent=1)
EOF
cat bench/results/watch-death.md
