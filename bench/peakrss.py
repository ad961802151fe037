#!/usr/bin/env python3
"""Peak memory of one command, two ways, in one run:

    peakrss.py OUT.json -- CMD [ARGS...]

The command runs under GNU `time -v` (/usr/bin/time), and this script polls the command's
own /proc/PID/status while it runs:

- own_hwm_kib: the command's own VmHWM (peak RSS of that one process), read every
  millisecond; VmHWM is a high-water mark kept by the kernel, so the last reading before
  exit is the process's peak up to its last millisecond.
- tree_maxrss_kib: GNU time's "Maximum resident set size", i.e. ru_maxrss from wait4(): the
  largest of the command and every descendant it waited for. For `cutover deploy` that is
  the Go `docker compose` child (or the Python docker-compose v1), not cutover itself.

The command's stdout goes to OUT.json.stdout; its stderr to OUT.json.stderr.
"""
import json
import os
import re
import subprocess
import sys
import time


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def hwm(pid):
    text = read("/proc/%d/status" % pid) or ""
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def main():
    out = sys.argv[1]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    time_file = out + ".time"
    start = time.time()
    with open(out + ".stdout", "wb") as so, open(out + ".stderr", "wb") as se:
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", time_file] + cmd,
                                stdout=so, stderr=se)
        child = None
        peak = None
        while proc.poll() is None:
            if child is None:
                kids = (read("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) or "").split()
                child = int(kids[0]) if kids else None
            if child is not None:
                # Only count readings taken after exec (comm is no longer "time").
                comm = (read("/proc/%d/comm" % child) or "").strip()
                h = hwm(child)
                if h is not None and comm != "time":
                    peak = h if peak is None else max(peak, h)
            time.sleep(0.001)
    wall = time.time() - start
    text = read(time_file) or ""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    e = re.search(r"Exit status: (\d+)", text)
    result = {
        "cmd": cmd,
        "exit": int(e.group(1)) if e else proc.returncode,
        "wall_ms": round(wall * 1000, 1),
        "own_hwm_kib": peak,
        "tree_maxrss_kib": int(m.group(1)) if m else None,
    }
    with open(out, "w") as f:
        json.dump(result, f)
    return 0 if result["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
