"""A fleet of up to 1,000 devices against one server (issue 16, point 3).

Simulated devices (bench/swarm.py, one process per 100 devices) and one real
agent.  The simulated devices speak the agent's protocol with its own client
and selector: a filtered continuous ``_changes`` feed each, a heartbeat every
10 s, a log write every LOG_EVERY s.  The fleet grows in STEPS; at each size:

- the server's CPU and RSS (and, against its idle figures, per device);
- the writes/s that succeeded against those the devices meant to make, and
  the requests that failed (counted at the clients);
- how long a change addressed to one simulated device takes to reach its
  feed, and a command's round trip to the real agent.

Before the first step, the server idle; after connecting the first feeds,
the same without any write (what idle feeds cost).  The fleet stops growing
at the first size where requests fail, writes fall behind, or a change takes
more than a second (p50) to reach its device: the limit the table names.
"""
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

from commands_rt import ResultWatcher, round_trips
from lab import server_usage, wait_until


STEPS = (50, 100, 200, 400, 1000)   # fleet sizes, the real agent included
CHANGE_PROMISE = 1.0     # s: a change must reach its device within this (p50)
PER_PROCESS = 100
HEARTBEAT = 10.0
LOG_EVERY = 30.0
WINDOW = 10.0
PROBES = 5
COMMANDS = 5
PROBE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 120.0
HERE = os.path.dirname(os.path.abspath(__file__))


class Swarms:
    """The swarm processes, added 100 devices at a time; their stdout lines land
    in one queue."""

    def __init__(self, lab, db):
        self.lab, self.db = lab, db
        self.lines = queue.Queue()
        self.procs = []
        self.devices = []

    def add(self, devices):
        """Start processes for ``devices``; return them."""
        new = []
        for i in range(0, len(devices), PER_PROCESS):
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "swarm.py")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, bufsize=1)
            self.lab.on_close(lambda p=proc: self._end(p))
            proc.stdin.write(json.dumps({
                "url": self.lab.url, "database": self.db.name,
                "devices": devices[i:i + PER_PROCESS],
                "heartbeat": HEARTBEAT, "log_every": LOG_EVERY}) + "\n")
            proc.stdin.flush()
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()
            new.append(proc)
        self.procs += new
        self.devices += devices
        return new

    def wait_ready(self, procs, timeout):
        for _ in procs:
            self.next("ready", timeout)

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.put(json.loads(line))

    @staticmethod
    def _end(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    def tell(self, word, procs=None):
        for proc in self.procs if procs is None else procs:
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
            for k, v in self.next("counts", 60)["counts"].items():
                total[k] = total.get(k, 0) + v
        return total

    def close(self):
        """Close their stdin (they stop) and wait for them."""
        for proc in self.procs:
            if not proc.stdin.closed:
                proc.stdin.close()
        for proc in self.procs:
            proc.wait(30)


def window(pid, swarms=None):
    """Server CPU % and RSS over WINDOW s, and the swarms' counts per second."""
    c0, _ = server_usage(pid)
    n0, t0 = swarms.counts() if swarms else {}, time.monotonic()
    time.sleep(WINDOW)
    c1, rss = server_usage(pid)
    n1, t1 = swarms.counts() if swarms else {}, time.monotonic()
    rate = {k: (n1[k] - n0.get(k, 0)) / (t1 - t0) for k in n1}
    return {"cpu": 100.0 * (c1 - c0) / (t1 - t0), "rss": rss, "rate": rate}


def change_latencies(db, swarms, devices, probes):
    """ms from the PUT of a document addressed to one device to its feed; and how many
    never arrived (within PROBE_TIMEOUT) or could not even be written."""
    latencies, lost = [], 0
    for i in range(probes):
        macid = devices[(i * 97) % len(devices)][0]
        doc_id = "probe-%d-%d" % (macid, time.monotonic_ns())
        t0 = time.time()
        try:
            db.save({"_id": doc_id, "type": macid, "name": "probe"})   # runs nothing
            while True:
                seen = swarms.next("seen", PROBE_TIMEOUT)
                if seen["seen"] == doc_id:
                    latencies.append((seen["t"] - t0) * 1000)
                    break
        except (OSError, TimeoutError):
            lost += 1
            if lost > 1:
                break                   # saturated: no point in waiting for more
    return latencies, lost


def command_latencies(db, watcher, macid, count):
    try:
        return round_trips(db, watcher, [macid], count), 0
    except (OSError, TimeoutError):
        return [], 1


def measure_step(db, pid, swarms, watcher, agent_macid, size):
    """The figures of one fleet size (see the module docstring)."""
    step = dict(window(pid, swarms), devices=size)
    rate = step.pop("rate")
    step["writes"] = rate["heartbeat"] + rate["log"]
    step["ideal"] = (size - 1) * (1 / HEARTBEAT + 1 / LOG_EVERY)
    step["failed"] = rate["errors"] * WINDOW
    step["rps"] = sum(v for k, v in rate.items() if k not in ("seen", "errors"))
    step["change"], step["change_lost"] = change_latencies(db, swarms, swarms.devices, PROBES)
    step["command"], step["command_lost"] = command_latencies(db, watcher, agent_macid,
                                                              COMMANDS)
    return step


def over_the_limit(step):
    """Why this fleet size is more than the server serves, or None."""
    if step["failed"] or step["change_lost"] or step["command_lost"]:
        return "requests failed or changes were lost"
    if step["writes"] < 0.9 * step["ideal"]:
        return "the server took %.0f of %.0f writes/s" % (step["writes"], step["ideal"])
    if statistics.median(step["change"]) > CHANGE_PROMISE * 1000:
        # The README promises a script running within a second of a save.
        return "a change took %.1f s (p50) to reach its device" % (
            statistics.median(step["change"]) / 1000)
    return None


def run(lab, fifo, cfg, results):
    db = lab.database()
    pid = lab.server.pid
    results["f1k_idle"] = window(pid)
    logins = lab.device_logins(max(STEPS) - 1)
    real = lab.device()
    agent = lab.agent(db, real)
    agent.wait_line(r"code document\(s\) for this device", timeout=60)
    watcher = ResultWatcher(lab.server.admin_url, db.name)
    lab.on_close(watcher.stop)
    swarms = Swarms(lab, db)
    lab.on_close(swarms.close)
    steps = results["f1k_steps"] = []
    results["f1k_limit"] = None
    for size in STEPS:
        t0 = time.monotonic()
        new = swarms.add(logins[len(swarms.devices):size - 1])
        try:
            swarms.wait_ready(new, CONNECT_TIMEOUT)
        except TimeoutError:
            results["f1k_limit"] = {"devices": size, "why": "the feeds of %d more devices were "
                                    "not open after %.0f s" % (len(new) * PER_PROCESS,
                                                               CONNECT_TIMEOUT)}
            break
        connect = time.monotonic() - t0
        if not steps:
            time.sleep(2)
            results["f1k_feeds"] = dict(window(pid, swarms), devices=size)
        swarms.tell("write", new)
        time.sleep(HEARTBEAT)      # every new device has written once
        step = measure_step(db, pid, swarms, watcher, real.macid, size)
        step["connect_s"] = connect
        steps.append(step)
        why = over_the_limit(step)
        if why:
            results["f1k_limit"] = {"devices": size, "why": why}
            break
    swarms.close()
    agent.stop()
    wait_until(lambda: agent.proc.poll() is not None, 60, "the agent's exit")
