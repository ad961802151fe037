#!/usr/bin/env python3
"""Load client and readiness watcher for bench/run.sh (Python 3 standard library only).

    load.py load  --port P [--keepalive] [--conns N] [--pause-ms MS] [--max-s S] --out FILE
    load.py watch --port P --expect TEXT [--pause-ms MS] [--max-s S] --out FILE

`load` sends `GET /` through nginx until SIGTERM/SIGINT (or --max-s), from --conns threads.
Without --keepalive every request opens its own connection (`Connection: close`): the
zero-downtime measure. With --keepalive each thread keeps one HTTP/1.1 connection open and
reuses it; when a request on it fails, that counts as a failure and the thread reconnects
(no retry: a retry would hide exactly what we want to count).

It writes one JSON object: sent/ok/failed totals, failures by kind, the wall-clock time
(time.time(), the same clock as `date +%s.%N`) of every failure, and per thread the
*transitions*: each time the answer differs from that thread's previous one, (t, answer),
where answer is the body (`version=v2 color=green`) or `FAIL <kind>`. From those the
analysis finds when the load first saw a new version.

`watch` polls `http://127.0.0.1:P/health` directly (not through nginx), one connection per
request, until the body contains --expect, then writes {"ready_at": t, "polls": n}. It
measures when the new color became ready, independently of the deploy tool's own polling.
"""

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time

class Flag:
    """A stop flag the signal handler can set without taking a lock (threading.Event.set()
    from a signal handler can deadlock against the main thread's own Event.wait())."""

    def __init__(self):
        self.value = False

    def set(self):
        self.value = True

    def is_set(self):
        return self.value


STOP = Flag()


def on_signal(_signum, _frame):
    STOP.set()


def classify(exc):
    name = type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken-pipe"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed-without-response"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    return name


class Worker(threading.Thread):
    def __init__(self, port, keepalive, pause, deadline):
        super().__init__(daemon=True)
        self.port = port
        self.keepalive = keepalive
        self.pause = pause
        self.deadline = deadline
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.kinds = {}
        self.fail_times = []
        self.transitions = []
        self.last = None
        self.conn = None

    def note(self, t, answer):
        if answer != self.last:
            self.transitions.append((round(t, 4), answer))
            self.last = answer

    def fail(self, t, kind):
        self.failed += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.fail_times) < 200000:
            self.fail_times.append(round(t, 4))
        self.note(t, "FAIL " + kind)

    def one(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Host": "localhost"}
        if not self.keepalive:
            headers["Connection"] = "close"
        self.conn.request("GET", "/", headers=headers)
        resp = self.conn.getresponse()
        body = resp.read().decode("utf-8", "replace").strip()
        if not self.keepalive or resp.will_close:
            self.conn.close()
            self.conn = None
        return resp.status, body

    def run(self):
        while not STOP.is_set() and time.time() < self.deadline:
            t = time.time()
            self.sent += 1
            try:
                status, body = self.one()
            except Exception as exc:  # every way a request can fail counts
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                self.fail(t, classify(exc))
            else:
                if status == 200:
                    self.ok += 1
                    self.note(t, body)
                else:
                    self.fail(t, "HTTP %d" % status)
            if self.pause:
                time.sleep(self.pause)


def cmd_load(args):
    deadline = time.time() + args.max_s
    workers = [
        Worker(args.port, args.keepalive, args.pause_ms / 1000.0, deadline)
        for _ in range(args.conns)
    ]
    started = time.time()
    for w in workers:
        w.start()
    while not STOP.is_set() and time.time() < deadline:
        time.sleep(0.05)
    STOP.set()
    for w in workers:
        w.join(35)
    kinds = {}
    for w in workers:
        for k, v in w.kinds.items():
            kinds[k] = kinds.get(k, 0) + v
    out = {
        "mode": "keepalive" if args.keepalive else "close",
        "conns": args.conns,
        "pause_ms": args.pause_ms,
        "started": started,
        "ended": time.time(),
        "sent": sum(w.sent for w in workers),
        "ok": sum(w.ok for w in workers),
        "failed": sum(w.failed for w in workers),
        "failure_kinds": kinds,
        "fail_times": sorted(t for w in workers for t in w.fail_times),
        "transitions": [w.transitions for w in workers],
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


def cmd_watch(args):
    deadline = time.time() + args.max_s
    polls = 0
    ready_at = None
    while not STOP.is_set() and time.time() < deadline:
        t = time.time()
        polls += 1
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            conn.request("GET", "/health", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            conn.close()
            if resp.status == 200 and args.expect in body:
                ready_at = t
                break
        except Exception:
            pass
        time.sleep(args.pause_ms / 1000.0)
    with open(args.out, "w") as f:
        json.dump({"port": args.port, "expect": args.expect, "ready_at": ready_at, "polls": polls}, f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load")
    l.add_argument("--port", type=int, required=True)
    l.add_argument("--keepalive", action="store_true")
    l.add_argument("--conns", type=int, default=1)
    l.add_argument("--pause-ms", type=float, default=5.0)
    l.add_argument("--max-s", type=float, default=600.0)
    l.add_argument("--out", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--expect", required=True)
    w.add_argument("--pause-ms", type=float, default=5.0)
    w.add_argument("--max-s", type=float, default=120.0)
    w.add_argument("--out", required=True)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    {"load": cmd_load, "watch": cmd_watch}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
