"""One device, one agent: footprint (1, 3), reload latency (1) and command round trip (2).

The agent starts with no code document (idle RSS with 0 workers, and the
warm spare's RSS), then gets 50 documents of the stamp script (idle RSS with
50 workers, each worker's own RSS, supervisor CPU over a quiet period), then
one document at a time gets a new revision (reload latency; every other
worker's pid must survive), then commands run ``true`` (round trip).  Last,
the same reloads on a second agent started with ``--no-spare``: the previous
design, the baseline of the spare.
"""
import statistics
import time

import psutil

from commands_rt import ResultWatcher, round_trips
from lab import cpu_seconds, sampled_rss_mb, wait_until
from stamps import script

WORKERS = 50


def doc_ids(n, prefix="w"):
    return ["%s%02d" % (prefix, i) for i in range(n)]


def put_code(db, macid, fifo, ids, edition=0):
    """Create (or give a new edition to) the code documents ``ids`` in one request."""
    docs = []
    for doc_id in ids:
        doc = db.get(doc_id) or {"_id": doc_id}
        doc.update(type=macid, name=doc_id, code=script(fifo, doc_id, edition))
        docs.append(doc)
    for ok, doc_id, why in db.update(docs):
        if not ok:
            raise RuntimeError("bench: cannot save %s: %s" % (doc_id, why))


def worker_pids(agent):
    """``{pid}`` of the agent's worker processes (its children but the guardian)."""
    return {p.pid for p in agent.worker_processes().values()}


def idle_agent(lab, args=(), quota=None):
    """A new device's agent, once it found no code document; ``(db, device, agent)``."""
    db = lab.database()
    device = lab.device()
    agent = lab.agent(db, device, args=args, quota=quota)
    agent.wait_line(r"0 code document\(s\) for this device", timeout=60)
    return db, device, agent


def run_workers(db, device, fifo):
    """Give the device the 50 stamp documents; return their ids once all run."""
    ids = doc_ids(WORKERS)
    mark = fifo.mark()
    put_code(db, device.macid, fifo.path, ids)
    fifo.wait(lambda s: s.name in ids, timeout=120, after=mark, count=WORKERS)
    return ids


def reloads(db, agent, fifo, ids, runs, gap):
    """Give ``runs`` documents in turn a new revision; ``(latencies ms, collateral)``."""
    latencies, collateral = [], 0
    for i in range(runs):
        doc_id = ids[i % len(ids)]
        others = {n: p for n, p in fifo.latest_pids(ids).items() if n != doc_id}
        mark = fifo.mark()
        doc = db[doc_id]
        doc["code"] = script(fifo.path, doc_id, i + 1)
        t0 = time.time()
        db.save(doc)
        (stamp,) = fifo.wait(lambda s: s.name == doc_id and s.edition == i + 1, after=mark)
        latencies.append((stamp.time - t0) * 1000)
        time.sleep(gap)
        collateral += sum(1 for s in fifo.since(mark) if s.name != doc_id)
        collateral += sum(1 for p in others.values() if not psutil.pid_exists(p))
    alive = worker_pids(agent)
    if alive != set(fifo.latest_pids(ids).values()):
        collateral += len(alive ^ set(fifo.latest_pids(ids).values()))
    return latencies, collateral


def run(lab, fifo, cfg, results):
    db, device, agent = idle_agent(lab)
    time.sleep(cfg.settle)
    results["rss0"] = sampled_rss_mb(agent.pid)
    spare = wait_until(agent.spare, 10, "the spare runner")
    results["spare_rss"] = sampled_rss_mb(spare.pid)

    # 50 workers, all running main()
    ids = run_workers(db, device, fifo)
    time.sleep(cfg.settle)
    results["rss50"] = sampled_rss_mb(agent.pid)
    pids = list(fifo.latest_pids(ids).values())
    results["worker_rss"] = statistics.median(psutil.Process(p).memory_info().rss / 2**20
                                              for p in pids)

    # CPU of the supervisor with 50 idle workers
    c0, t0 = cpu_seconds(agent.pid), time.monotonic()
    time.sleep(cfg.cpu_window)
    c1, t1 = cpu_seconds(agent.pid), time.monotonic()
    results["cpu_pct"] = 100.0 * (c1 - c0) / (t1 - t0)

    # reload latency: one document at a time gets a new revision
    results["reload"], results["collateral"] = reloads(db, agent, fifo, ids,
                                                       cfg.reload_runs, cfg.reload_gap)

    # command round trip
    watcher = ResultWatcher(lab.server.admin_url, db.name)
    lab.on_close(watcher.stop)
    time.sleep(0.5)   # the watcher's feed is open
    round_trips(db, watcher, [device.macid], 2)       # warm-up, not counted
    results["command_claim"] = []
    results["command"] = round_trips(db, watcher, [device.macid], cfg.command_runs,
                                     claims=results["command_claim"])

    agent.stop()
    wait_until(lambda: agent.proc.poll() is not None, 30, "the agent's exit")

    # the same reloads without the spare: the previous design
    db, device, agent = idle_agent(lab, args=["--no-spare"])
    ids = run_workers(db, device, fifo)
    time.sleep(cfg.settle)
    results["reload_cold"], results["collateral_cold"] = reloads(
        db, agent, fifo, ids, cfg.reload_runs, cfg.reload_gap)
    agent.stop()
