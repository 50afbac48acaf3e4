"""Scale (4): a cold start to 100 workers running, and SIGINT to all of them stopped.

The database already holds 100 code documents of the stamp script for one
device.  Start: from just before the agent process is spawned to the last of
the 100 stamps (each taken as ``main()`` begins, after the runner reported
``running``).  Stop: from the SIGINT to the agent until none of those 100
worker processes is left (gone or a zombie); the agent's own exit, which
also writes a last heartbeat, is noted beside it.  Each run is made twice,
with the warm spare and with ``--no-spare`` (the baseline: today's design).
"""
import signal
import time

import psutil

from device import doc_ids, put_code
from lab import wait_until

WORKERS = 100
# result key suffix, agent options: with the spare, and the baseline without
VARIANTS = (("", ()), ("_cold", ("--no-spare",)))


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
    for key, _ in VARIANTS:
        for name in ("scale_start", "scale_stop", "scale_exit"):
            results[name + key] = []
    for _ in range(cfg.scale_runs):
        # Alternated, so that both see the same load on a shared machine.
        for key, args in VARIANTS:
            start, stop, exit_ = start_and_stop(lab, fifo, cfg, db, device, ids, args)
            results["scale_start" + key].append(start)
            results["scale_stop" + key].append(stop)
            results["scale_exit" + key].append(exit_)


def start_and_stop(lab, fifo, cfg, db, device, ids, args):
    """One cold start of the agent to all ``ids`` running, and SIGINT to all stopped."""
    agent = lab.agent(db, device, start=False, args=args)
    mark = fifo.mark()
    t0 = time.time()
    agent.start()
    got = fifo.wait(lambda s: s.name in ids, timeout=120, after=mark, count=WORKERS)
    start = max(s.time for s in got) - t0
    pids = [s.pid for s in got]
    time.sleep(cfg.settle)
    t1 = time.monotonic()
    agent.signal(signal.SIGINT)
    wait_until(lambda: all(_stopped(p) for p in pids), 60, "all 100 workers stopped", 0.005)
    stop = time.monotonic() - t1
    agent.proc.wait(60)
    exit_ = time.monotonic() - t1
    agent.close()
    return start, stop, exit_
