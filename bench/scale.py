"""Scale (4): a cold start to 100 workers running, and SIGINT to all of them stopped.

The database already holds 100 code documents of the stamp script for one
device.  Start: from just before the agent process is spawned to the last of
the 100 stamps (each taken as ``main()`` begins, after the runner reported
``running``).  Stop: from the SIGINT to the agent until none of those 100
worker processes is left (gone or a zombie); the agent's own exit, which
also writes a last heartbeat, is noted beside it.
"""
import signal
import time

import psutil

from device import doc_ids, put_code
from lab import wait_until

WORKERS = 100


def _stopped(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run(lab, fifo, cfg, results):
    db = lab.database()
    device = lab.device()
    ids = doc_ids(WORKERS, "s")
    put_code(db, device.macid, fifo.path, ids)
    starts, stops, exits = [], [], []
    for _ in range(cfg.scale_runs):
        agent = lab.agent(db, device, start=False)
        mark = fifo.mark()
        t0 = time.time()
        agent.start()
        got = fifo.wait(lambda s: s.name in ids, timeout=120, after=mark, count=WORKERS)
        starts.append(max(s.time for s in got) - t0)
        pids = [s.pid for s in got]
        time.sleep(cfg.settle)
        t1 = time.monotonic()
        agent.signal(signal.SIGINT)
        wait_until(lambda: all(_stopped(p) for p in pids), 60, "all 100 workers stopped", 0.005)
        stops.append(time.monotonic() - t1)
        agent.proc.wait(60)
        exits.append(time.monotonic() - t1)
        agent.close()
    results["scale_start"] = starts
    results["scale_stop"] = stops
    results["scale_exit"] = exits
