"""Soak (6): edits, commands and crashing workers for a while; what is left behind.

One agent, 12 documents: 8 idle stamp workers, 2 that print 10 lines a second
(log documents), 2 that crash 0.3 s after they start; plus one document that
comes and goes.  Every 0.25 s the bench does one of: give a stamp worker a
new revision; run a command (``true``, a shell that prints, every 5th one
that outlives its timeout, every 7th one that leaves a background process
holding its output); give a crasher a new revision (which resets its
backoff, so it crashes again); add or delete the extra document.

The supervisor is measured in the same calm state at the start (after a
warm-up of the same churn, so that one-time allocations do not count as
growth) and at the end: crashers given a steady revision, the extra document
gone, every command answered, every worker running its newest revision, and
3 s of quiet.  Then: RSS (median of samples), open file descriptors and
child processes.  After the agent's SIGINT exit: processes still carrying
the device's tag, and import folders left in the state folder.
"""
import itertools
import os
import random
import signal
import time

import psutil

from commands_rt import ResultWatcher
from himbeerecouch.sandbox import proctree
from lab import sampled_rss_mb
from stamps import script

STEADY = ["s%d" % i for i in range(8)]
CRASHERS = ["c0", "c1"]
TALKERS = ["t0", "t1"]
EXTRA = "x"

CRASH = """
import time
def main():
    time.sleep(0.3)
    raise RuntimeError("bench: crashing on purpose")
"""

TALK = """
import time
def main():
    n = 0
    while not should_quit():
        log("bench line", n)
        n += 1
        time.sleep(0.1)
"""

COMMANDS = [
    (["true"], None),
    (["sh", "-c", "echo hello; echo oops >&2"], None),
]
SLOW = (["sleep", "5"], 0.5)                               # killed at its timeout
ESCAPER = (["sh", "-c", "sleep 30 & echo started"], 10)    # leaves a process behind


class Churn:
    def __init__(self, db, macid, fifo, watcher):
        self.db, self.macid, self.fifo, self.watcher = db, macid, fifo, watcher
        self.editions = {}               # stamp doc id -> newest edition
        self.commands = []
        self.counter = itertools.count()
        self.rng = random.Random(5)

    def put(self, doc_id, code):
        doc = self.db.get(doc_id) or {"_id": doc_id}
        doc.update(type=self.macid, name=doc_id, code=code)
        self.db.save(doc)

    def stamp_doc(self, doc_id):
        edition = self.editions.get(doc_id, -1) + 1
        self.editions[doc_id] = edition
        self.put(doc_id, script(self.fifo.path, doc_id, edition))

    def command(self):
        n = next(self.counter)
        argv, timeout = SLOW if n % 5 == 4 else ESCAPER if n % 7 == 6 else COMMANDS[n % 2]
        doc = {"_id": "bench-cmd-soak-%d" % n, "type": "%d_cmd" % self.macid, "cmd": argv}
        if timeout:
            doc["timeout"] = timeout
        self.db.save(doc)
        self.commands.append(doc["_id"])

    def step(self, i):
        kind = i % 4
        if kind == 0:
            self.stamp_doc(self.rng.choice(STEADY))
        elif kind == 1:
            self.command()
        elif kind == 2:
            self.put(self.rng.choice(CRASHERS), CRASH + "# %d\n" % i)
        elif not self.drop_extra():
            self.stamp_doc(EXTRA)

    def drop_extra(self):
        """Delete the extra document; False if there was none."""
        doc = self.db.get(EXTRA)
        self.editions.pop(EXTRA, None)
        if doc is None:
            return False
        self.db.delete(doc)
        return True

    def run_for(self, seconds):
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            self.step(i)
            i += 1
            time.sleep(0.25)
        return i

    def calm(self):
        """Steady revisions for the crashers, no extra document; wait for all of it."""
        for doc_id in CRASHERS:
            self.stamp_doc(doc_id)
        self.drop_extra()
        for doc_id, edition in self.editions.items():
            self.fifo.wait(lambda s: s.name == doc_id and s.edition == edition, timeout=120)
        for doc_id in self.commands:
            self.watcher.wait(doc_id, timeout=60)
        time.sleep(3)


def sample(agent):
    proc = psutil.Process(agent.pid)
    children = [c for c in proc.children() if c.status() != psutil.STATUS_ZOMBIE]
    return {"rss": sampled_rss_mb(agent.pid), "fds": proc.num_fds(), "children": len(children)}


def run(lab, fifo, cfg, results):
    db = lab.database()
    device = lab.device()
    watcher = ResultWatcher(lab.server.admin_url, db.name)
    lab.on_close(watcher.stop)
    churn = Churn(db, device.macid, fifo, watcher)
    for doc_id in STEADY:
        churn.stamp_doc(doc_id)
    for doc_id in TALKERS:
        churn.put(doc_id, TALK)
    for doc_id in CRASHERS:
        churn.put(doc_id, CRASH)
    agent = lab.agent(db, device)
    agent.wait_line(r"12 code document\(s\) for this device", timeout=60)

    churn.run_for(cfg.soak_warmup)
    churn.calm()
    start = sample(agent)
    t0 = time.monotonic()
    steps = churn.run_for(cfg.soak)
    churn.calm()
    end = sample(agent)
    results["soak_s"] = time.monotonic() - t0
    results["soak_steps"] = steps
    results["soak_commands"] = len(churn.commands)
    results["soak_start"], results["soak_end"] = start, end
    # + the guardian and the warm spare
    expected_children = 2 + len(STEADY) + len(CRASHERS) + len(TALKERS)
    results["soak_extra_children"] = end["children"] - expected_children

    agent.signal(signal.SIGINT)
    agent.proc.wait(60)
    left = [p.pid for p in proctree.find_tagged("%d/" % device.macid)]
    imports = os.path.join(agent.state_dir, "imports")
    folders = [n for n in os.listdir(imports) if n.startswith("hbc-")] if os.path.isdir(imports) else []
    results["soak_left_processes"] = len(left)
    results["soak_left_folders"] = len(folders)
