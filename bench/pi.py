"""Pi-class figures (issue 16, point 2): the agent and its workers under a CPU quota.

The quota is a cgroup (bench/cpuquota.py) limited to 1/PI_FACTOR of one
core; the agent joins it before its interpreter starts, so its workers,
its spare and its commands are in it too.  The test server is not: it
stands for the lab's CouchDB, which does not run on the Pi.  Figures:
a bare interpreter's start inside the quota (so the table shows the
slowdown the quota really gave, against the baseline phase's bare start),
50 workers' cold start, supervisor CPU with 50 idle workers, reload
latency with the spare and (a second agent) without, and the command
round trip.  Where no quota can be made, the phase fails with the reason
and the table says so.

Why PI_FACTOR = 10: the issue puts a Raspberry Pi 3's interpreter start
at 5 to 20 times this machine's; 10 is the middle of that range on a log
scale.  A quota slows one core down; a Pi 3 has four slow cores, so
parallel work (50 idle workers, a burst of starts) has more room on the
Pi than here, and serial work (one reload, one command) is what this
phase approximates best.
"""
import subprocess
import sys
import time

import cpuquota
from commands_rt import ResultWatcher, round_trips
from device import idle_agent, reloads, run_workers
from lab import cpu_seconds, wait_until

PI_FACTOR = 10
BARE_RUNS = 10
RELOAD_RUNS = 10
RELOAD_GAP = 2.0
COMMAND_RUNS = 10
CPU_WINDOW = 20.0


def run(lab, fifo, cfg, results):
    quota = cpuquota.create(1.0 / PI_FACTOR)
    lab.on_close(quota.close)
    results["pi_factor"] = PI_FACTOR
    results["pi_quota"] = "%s, %s" % (quota.folder, "cpu.max" if quota.version == 2
                                      else "cgroup v1 cpu.cfs_quota_us")
    bare = []
    for _ in range(BARE_RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True, preexec_fn=quota.enter)
        bare.append((time.perf_counter() - t0) * 1000)
    results["pi_bare_start"] = bare

    db, device, agent = idle_agent(lab, quota=quota)
    t0 = time.monotonic()
    ids = run_workers(db, device, fifo)
    results["pi_start50"] = time.monotonic() - t0
    time.sleep(cfg.settle)
    c0, t0 = cpu_seconds(agent.pid), time.monotonic()
    time.sleep(CPU_WINDOW)
    results["pi_cpu_pct"] = 100.0 * (cpu_seconds(agent.pid) - c0) / (time.monotonic() - t0)
    results["pi_reload"], results["pi_collateral"] = reloads(db, agent, fifo, ids,
                                                             RELOAD_RUNS, RELOAD_GAP)
    watcher = ResultWatcher(lab.server.admin_url, db.name)
    lab.on_close(watcher.stop)
    time.sleep(0.5)   # the watcher's feed is open
    round_trips(db, watcher, [device.macid], 2)       # warm-up, not counted
    results["pi_command"] = round_trips(db, watcher, [device.macid], COMMAND_RUNS)
    agent.stop()
    wait_until(lambda: agent.proc.poll() is not None, 60, "the agent's exit")

    db, device, agent = idle_agent(lab, args=["--no-spare"], quota=quota)
    ids = run_workers(db, device, fifo)
    time.sleep(cfg.settle)
    results["pi_reload_cold"], cold_collateral = reloads(db, agent, fifo, ids,
                                                         RELOAD_RUNS, RELOAD_GAP)
    results["pi_collateral"] += cold_collateral
    agent.stop()
    wait_until(lambda: agent.proc.poll() is not None, 60, "the agent's exit")
