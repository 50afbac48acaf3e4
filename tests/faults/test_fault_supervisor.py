"""The supervisor itself is hit: SIGKILL mid-command and mid-reload, a corrupt
cache while the server is away, a full state folder.

Already proven elsewhere: a command killed between claim and result is
reported "interrupted" (tests/test_commands.py::
test_killed_between_claim_and_result_is_interrupted_not_rerun), a corrupt cache
with the server reachable (tests/test_resilience.py::
test_corrupt_cache_is_reported_and_the_server_used).  Here: an escaped
grandchild of the command, a result finished but not yet delivered when the
supervisor dies, a kill in the middle of SIGHUP, a corrupt or poisoned cache
while the server cannot be reached, and a state folder on a full file system.
"""
import errno
import json
import os
import signal
import subprocess

import pytest

from faultkit import (FaultProxy, assert_nothing_left, command, dead, heartbeat, result,
                      steady_ok, tagged, worker_hb)
from helpers import loop_code, put_doc, wait_for

from himbeerecouch.agent import cache


def put(db, doc_id, **fields):
    return put_doc(db.admin, doc_id, **fields)


def workers_of(agent, doc_id):
    return [p for t, p in agent.worker_processes().items() if t.endswith("[%s]" % doc_id)]


@pytest.fixture
def fault_proxy(couch):
    import urllib.parse
    parts = urllib.parse.urlsplit(couch.url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the proxy only reaches a server on 127.0.0.1")
    proxy = FaultProxy(parts.port or 5984)
    try:
        yield proxy
    finally:
        proxy.stop()


# ------------------------------------------------------------------ SIGKILL mid-command
def test_sigkill_during_commands(db, device, start_agent, fault_proxy, tmp_path):
    """One command still running (with a grandchild that left its session), one
    finished whose result could not be written yet: the supervisor is killed.
    Nothing of the commands survives it; the next run delivers both answers
    and runs neither again."""
    state = tmp_path / "state"
    fault_proxy.start()
    agent = start_agent(device, url=fault_proxy.url, state_dir=state)
    agent.wait_line(r"0 code document\(s\) for this device")
    long_runs, short_runs, pidfile = (tmp_path / "long.runs", tmp_path / "short.runs",
                                      tmp_path / "escaped.pid")
    command(db.admin, device.macid, "long",
            ["sh", "-c", "echo run >> %s; setsid sleep 1000 & echo $! > %s; sleep 1000"
             % (long_runs, pidfile)])
    command(db.admin, device.macid, "short",
            ["sh", "-c", "echo run >> %s; sleep 1.5; echo short done" % short_runs])
    wait_for(lambda: long_runs.exists() and short_runs.exists() and pidfile.exists()
             and pidfile.read_text().strip(), message="both commands running")
    escaped = int(pidfile.read_text())
    command_pids = [p.pid for p in tagged(device.macid)]
    assert escaped in command_pids and os.getsid(escaped) == escaped
    fault_proxy.refuse()
    agent.wait_line(r"command short: result not written yet", timeout=30)
    kept = os.listdir(os.path.join(str(state), "results-%d" % device.macid))
    assert kept, "the finished command's result is not kept on disk"
    agent.proc.kill()
    agent.proc.wait()
    wait_for(lambda: all(dead(p) for p in command_pids) and not tagged(device.macid),
             message="every process of the commands died with the supervisor")

    again = start_agent(device, state_dir=state)
    long_doc = result(db.admin, "long")
    assert long_doc["error"].startswith("interrupted")
    short_doc = result(db.admin, "short")
    assert short_doc["ret"] == ["short done\n", ""] and short_doc["exit_code"] == 0
    again.wait_line(r"0 code document\(s\) for this device")
    assert long_runs.read_text() == "run\n" and short_runs.read_text() == "run\n"
    wait_for(lambda: not os.listdir(os.path.join(str(state), "results-%d" % device.macid)),
             message="the delivered result is forgotten")
    assert again.stop(signal.SIGTERM) == 0
    assert_nothing_left(device.macid)


# ------------------------------------------------------------------ SIGKILL mid-reload
def test_sigkill_during_a_reload(db, device, start_agent, tmp_path):
    state = tmp_path / "state"
    for doc_id in ("a", "b", "c"):
        put(db, doc_id, type=device.macid, name=doc_id, code=loop_code(doc_id))
    agent = start_agent(device, state_dir=state, stop_timeout=5)
    pids = [agent.wait_worker(d) for d in "abc"]
    agent.wait_line(r"3 code document\(s\) for this device")
    with open(os.path.join(str(state), "himbeerecouch.conf"), "w") as f:
        f.write("[himbeerecouch]\nnofile = 300\n")       # every worker must restart
    mark = agent.mark()
    agent.signal(signal.SIGHUP)
    agent.wait_line(r"SIGHUP: reading", after=mark)
    agent.wait_line(r"-> STOPPING", after=mark)
    agent.proc.kill()                                    # in the middle of it
    agent.proc.wait()
    wait_for(lambda: all(dead(p) for p in pids) and not tagged(device.macid),
             message="the workers died with the supervisor")

    again = start_agent(device, state_dir=state)
    for d in "abc":
        pid = again.wait_worker(d)
        assert pid not in pids
    # Each document runs exactly once, with the reloaded settings.
    import psutil
    for d in "abc":
        wait_for(lambda: len(workers_of(again, d)) == 1, message="one worker for %s" % d)
        proc = workers_of(again, d)[0]
        assert psutil.Process(proc.pid).rlimit(psutil.RLIMIT_NOFILE)[0] == 300
    heartbeat(db.admin, device.macid, lambda hb: sorted(hb["running_ids"]) == ["a", "b", "c"])
    assert again.stop(signal.SIGTERM) == 0
    assert_nothing_left(device.macid)


# ------------------------------------------------------------------ corrupt cache
def poisoned_cache(macid, database):
    """A cache that parses, for this device, but holds documents that cannot run."""
    docs = {
        "good": {"_id": "good", "_rev": "1-a", "type": macid, "name": "good",
                 "code": loop_code("cached-good")},
        "codeint": {"_id": "codeint", "_rev": "1-a", "type": macid, "code": 42},
        "modlist": {"_id": "modlist", "_rev": "1-a", "type": macid,
                    "code": "def main(): pass\n", "modules": ["x"]},
        "dotdot": {"_id": "dotdot", "_rev": "1-a", "type": macid,
                   "code": "def main(): pass\n", "modules": {"../../evil": "x = 1\n"}},
        "mismatch": {"_id": "other-id", "type": macid, "code": loop_code("mismatch")},
        "notadict": ["type", macid],
        "globals": {"_id": "globals", "_rev": "1-a", "type": macid, "global_modules": 7},
    }
    return {"version": 1, "macid": macid, "database": database, "docs": docs}


@pytest.mark.parametrize("kind", ["garbage", "poisoned"])
def test_corrupt_cache_while_the_server_is_away(db, device, start_agent, fault_proxy,
                                               tmp_path, kind):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    state = tmp_path / "state"
    state.mkdir()
    path = cache.cache_path(str(state), device.macid)
    with open(path, "wb") as f:
        if kind == "garbage":
            f.write(b'{"version": 1, "docs": {"a": {"_id": "a", "co' + os.urandom(64))
        else:
            f.write(json.dumps(poisoned_cache(device.macid, db.name)).encode())
    fault_proxy.reserve()
    agent = start_agent(device, state_dir=state, url=fault_proxy.url)
    if kind == "garbage":
        agent.wait_line(r"document cache .* is unreadable")
        agent.wait_line(r"database unreachable", timeout=30)
        assert not agent.worker_processes()
    else:
        agent.wait_line(r"running the 5 cached document\(s\)", timeout=30)
        agent.wait_line(r"\[good\] cached-good started")
        for bad in ("codeint", "modlist", "dotdot"):
            agent.wait_line(r"cannot run document %s: " % bad)
        agent.wait_line(r"global modules ignored")
        assert agent.worker("other-id") is None and agent.worker("mismatch") is None
    assert agent.proc.poll() is None
    fault_proxy.listen()
    agent.wait_line(r"connected to the server again", timeout=90)
    agent.wait_line(r"\[alpha\] alpha started")
    wait_for(lambda: agent.worker("good") is None, message="cached documents gone")
    wait_for(lambda: sorted(cache.load(path, device.macid, db.name) or {}) == ["a"],
             message="the cache rebuilt from the server")
    heartbeat(db.admin, device.macid, lambda hb: hb["running_ids"] == ["a"])


# ------------------------------------------------------------------ full disk
@pytest.fixture
def small_state_dir(tmp_path):
    """A 1 MB tmpfs as the state folder; skipped (and said) where it cannot be mounted."""
    state = tmp_path / "state"
    state.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs",
                               str(state)], capture_output=True, text=True, timeout=30)
        why = (done.stderr or done.stdout).strip() or "exit status %d" % done.returncode
        mounted = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as e:
        why, mounted = str(e), False
    if not mounted:
        print("FULL DISK NOT TESTED: cannot mount a tmpfs on the state folder: %s" % why)
        pytest.skip("full disk not tested: cannot mount a tmpfs here (%s)" % why)
    try:
        yield state
    finally:
        if subprocess.run(["umount", str(state)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(state)], capture_output=True)


def fill(folder):
    """Write a file until the file system is full; returns its path."""
    path = os.path.join(str(folder), "filler")
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return path


def test_full_disk_in_the_state_folder(db, device, start_agent, small_state_dir, tmp_path):
    state = small_state_dir
    path = cache.cache_path(str(state), device.macid)
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    agent = start_agent(device, state_dir=state, args=["--heartbeat-interval", "1"])
    pa = agent.wait_worker("a")
    filler = fill(state)
    mark = agent.mark()
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
    agent.wait_line(r"beta: STARTING -> BACKOFF \(cannot start: No space left on device",
                    after=mark)
    worker_hb(db.admin, device.macid, "b",
              lambda w: "No space left on device" in (w.get("error") or ""),
              message="the full disk in the heartbeat")
    agent.wait_line(r"cannot write the document cache .*No space left on device", after=mark)
    command(db.admin, device.macid, "cmd", ["echo", "still works"])
    assert result(db.admin, "cmd")["ret"][0] == "still works\n"
    steady_ok(agent, "a", pa)
    os.unlink(filler)                      # space again: everything catches up
    agent.wait_line(r"\[beta\] beta started", after=mark, timeout=40)
    wait_for(lambda: sorted(cache.load(path, device.macid, db.name) or {}) == ["a", "b"],
             timeout=40, message="the document cache written once there is space")
    steady_ok(agent, "a", pa)

    # Started on a disk that is already full: it runs, and says why workers cannot.
    assert agent.stop(signal.SIGTERM) == 0
    assert_nothing_left(device.macid)
    filler = fill(state)
    again = start_agent(device, state_dir=state, args=["--heartbeat-interval", "1"])
    again.wait_line(r"2 code document\(s\) for this device", timeout=30)
    again.wait_line(r"cannot start: No space left on device", timeout=30)
    heartbeat(db.admin, device.macid,
              lambda hb: all("No space left" in (w.get("error") or "") for w in hb["workers"])
              and len(hb["workers"]) == 2, message="both workers' error in the heartbeat")
    assert again.proc.poll() is None
    os.unlink(filler)
    again.wait_line(r"\[alpha\] alpha started", timeout=40)
    again.wait_line(r"\[beta\] beta started", timeout=40)
    heartbeat(db.admin, device.macid, lambda hb: sorted(hb["running_ids"]) == ["a", "b"])
    assert again.stop(signal.SIGTERM) == 0
    assert_nothing_left(device.macid)
