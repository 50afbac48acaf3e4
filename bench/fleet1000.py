"""A fleet of 1,000 devices against one server (issue 16, point 3).

999 simulated devices (bench/swarm.py, one process per 100 devices) and one
real agent.  The simulated devices speak the agent's protocol with its own
client and selector: a filtered continuous ``_changes`` feed each, a
heartbeat every 10 s, a log write every LOG_EVERY s.  Steps:

1. the server idle: its CPU and RSS (the baseline of the per-device figures);
2. every feed open, nothing written: what 1,000 idle feeds cost;
3. heartbeats and logs on: server CPU and RSS per device, requests/s (counted
   at the clients, feed (re)connections included), the round trip of a
   command to the real agent, and how long a change addressed to one
   simulated device takes to reach its feed.

The first limit is whichever of these grows first: connection time (feeds),
CPU with idle feeds (per-feed cost), CPU per write times feeds (filter cost).
"""
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

import psutil

from commands_rt import ResultWatcher, round_trips
from lab import wait_until


DEVICES = 1000
PER_PROCESS = 100
HEARTBEAT = 10.0
LOG_EVERY = 30.0
WINDOW = 10.0
PROBES = 20
COMMANDS = 20
CONNECT_TIMEOUT = 180.0
HERE = os.path.dirname(os.path.abspath(__file__))


class Swarms:
    """The swarm processes; their stdout lines land in one queue."""

    def __init__(self, lab, db, devices):
        self.lines = queue.Queue()
        self.procs = []
        for i in range(0, len(devices), PER_PROCESS):
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "swarm.py")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, bufsize=1)
            lab.on_close(lambda p=proc: self._end(p))
            proc.stdin.write(json.dumps({
                "url": lab.url, "database": db.name, "devices": devices[i:i + PER_PROCESS],
                "heartbeat": HEARTBEAT, "log_every": LOG_EVERY}) + "\n")
            proc.stdin.flush()
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()
            self.procs.append(proc)

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.put(json.loads(line))

    @staticmethod
    def _end(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    def tell(self, word):
        for proc in self.procs:
            proc.stdin.write(word + "\n")
            proc.stdin.flush()

    def next(self, key, timeout):
        """The next line that holds ``key`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("bench: no %r from the swarm within %.0f s" % (key, timeout))
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if key in msg:
                return msg

    def counts(self):
        """Summed counters of every swarm process."""
        self.tell("counts")
        total = {}
        for _ in self.procs:
            for k, v in self.next("counts", 30)["counts"].items():
                total[k] = total.get(k, 0) + v
        return total

    def close(self):
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(30)


def server_usage(pid):
    """(CPU seconds, RSS MB) of the server and its children."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    cpu = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    return cpu, sum(p.memory_info().rss for p in procs) / 2**20


def window(pid, swarms=None):
    """Server CPU % and RSS over WINDOW s, and requests/s counted at the swarms."""
    c0, _ = server_usage(pid)
    n0, t0 = swarms.counts() if swarms else {}, time.monotonic()
    time.sleep(WINDOW)
    c1, rss = server_usage(pid)
    n1, t1 = swarms.counts() if swarms else {}, time.monotonic()
    rate = {k: (n1[k] - n0.get(k, 0)) / (t1 - t0) for k in n1}
    return 100.0 * (c1 - c0) / (t1 - t0), rss, rate


def run(lab, fifo, cfg, results):
    db = lab.database()
    pid = lab.server.pid
    cpu, rss, _ = window(pid)
    results["f1k_idle"] = {"cpu": cpu, "rss": rss}
    devices = lab.device_logins(DEVICES - 1)
    real = lab.device()
    agent = lab.agent(db, real)
    agent.wait_line(r"code document\(s\) for this device", timeout=60)

    t0 = time.monotonic()
    swarms = Swarms(lab, db, devices)
    for _ in swarms.procs:
        swarms.next("ready", CONNECT_TIMEOUT)
    results["f1k_connect_s"] = time.monotonic() - t0
    time.sleep(2)
    cpu, rss, rate = window(pid, swarms)
    results["f1k_feeds"] = {"cpu": cpu, "rss": rss, "rps": sum(rate.values()) - rate["seen"]}

    swarms.tell("write")
    time.sleep(HEARTBEAT)      # every device has written once
    loaded = [window(pid, swarms) for _ in range(3)]
    results["f1k_load"] = {
        "cpu": statistics.median(w[0] for w in loaded),
        "rss": statistics.median(w[1] for w in loaded),
        "rps": statistics.median(sum(v for k, v in w[2].items() if k != "seen")
                                 for w in loaded),
        "hb_rps": statistics.median(w[2]["heartbeat"] for w in loaded),
        "errors": sum(w[2]["errors"] for w in loaded) * WINDOW}

    latencies = []
    for i in range(PROBES):
        macid = devices[(i * 97) % len(devices)][0]
        doc_id = "probe-%d" % i
        t0 = time.time()
        db.save({"_id": doc_id, "type": macid, "name": "probe"})   # runs nothing
        while True:
            seen = swarms.next("seen", 60)
            if seen["seen"] == doc_id:
                latencies.append((seen["t"] - t0) * 1000)
                break
    results["f1k_change"] = latencies

    watcher = ResultWatcher(lab.server.admin_url, db.name)
    lab.on_close(watcher.stop)
    time.sleep(0.5)
    round_trips(db, watcher, [real.macid], 2)      # warm-up
    results["f1k_command"] = round_trips(db, watcher, [real.macid], COMMANDS)
    swarms.close()
    agent.stop()
    wait_until(lambda: agent.proc.poll() is not None, 60, "the agent's exit")
