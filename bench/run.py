"""``make bench``: how fast and how light the agent is, beside a peer (issue 5).

Starts its own test server (tests/couchserver.py) on 127.0.0.1, or uses the
one ``COUCHDB_URL`` names (``make bench COUCHDB_URL=http://admin:pw@127.0.0.1:5984``:
Apache CouchDB, for every phase that needs a server), runs the phases below
one after the other on an otherwise idle agent, prints ONE table and writes it into bench/RESULTS.md (between the ``bench:`` markers;
the notes outside them are kept).  Everything it starts is ended on the way
out, also on failure or Ctrl-C.

Phases (modules beside this one):
  baseline  bare ``python -I -c pass`` start and an idle bare interpreter's RSS
  device    one agent: RSS with 0 and 50 workers, a worker's RSS, the warm
            spare's RSS, CPU over 30 s, reload latency among 50 workers (with
            the spare, then a second agent with --no-spare), command round trip
  pi        the same under a Pi-3-class CPU quota (a cgroup); fails, and the
            table says why, where the machine allows no quota
  peer      supervisord with 50 programs of the same script: restart latency
  scale     cold start to 100 workers running, SIGINT to all stopped (with
            and without the spare, alternated)
  fleet     50 agents, no user code: command round trip, heartbeat requests/s
  fleet1000 999 simulated devices (bench/swarm.py, 100 a process) and one agent:
            server CPU and memory per device, requests/s, change latency,
            command round trip
  soak      edits, commands, crashing workers for SOAK seconds: what is left

Each latency figure is the median (and 95th percentile) of several runs,
each footprint the median of several samples; every ratio is taken from
figures of the same run.
"""
import argparse
import datetime
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as labmod  # noqa: E402
import table  # noqa: E402
from cpuquota import QuotaUnavailable  # noqa: E402
from stamps import StampFifo  # noqa: E402

DEFAULT_SOAK = 240
PHASES = ("baseline", "device", "pi", "peer", "scale", "fleet", "fleet1000", "soak")


class Settings(argparse.Namespace):
    settle = 2.0
    cpu_window = 30.0
    reload_runs = 20
    reload_gap = 1.5          # after a reload, let its heartbeats pass before the next
    command_runs = 20
    peer_runs = 10
    bare_runs = 20
    scale_runs = 3
    fleet_command_runs = 30
    fleet_windows = 3
    fleet_window = 10.0


def say(text):
    print("bench: %s" % text, file=sys.stderr, flush=True)


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ---------------------------------------------------------------- baseline
def baseline(lab, fifo, cfg, results):
    starts = []
    for _ in range(cfg.bare_runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        starts.append((time.perf_counter() - t0) * 1000)
    results["bare_start"] = starts
    rss = []
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-I", "-c",
                              "import os; os.write(1, b'r'); os.read(0, 1)"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        p.stdout.read(1)
        rss.append(labmod.rss_mb(p.pid))
        p.communicate(b"q")
    results["bare_rss"] = statistics.median(rss)


def peer(lab, fifo, cfg, results):
    import peer as peermod
    sup = peermod.Supervisord(lab, fifo).start()
    time.sleep(cfg.settle)
    results["peer_rss"] = sup.rss_mb()
    names = sup.names
    results["peer_cli"] = [sup.restart_cli(names[i]) for i in range(cfg.peer_runs)]
    time.sleep(0.5)
    results["peer_rpc"] = [sup.restart_rpc(names[-1 - i]) for i in range(cfg.peer_runs)]
    sup.close()


def phase(name):
    if name in ("baseline", "peer"):
        return globals()[name]
    module = __import__(name)
    return module.run


# ---------------------------------------------------------------- main
def machine():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"nproc": nproc, "python": platform.python_version(), "cpu": cpu,
            "kernel": platform.release(), "load": "%.2f %.2f %.2f" % os.getloadavg()}


def command_line(args):
    external = "COUCHDB_URL=... " if os.environ.get("COUCHDB_URL") else ""
    if os.environ.get("MAKELEVEL"):
        return external + "make bench" + (
            "" if args.soak == DEFAULT_SOAK else " SOAK=%g" % args.soak)
    return external + "python bench/run.py " + " ".join(sys.argv[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soak", type=float, default=DEFAULT_SOAK,
                        help="soak duration in seconds (default %(default)s; the issue's is 600)")
    parser.add_argument("--only", nargs="+", choices=PHASES, help="run only these phases")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    cfg = Settings(soak=args.soak, soak_warmup=min(30.0, max(10.0, args.soak / 5)))

    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)      # also when started with SIGINT ignored

    started = time.monotonic()
    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results, failures, skipped = {}, {}, {}
    lab = labmod.Lab()
    results["server"] = lab.server_name
    say("server: %s" % lab.server_name)
    try:
        fifo = StampFifo(lab.tmp)
        lab.on_close(fifo.close)
        for name in args.only or PHASES:
            say("%s ..." % name)
            t0 = time.monotonic()
            try:
                phase(name)(lab, fifo, cfg, results)
            except KeyboardInterrupt:
                raise
            except QuotaUnavailable as e:
                # Not a failure of the agent: this machine cannot run the phase.
                say("*** %s phase SKIPPED: %s ***" % (name, e))
                failures[name] = skipped[name] = "SKIPPED, %s" % e
            except Exception as e:   # noqa: BLE001 - the table says which phase failed
                traceback.print_exc()
                failures[name] = "%s: %s" % (type(e).__name__, e)
            say("%s done in %.0f s" % (name, time.monotonic() - t0))
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lab.close()
    info["load_end"] = "%.2f %.2f %.2f" % os.getloadavg()
    info["duration"] = time.monotonic() - started
    info["command"] = command_line(args)
    rows = table.rows(results, failures, cfg, percentile)
    text = table.render(rows)
    print(text)
    if not args.no_write:
        table.write_results(os.path.join(HERE, "RESULTS.md"), info, text, rows, cfg)
    say("whole run: %.0f s" % info["duration"])
    return 1 if set(failures) - set(skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
