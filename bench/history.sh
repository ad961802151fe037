#!/usr/bin/env bash
# The history benchmark: `cutover status --json` and `cutover history -n 1 --json` on projects
# whose .cutover/history.jsonl holds 1k, 10k, 50k and 200k entries; wall time and max RSS of
# each, as a markdown table (raw runs in bench/results/history.json).
#
#   bench/history.sh [--runs N] [--sizes "N ..."] [--bin BIN] [--before BIN]
#
#   --runs N      runs per binary, command and size (default 5): median wall, largest RSS
#   --sizes LIST  history lengths (default "1000 10000 50000 200000")
#   --bin BIN     measure BIN instead of the release build of this checkout
#   --before BIN  also measure BIN (an older cutover) on the same projects, runs interleaved
#
# The entries are the lines of fixtures/history/v0.1.jsonl (every format cutover ever wrote:
# no `engine`, compose ok / failed / interrupted with reasons, a rollback, swarm ok / failed)
# in turn, each with its own time and image, compact as cutover writes them. The project has
# no container and nothing listens on its nginx port, so `status` asks docker and the probe
# and gets "nothing" quickly; what grows with the history is the history's part.
#
# Wall: this script's clock around GNU time. RSS: GNU time -v's "Maximum resident set size",
# the largest of the process and the children it waited for (for `status`, the `docker` CLI
# it runs; `history` runs none, so its figure is cutover's own).
#
# Needs: docker (engine running), python3, GNU time (apt-get install time). ~25 s with
# --before; the projects (~100 MB of history at the default sizes) live in a temp dir removed
# on exit. The build and the project's cutover.yml come from bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=5
SIZES="1000 10000 50000 200000"
BIN=""
BEFORE=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --before) BEFORE=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "history.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

need docker python3
need_gnu_time
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable" >&2; exit 1; }
if [[ -z "$BIN" ]]; then
    build_release
fi
for bin in "$BIN" ${BEFORE:+"$BEFORE"}; do
    [[ -x "$bin" ]] || { echo "no binary at $bin" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/cutover-bench-history.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# ---- the projects ---------------------------------------------------------------------------
read -r BLUE GREEN NGINX_PORT < <(free_ports 3)
largest=$(tr ' ' '\n' <<<"$SIZES" | sort -n | tail -n1)
log "history of $largest entries from fixtures/history/v0.1.jsonl"
python3 - fixtures/history/v0.1.jsonl "$largest" >"$WORK/history.jsonl" <<'PY'
import datetime, json, sys
formats = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
out = sys.stdout
for i in range(int(sys.argv[2])):
    entry = dict(formats[i % len(formats)])
    entry["time"] = (start + datetime.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry["image"] = "shop:v%d" % i
    if "from_image" in entry:
        entry["from_image"] = "shop:v%d" % (i - 1)
    out.write(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n")
PY
for n in $SIZES; do
    dir=$WORK/p$n
    mkdir -p "$dir/.cutover"
    # The project is never deployed: its name is its own, no container carries it.
    demo_project_yml "cutover-bench-history-$$-$n" 1000 "$BLUE" "$GREEN" "$WORK/nginx" "$NGINX_PORT" 30s \
        >"$dir/cutover.yml"
    head -n "$n" "$WORK/history.jsonl" >"$dir/.cutover/history.jsonl"
    chmod 0600 "$dir/.cutover/history.jsonl"
done
rm "$WORK/history.jsonl"

# ---- measure --------------------------------------------------------------------------------
# measure LABEL BIN N CMD...: one run; appends a JSON line to $WORK/runs.jsonl.
measure() {
    local label=$1 bin=$2 n=$3 t0 t1 rc=0
    shift 3
    t0=$(now)
    /usr/bin/time -v -o "$WORK/time.txt" "$bin" -q -C "$WORK/p$n" "$@" >"$WORK/out.json" 2>"$WORK/err.txt" || rc=$?
    t1=$(now)
    if [[ $rc -ne 0 ]]; then
        echo "$label: cutover $* failed at $n entries (exit $rc):" >&2
        cat "$WORK/err.txt" >&2
        exit 1
    fi
    # Both commands print the newest entry: the same for every binary.
    python3 - "$label" "$n" "$*" "$t0" "$t1" "$WORK/time.txt" "$WORK/out.json" >>"$WORK/runs.jsonl" <<'PY'
import json, re, sys
label, n, cmd, t0, t1, time_file, out_file = sys.argv[1:]
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(time_file).read()).group(1))
out = json.load(open(out_file))
# status: last_deploy; history 2: {schema, entries}; history 1 (an older binary): a bare list.
if isinstance(out, list):
    last = out[-1]
elif "entries" in out:
    last = out["entries"][-1]
else:
    last = out["last_deploy"]
print(json.dumps(dict(label=label, entries=int(n), cmd=cmd, wall_s=float(t1) - float(t0),
                      maxrss_kib=rss, last_image=last["image"])))
PY
}

labels=("after")
bins=("$BIN")
if [[ -n "$BEFORE" ]]; then labels=("before" "after"); bins=("$BEFORE" "$BIN"); fi
: >"$WORK/runs.jsonl"
for n in $SIZES; do
    log "$n entries ($(du -h "$WORK/p$n/.cutover/history.jsonl" | cut -f1)): $RUNS runs of each"
    for run in $(seq 0 "$RUNS"); do
        for i in "${!bins[@]}"; do
            # Run 0 warms the page cache and the docker CLI; it is not counted.
            label=${labels[$i]}
            [[ $run -gt 0 ]] || label=warmup
            measure "$label" "${bins[$i]}" "$n" status --json
            measure "$label" "${bins[$i]}" "$n" history -n 1 --json
        done
    done
done

# ---- report ---------------------------------------------------------------------------------
mkdir -p bench/results
python3 - "$WORK/runs.jsonl" "$RUNS" "$(git rev-parse --short HEAD)" "$BIN" "$BEFORE" <<'PY'
import json, os, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
binaries = dict(after=sys.argv[4], before=sys.argv[5] or None)
warm = [r for r in runs if r["label"] == "warmup"]
runs = [r for r in runs if r["label"] != "warmup"]
for n in {r["entries"] for r in runs}:
    images = {r["last_image"] for r in runs + warm if r["entries"] == n}
    assert images == {"shop:v%d" % (n - 1)}, (n, images)
labels = [l for l in ("before", "after") if any(r["label"] == l for r in runs)]
def cell(label, n, cmd):
    rs = [r for r in runs if (r["label"], r["entries"], r["cmd"]) == (label, n, cmd)]
    wall = statistics.median(r["wall_s"] for r in rs)
    rss = max(r["maxrss_kib"] for r in rs) / 1024
    return f"{wall * 1000:.0f} ms", f"{rss:.1f} MiB"
print("| entries | binary | `status --json` wall | `status` max RSS | `history -n 1 --json` wall | `history -n 1` max RSS |")
print("| --- | --- | --- | --- | --- | --- |")
for n in sorted({r["entries"] for r in runs}):
    for label in labels:
        s = cell(label, n, "status --json")
        h = cell(label, n, "history -n 1 --json")
        print(f"| {n:,} | {label} | {s[0]} | {s[1]} | {h[0]} | {h[1]} |")
load = os.getloadavg()
print()
print(f"median wall of {sys.argv[2]} runs, largest max RSS; commit {sys.argv[3]}; "
      f"load average at the end {load[0]:.2f} on {os.cpu_count()} CPUs.")
json.dump(dict(commit=sys.argv[3], binaries=binaries, runs=runs, loadavg=load),
          open("bench/results/history.json", "w"), indent=1)
PY
