"""A fleet (5): 50 agents with different MacIDs and no user code against one server.

The agents read the server URL from their server file (``--heartbeat-interval
10``, the default, and the default feed keep-alive of 5 s).

1. Heartbeat requests: the server file names a :class:`proxy.CountingProxy`
   in front of the server.  Once every agent has written its first heartbeat
   (and 5 s more), the requests that pass are counted in consecutive windows;
   the server's CPU in those windows is noted.
2. Command round trip: the server file is changed to the server itself and
   every agent gets SIGHUP (the product's way to move to another server), so
   that the proxy's extra hop, a Python process on this busy 2-core machine,
   is not in the measured path.  Commands go to the agents in turn.
"""
import statistics
import time

from commands_rt import ResultWatcher, round_trips
from lab import server_usage, wait_until
from proxy import CountingProxy

AGENTS = 50


def heartbeat_rates(lab, proxy, cfg, results):
    rates, totals, server_cpu = [], [], []
    for _ in range(cfg.fleet_windows):
        c0, (s0, _), w0 = proxy.snapshot(), server_usage(lab.server.pid), time.monotonic()
        time.sleep(cfg.fleet_window)
        c1, (s1, _), w1 = proxy.snapshot(), server_usage(lab.server.pid), time.monotonic()
        rates.append((c1["heartbeat"] - c0["heartbeat"]) / (w1 - w0))
        totals.append((c1["total"] - c0["total"]) / (w1 - w0))
        server_cpu.append(100 * (s1 - s0) / (w1 - w0))
    results["fleet_hb_rps"] = statistics.median(rates)
    results["fleet_total_rps"] = statistics.median(totals)
    results["fleet_server_cpu"] = statistics.median(server_cpu)


def run(lab, fifo, cfg, results):
    db = lab.database()
    proxy = CountingProxy(lab.server.port)
    lab.on_close(proxy.close)
    devices = [lab.device() for _ in range(AGENTS)]
    agents = [lab.agent(db, d, url=proxy.url, heartbeat_interval=10, server_file=True)
              for d in devices]
    for a in agents:
        a.wait_line(r"code document\(s\) for this device", timeout=180)
    ids = ["%d_heartbeat" % d.macid for d in devices]
    wait_until(lambda: all(row.get("value") for row in db.view("_all_docs", keys=ids)),
               120, "a heartbeat from every agent", 0.5)
    time.sleep(5)
    heartbeat_rates(lab, proxy, cfg, results)

    marks = [a.mark() for a in agents]
    for a in agents:
        a.retarget(lab.url)
    for a, mark in zip(agents, marks):
        a.wait_line(r"code document\(s\) for this device", timeout=120, after=mark)
    watcher = ResultWatcher(lab.server.admin_url, db.name)
    lab.on_close(watcher.stop)
    time.sleep(2)
    macids = [d.macid for d in devices]
    round_trips(db, watcher, macids[:2], 2)     # warm-up
    results["fleet_claim"] = []
    results["fleet_command"] = round_trips(db, watcher, macids, cfg.fleet_command_runs, gap=0.1,
                                           claims=results["fleet_claim"])

    for a in agents:
        a.signal(2)
    for a in agents:
        a.proc.wait(60)
