#!/usr/bin/env bash
# The benchmark: cutover against the seed scripts (bench/seed-004.sh, bench/seed-000.sh), in
# one run, on the same demo app, compose project and nginx. Prints the markdown table and
# writes the raw numbers to bench/results/latest.json (and the table to latest.md).
#
#   bench/run.sh [--cycles N] [--quick]
#   bench/run.sh --switch-compare [--cycles N]
#
#   --cycles N   blue → green → blue cycles per tool and startup delay (default 3, i.e. 6
#                deploys); every cycle runs under its own load client through nginx
#   --quick      1 cycle, fewer start-up/render runs (a smoke run; numbers are noisier)
#   --switch-compare  only cutover, with nginx.switch: reload and nginx.switch: nft (needs
#                root and nft), at both boot times, and the engine's floor (3 runs right
#                after each boot time's deploys: the box drifts over a run), in one run: the
#                overhead beyond the floor and the switch latency of both ways side by side
#                (no seeds, no compose v1, no keep-alive, no footprint; writes
#                bench/results/switch-compare.{json,md})
#   --ab "NAME=BIN NAME=BIN…"  an A/B of cutover binaries close together in time: reload
#                mode, one load client, the binaries taking turns (one v2 → green, v1 → blue
#                pair each per cycle, --cycles N, default 3), so a change in the machine's
#                load hits all alike; boot time BENCH_AB_DELAY_MS (default 1000). Writes
#                bench/results/ab.{jsonl,md} (per-step medians per binary, load per cycle);
#                BENCH_AB_SWITCH=nft: nginx.switch: nft (needs root and nft)
#   BENCH_RAW_COPY=DIR   keep a copy of the raw files (load timelines, tool outputs) in DIR
#   BENCH_DEPLOY_FLAGS="-v"  global flags for every cutover deploy (e.g. -v: each deploy's trace,
#                        with its subprocesses' times, in its .err, kept by BENCH_RAW_COPY)
#   BENCH_BIN=PATH       measure that cutover binary, not a fresh build (BENCH_COMMIT=NAME: its
#                        commit in the results): a before/after pair of runs
#
# Needs: docker (engine running), the demo images (built with scripts/demo-image.sh when
# missing), nginx, python3, curl, GNU time; hyperfine is used when present (apt-get install
# hyperfine), else a timed loop. Compose v2 comes from DOCKER_CONFIG as set up by
# scripts/test.sh (~/.cache/cutover-test/docker-config); without it the v2 rows fall back to
# whatever `docker compose` is, and say so.
#
# Everything runs on loopback, is bounded in time (each deploy, load client and watcher has
# a limit) and is removed on exit: containers, network, nginx, temp dir. The set-up it shares
# with remote.sh and history.sh (nginx, the project's cutover.yml, the build) is bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES=3
QUICK=0
COMPARE=0
AB=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cycles) CYCLES=$2; shift 2 ;;
        --quick) QUICK=1; CYCLES=1; shift ;;
        --switch-compare) COMPARE=1; shift ;;
        --ab) AB=$2; shift 2 ;;
        -h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# BENCH_AB_SWITCH, checked before anything starts: a typo must not bench the wrong mode,
# and nft mode needs root and nft (else every deploy would refuse, late and for each row).
case "${BENCH_AB_SWITCH:-reload}" in
    reload) ;;
    nft)
        if [[ -n ${AB:-} ]]; then
            [[ $(id -u) == 0 ]] || { echo "run.sh: BENCH_AB_SWITCH=nft needs root (the nft switch changes nftables rules)" >&2; exit 2; }
            command -v nft >/dev/null || { echo "run.sh: BENCH_AB_SWITCH=nft needs \`nft\` on PATH (install nftables)" >&2; exit 2; }
        fi
        ;;
    *) echo "run.sh: BENCH_AB_SWITCH=${BENCH_AB_SWITCH}: expected reload or nft" >&2; exit 2 ;;
esac
DELAYS=(1000 5000)
# seed 000's fixed sleep: the seed uses 45 s for an app that boots in "20-30 s" (1.5x its
# worst boot). Here the boot time is known exactly, so we give it the delay plus a 2 s
# margin for container start and jitter: the most favourable "safe" sleep for the seed.
SEED000_MARGIN_S=2
# cutover's settle window (app.settle, its default): after the switch the old color keeps
# running, out of traffic, while the new one is watched. It is reported apart from the
# overhead (overhead = wall − boot − settle); the seeds have no such window.
SETTLE_S=5
# Per-deploy bound: nothing here should take a minute.
DEPLOY_LIMIT_S=120

# ---- prerequisites ------------------------------------------------------------------------
need docker nginx python3 curl
need_gnu_time
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable" >&2; exit 1; }

# The commit of the binary measured: taken at the build, not at the end of the run.
COMMIT=${BENCH_COMMIT:-"$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src templates Cargo.toml Cargo.lock || echo '+dirty')"}
build_release
demo_images

# compose v2: the private CLI plugin scripts/test.sh installs
v2_config=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/docker-config
if [[ -z "${DOCKER_CONFIG:-}" && -e "$v2_config/cli-plugins/docker-compose" ]]; then
    export DOCKER_CONFIG=$v2_config
fi
V2_VERSION=$(docker compose version --short 2>/dev/null || true)
V1_VERSION=$(docker-compose version --short 2>/dev/null || true)
if [[ "$V2_VERSION" == 2.* || "$V2_VERSION" == v2.* ]]; then
    V2_CMD="docker compose"
else
    echo "WARNING: no compose v2 (\`docker compose\`); run scripts/test.sh once to set it up. Using docker-compose v1 for every row." >&2
    V2_CMD="docker-compose"
    V2_VERSION="(v2 missing: v1 $V1_VERSION used)"
fi

# ---- the stage ----------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/cutover-bench.XXXXXX)
RAW=$WORK/raw
mkdir -p "$RAW"
PROJECT=cutover-bench-$$
read -r BLUE GREEN NGINX_PORT SWITCH_A SWITCH_B < <(free_ports 5)
# nginx.switch of the cutover deploys: reload (today's include + reload) or nft (--ab takes
# BENCH_AB_SWITCH=nft).
SWITCH=reload
[[ -n $AB ]] && SWITCH=${BENCH_AB_SWITCH:-reload}
# The box-wide project registry and the nft switch's saved rulesets: the run's own.
export CUTOVER_REGISTRY_DIR=$WORK/registry CUTOVER_SWITCH_DIR=$WORK/switch
PREFIX=$WORK/nginx
CUT_DIR=$WORK/cutover       # cutover's project dir (cutover.yml, .cutover/)
SEED_DIR=$WORK/seed         # the baselines' compose file
mkdir -p "$PREFIX/logs" "$PREFIX/tmp" "$CUT_DIR" "$SEED_DIR"
nginx_in "$PREFIX"
BG_PIDS=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    remove_project
    # The nft switch's table (src/nft.rs names it cutover_<project>).
    [[ $COMPARE == 1 || $SWITCH == nft ]] && nft delete table ip "cutover_$PROJECT" 2>/dev/null
    if [[ -f "$PREFIX/nginx.pid" ]]; then
        "${NGINX[@]}" -s quit 2>/dev/null
        for _ in $(seq 50); do [[ -f "$PREFIX/nginx.pid" ]] || break; sleep 0.1; done
        [[ -f "$PREFIX/nginx.pid" ]] && kill -9 "$(cat "$PREFIX/nginx.pid")" 2>/dev/null
    fi
    # BENCH_RAW_COPY=DIR keeps the raw files (load timelines, watcher and tool outputs).
    [[ -z "${BENCH_RAW_COPY:-}" ]] || { rm -rf "$BENCH_RAW_COPY"; cp -r "$RAW" "$BENCH_RAW_COPY"; }
    rm -rf "$WORK"
    [[ $rc -eq 0 ]] || echo "bench/run.sh failed (exit $rc); containers, nginx and $WORK removed" >&2
}
remove_project() { remove_compose_project "$PROJECT"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# write_config DELAY_MS: cutover.yml for cutover, and the baselines' compose file rendered
# from it (the color images replaced by ${BENCH_IMAGE}, which the seed scripts set).
write_config() {
    local delay=$1
    demo_project_yml "$PROJECT" "$delay" "$BLUE" "$GREEN" "$PREFIX" "$NGINX_PORT" 60s \
        "settle: ${SETTLE_S}s" >"$CUT_DIR/cutover.yml"
    if [[ $SWITCH == nft ]]; then
        # nft mode reads the site nginx loads (its upstream addresses).
        printf '  site: %s\n  switch: nft\n  switch_ports: [%s, %s]\n' "$PREFIX/site.conf" "$SWITCH_A" "$SWITCH_B" \
            >>"$CUT_DIR/cutover.yml"
    fi
    rm -rf "$CUT_DIR/rendered"
    "$BIN" -q -C "$CUT_DIR" render --out rendered >/dev/null
    # ${BENCH_IMAGE} is for compose to expand (the seed scripts set it), not this shell.
    # shellcheck disable=SC2016
    sed 's|^    image: "cutover-demo.*"$|    image: "${BENCH_IMAGE}"|' \
        "$CUT_DIR/rendered/compose.yml" >"$SEED_DIR/compose.yml"
    grep -q 'BENCH_IMAGE' "$SEED_DIR/compose.yml" || { echo "could not template the seed compose file" >&2; exit 1; }
}

start_nginx() {
    write_nginx_conf "$PREFIX"
    cp "$CUT_DIR/rendered/nginx-site.conf" "$PREFIX/site.conf"
    cp "$CUT_DIR/rendered/service-url.inc" "$PREFIX/service-url.inc"
    "${NGINX[@]}" -t -q
    "${NGINX[@]}"
}

# reset_stage: no containers, nginx pointing at blue (the rendered site of this SWITCH), no
# cutover state, no nft rule.
reset_stage() {
    remove_project
    rm -rf "$CUT_DIR/.cutover" "$WORK/registry" "$WORK/switch"
    nft delete table ip "cutover_$PROJECT" 2>/dev/null || true
    cp "$CUT_DIR/rendered/nginx-site.conf" "$PREFIX/site.conf"
    cp "$CUT_DIR/rendered/service-url.inc" "$PREFIX/service-url.inc"
    "${NGINX[@]}" -s reload
    sleep 0.5
}

ctag() { [[ $1 == docker-compose ]] && echo v1 || echo v2; }

# ---- one deploy ---------------------------------------------------------------------------
# deploy TOOL COMPOSE_CMD DELAY IMAGE_TAG TO_COLOR LABEL: runs the tool, with a watcher that
# polls the new color's /health directly; appends a JSON line to $RAW/deploys.jsonl.
deploy() {
    local tool=$1 compose=$2 delay=$3 tag=$4 to=$5 label=$6
    local port; [[ $to == blue ]] && port=$BLUE || port=$GREEN
    local id="$label-$tool-$delay-$tag-$to-$RANDOM"
    local watch_out=$RAW/$id.watch.json out=$RAW/$id.out err=$RAW/$id.err
    python3 bench/load.py watch --port "$port" --expect "color=$to version=$tag" \
        --max-s "$DEPLOY_LIMIT_S" --out "$watch_out" &
    local watcher=$!
    BG_PIDS+=("$watcher")
    local t0 t1 rc=0
    t0=$(now)
    case $tool in
        cutover|cutover-nft)
            CUTOVER_COMPOSE=$compose timeout "$DEPLOY_LIMIT_S" \
                "$BIN" ${BENCH_DEPLOY_FLAGS:-} -C "$CUT_DIR" deploy --image "cutover-demo:$tag" --json >"$out" 2>"$err" || rc=$? ;;
        seed-004|seed-000)
            local extra=()
            [[ $tool == seed-000 ]] && extra=($(( (delay + 999) / 1000 + SEED000_MARGIN_S )))
            SEED_COMPOSE=$compose SEED_PROJECT=$PROJECT SEED_COMPOSE_FILE=$SEED_DIR/compose.yml \
            SEED_APP=web SEED_BLUE_PORT=$BLUE SEED_GREEN_PORT=$GREEN \
            SEED_INCLUDE=$PREFIX/service-url.inc SEED_NGINX_RELOAD="${NGINX[*]} -s reload" \
                timeout "$DEPLOY_LIMIT_S" bash "bench/$tool.sh" "cutover-demo:$tag" "${extra[@]}" >"$out" 2>"$err" || rc=$? ;;
    esac
    t1=$(now)
    # The watcher stops by itself once the new color is ready; give it 3 s more at most.
    for _ in $(seq 30); do kill -0 "$watcher" 2>/dev/null || break; sleep 0.1; done
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    if [[ $rc -ne 0 ]]; then
        note "$tool deploy $tag → $to FAILED (exit $rc):"; tail -n 5 "$err" | sed 's/^/      /' >&2
    fi
    python3 - "$RAW/deploys.jsonl" <<EOF
import json, sys
rec = dict(label="$label", tool="$tool", compose="$compose", delay_ms=$delay, image="cutover-demo:$tag",
           to="$to", t_start=$t0, t_end=$t1, exit=$rc, watch=None, cutover=None)
try: rec["watch"] = json.load(open("$watch_out"))
except Exception: pass
if "$tool".startswith("cutover"):
    try: rec["cutover"] = json.load(open("$out"))
    except Exception: pass
with open(sys.argv[1], "a") as f: f.write(json.dumps(rec) + "\n")
EOF
    note "$(printf '%-8s %-15s %-6s → %-5s %6.0f ms  exit %d' "$tool" "compose $(ctag "$compose")" "$tag" "$to" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print (b-a)*1000}')" "$rc")"
}

# ---- load -------------------------------------------------------------------------------
LOAD_PID=""
LOAD_LABEL=""
start_load() { # start_load LABEL MODE(close|keepalive)
    local args=(--port "$NGINX_PORT" --max-s 900 --out "$RAW/$1.load.json")
    [[ $2 == keepalive ]] && args+=(--keepalive --conns 4)
    python3 bench/load.py load "${args[@]}" &
    LOAD_PID=$!
    LOAD_LABEL=$1
    BG_PIDS+=("$LOAD_PID")
    sleep 1
}
stop_load() {
    sleep 1
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    # It writes its JSON and exits within a request timeout; never wait forever.
    for _ in $(seq 400); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
    [[ -s "$RAW/$LOAD_LABEL.load.json" ]] || { echo "load client wrote no result ($LOAD_LABEL)" >&2; exit 1; }
}
record_cycle() { # record_cycle LABEL TOOL COMPOSE DELAY MODE
    printf '{"label":"%s","tool":"%s","compose":"%s","delay_ms":%s,"mode":"%s","load":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$5" "$1.load.json" >>"$RAW/cycles.jsonl"
}

# run_tool TOOL COMPOSE DELAY MODE CYCLES: fresh stage, first deploy (v1 → blue, not
# measured), then CYCLES × (v2 → green, v1 → blue), each cycle under its own load client.
run_tool() {
    local tool=$1 compose=$2 delay=$3 mode=$4 cycles=$5 c
    log "$tool ($compose), STARTUP_DELAY_MS=$delay, load: $mode, $cycles cycle(s)"
    reset_stage
    deploy "$tool" "$compose" "$delay" v1 blue "warmup"
    for c in $(seq 1 "$cycles"); do
        local label
        label="$tool-$(ctag "$compose")-$delay-$mode-$c"
        start_load "$label" "$mode"
        deploy "$tool" "$compose" "$delay" v2 green "$label"
        deploy "$tool" "$compose" "$delay" v1 blue "$label"
        stop_load
        record_cycle "$label" "$tool" "$compose" "$delay" "$mode"
        # --switch-compare: a floor sample after each nft cycle, on the same stage (blue
        # serving, green free) under a load client of its own, so the floor the overhead is
        # taken from is measured across the same minutes as the deploys (the box's floor
        # drifts by hundreds of ms over a run).
        if [[ $COMPARE == 1 && $tool == cutover-nft ]]; then
            start_load "engine-floor-$delay-$c" close
            floor_once "$delay" "between-$c"
            stop_load
        fi
    done
}

log "stage: project $PROJECT, colors 127.0.0.1:$BLUE/$GREEN, nginx 127.0.0.1:$NGINX_PORT, $WORK"
write_config 1000
start_nginx
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_BEGIN=$(date +%s)

if [[ -n $AB ]]; then
    # The A/B: the binaries take turns, one deploy pair each per cycle, under one load client.
    declare -A AB_BIN
    AB_NAMES=()
    for pair in $AB; do
        AB_NAMES+=("${pair%%=*}"); AB_BIN[${pair%%=*}]=${pair#*=}
        [[ -x ${pair#*=} ]] || { echo "--ab: no binary at ${pair#*=}" >&2; exit 2; }
    done
    delay=${BENCH_AB_DELAY_MS:-1000}
    write_config "$delay"
    reset_stage
    deploy cutover "$V2_CMD" "$delay" v1 blue "warmup"
    start_load ab close
    : >"$RAW/ab-loads.txt"
    for c in $(seq 1 "$CYCLES"); do
        for name in "${AB_NAMES[@]}"; do
            BIN=${AB_BIN[$name]}
            deploy cutover "$V2_CMD" "$delay" v2 green "$name-$c"
            deploy cutover "$V2_CMD" "$delay" v1 blue "$name-$c"
            printf '%s %s\n' "$name-$c" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/ab-loads.txt"
        done
    done
    stop_load
    mkdir -p bench/results
    cp "$RAW/deploys.jsonl" bench/results/ab.jsonl
    python3 - "$RAW" "$delay" "$STARTED_AT" "$AB" "$SWITCH" >bench/results/ab.md <<'PY'
import json, statistics, sys
raw, delay, started, ab, switch = sys.argv[1:]
load = json.load(open(f"{raw}/ab.load.json"))


def first_seen(answer, after):
    # As bench/report.py: the load client's first answer from the new color after the start.
    seen = [t for thread in load["transitions"] for t, a in thread if t >= after and a == answer]
    return min(seen) if seen else None


runs = {}
for line in open(f"{raw}/deploys.jsonl"):
    d = json.loads(line)
    if d["label"] == "warmup" or d["exit"] != 0:
        continue
    steps = {s["step"]: s["ms"] for s in (d.get("cutover") or {}).get("steps", [])}
    steps["wall − settle"] = round((d["t_end"] - d["t_start"]) * 1000 - steps.get("settle", 0))
    ready = (d.get("watch") or {}).get("ready_at")
    new = first_seen("version=%s color=%s" % (d["image"].split(":")[1], d["to"]), d["t_start"])
    if ready and new:
        steps["ready → first response"] = round((new - ready) * 1000)
    runs.setdefault(d["label"].rsplit("-", 1)[0], []).append(steps)
names = list(runs)
keys = [k for k in ["wall − settle", "ready → first response", "up", "health", "observe", "switch", "probe", "settle", "drain", "stop"]
        if any(k in s for r in runs.values() for s in r)]
print(f"A/B ({started}, boot {delay} ms, {switch} mode): {ab}\n")
print("| step (median (min–max) ms) | " + " | ".join(f"{n} ({len(runs[n])})" for n in names) + " |")
print("| --- |" + " --- |" * len(names))
for k in keys:
    cells = []
    for n in names:
        v = [s[k] for s in runs[n] if k in s]
        cells.append(f"{statistics.median(v):.0f} ({min(v)}–{max(v)})" if v else "–")
    print(f"| {k} | " + " | ".join(cells) + " |")
print(f"\nfailed requests of the load client: {load['failed']} of {load['sent']}. ready → first response: the new color's first")
print("answer to the load client through nginx, less the moment a 5 ms poller on it saw it ready.")
print("\nload average (1/5/15 min) after each binary's pair:\n")
for line in open(f"{raw}/ab-loads.txt"):
    print("    " + line.rstrip())
PY
    cat bench/results/ab.md
    exit 0
fi

# engine_floor RUNS TAG: RUNS × the engine's floor (section 4 below says what it is), each a
# line tagged TAG in engine-floor.jsonl: `all` for the run, or the boot time whose deploys
# it was measured right after (--switch-compare).
engine_floor() {
    local runs=$1 tag=$2 i
    log "the engine's floor ($tag): $runs × (docker create + start, nginx -s reload, docker stop + rm), no tool"
    reset_stage
    deploy cutover "$V2_CMD" 1000 v1 blue "warmup"
    start_load "engine-floor-$tag" close
    for i in $(seq "$runs"); do
        floor_once "$tag" "$i"
        sleep 1
    done
    stop_load
    remove_project
}

# floor_once TAG I: one sample of the engine's floor (engine_floor says what it is) on the
# green port of the project deployed now, under the load client running now; a line tagged
# TAG in engine-floor.jsonl.
floor_once() {
    local tag=$1 name="$PROJECT-floor-$1-$2" t0 t1 t2 t3
    t0=$(now)
    docker create --name "$name" --label "com.docker.compose.project=$PROJECT" \
        --network "${PROJECT}_default" -p "127.0.0.1:$GREEN:8080" --memory 64m \
        -e STARTUP_DELAY_MS=0 cutover-demo:v2 >/dev/null
    docker start "$name" >/dev/null
    t1=$(now)
    "${NGINX[@]}" -s reload
    t2=$(now)
    docker stop -t 10 "$name" >/dev/null
    docker rm "$name" >/dev/null
    t3=$(now)
    awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v tag="$tag" \
        'BEGIN{printf "{\"tag\":\"%s\",\"create_start_ms\":%d,\"reload_ms\":%d,\"stop_rm_ms\":%d}\n", tag, (b-a)*1000, (c-b)*1000, (d-c)*1000}' \
        >>"$RAW/engine-floor.jsonl"
}

if [[ $COMPARE == 1 ]]; then
    # cutover alone, both ways of switching, one connection per request; the two ways
    # alternate per boot time so a change in the machine's load hits both alike.
    for delay in "${DELAYS[@]}"; do
        for SWITCH in reload nft; do
            write_config "$delay"
            tool=cutover; [[ $SWITCH == nft ]] && tool=cutover-nft
            run_tool "$tool" "$V2_CMD" "$delay" close "$CYCLES"
        done
        # This boot time's floor, right after its deploys: the same state of the box.
        SWITCH=reload
        write_config 1000
        engine_floor 3 "$delay"
    done
else
# 1. deploys, one connection per request
for delay in "${DELAYS[@]}"; do
    write_config "$delay"
    for tool in cutover seed-004 seed-000; do
        run_tool "$tool" "$V2_CMD" "$delay" close "$CYCLES"
    done
done
# 2. cutover on compose v1
write_config 1000
run_tool cutover docker-compose 1000 close "$CYCLES"

# 3. keep-alive load: one cycle per tool, and nginx's own floor (reloads, no deploy)
for tool in cutover seed-004 seed-000; do
    run_tool "$tool" "$V2_CMD" 1000 keepalive 1
done
log "nginx's own floor: 10 × nginx -s reload under the same keep-alive load, no deploy"
reset_stage
deploy cutover "$V2_CMD" 1000 v1 blue "warmup"
start_load floor keepalive
reload_times=()
for _ in $(seq 10); do
    sleep 2
    reload_times+=("$(now)")
    "${NGINX[@]}" -s reload
done
stop_load
printf '{"label":"floor","reloads":[%s],"load":"floor.load.json"}\n' \
    "$(IFS=,; echo "${reload_times[*]}")" >"$RAW/floor.json"
remove_project
fi

# 4. the engine's floor: what the same container costs with no tool at all, under the same
# one-connection-per-request load on the serving color. A deploy cannot be faster than one
# create + start of the new color, one nginx reload and one stop + rm of the old color;
# "overhead beyond the floor" is what the tool adds on top (health gate, probe, bookkeeping).
# --switch-compare measured its floor right after each boot time's deploys (above), since
# the box drifts over a run; here, once at the end.
if [[ $COMPARE == 0 ]]; then
    FLOOR_RUNS=5; [[ $QUICK == 1 ]] && FLOOR_RUNS=2
    engine_floor "$FLOOR_RUNS" all
fi

# ---- footprint and micro ------------------------------------------------------------------
TIMER="-"
if [[ $COMPARE == 0 ]]; then
log "footprint"
RUNS=300; [[ $QUICK == 1 ]] && RUNS=50
# peak RSS of one deploy (delay 1 s, compose v2) and of render
reset_stage
deploy cutover "$V2_CMD" 1000 v1 blue "warmup"
CUTOVER_COMPOSE=$V2_CMD python3 bench/peakrss.py "$RAW/rss-deploy.json" -- \
    "$BIN" -C "$CUT_DIR" deploy --image cutover-demo:v2 --json || true
CUTOVER_COMPOSE=docker-compose python3 bench/peakrss.py "$RAW/rss-deploy-v1.json" -- \
    "$BIN" -C "$CUT_DIR" deploy --image cutover-demo:v1 --json || true
python3 bench/peakrss.py "$RAW/rss-render.json" -- "$BIN" -C "$CUT_DIR" render --out rendered-rss || true
remove_project

# `cutover --version` start-up, and render of a 50-service project
mkdir -p "$WORK/p50"
{
    echo "project: p50"
    echo "app: { name: app, image: example/app, port: 8080, memory: 256M, depends_on: [acc-01, acc-02] }"
    echo "colors: { blue: 8081, green: 8082 }"
    echo "accessories:"
    for i in $(seq -w 1 50); do
        echo "  acc-$i: { image: \"example/acc-$i:1.$i\", memory: 64M, environment: { ROLE: acc-$i, LEVEL: \"$i\" }, volumes: [\"data-$i:/data\"] }"
    done
} >"$WORK/p50/cutover.yml"
"$BIN" -q -C "$WORK/p50" render --out out >/dev/null
services=$(grep -c '^  "[a-z0-9-]*":$' "$WORK/p50/out/compose.yml" || true)
python3 bench/peakrss.py "$RAW/rss-render50.json" -- "$BIN" -C "$WORK/p50" render --out out || true

if command -v hyperfine >/dev/null; then
    hyperfine -N --style none --warmup 20 --runs "$RUNS" --export-json "$RAW/version.json" \
        "$BIN --version" >/dev/null 2>&1
    hyperfine -N --style none --warmup 10 --runs $((RUNS / 3)) --export-json "$RAW/render50.json" \
        "$BIN -q -C $WORK/p50 render --out out" >/dev/null 2>&1
    TIMER="hyperfine $(hyperfine --version | awk '{print $2}')"
else
    loop_json() { # loop_json OUT RUNS CMD...: mean of a timed loop, hyperfine-shaped JSON
        local out=$1 n=$2; shift 2
        local t0 t1; t0=$(now)
        for _ in $(seq "$n"); do "$@" >/dev/null; done
        t1=$(now)
        printf '{"results":[{"mean":%s,"stddev":null,"min":null,"max":null}]}' \
            "$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN{print (b-a)/n}')" >"$out"
    }
    loop_json "$RAW/version.json" "$RUNS" "$BIN" --version
    loop_json "$RAW/render50.json" $((RUNS / 3)) "$BIN" -q -C "$WORK/p50" render --out out
    TIMER="timed loop (no hyperfine)"
fi

# secrets: decrypt + parse of a 1,000-key file against age -d (scripts/bench-secrets.sh)
if [[ -x scripts/bench-secrets.sh || -f scripts/bench-secrets.sh ]]; then
    log "secrets (scripts/bench-secrets.sh)"
    bash scripts/bench-secrets.sh >"$RAW/secrets.txt" 2>&1 || echo "(bench-secrets.sh failed: exit $?)" >>"$RAW/secrets.txt"
else
    echo "pending merge" >"$RAW/secrets.txt"
fi

fi
size=$(stat -c %s "$BIN")
stripped=$(file -b "$BIN" | grep -q 'not stripped' && echo False || echo True)

# ---- machine ------------------------------------------------------------------------------
python3 - "$RAW/meta.json" <<EOF
import json, sys
json.dump(dict(
    date="$STARTED_AT",
    command="bench/run.sh$([[ $QUICK == 1 ]] && echo ' --quick')$([[ $COMPARE == 1 ]] && echo ' --switch-compare')$([[ $QUICK == 0 && $CYCLES != 3 ]] && echo " --cycles $CYCLES")",
    cycles=$CYCLES, delays_ms=[$(IFS=,; echo "${DELAYS[*]}")], seed000_margin_s=$SEED000_MARGIN_S, settle_ms=$((SETTLE_S * 1000)),
    duration_s=$(( $(date +%s) - T_BEGIN )),
    commit="$COMMIT",
    nproc=$(nproc), mem_total_kib=$(awk '/MemTotal/{print $2}' /proc/meminfo),
    swap_total_kib=$(awk '/SwapTotal/{print $2}' /proc/meminfo),
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)",
    kernel="$(uname -r)", os="$(. /etc/os-release; echo "$PRETTY_NAME")",
    docker="$(docker version -f '{{.Server.Version}}')",
    compose_v2="$V2_VERSION", compose_v2_cmd="$V2_CMD", compose_v1="$V1_VERSION",
    nginx="$(nginx -v 2>&1 | sed 's|.*/||')", python="$(python3 -V | cut -d' ' -f2)",
    rustc="$(rustc -V | cut -d' ' -f2)", timer="$TIMER",
    binary=dict(path="target/release/cutover", bytes=$size, stripped=$stripped),
    p50_services=${services:-0}, switch_compare=$([[ $COMPARE == 1 ]] && echo True || echo False),
    load_avg_start="$LOAD_START", load_avg_end="$(cut -d' ' -f1-3 /proc/loadavg)",
), open(sys.argv[1], "w"), indent=1)
EOF

mkdir -p bench/results
out=latest; [[ $COMPARE == 1 ]] && out=switch-compare
python3 bench/report.py "$RAW" "bench/results/$out.json" >"bench/results/$out.md"
cat "bench/results/$out.md"
