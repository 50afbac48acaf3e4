"""The supervisor core against the real test server, with real worker processes.

Each test runs `himbeerecouch run` for one device and acts on the database the
way users do (save, edit, delete documents), then looks at what a user sees:
the agent's log lines and the worker processes in the process table.
"""
import os
import signal
import time

import psutil

from helpers import alive, delete_doc, loop_code, put_doc, wait_for

def put(db, doc_id, **fields):
    """Create or replace a document the way the web page saves it."""
    return put_doc(db.admin, doc_id, **fields)


def delete(db, doc_id):
    delete_doc(db.admin, doc_id)


# --------------------------------------------------------------- 1. start
def test_runs_each_code_document_in_its_own_interpreter(db, device, start_agent):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    put(db, "b", type=str(device.macid), name="beta",
        code="import helper\nimport shared\n" + loop_code("beta").replace(
            'log("beta started")', 'log("beta started", helper.x(), shared.y())'),
        modules={"helper": "def x():\n    return 'from-helper'\n"})
    put(db, "g", type=device.macid, name="exports",
        global_modules={"shared": "def y():\n    return 'from-global'\n"})
    put(db, "other", type=device.macid + 1, name="not mine", code=loop_code("other"))
    agent = start_agent(device)
    agent.wait_line(r"\[alpha\] alpha started")
    agent.wait_line(r"\[beta\] beta started from-helper from-global")
    pa, pb = agent.wait_worker("a"), agent.wait_worker("b")
    assert pa != pb and pa != agent.pid
    # Fresh interpreters, not forks of the supervisor, each in its own session.
    for pid in (pa, pb):
        proc = psutil.Process(pid)
        assert proc.cmdline()[0].startswith("himbeerecouch: ")
        assert os.getsid(pid) == pid
    assert agent.worker("g") is None and agent.worker("other") is None
    assert not agent.find_lines("other started")


def test_traceback_shows_user_modules_and_lines(db, device, start_agent):
    put(db, "crash", type=device.macid, name="crasher", restart="never",
        code="import helper\n\ndef main():\n    helper.fail()\n",
        modules={"helper": "def fail():\n    x = 1\n    raise ValueError('boom %d' % x)\n"})
    agent = start_agent(device)
    agent.wait_line(r"\[crasher\] ! ValueError: boom 1")
    out = agent.output()
    assert 'main.py", line 4, in main' in out
    assert 'helper.py", line 3, in fail' in out
    agent.wait_line(r"crasher: \w+ -> EXITED")


def test_import_folder_is_private_and_removed(db, device, start_agent):
    put(db, "w", type=device.macid, name="where",
        code="import os, time\ndef main():\n    log('dir', os.path.dirname(__file__))\n"
             "    while not should_quit():\n        time.sleep(0.05)\n")
    agent = start_agent(device)
    line = agent.wait_line(r"\[where\] dir ")
    folder = line.split(" dir ", 1)[1]
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(folder)) == ["main.py"] or "main.py" in os.listdir(folder)
    delete(db, "w")
    wait_for(lambda: not os.path.exists(folder), message="import folder removed")


# --------------------------------------------------------------- 2. feed
def test_change_restarts_only_that_worker_and_delete_stops_it(db, device, start_agent):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
    agent = start_agent(device)
    pa, pb = agent.wait_worker("a"), agent.wait_worker("b")
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha2"))
    agent.wait_line(r"\[alpha\] alpha2 started")
    assert agent.wait_worker("a", other_than=pa) != pa
    assert agent.worker("b").pid == pb
    assert agent.find_lines(r"\[alpha\] alpha quitting")      # it was asked nicely
    put(db, "c", type=device.macid, name="gamma", code=loop_code("gamma"))
    agent.wait_line(r"\[gamma\] gamma started")
    delete(db, "a")
    agent.wait_line(r"\[alpha\] alpha2 quitting")
    wait_for(lambda: agent.worker("a") is None, message="deleted document's worker gone")
    assert agent.worker("b").pid == pb


def test_global_module_change_restarts_receivers(db, device, start_agent):
    put(db, "g", type=device.macid, name="exports",
        global_modules={"shared": "V = 1\n"})
    put(db, "user", type=device.macid, name="user",
        code="import shared\n" + loop_code("user").replace('"user started"', '"user started", shared.V'))
    put(db, "shadow", type=device.macid, name="shadow", modules={"shared": "V = 'own'\n"},
        code="import shared\n" + loop_code("shadow").replace('"shadow started"', '"shadow started", shared.V'))
    agent = start_agent(device)
    agent.wait_line(r"\[user\] user started 1")
    agent.wait_line(r"\[shadow\] shadow started own")
    ps = agent.wait_worker("shadow")
    put(db, "g", type=device.macid, name="exports", global_modules={"shared": "V = 2\n"})
    agent.wait_line(r"\[user\] user started 2")
    assert agent.worker("shadow").pid == ps      # its own module shadows the global one


def test_burst_of_edits_ends_with_last_revision_without_storm(db, device, start_agent):
    put(db, "b", type=device.macid, name="burst", code=loop_code("rev0"))
    agent = start_agent(device)
    agent.wait_line(r"\[burst\] rev0 started")
    for i in range(1, 51):
        put(db, "b", type=device.macid, name="burst", code=loop_code("rev%d" % i))
    agent.wait_line(r"\[burst\] rev50 started", timeout=30)
    time.sleep(0)  # no wait: count what happened up to now
    starts = agent.find_lines(r"\[burst\] rev\d+ started")
    assert len(starts) <= 8, starts
    assert starts[-1].endswith("rev50 started")


# --------------------------------------------------------------- 3. stop
def test_stop_interrupts_then_kills_the_whole_tree(db, device, start_agent):
    put(db, "stubborn", type=device.macid, name="stubborn",
        code="import signal, subprocess, time\n"
             "def main():\n"
             "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "    p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
             "    log('grandchild', p.pid)\n"
             "    register_quit_notification(lambda: log('notified'))\n"
             "    while True:\n        time.sleep(0.1)\n")
    agent = start_agent(device, stop_timeout=1)
    line = agent.wait_line(r"\[stubborn\] grandchild \d+")
    grandchild = int(line.rsplit(" ", 1)[1])
    worker = agent.wait_worker("stubborn")
    assert os.getsid(grandchild) != os.getsid(worker)       # it left the worker's session
    delete(db, "stubborn")
    agent.wait_line(r"did not stop within 1 s")
    wait_for(lambda: not alive(worker) and not alive(grandchild),
             message="worker and setsid grandchild killed")


def test_quit_notification_and_should_quit(db, device, start_agent):
    put(db, "nice", type=device.macid, name="nice",
        code="import time\n"
             "def main():\n"
             "    register_quit_notification(lambda: log('notified'))\n"
             "    f = lambda: log('removed one ran')\n"
             "    register_quit_notification(f)\n    remove_quit_notification(f)\n"
             "    log('ready')\n"
             "    while not should_quit():\n        time.sleep(0.05)\n"
             "    log('should_quit is', should_quit())\n")
    agent = start_agent(device)
    agent.wait_line(r"\[nice\] ready")
    assert agent.stop(signal.SIGTERM) == 0
    out = agent.output()
    assert "[nice] notified" in out and "[nice] should_quit is True" in out
    assert "removed one ran" not in out


def test_workers_die_with_the_supervisor_and_leftovers_are_cleaned(db, device, start_agent,
                                                                     tmp_path):
    put(db, "k", type=device.macid, name="orphan",
        code="import subprocess, time\n"
             "def main():\n"
             "    p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
             "    log('grandchild', p.pid)\n"
             "    while True:\n        time.sleep(0.1)\n")
    agent = start_agent(device)
    grandchild = int(agent.wait_line(r"\[orphan\] grandchild \d+").rsplit(" ", 1)[1])
    worker = agent.wait_worker("k")
    imports = os.path.join(agent.state_dir, "imports")
    assert os.listdir(imports)
    agent.proc.kill()
    agent.proc.wait()
    wait_for(lambda: not alive(worker), message="worker died with its supervisor")
    wait_for(lambda: not alive(grandchild), message="setsid grandchild ended by the guardian")
    wait_for(lambda: not os.listdir(imports), message="import folders removed")


# --------------------------------------------------------------- 4. restart policy
def test_crash_restarts_with_backoff_and_return_is_done(db, device, start_agent):
    put(db, "crash", type=device.macid, name="crash",
        code="import sys\ndef main():\n    log('crash run')\n    sys.exit(3)\n")
    put(db, "done", type=device.macid, name="done", code="def main():\n    log('done run')\n")
    put(db, "always", type=device.macid, name="always", restart="always",
        code="def main():\n    log('always run')\n")
    put(db, "never", type=device.macid, name="never", restart="never",
        code="def main():\n    log('never run')\n    raise SystemExit(2)\n")
    agent = start_agent(device)
    agent.wait_line(r"\[crash\] crash run", count=3, timeout=20)   # 1 s, then 2 s later
    agent.wait_line(r"\[always\] always run", count=2)
    agent.wait_line(r"crash: \w+ -> BACKOFF \(exit code 3; restart in 4 s\)")
    assert len(agent.find_lines(r"\[done\] done run")) == 1
    assert len(agent.find_lines(r"\[never\] never run")) == 1
    assert agent.find_lines(r"done: RUNNING -> EXITED \(exit code 0\)") or \
        agent.find_lines(r"done: STARTING -> EXITED \(exit code 0\)")


def test_bad_exits_segfault_and_os_exit_are_restarted(db, device, start_agent):
    put(db, "segv", type=device.macid, name="segv",
        code="import ctypes\ndef main():\n    log('segv run')\n    ctypes.string_at(0)\n")
    put(db, "osexit", type=device.macid, name="osexit",
        code="import os\ndef main():\n    log('osexit run')\n    os._exit(7)\n")
    put(db, "steady", type=device.macid, name="steady", code=loop_code("steady"))
    agent = start_agent(device)
    steady = agent.wait_worker("steady")
    agent.wait_line(r"\[segv\] segv run", count=2)
    agent.wait_line(r"\[osexit\] osexit run", count=2)
    assert agent.find_lines(r"segv exited: killed by signal 11")
    assert agent.find_lines(r"osexit exited: exit code 7")
    assert agent.find_lines(r"\[segv\] ! Fatal Python error: Segmentation fault")
    assert agent.worker("steady").pid == steady
    assert agent.proc.poll() is None


# --------------------------------------------------------------- 5. limits, environment
def test_memory_limit_and_clean_environment(db, device, start_agent, monkeypatch):
    monkeypatch.setenv("HIMBEERECOUCH_TEST_SECRET", "s3cret-token")
    put(db, "mem", type=device.macid, name="mem", restart="never", limits={"memory_mb": 64},
        code="def main():\n    b = bytearray(200 * 1024 * 1024)\n")
    put(db, "env", type=device.macid, name="env", restart="never",
        code="import os\ndef main():\n    log('env', sorted(os.environ))\n"
             "    log('values', ' '.join(os.environ.values()))\n")
    agent = start_agent(device)
    agent.wait_line(r"\[mem\] ! MemoryError")
    env_line = agent.wait_line(r"\[env\] env ")
    values = agent.wait_line(r"\[env\] values ")
    assert "HIMBEERECOUCH_TEST_SECRET" not in env_line
    assert device.password not in values and "s3cret-token" not in values


# --------------------------------------------------------------- 8. signals
def test_sighup_rereads_config_without_restarting_unchanged(db, device, start_agent):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    put(db, "m", type=device.macid, name="mem", code=loop_code("mem"))
    agent = start_agent(device)
    pa, pm = agent.wait_worker("a"), agent.wait_worker("m")
    with open(os.path.join(agent.state_dir, "himbeerecouch.conf"), "w") as f:
        f.write("[himbeerecouch]\nnofile = 200\n")
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"),
        limits={"nofile": 100})
    wait_for(lambda: agent.find_lines(r"alpha: .*document changed"), message="alpha restarted")
    pa = agent.wait_worker("a", other_than=pa)
    mark = agent.mark()
    agent.signal(signal.SIGHUP)
    agent.wait_line(r"SIGHUP", after=mark)
    # mem takes the new default limit; alpha's own limit wins, so it keeps running.
    pm2 = agent.wait_worker("m", other_than=pm)
    assert psutil.Process(pm2).rlimit(psutil.RLIMIT_NOFILE)[0] == 200
    assert agent.worker("a").pid == pa
    assert agent.stop(signal.SIGINT) == 0


def test_sigterm_stops_all_workers_in_parallel(db, device, start_agent):
    for i in range(5):
        put(db, "w%d" % i, type=device.macid, name="w%d" % i,
            code="import signal, time\ndef main():\n"
                 "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                 "    log('up')\n    while True:\n        time.sleep(0.1)\n")
    agent = start_agent(device, stop_timeout=2)
    pids = [agent.wait_worker("w%d" % i) for i in range(5)]
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    # One grace period for all of them, not one each (5 x 2 s).
    assert time.monotonic() - started < 8
    assert not any(alive(p) for p in pids)


# --------------------------------------------------------------- 9. titles, output
def test_titles_and_floods(db, device, start_agent):
    put(db, "flood", type=device.macid, name="flood", restart="never",
        code="import sys\ndef main():\n"
             "    for _ in range(50):\n        sys.stdout.write('x' * (1 << 20))\n"
             "    sys.stdout.write('\\n')\n    log('flood done')\n")
    put(db, "t", type=device.macid, name="titled", code=loop_code("titled"))
    agent = start_agent(device)
    pid = agent.wait_worker("t")
    assert " ".join(filter(None, psutil.Process(pid).cmdline())) == "himbeerecouch: titled [t]"
    assert " ".join(filter(None, psutil.Process(agent.pid).cmdline())).startswith(
        "himbeerecouch: supervisor %d" % device.macid)
    agent.wait_line(r"\[flood\] flood done", timeout=60)
    cut = agent.wait_line(r"\[flood\] x+ \[\.\.\. \d+ more bytes cut\]")
    assert len(cut) < 20000
    assert psutil.Process(agent.pid).memory_info().rss < 150 * 1024 * 1024


# --------------------------------------------------------------- 10. bad documents
BAD = {
    "nomain": {"modules": {"helper": "x = 1\n"}},
    "syntax": {"code": "def main(:\n    pass\n"},
    "notobject": {"code": "def main(): pass\n", "modules": ["helper"]},
    "dotdot": {"code": "def main(): pass\n", "modules": {"../x": "x = 1\n"}},
    "shadow": {"code": "def main(): pass\n", "modules": {"os": "x = 1\n"}},
    "dunder": {"code": "def main(): pass\n", "modules": {"__init__": "x = 1\n"}},
    "notstring": {"code": 42},
    "huge": {"code": "# " + "x" * (5 * 1024 * 1024) + "\ndef main(): pass\n"},
    "badlimits": {"code": "def main(): pass\n", "limits": {"memory_mb": "lots"}},
    "badrestart": {"code": "def main(): pass\n", "restart": "sometimes"},
}


def test_bad_documents_are_reported_and_harm_nothing(db, device, start_agent, tmp_path):
    put(db, "good", type=device.macid, name="good", code=loop_code("good"))
    agent = start_agent(device)
    good = agent.wait_worker("good")
    for doc_id, fields in BAD.items():
        put(db, doc_id, type=device.macid, name=doc_id, **fields)
    put(db, "wrongtype", type=[device.macid], name="wrongtype", code=loop_code("wrongtype"))
    for doc_id in BAD:
        if doc_id != "nomain":
            agent.wait_line(r"cannot run document %s: " % doc_id)
    assert agent.find_lines(r"document syntax: SyntaxError")
    assert agent.find_lines(r"cannot run document dotdot: .*'\.\./x' is not a Python identifier")
    assert agent.find_lines(r"cannot run document shadow: .*standard library")
    assert agent.find_lines(r"cannot run document huge: .* bytes")
    assert not os.path.exists(os.path.join(agent.state_dir, "x.py"))
    assert not os.path.exists(os.path.join(agent.state_dir, "imports", "x.py"))
    assert not agent.find_lines("wrongtype started")
    assert agent.worker("good").pid == good and agent.proc.poll() is None
    # Fixing a bad document makes it run.
    put(db, "syntax", type=device.macid, name="syntax", code=loop_code("fixed"))
    agent.wait_line(r"\[syntax\] fixed started")
