"""Workers that misbehave in every way we know of, all at once, on one agent.

One agent runs a steady worker (it ticks) next to one worker per fault.
Each test looks at its fault: the error in the agent's log and in the
heartbeat (``workers[]``: state, error, traceback, last_exit_code), the
processes it started gone, and the steady worker still the same process,
still ticking.  The last test stops the agent and finds no process of the
device left (by the device tag in the environment).

Already proven elsewhere, and not repeated here in depth: restart backoff
(tests/test_supervisor.py::test_crash_restarts_with_backoff_and_return_is_done),
the single 200 MB allocation under a memory limit
(tests/test_supervisor.py::test_memory_limit_and_clean_environment), the stop
of a worker whose setsid grandchild outlives it
(tests/test_supervisor.py::test_stop_interrupts_then_kills_the_whole_tree).
"""
import os
import signal
import textwrap

import psutil
import pytest

from agent import Agent
from faultkit import (STEADY, assert_nothing_left, dead, heartbeat, log_document,
                      steady_ok, tagged, worker_hb, worker_of)
from helpers import put_doc, wait_for


LOOP = textwrap.dedent("""
    import time
    def main():
        log("%s up")
        while not should_quit():
            time.sleep(0.05)
""")


def code(text):
    return textwrap.dedent(text).lstrip("\n")


FAULTS = {
    # doc id: (fields, ...)
    "raise": dict(restart="never", code=code("""
        def main():
            log("raise run")
            raise ValueError("fault-raise \u00fcn\u00efcode")
    """)),
    "exit3": dict(restart="never", code="import sys\ndef main():\n    sys.exit(3)\n"),
    "exit100": dict(restart="never", code="def main():\n    raise SystemExit(100)\n"),
    "exitmsg": dict(restart="never",
                    code="import sys\ndef main():\n    sys.exit('fault: giving up')\n"),
    "osexit": dict(restart="never", code=code("""
        import os
        def main():
            log("osexit run")
            os._exit(7)
    """)),
    "segv": dict(restart="never", code=code("""
        import ctypes
        def main():
            log("segv run")
            ctypes.string_at(0)
    """)),
    "abort": dict(restart="never", code="import os\ndef main():\n    os.abort()\n"),
    "killme": dict(code=LOOP % "killme"),
    "noint": dict(code=code("""
        import signal, time
        def main():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            log("ignoring SIGINT")
            while True:
                time.sleep(0.1)
    """)),
    "busy": dict(code=code("""
        def main():
            log("spinning")
            while True:
                pass
    """)),
    "memory": dict(restart="never", limits={"memory_mb": 64}, code=code("""
        def main():
            log("eating memory")
            chunks = []
            while True:
                chunks.append(bytearray(1 << 20))
    """)),
    "fork50": dict(restart="never", code=code("""
        import os, time
        def main():
            pids = []
            for _ in range(50):
                pid = os.fork()
                if pid == 0:
                    time.sleep(1000)
                    os._exit(0)
                pids.append(pid)
            log("children", *pids)
            raise RuntimeError("forked 50 children")
    """)),
    "setsid": dict(restart="never", code=code("""
        import os, subprocess, time
        def main():
            p = subprocess.Popen(["sleep", "1000"], start_new_session=True)
            r, w = os.pipe()
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.write(w, b"%d\\n" % os.getpid())
                    time.sleep(1000)
                os._exit(0)
            daemon = int(os.read(r, 100))
            log("grandchildren", p.pid, daemon)
    """)),
    "closed": dict(restart="never", code=code("""
        import os, time
        def main():
            log("closing stdout and stderr")
            os.close(1)
            os.close(2)
            time.sleep(0.3)
            raise ValueError("after closing stdout and stderr")
    """)),
    "flood": dict(restart="never", code=code("""
        import sys
        def main():
            chunk = "x" * (1 << 20)
            for _ in range(50):
                sys.stdout.write(chunk)
            sys.stdout.flush()
            raise RuntimeError("after 50 MB without a newline")
    """)),
    "missing": dict(restart="never", code="import no_such_module_for_faults\n"
                                           "def main():\n    pass\n"),
    "missing2": dict(restart="never", code="from helper import x\ndef main():\n    pass\n",
                     modules={"helper": "import another_missing_module\nx = 1\n"}),
    "recursion": dict(restart="never", code=code("""
        def f(n):
            return f(n + 1) + 1
        def main():
            f(0)
    """)),
    "crecursion": dict(restart="never", code=code("""
        import sys
        def main():
            sys.setrecursionlimit(10 ** 7)
            nested = []
            for _ in range(10 ** 6):
                nested = [nested]
            log("deep repr")
            repr(nested)
    """)),
    "deadlock": dict(code=code("""
        import threading
        a, b = threading.Lock(), threading.Lock()
        both = threading.Barrier(2)
        def one():
            with a:
                both.wait()
                with b:
                    pass
        def two():
            with b:
                both.wait()
                with a:
                    pass
        def main():
            threads = [threading.Thread(target=one), threading.Thread(target=two)]
            for t in threads:
                t.start()
            log("deadlocked")
            for t in threads:
                t.join()
    """)),
}


class Fleet:
    def __init__(self, agent, database, device, steady):
        self.agent, self.db, self.device, self.steady = agent, database, device, steady
        self.macid = device.macid

    def hb(self, doc_id, predicate, timeout=25, message=None):
        return worker_hb(self.db, self.macid, doc_id, predicate, timeout, message)

    def carry_on(self):
        steady_ok(self.agent, "steady", self.steady, r"\[steady\] tick \d+")

    def exited_with(self, doc_id, error=None, code=None, state="exited"):
        def ok(w):
            return (w.get("state") == state and (code is None or w.get("last_exit_code") == code)
                    and (error is None or error in (w.get("error") or "")))
        return self.hb(doc_id, ok, message="%s: %s, %s, exit code %s in the heartbeat"
                       % (doc_id, state, error, code))


@pytest.fixture(scope="module")
def fleet(mod_db, tmp_path_factory):
    device = mod_db.device
    put_doc(mod_db.admin, "steady", type=device.macid, name="steady", code=STEADY)
    for doc_id, fields in FAULTS.items():
        put_doc(mod_db.admin, doc_id, type=device.macid, name=doc_id, **fields)
    agent = Agent(mod_db.couch.url, mod_db.name, device, tmp_path_factory.mktemp("fleet"),
                  args=["--heartbeat-interval", "2"], stop_timeout=2)
    try:
        agent.start()
        steady = agent.wait_worker("steady", timeout=30)
        agent.wait_line(r"\[steady\] tick 1")
        yield Fleet(agent, mod_db.admin, device, steady)
    finally:
        agent.close()


# ------------------------------------------------------------------ exceptions, exits
def test_raise(fleet):
    fleet.agent.wait_line(r"raise exited: exit code 1: ValueError: fault-raise \u00fcn\u00efcode")
    w = fleet.exited_with("raise", "ValueError: fault-raise \u00fcn\u00efcode", 1)
    assert 'main.py", line 3, in main' in w["traceback"]
    assert fleet.agent.find_lines(r"\[raise\] ! ValueError: fault-raise")
    log_document(fleet.db, fleet.macid, "raise", lambda t: any("ValueError" in x for x in t))
    fleet.carry_on()


@pytest.mark.parametrize("doc_id, code", [("exit3", 3), ("exit100", 100), ("exitmsg", 1)])
def test_exit_codes(fleet, doc_id, code):
    fleet.agent.wait_line(r"%s exited: exit code %d" % (doc_id, code))
    fleet.exited_with(doc_id, "exit code %d" % code if doc_id != "exitmsg" else None, code)
    if doc_id == "exitmsg":
        fleet.agent.wait_line(r"\[exitmsg\] ! fault: giving up")
        fleet.exited_with(doc_id, "fault: giving up", 1)
    fleet.carry_on()


def test_os_exit(fleet):
    fleet.agent.wait_line(r"osexit exited: exit code 7")
    fleet.exited_with("osexit", "exit code 7", 7)
    fleet.carry_on()


@pytest.mark.parametrize("doc_id, signum", [("segv", signal.SIGSEGV), ("abort", signal.SIGABRT)])
def test_segfault_and_abort(fleet, doc_id, signum):
    fleet.agent.wait_line(r"%s exited: killed by signal %d" % (doc_id, signum))
    fleet.exited_with(doc_id, "killed by signal %d" % signum, -signum)
    # faulthandler tells where it happened, in the worker's own lines.
    fleet.agent.wait_line(r"\[%s\] ! Fatal Python error: " % doc_id)
    fleet.agent.wait_line(r"\[%s\] ! .*main\.py\", line \d+ in main" % doc_id)
    fleet.carry_on()


def test_sigkill_from_outside(fleet):
    pid = fleet.agent.wait_worker("killme")
    fleet.hb("killme", lambda w: w.get("state") == "running" and w.get("pid") == pid)
    os.kill(pid, signal.SIGKILL)
    fleet.agent.wait_line(r"killme exited: killed by signal 9")
    new = fleet.agent.wait_worker("killme", other_than=pid)      # restarted (on-failure)
    fleet.hb("killme", lambda w: w.get("last_exit_code") == -9 and w.get("restarts", 0) >= 1
             and w.get("pid") == new and w.get("state") == "running",
             message="SIGKILL and restart in the heartbeat")
    fleet.carry_on()


# ------------------------------------------------------------------ stuck workers
def _stop_by_edit(fleet, doc_id):
    """Change the document: the worker gets SIGINT, ignores it, is killed."""
    pid = fleet.agent.wait_worker(doc_id)
    mark = fleet.agent.mark()
    put_doc(fleet.db, doc_id, type=fleet.macid, name=doc_id, code=LOOP % doc_id)
    fleet.agent.wait_line(r"%s did not stop within 2 s: killing its process tree" % doc_id,
                          after=mark, timeout=30)
    fleet.agent.wait_line(r"\[%s\] %s up" % (doc_id, doc_id), after=mark, timeout=30)
    new = fleet.agent.wait_worker(doc_id, other_than=pid)
    fleet.hb(doc_id, lambda w: w.get("pid") == new and w.get("last_exit_code") == -9
             and w.get("restarts") == 1, message="%s: killed after the grace period" % doc_id)
    assert dead(pid)


def test_ignores_sigint(fleet):
    fleet.agent.wait_line(r"\[noint\] ignoring SIGINT")
    _stop_by_edit(fleet, "noint")
    fleet.carry_on()


def test_busy_loop(fleet):
    fleet.agent.wait_line(r"\[busy\] spinning")
    pid = fleet.agent.wait_worker("busy")
    # The heartbeat shows it burning a CPU; the rest carries on meanwhile.
    fleet.hb("busy", lambda w: w.get("pid") == pid and (w.get("cpu_percent") or 0) > 30,
             message="busy worker's CPU use in the heartbeat")
    fleet.carry_on()
    _stop_by_edit(fleet, "busy")
    fleet.carry_on()


def test_deadlock_between_threads(fleet):
    agent = fleet.agent
    agent.wait_line(r"\[deadlock\] deadlocked")
    pid = agent.wait_worker("deadlock")
    fleet.hb("deadlock", lambda w: w.get("state") == "running" and w.get("pid") == pid)
    # What a user does to see why it hangs: SIGUSR1 prints every stack.
    mark = agent.mark()
    agent.signal(signal.SIGUSR1)
    agent.wait_line(r"\[deadlock\] .*in one", after=mark)
    agent.wait_line(r"\[deadlock\] .*in two", after=mark)
    agent.wait_line(r"\[deadlock\] .*in main", after=mark)
    _stop_by_edit(fleet, "deadlock")
    fleet.carry_on()


# ------------------------------------------------------------------ resources
def test_memory_beyond_the_limit(fleet):
    fleet.agent.wait_line(r"memory exited: exit code 1: MemoryError")
    w = fleet.exited_with("memory", "MemoryError", 1)
    assert "main.py" in (w["traceback"] or "")
    fleet.carry_on()


def test_fork_50_children(fleet):
    line = fleet.agent.wait_line(r"\[fork50\] children( \d+){50}$")
    children = [int(x) for x in line.split("children", 1)[1].split()]
    assert len(children) == 50
    fleet.agent.wait_line(r"fork50: ended (5\d|50) process\(es\) it left behind")
    fleet.exited_with("fork50", "RuntimeError: forked 50 children", 1)
    wait_for(lambda: all(dead(p) for p in children), message="the 50 children are gone")
    fleet.carry_on()


def test_setsid_grandchild(fleet):
    line = fleet.agent.wait_line(r"\[setsid\] grandchildren \d+ \d+")
    kids = [int(x) for x in line.split("grandchildren", 1)[1].split()]
    fleet.agent.wait_line(r"setsid: ended \d+ process\(es\) it left behind")
    # It returned from main(): done, but what it left running was ended, and says so.
    fleet.exited_with("setsid", "left behind", 0)
    wait_for(lambda: all(dead(p) for p in kids), message="setsid grandchildren gone")
    fleet.carry_on()


def test_closed_stdout_and_stderr(fleet):
    fleet.agent.wait_line(r"\[closed\] closing stdout and stderr")
    fleet.agent.wait_line(r"closed exited: exit code \d+: ValueError: after closing")
    w = fleet.exited_with("closed", "ValueError: after closing stdout and stderr")
    assert w["last_exit_code"] != 0 and "main.py" in w["traceback"]
    fleet.carry_on()


def test_50_mb_without_a_newline(fleet):
    agent = fleet.agent
    cut = agent.wait_line(r"\[flood\] x+ \[\.\.\. \d+ more bytes cut\]", timeout=60)
    assert len(cut) < 9000
    assert "[... %d more bytes cut]" % (50 * (1 << 20) - 8192) in cut
    agent.wait_line(r"flood exited: exit code 1: RuntimeError: after 50 MB", timeout=60)
    fleet.exited_with("flood", "RuntimeError: after 50 MB without a newline", 1)
    assert psutil.Process(agent.pid).memory_info().rss < 200 * 1024 * 1024
    log_document(fleet.db, fleet.macid, "flood",
                 lambda t: any(x.endswith("more bytes cut]") and len(x) < 9000 for x in t))
    fleet.carry_on()


def test_import_of_a_missing_module(fleet):
    fleet.agent.wait_line(r"missing exited: exit code 1: ModuleNotFoundError: "
                          r"No module named 'no_such_module_for_faults'")
    fleet.exited_with("missing", "No module named 'no_such_module_for_faults'", 1)
    w = fleet.exited_with("missing2", "No module named 'another_missing_module'", 1)
    assert 'helper.py", line 1' in w["traceback"]
    fleet.carry_on()


def test_infinite_recursion(fleet):
    fleet.agent.wait_line(r"recursion exited: exit code 1: RecursionError")
    w = fleet.exited_with("recursion", "RecursionError: maximum recursion depth exceeded", 1)
    assert len(w["traceback"].splitlines()) <= 30 and "in f" in w["traceback"]
    # Deep enough in C code, recursion overflows the stack: a crash, still reported.
    fleet.agent.wait_line(r"crecursion exited: killed by signal 11", timeout=40)
    fleet.exited_with("crecursion", "killed by signal 11", -11)
    fleet.carry_on()


# ------------------------------------------------------------------ and in the end
def test_zz_everything_reported_and_nothing_left_after_stop(fleet):
    hb = heartbeat(fleet.db, fleet.macid, lambda hb: "steady" in hb["running_ids"])
    for doc_id in FAULTS:
        assert worker_of(hb, doc_id), "%s missing from the heartbeat" % doc_id
    assert not fleet.agent.find_lines(
        r"\[himbeerecouch\].*(Traceback|failed unexpectedly|TransitionError)")
    pids = [p.pid for p in tagged(fleet.macid)]
    assert fleet.agent.stop(signal.SIGTERM, timeout=60) == 0
    assert_nothing_left(fleet.macid)
    wait_for(lambda: all(dead(p) for p in pids), message="every worker process gone")
    imports = os.path.join(fleet.agent.state_dir, "imports")
    assert os.listdir(imports) == []
