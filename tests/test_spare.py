"""The warm spare: a runner interpreter started ahead of its document.

Against the real test server with the real agent: the spare takes exactly
one document and is replaced; the worker it becomes has nothing of an
earlier worker and gets its own limits; the heartbeat shows its memory; it
can be turned off; a dead spare is replaced; it ends with the supervisor,
however the supervisor ends.
"""
import json
import os
import signal
import time

import psutil
import pytest

from himbeerecouch.agent.launcher import Launcher
from himbeerecouch.sandbox.environment import worker_environment
from himbeerecouch.sandbox.spawn import hand_over, spawn_spare
from helpers import alive, gone, loop_code, put_doc, random_macid, wait_for
from test_heartbeat import heartbeat

# A worker that reports, as one JSON log line, what it sees of its process.
INSPECT = '''import json, os, resource, sys, time
import himbeerecouch.runner.api as runner_api

def main():
    log("seen " + json.dumps({
        "pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd(),
        "import_dir": sys.path[0], "env": dict(os.environ),
        "leftover_module": "leftover" in sys.modules,
        "leftover_attribute": hasattr(runner_api, "LEFTOVER"),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "memory": list(resource.getrlimit(resource.RLIMIT_AS))}))
    while not should_quit():
        time.sleep(0.05)
'''

# A worker that changes everything a later worker could inherit if it shared its process.
DIRTY = '''import os, resource, sys, time
import leftover
import himbeerecouch.runner.api as runner_api

def main():
    os.environ["LEFTOVER"] = "secret-of-the-first"
    os.chdir("/")
    runner_api.LEFTOVER = True
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    log("dirty done")
    while not should_quit():
        time.sleep(0.05)
'''


def put(db, doc_id, **fields):
    return put_doc(db.admin, doc_id, **fields)


def seen(agent, name, after=0):
    line = agent.wait_line(r"\[%s\] seen " % name, after=after)
    return json.loads(line.split(" seen ", 1)[1])


def test_a_spare_serves_one_document_once_and_is_replaced(db, device, start_agent):
    agent = start_agent(device)
    first_spare = agent.wait_spare()
    assert os.getsid(first_spare.pid) == first_spare.pid     # its own session already
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    agent.wait_line(r"\[alpha\] alpha started")
    assert agent.wait_worker("a") == first_spare.pid          # the spare became the worker
    second_spare = agent.wait_spare(other_than=first_spare.pid)
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
    agent.wait_line(r"\[beta\] beta started")
    assert agent.wait_worker("b") == second_spare.pid
    assert agent.worker("a").pid == first_spare.pid           # a was not touched
    # A new revision of a gets the next spare, never its own old process back.
    third_spare = agent.wait_spare(other_than=second_spare.pid)
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha 2"))
    agent.wait_line(r"\[alpha\] alpha 2 started")
    assert agent.wait_worker("a", other_than=first_spare.pid) == third_spare.pid
    assert gone(first_spare.pid)


def test_a_spare_carries_nothing_from_an_earlier_worker(db, device, start_agent):
    put(db, "dirty", type=device.macid, name="dirty", code=DIRTY,
        modules={"leftover": "VALUE = 1\n"})
    agent = start_agent(device)
    agent.wait_line(r"\[dirty\] dirty done")
    spare = agent.wait_spare(other_than=agent.wait_worker("dirty"))
    waiting_limit = spare.rlimit(psutil.RLIMIT_NOFILE)
    put(db, "clean", type=device.macid, name="clean", code=INSPECT,
        limits={"nofile": 77, "memory_mb": 900})
    facts = seen(agent, "clean")
    assert facts["pid"] == spare.pid and facts["pid"] != agent.worker("dirty").pid
    assert facts["sid"] == facts["pid"]                       # its own session
    assert facts["cwd"] == facts["import_dir"] != "/"         # its own import folder
    assert os.path.basename(facts["import_dir"]).startswith("hbc-%d-" % device.macid)
    assert facts["env"]["HOME"] == facts["import_dir"]
    assert "LEFTOVER" not in facts["env"]
    assert sorted(facts["env"]) == sorted(k for k in ("PATH", "LANG", "HOME", "TZ",
                                                       "HIMBEERECOUCH_TAG")
                                          if k != "TZ" or "TZ" in os.environ)
    assert not facts["leftover_module"] and not facts["leftover_attribute"]
    # Its document's limits, applied at the hand-over (the waiting spare had none).
    assert waiting_limit != (77, 77)
    assert facts["nofile"] == [77, 77]
    assert facts["memory"] == [900 * 2**20] * 2
    # The modules of the earlier document are not in its folder.
    assert "leftover.py" not in os.listdir(facts["import_dir"])


def test_a_bad_document_leaves_the_spare_waiting(db, device, start_agent):
    agent = start_agent(device)
    spare = agent.wait_spare()
    put(db, "bad", type=device.macid, name="bad", code=loop_code("bad"),
        modules={"os": "x = 1\n"})
    agent.wait_line(r"cannot run document bad")
    assert agent.spare().pid == spare.pid
    assert os.listdir(spare.cwd()) == []                      # nothing written for it
    put(db, "good", type=device.macid, name="good", code=loop_code("good"))
    agent.wait_line(r"\[good\] good started")
    assert agent.wait_worker("good") == spare.pid


def test_the_heartbeat_reports_the_spares_memory(db, device, start_agent):
    agent = start_agent(device, args=["--heartbeat-interval", "1"])
    spare = agent.wait_spare()
    # The first heartbeat may measure it while it is still starting.
    hb = heartbeat(db, device, lambda hb: (hb.get("spare") or {}).get("rss_mb", 0) > 4,
                   message="the heartbeat measures the spare")
    assert hb["spare"]["pid"] == spare.pid
    assert hb["spare"]["rss_mb"] < 100
    assert spare.pid not in [w["pid"] for w in hb["workers"]]


def test_no_spare_option_and_configuration_key(db, device, start_agent, tmp_path):
    without = start_agent(device, args=["--no-spare"])
    runs_without_spare(db, device, without, "option")
    assert without.stop() == 0

    state = tmp_path / "configured"
    state.mkdir()
    (state / "himbeerecouch.conf").write_text("[himbeerecouch]\nspare = no\n")
    configured = start_agent(device, state_dir=state)
    runs_without_spare(db, device, configured, "configured")


def test_sighup_turns_the_spare_off_and_on(db, device, start_agent):
    agent = start_agent(device)
    spare = agent.wait_spare()
    config = os.path.join(agent.state_dir, "himbeerecouch.conf")
    with open(config, "w") as f:
        f.write("[himbeerecouch]\nspare = off\n")
    agent.signal(signal.SIGHUP)
    wait_for(lambda: gone(spare.pid), message="SIGHUP with spare = off ends the spare")
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    agent.wait_line(r"\[alpha\] alpha started")
    assert agent.spare() is None
    with open(config, "w") as f:
        f.write("[himbeerecouch]\nspare = on\n")
    agent.signal(signal.SIGHUP)
    agent.wait_spare()


def runs_without_spare(db, device, agent, label):
    """Start and reload a worker on ``agent``; no spare is ever there."""
    put(db, "a", type=device.macid, name="alpha", code=loop_code(label + " 1"))
    agent.wait_line(r"\[alpha\] %s 1 started" % label)
    # This heartbeat is written after the loop would have started a spare
    # (with spares on, it starts one before any worker).
    hb = heartbeat(db, device, lambda hb: hb["running_ids"] == ["a"]
                   and hb["workers"][0]["rev"] == db.admin["a"]["_rev"])
    assert hb["spare"] is None
    assert agent.spare() is None
    put(db, "a", type=device.macid, name="alpha", code=loop_code(label + " 2"))
    agent.wait_line(r"\[alpha\] %s 2 started" % label)
    assert agent.spare() is None


def test_a_spare_that_died_is_replaced(db, device, start_agent):
    agent = start_agent(device)
    spare = agent.wait_spare()
    os.kill(spare.pid, signal.SIGKILL)
    agent.wait_line(r"spare runner \(pid %d\) ended unused: killed by signal 9" % spare.pid)
    replacement = agent.wait_spare(other_than=spare.pid)
    folders = os.listdir(os.path.join(agent.state_dir, "imports"))
    assert folders == [os.path.basename(replacement.cwd())]   # the dead one's is removed
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    agent.wait_line(r"\[alpha\] alpha started")
    assert agent.wait_worker("a") == replacement.pid


def test_stopping_the_supervisor_ends_the_spare(db, device, start_agent):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    agent = start_agent(device)
    agent.wait_line(r"\[alpha\] alpha started")
    spare = agent.wait_spare()
    assert agent.stop() == 0
    assert gone(spare.pid)
    assert os.listdir(os.path.join(agent.state_dir, "imports")) == []


def test_the_guardian_cleans_up_the_spare_after_sigkill(db, device, start_agent):
    agent = start_agent(device)
    spare = agent.wait_spare()
    folder = spare.cwd()
    agent.signal(signal.SIGKILL)
    agent.proc.wait(10)
    wait_for(lambda: not alive(spare.pid), message="the spare dies with its supervisor")
    wait_for(lambda: not os.path.exists(folder), message="the guardian removes its folder")


def test_handing_a_document_to_a_dead_spare_fails_clearly(tmp_path):
    spare = spawn_spare(worker_environment("test/spare/"), cwd=str(tmp_path))
    try:
        spare.popen.kill()
        spare.popen.wait(10)
        startup = {"name": "n", "doc_id": "d", "import_dir": str(tmp_path)}
        with pytest.raises(BrokenPipeError):
            hand_over(spare, startup)
        with pytest.raises(ValueError, match="already handed"):
            hand_over(spare, startup)
    finally:
        if spare.popen.poll() is None:
            spare.popen.kill()
            spare.popen.wait(10)
        spare.close()


def test_a_spare_that_keeps_dying_is_replaced_with_backoff(tmp_path):
    launcher = Launcher(random_macid(), str(tmp_path), database=None)
    try:
        assert launcher.keep_spare() is None
        first = launcher.spare
        first.process.popen.kill()
        first.process.popen.wait(10)
        # Noticed and cleaned up, but not replaced on the spot: a broken
        # interpreter must not cost a start on every turn of the loop.
        due = launcher.keep_spare()
        assert launcher.spare is None and due > time.monotonic()
        assert not os.path.exists(first.import_dir)
        wait_for(lambda: time.monotonic() >= due, timeout=5)
        assert launcher.keep_spare() is None
        assert launcher.spare is not None and launcher.spare.pid != first.pid
    finally:
        launcher.set_spare(False)
    assert os.listdir(launcher.import_base) == []
