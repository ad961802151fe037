#!/usr/bin/env python3
"""Turns bench/run.sh's raw files into bench/results/latest.json and a markdown table.

    report.py RAW_DIR OUT.json  > table.md

Per deploy (all from the outside, the same way for every tool):
  wall_ms      tool start → tool exit
  settle_ms    cutover's settle window (app.settle, as configured; 0 for the seeds, which
               have none): the old color kept running, out of traffic, after the switch
  overhead_ms  wall_ms − the app's STARTUP_DELAY_MS − settle_ms
  live_ms      tool start → first `GET /` through nginx answered by the new version/color
  ready_ms     tool start → first direct `GET /health` on the new color's port answering
               200 with the new version (a 5 ms poller, independent of the tool)
  ready_to_new_ms  live − ready: from the new color being ready to users seeing it
  failed       load-client failures between tool start and exit
For cutover also: its own switch_ms (its health pass → its probe through nginx sees the new
color) and step timings, from `cutover deploy --json`.
"""
import json
import os
import re
import statistics
import sys

RAW, OUT = sys.argv[1], sys.argv[2]
TOOLS = ["cutover", "seed-004", "seed-000"]
TARGETS = {
    "overhead_ms": 1000,
    "switch_ms": 100,
    "failed_close": 0,
    "rss_kib": 15 * 1024,
    "binary_bytes": 10 * 1000 * 1000,
}


def jl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load(path):
    with open(path) as f:
        return json.load(f)


meta = load(os.path.join(RAW, "meta.json"))
deploys = [d for d in jl(os.path.join(RAW, "deploys.jsonl")) if d["label"] != "warmup"]
cycles = jl(os.path.join(RAW, "cycles.jsonl"))
loads = {}
for c in cycles:
    loads[c["label"]] = load(os.path.join(RAW, c["load"]))


def first_seen(load_data, answer, after):
    best = None
    for thread in load_data["transitions"]:
        for t, a in thread:
            if t >= after and a == answer:
                best = t if best is None else min(best, t)
                break
    return best


for d in deploys:
    ld = loads.get(d["label"])
    tag = d["image"].split(":")[1]
    d["wall_ms"] = round((d["t_end"] - d["t_start"]) * 1000)
    settled = any(st["step"] == "settle" for st in (d.get("cutover") or {}).get("steps", []))
    d["settle_ms"] = meta.get("settle_ms", 0) if settled else 0
    d["overhead_ms"] = d["wall_ms"] - d["delay_ms"] - d["settle_ms"]
    ready = (d.get("watch") or {}).get("ready_at")
    d["ready_ms"] = round((ready - d["t_start"]) * 1000) if ready else None
    new = first_seen(ld, "version=%s color=%s" % (tag, d["to"]), d["t_start"]) if ld else None
    d["live_ms"] = round((new - d["t_start"]) * 1000) if new else None
    d["ready_to_new_ms"] = round((new - ready) * 1000) if (new and ready) else None
    d["failed"] = sum(1 for t in ld["fail_times"] if d["t_start"] <= t <= d["t_end"]) if ld else None
    cj = d.get("cutover") or {}
    d["switch_ms"] = cj.get("switch_ms")
    d["steps"] = {s["step"]: s["ms"] for s in cj.get("steps", [])}
    d.pop("cutover", None)


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def group(tool, compose, delay, mode="close"):
    labels = {c["label"] for c in cycles
              if c["tool"] == tool and c["compose"] == compose and c["delay_ms"] == delay and c["mode"] == mode}
    ds = [d for d in deploys if d["label"] in labels]
    if not ds:
        return None
    ls = [loads[l] for l in sorted(labels)]
    steps = {}
    for d in ds:
        for k, v in d["steps"].items():
            steps.setdefault(k, []).append(v)
    return {
        "tool": tool, "compose": compose, "delay_ms": delay, "mode": mode,
        "deploys": len(ds), "cycles": len(labels),
        "failed_deploys": sum(1 for d in ds if d["exit"] != 0),
        "wall_ms": stats(d["wall_ms"] for d in ds),
        "overhead_ms": stats(d["overhead_ms"] for d in ds),
        "settle_ms": stats(d["settle_ms"] for d in ds),
        "live_ms": stats(d["live_ms"] for d in ds),
        "ready_ms": stats(d["ready_ms"] for d in ds),
        "ready_to_new_ms": stats(d["ready_to_new_ms"] for d in ds),
        "switch_ms": stats(d["switch_ms"] for d in ds),
        "steps_ms": {k: stats(v) for k, v in steps.items()},
        "requests": sum(l["sent"] for l in ls),
        "failed": sum(l["failed"] for l in ls),
        "failed_per_cycle": [l["failed"] for l in ls],
        "failure_kinds": merge_kinds(ls),
    }


def merge_kinds(ls):
    k = {}
    for l in ls:
        for a, b in l["failure_kinds"].items():
            k[a] = k.get(a, 0) + b
    return k


v2, v1 = meta["compose_v2_cmd"], "docker-compose"
groups = {}
for delay in meta["delays_ms"]:
    for tool in TOOLS:
        groups["%s/v2/%d/close" % (tool, delay)] = group(tool, v2, delay)
groups["cutover/v1/1000/close"] = group("cutover", v1, 1000)
for tool in TOOLS:
    groups["%s/v2/1000/keepalive" % tool] = group(tool, v2, 1000, "keepalive")

# nginx's own floor: failures within 1 s after each bare reload, under keep-alive load
floor = None
fpath = os.path.join(RAW, "floor.json")
if os.path.exists(fpath):
    f = load(fpath)
    fl = load(os.path.join(RAW, f["load"]))
    per = [sum(1 for t in fl["fail_times"] if r <= t <= r + 1.0) for r in f["reloads"]]
    floor = {"reloads": len(f["reloads"]), "requests": fl["sent"], "failed": fl["failed"],
             "per_reload": per, "mean_per_reload": statistics.mean(per) if per else None,
             "failure_kinds": fl["failure_kinds"], "conns": fl["conns"]}


# the engine's floor (no tool): create + start, nginx reload, stop + rm of one container
engine_floor = None
efl = jl(os.path.join(RAW, "engine-floor.jsonl"))
if efl:
    engine_floor = {k: stats(r[k] for r in efl) for k in ("create_start_ms", "reload_ms", "stop_rm_ms")}
    engine_floor["total_ms"] = stats(r["create_start_ms"] + r["reload_ms"] + r["stop_rm_ms"] for r in efl)


if meta.get("switch_compare"):
    # bench/run.sh --switch-compare: cutover alone, nginx.switch reload vs nft, and the
    # engine's floor, all from one run.
    GOAL_BEYOND_FLOOR, GOAL_READY_TO_NEW = 150, 20
    groups = {"%s/%d" % (t, d): group(t, v2, d) for d in meta["delays_ms"] for t in ("cutover", "cutover-nft")}
    json.dump({"meta": meta, "groups": groups, "engine_floor": engine_floor, "deploys": deploys},
              open(OUT, "w"), indent=1)

    def rng(st, fmt="%d ms"):
        return "–" if not st else (fmt % st["median"]) + " (%d–%d)" % (st["min"], st["max"])

    out = ["| measure | goal | switch: reload | switch: nft |", "| --- | --- | --- | --- |"]
    for d in meta["delays_ms"]:
        # The floor measured after each nft cycle and right after this boot time's deploys
        # (tag = the boot time); a run from before floors were tagged has one, for all.
        rows = [r for r in efl if r.get("tag") == str(d)] or [r for r in efl if r.get("tag", "all") == "all"]
        ef = None
        if rows:
            e = {k: stats(r[k] for r in rows) for k in ("create_start_ms", "reload_ms", "stop_rm_ms")}
            e["total_ms"] = stats(r["create_start_ms"] + r["reload_ms"] + r["stop_rm_ms"] for r in rows)
            ef = e["total_ms"]["median"]
            out.append("| the engine's floor between the nft cycles and right after the boot %g s deploys, no tool: `docker create` + `start` / `nginx -s reload` / `docker stop` + `rm` (%d runs) | | %s (%d + %d + %d) | (same) |" % (
                d / 1000.0, e["total_ms"]["n"], rng(e["total_ms"]), e["create_start_ms"]["median"], e["reload_ms"]["median"], e["stop_rm_ms"]["median"]))
        gr, gn = groups["cutover/%d" % d], groups["cutover-nft/%d" % d]
        out.append("| deploys, boot %g s (ok of run) | | %s | %s |" % (d / 1000.0, *[
            "%d of %d" % (g["deploys"] - g["failed_deploys"], g["deploys"]) if g else "–" for g in (gr, gn)]))
        out.append("| overhead beyond the boot and the settle window, boot %g s | | %s | %s |" % (
            d / 1000.0, rng(gr and gr["overhead_ms"]), rng(gn and gn["overhead_ms"])))
        if ef is not None:
            cells = []
            for g in (gr, gn):
                v = g and g["overhead_ms"] and g["overhead_ms"]["median"] - ef
                cells.append("–" if v is None else "%d ms %s" % (v, "(met)" if v <= GOAL_BEYOND_FLOOR else "(not met)"))
            out.append("| **overhead beyond the engine's floor, boot %g s** | ≤ %d ms | %s | %s |" % (d / 1000.0, GOAL_BEYOND_FLOOR, *cells))
    for key, what in (("switch_ms", "cutover's `switch_ms` (its health pass → its probe through nginx sees the new color)"),
                      ("ready_to_new_ms", "**health pass → first response from the new color through nginx, from outside** (a 5 ms poller on the color; the load client through nginx)")):
        cells = []
        for t in ("cutover", "cutover-nft"):
            st = stats(dd[key] for dd in deploys if dd["tool"] == t)
            c = rng(st)
            if key == "ready_to_new_ms" and st:
                c += " (met)" if st["median"] <= GOAL_READY_TO_NEW else " (not met)"
            cells.append(c)
        out.append("| %s, all deploys | %s | %s | %s |" % (what, "≤ %d ms" % GOAL_READY_TO_NEW if key == "ready_to_new_ms" else "", *cells))
    fails = ["%s: %d of %d" % (t, sum(g["failed"] for g in groups.values() if g and g["tool"] == t),
                               sum(g["requests"] for g in groups.values() if g and g["tool"] == t)) for t in ("cutover", "cutover-nft")]
    out.append("| failed requests (one connection per request) | 0 | %s | %s |" % tuple(f.split(": ")[1] for f in fails))
    out.append("")
    out.append("steps (median ms, all boot times):")
    out.append("")
    names = []
    for d in deploys:
        for k in d["steps"]:
            if k not in names:
                names.append(k)
    out.append("| switch | " + " | ".join(names) + " |")
    out.append("| --- |" + " --- |" * len(names))
    for t, lab in (("cutover", "reload"), ("cutover-nft", "nft")):
        meds = []
        for k in names:
            st = stats(dd["steps"].get(k) for dd in deploys if dd["tool"] == t)
            meds.append("%d" % st["median"] if st else "–")
        out.append("| %s | " % lab + " | ".join(meds) + " |")
    out.append("")
    m = meta
    out.append("run: `%s` at %s (commit %s, release build), %d cycle(s) (2 deploys each) per way and boot time, %d s in all; load average (1/5/15 min) %s at the start, %s at the end; %d CPUs, %.1f GiB RAM; Docker %s, compose %s, nginx %s." % (
        m["command"], m["date"], m["commit"], m["cycles"], m["duration_s"], m["load_avg_start"], m["load_avg_end"],
        m["nproc"], m["mem_total_kib"] / 1048576.0, m["docker"], m["compose_v2"], m["nginx"]))
    print("\n".join(out))
    sys.exit(0)


def rss(name):
    p = os.path.join(RAW, name)
    return load(p) if os.path.exists(p) else None


def hyper(name):
    p = os.path.join(RAW, name)
    if not os.path.exists(p):
        return None
    r = load(p)["results"][0]
    return {k: (r.get(k) * 1000 if r.get(k) is not None else None) for k in ("mean", "stddev", "min", "max")}


secrets_txt = open(os.path.join(RAW, "secrets.txt")).read() if os.path.exists(os.path.join(RAW, "secrets.txt")) else "pending merge"
secrets = {"raw": secrets_txt.strip()}
for key, pat in (("cutover", r"^cutover secrets.*?\s(\d+)\s+(\d+)\s*$"), ("age", r"^age -d.*?\s(\d+)\s+(\d+)\s*$")):
    m = re.search(pat, secrets_txt, re.M)
    if m:
        secrets[key] = {"mean_ms": int(m.group(1)), "peak_kib": int(m.group(2))}

footprint = {
    "binary": meta["binary"],
    "rss_deploy_v2": rss("rss-deploy.json"),
    "rss_deploy_v1": rss("rss-deploy-v1.json"),
    "rss_render": rss("rss-render.json"),
    "rss_render50": rss("rss-render50.json"),
    "version_ms": hyper("version.json"),
    "render50_ms": hyper("render50.json"),
}

result = {"meta": meta, "groups": groups, "keepalive_floor": floor, "engine_floor": engine_floor,
          "footprint": footprint,
          "secrets": secrets, "deploys": deploys}
with open(OUT, "w") as f:
    json.dump(result, f, indent=1, sort_keys=False)

# ---- markdown ----------------------------------------------------------------------------


def ms(v):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return "%.2f s" % (v / 1000.0)
    return "%d ms" % round(v)


def spread(s):
    if not s:
        return "–"
    return "%s (%s – %s)" % (ms(s["median"]), ms(s["min"]), ms(s["max"]))


def verdict(ok):
    return "PASS" if ok else "**MISS**"


def mib(kib):
    return "–" if kib is None else "%.1f MiB" % (kib / 1024.0)


def g(key):
    return groups.get(key)


rows = []
D = meta["delays_ms"]


def row(measure, target, cells, ok=None):
    rows.append("| %s | %s | %s | %s |" % (measure, target, " | ".join(cells), "" if ok is None else verdict(ok)))


def cell(key, field, fmt=spread):
    grp = g(key)
    return fmt(grp[field]) if grp and grp.get(field) else "–"


for delay in D:
    sec = "%g s" % (delay / 1000.0)
    row("deploy wall time, app boot %s (median (min – max))" % sec, "",
        [cell("%s/v2/%d/close" % (t, delay), "wall_ms") for t in TOOLS])
    c = g("cutover/v2/%d/close" % delay)
    row("settle window after the switch, boot %s (old color kept running, out of traffic)" % sec, "",
        [cell("%s/v2/%d/close" % (t, delay), "settle_ms") for t in TOOLS])
    row("overhead beyond the %s boot and the settle window" % sec, "≤ 1.0 s",
        [cell("%s/v2/%d/close" % (t, delay), "overhead_ms") for t in TOOLS],
        c and c["overhead_ms"]["median"] <= TARGETS["overhead_ms"])
    row("deploy start → users see the new version, boot %s" % sec, "",
        [cell("%s/v2/%d/close" % (t, delay), "live_ms") for t in TOOLS])
if engine_floor:
    ef = engine_floor
    row("the engine's floor, no tool: `docker create` + `start` / `nginx -s reload` / `docker stop` + `rm`, under the same load", "",
        ["%s (%s + %s + %s)" % (spread(ef["total_ms"]), ms(ef["create_start_ms"]["median"]), ms(ef["reload_ms"]["median"]),
                                ms(ef["stop_rm_ms"]["median"])), "–", "–"])
    for delay in D:
        c = g("cutover/v2/%d/close" % delay)
        if c:
            row("overhead beyond the engine's floor, boot %g s (what cutover adds: health gate, probe, drain, bookkeeping)" % (delay / 1000.0), "",
                [ms(c["overhead_ms"]["median"] - ef["total_ms"]["median"]), "–", "–"])
c1 = g("cutover/v1/1000/close")
row("deploy wall time, boot 1 s, compose v1 (%s)" % meta["compose_v1"], "",
    [cell("cutover/v1/1000/close", "wall_ms"), "–", "–"])
row("overhead beyond the 1 s boot and the settle window, compose v1", "≤ 1.0 s",
    [cell("cutover/v1/1000/close", "overhead_ms"), "–", "–"],
    c1 and c1["overhead_ms"]["median"] <= TARGETS["overhead_ms"])
sw = [d["switch_ms"] for d in deploys if d["tool"] == "cutover" and d["switch_ms"] is not None and d["compose"] == v2]
sws = stats(sw)
row("health pass → nginx serves the new color (cutover's `switch_ms`, all v2 deploys)", "< 100 ms",
    [spread(sws), "n/a (no health gate)", "n/a (no health gate)"],
    sws and sws["median"] < TARGETS["switch_ms"])
for delay in D:
    row("new color ready → first response from it through nginx, boot %g s (measured outside)" % (delay / 1000.0), "",
        [cell("%s/v2/%d/close" % (t, delay), "ready_to_new_ms") for t in TOOLS])
for delay in D:
    cells = []
    for t in TOOLS:
        grp = g("%s/v2/%d/close" % (t, delay))
        cells.append("–" if not grp else "%d of %d (%d cycles)" % (grp["failed"], grp["requests"], grp["cycles"]))
    c = g("cutover/v2/%d/close" % delay)
    row("failed requests, blue → green → blue, one connection per request, boot %g s" % (delay / 1000.0), "0",
        cells, c and c["failed"] == 0)
c = c1
row("failed requests, one connection per request, compose v1, boot 1 s", "0",
    ["–" if not c else "%d of %d (%d cycles)" % (c["failed"], c["requests"], c["cycles"]), "–", "–"],
    c and c["failed"] == 0)
cells = []
for t in TOOLS:
    grp = g("%s/v2/1000/keepalive" % t)
    cells.append("–" if not grp else "%d of %d" % (grp["failed"], grp["requests"]))
fl_txt = "–"
if floor:
    fl_txt = "nginx floor: %.1f per bare reload (%d reloads, %s) → ≈ %.0f for the 2 reloads of a cycle" % (
        floor["mean_per_reload"], floor["reloads"], ", ".join("%s %d" % kv for kv in floor["failure_kinds"].items()) or "no failures",
        2 * floor["mean_per_reload"])
row("failed requests, one cycle, keep-alive (%s connections), boot 1 s" % (floor["conns"] if floor else "4"), fl_txt, cells)

fp = footprint
b = fp["binary"]
row("release binary size (%s)" % ("stripped" if b["stripped"] else "NOT stripped"), "< 10 MB",
    ["%.2f MB (%d bytes)" % (b["bytes"] / 1e6, b["bytes"]), "–", "–"], b["bytes"] < TARGETS["binary_bytes"])
r = fp["rss_deploy_v2"] or {}
row("peak RSS, `cutover deploy` process (VmHWM), compose v2", "< 15 MiB",
    [mib(r.get("own_hwm_kib")), "–", "–"], r.get("own_hwm_kib") is not None and r["own_hwm_kib"] < TARGETS["rss_kib"])
r1 = fp["rss_deploy_v1"] or {}
row("peak RSS, `cutover deploy` process (VmHWM), compose v1", "< 15 MiB",
    [mib(r1.get("own_hwm_kib")), "–", "–"], r1.get("own_hwm_kib") is not None and r1["own_hwm_kib"] < TARGETS["rss_kib"])
row("peak RSS incl. children (GNU time -v: largest of cutover and the compose it runs), v2 / v1", "",
    ["%s / %s" % (mib(r.get("tree_maxrss_kib")), mib(r1.get("tree_maxrss_kib"))), "–", "–"])
rr = fp["rss_render"] or {}
r50 = fp["rss_render50"] or {}
row("peak RSS, `cutover render` (GNU time -v), demo / 50-service project", "< 15 MiB",
    ["%s / %s" % (mib(rr.get("tree_maxrss_kib")), mib(r50.get("tree_maxrss_kib"))), "–", "–"],
    (rr.get("tree_maxrss_kib") or 1e9) < TARGETS["rss_kib"] and (r50.get("tree_maxrss_kib") or 1e9) < TARGETS["rss_kib"])
v = fp["version_ms"]
row("start-up: `cutover --version` (mean ± σ, %s)" % meta["timer"], "",
    ["–" if not v else ("%.2f ms ± %.2f" % (v["mean"], v["stddev"]) if v.get("stddev") is not None else "%.2f ms" % v["mean"]), "–", "–"])
v = fp["render50_ms"]
row("micro: `cutover render` of a %d-service project (50 accessories + 2 colors), per render" % meta["p50_services"], "",
    ["–" if not v else ("%.2f ms ± %.2f" % (v["mean"], v["stddev"]) if v.get("stddev") is not None else "%.2f ms" % v["mean"]), "–", "–"])
if "cutover" in secrets and "age" in secrets:
    row("micro: decrypt + parse of a 1,000-key secrets file (mean; peak RSS)", "",
        ["cutover %d ms, %s; `age -d` %d ms, %s" % (secrets["cutover"]["mean_ms"], mib(secrets["cutover"]["peak_kib"]),
                                                    secrets["age"]["mean_ms"], mib(secrets["age"]["peak_kib"])), "–", "–"])
else:
    row("micro: decrypt + parse of a 1,000-key secrets file vs `age -d`", "",
        ["pending merge (scripts/bench-secrets.sh is on the secrets branch)" if "pending" in secrets["raw"] else "failed: see latest.json", "–", "–"])

out = []
out.append("| measure | target | cutover | seed 004 (no health gate) | seed 000 (fixed sleep = boot + %d s) | cutover vs target |" % meta["seed000_margin_s"])
out.append("| --- | --- | --- | --- | --- | --- |")
out.extend(rows)
out.append("")
out.append("cutover's steps (median ms, compose v2 unless noted):")
out.append("")
keys = [k for k in ["cutover/v2/%d/close" % d for d in D] + ["cutover/v1/1000/close"] if g(k)]
step_names = []
for k in keys:
    for s in g(k)["steps_ms"]:
        if s not in step_names:
            step_names.append(s)
out.append("| run | " + " | ".join(step_names) + " |")
out.append("| --- |" + " --- |" * len(step_names))
for k in keys:
    grp = g(k)
    label = "boot %g s, %s" % (grp["delay_ms"] / 1000.0, "v1" if grp["compose"] == v1 else "v2")
    out.append("| %s | " % label + " | ".join(
        "%d" % grp["steps_ms"][s]["median"] if s in grp["steps_ms"] else "–" for s in step_names) + " |")
out.append("")
fails = []
for k, grp in groups.items():
    if grp and grp["failure_kinds"]:
        fails.append("%s: %s" % (k, ", ".join("%s %d" % kv for kv in sorted(grp["failure_kinds"].items()))))
if fails:
    out.append("failure kinds seen by the load client: " + "; ".join(fails) + ".")
    out.append("")
bad = [d for d in deploys if d["exit"] != 0]
if bad:
    out.append("deploys that exited non-zero: " + ", ".join("%s %s→%s (exit %d)" % (d["tool"], d["image"], d["to"], d["exit"]) for d in bad) + ".")
    out.append("")
m = meta
out.append("machine: %s, %d CPUs (%s), %.1f GiB RAM, swap %.1f GiB, kernel %s; Docker %s, compose v2 %s, compose v1 %s, nginx %s, Python %s, rustc %s." % (
    m["os"], m["nproc"], m["cpu"], m["mem_total_kib"] / 1048576.0, m["swap_total_kib"] / 1048576.0, m["kernel"],
    m["docker"], m["compose_v2"], m["compose_v1"], m["nginx"], m["python"], m["rustc"]))
out.append("")
out.append("run: `%s` at %s (commit %s), %d cycles per tool and boot time, %d s in all." % (
    m["command"], m["date"], m["commit"], m["cycles"], m["duration_s"]))
print("\n".join(out))
