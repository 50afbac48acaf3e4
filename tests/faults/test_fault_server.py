"""The server misbehaves: killed, unreachable, stalled, answering 500s, in conflict.

Between the agent and the server sits a proxy of the suite's own
(``FaultProxy``: refuses connections, answers 500s) or the harness's
``StallingProxy`` (goes quiet without closing); the tests change the database
directly, as an admin, while the agent cannot see it.

Already proven elsewhere: reconnect and reconcile after dropped and stalled
connections (tests/test_resilience.py), one conflicting save of the heartbeat
(tests/test_heartbeat.py::test_heartbeat_survives_a_conflicting_writer),
commands stored while offline (tests/test_commands.py).  The tests here go
further: commands and heartbeats through the fault, many kinds of change
during one outage, and a stop while the server hangs.
"""
import secrets
import signal
import time
import urllib.parse

import couchdb
import couchdb.http
import pytest

from agent import Agent
from couchserver import CouchServer, StallingProxy
from faultkit import (FaultProxy, Hammer, admin_db, assert_nothing_left, command, heartbeat,
                      result, steady_ok)
from helpers import create_device_user, delete_doc, grant_members, loop_code, put_doc, wait_for

HB_ARGS = ["--heartbeat-interval", "1"]


def loopback_port(couch):
    parts = urllib.parse.urlsplit(couch.url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the proxies only reach a server on 127.0.0.1")
    return parts.port or 5984


@pytest.fixture
def fault_proxy(couch):
    proxy = FaultProxy(loopback_port(couch))
    try:
        yield proxy
    finally:
        proxy.stop()


def put(db, doc_id, **fields):
    return put_doc(db.admin, doc_id, **fields)


def runs_once(tmp_path, name):
    """A command that appends a line to a marker file each time it runs."""
    marker = tmp_path / ("%s.runs" % name)
    return marker, ["sh", "-c", "echo run >> %s; echo %s done" % (marker, name)]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ------------------------------------------------------------------ killed, restarted
def test_server_killed_mid_feed_and_restarted(tmp_path):
    """SIGKILL of the server while the feed, a command and heartbeats are in flight."""
    server = CouchServer(data_dir=tmp_path / "couchdata")
    agent = None
    try:
        server.start()
        dbname = "fault/%s" % secrets.token_hex(6)
        admin = couchdb.Server(server.admin_url, session=couchdb.http.Session(timeout=30))
        database = admin.create(dbname)
        grant_members(database)
        device = create_device_user(admin["_users"], server.url)
        put_doc(database, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
        agent = Agent(server.url, dbname, device, tmp_path / "state", args=HB_ARGS,
                      feed_heartbeat=1).start()
        pa = agent.wait_worker("a")
        agent.wait_line(r"1 code document\(s\) for this device")
        marker = tmp_path / "slow.runs"
        command(database, device.macid, "slow",
                ["sh", "-c", "echo run >> %s; sleep 2; echo slow done" % marker])
        wait_for(lambda: marker.exists(), message="the command runs")
        mark = agent.mark()
        server.kill()                    # mid-feed, mid-command, mid-heartbeat
        agent.wait_line(r"database unreachable: .*workers keep running", after=mark)
        # The command ends while the server is down: its result waits on disk.
        agent.wait_line(r"command slow: result not written yet", after=mark, timeout=30)
        steady_ok(agent, "a", pa)
        back = time.time()
        server.start()                   # same port, same data folder
        agent.wait_line(r"connected to the server again", after=mark, timeout=40)
        database = admin_db(server.admin_url, dbname)
        doc = result(database, "slow", timeout=60)
        assert doc["ret"][0] == "slow done\n" and doc["exit_code"] == 0
        assert marker.read_text() == "run\n", "the command ran twice"
        heartbeat(database, device.macid,
                  lambda hb: hb["feed"]["connected"] and hb["running_ids"] == ["a"]
                  and hb["sent_at"] >= iso(back),
                  timeout=30, message="heartbeats written again after the restart")
        put_doc(database, "n", type=device.macid, name="new", code=loop_code("new"))
        agent.wait_line(r"\[new\] new started", after=mark)
        steady_ok(agent, "a", pa)
        assert agent.stop(signal.SIGTERM) == 0
        assert_nothing_left(device.macid)
    finally:
        if agent is not None:
            agent.close()
        server.close()


# ------------------------------------------------------------------ unreachable at start
def test_unreachable_at_start_without_cache(db, device, start_agent, fault_proxy, tmp_path):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    fault_proxy.reserve()            # nothing listens: connections are refused
    agent = start_agent(device, url=fault_proxy.url, args=HB_ARGS)
    agent.wait_line(r"database unreachable: .*(refused|Errno 111)", timeout=20)
    marker, cmd = runs_once(tmp_path, "early")
    command(db.admin, device.macid, "early", cmd)
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
    # Nothing to run yet (no cache), but the supervisor waits, up, and retries.
    assert agent.proc.poll() is None and not agent.worker_processes()
    assert db.admin.get("%d_heartbeat" % device.macid) is None
    fault_proxy.listen()
    agent.wait_line(r"connected to the server again", timeout=90)
    agent.wait_line(r"\[alpha\] alpha started")
    agent.wait_line(r"\[beta\] beta started")
    assert result(db.admin, "early")["ret"][0] == "early done\n"
    heartbeat(db.admin, device.macid,
              lambda hb: sorted(hb["running_ids"]) == ["a", "b"] and hb["feed"]["connected"])
    assert marker.read_text() == "run\n"


# ------------------------------------------------------------------ stalled
def test_stalled_server_blocks_nothing(couch, db, device, start_agent, tmp_path):
    """A proxy that goes quiet: the loop still restarts a crashing worker, then
    everything done meanwhile lands; a stop while it hangs ends in bounded time."""
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    put(db, "crash", type=device.macid, name="crash",
        code="import time\ndef main():\n    log('crash run')\n    time.sleep(0.5)\n"
             "    raise RuntimeError('crash during the stall')\n")
    with StallingProxy(loopback_port(couch)) as proxy:
        agent = start_agent(device, url=proxy.url, args=HB_ARGS)
        pa = agent.wait_worker("a")
        agent.wait_line(r"2 code document\(s\) for this device")
        mark = agent.mark()
        proxy.stall()
        agent.wait_line(r"database unreachable: timed out", after=mark, timeout=30)
        # The loop is not blocked by the network: the crashing worker restarts.
        agent.wait_line(r"\[crash\] crash run", after=mark, count=2, timeout=30)
        marker, cmd = runs_once(tmp_path, "stalled")
        command(db.admin, device.macid, "during", cmd)
        put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
        delete_doc(db.admin, "crash")
        steady_ok(agent, "a", pa)
        proxy.resume()
        agent.wait_line(r"connected to the server again", after=mark, timeout=60)
        agent.wait_line(r"\[beta\] beta started", after=mark, timeout=30)
        assert result(db.admin, "during", timeout=60)["ret"][0] == "stalled done\n"
        wait_for(lambda: agent.worker("crash") is None, message="deleted worker gone")
        heartbeat(db.admin, device.macid,
                  lambda hb: sorted(hb["running_ids"]) == ["a", "b"], timeout=40)
        steady_ok(agent, "a", pa)
        assert marker.read_text() == "run\n"
        # Stopping while the server hangs: bounded, clean.
        proxy.stall()
        started = time.monotonic()
        assert agent.stop(signal.SIGTERM, timeout=60) == 0
        assert time.monotonic() - started < 60
        assert_nothing_left(device.macid)
        proxy.resume()


# ------------------------------------------------------------------ 500s
def test_server_answering_500s(db, device, start_agent, fault_proxy, tmp_path):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    fault_proxy.start()
    agent = start_agent(device, url=fault_proxy.url, args=HB_ARGS)
    pa = agent.wait_worker("a")
    agent.wait_line(r"1 code document\(s\) for this device")
    heartbeat(db.admin, device.macid, lambda hb: hb["running_ids"] == ["a"])

    # Every request fails for a while: the feed, the heartbeat, the commands.
    mark = agent.mark()
    fault_proxy.fail(lambda method, path: True)
    fault_proxy.drop()          # the open feed ends: its reconnection gets a 500
    agent.wait_line(r"database unreachable: server answered 500", after=mark, timeout=30)
    marker1, cmd1 = runs_once(tmp_path, "one")
    command(db.admin, device.macid, "one", cmd1)
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
    wait_for(lambda: fault_proxy.failures >= 5, message="500s answered")
    # Said once when writing starts failing (then quiet): its first failure may
    # be the dropped connection or a 500.
    agent.wait_line(r"cannot write the heartbeat.*(server answered 500|connection dropped)",
                    after=mark, timeout=30)
    steady_ok(agent, "a", pa)
    fault_proxy.fail(None)
    agent.wait_line(r"connected to the server again", after=mark, timeout=60)
    agent.wait_line(r"\[beta\] beta started", after=mark, timeout=30)
    assert result(db.admin, "one", timeout=60)["ret"][0] == "one done\n"
    heartbeat(db.admin, device.macid, lambda hb: sorted(hb["running_ids"]) == ["a", "b"])

    # Only some requests fail: the claim of one command, and heartbeat writes.
    mark = agent.mark()
    before = fault_proxy.failures
    fault_proxy.fail(lambda method, path: method in ("PUT", "POST")
                     and ("two" in path or "_heartbeat" in path))
    marker2, cmd2 = runs_once(tmp_path, "two")
    command(db.admin, device.macid, "two", cmd2)
    agent.wait_line(r"command two not claimed \(server answered 500", after=mark, timeout=30)
    wait_for(lambda: fault_proxy.failures > before + 2, message="some 500s answered")
    fault_proxy.fail(None)
    doc = result(db.admin, "two", timeout=60)
    assert doc["ret"][0] == "two done\n", "a command whose claim got a 500 never ran"
    assert marker1.read_text() == "run\n" and marker2.read_text() == "run\n"
    steady_ok(agent, "a", pa)
    assert agent.find_lines(r"writing to the database works again", after=mark)


# ------------------------------------------------------------------ conflicts
def test_revision_conflicts_on_heartbeats_and_command_results(couch, db, device, start_agent,
                                                             tmp_path):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    agent = start_agent(device, args=HB_ARGS)
    pa = agent.wait_worker("a")
    heartbeat(db.admin, device.macid, lambda hb: hb["running_ids"] == ["a"])
    marker = tmp_path / "c.runs"
    hb_writer = Hammer(couch.admin_url, db.name, "%d_heartbeat" % device.macid).start()
    cmd_writer = None
    try:
        # A command rewritten by another writer all through its claim, its run
        # and the saving of its result.
        command(db.admin, device.macid, "c",
                ["sh", "-c", "echo run >> %s; sleep 1; echo c done" % marker])
        cmd_writer = Hammer(couch.admin_url, db.name, "c", gap=0.01).start()
        put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
        wait_for(lambda: db.admin["c"].get("ret"), timeout=40, message="result despite conflicts")
        heartbeat(db.admin, device.macid, lambda hb: sorted(hb["running_ids"]) == ["a", "b"],
                  message="heartbeat written despite a conflicting writer")
        wait_for(lambda: hb_writer.saved > 10 and cmd_writer.saved > 10,
                 message="the other writers did write")
    finally:
        hb_writer.stop()
        if cmd_writer:
            cmd_writer.stop()
    doc = db.admin["c"]
    assert doc["ret"] == ["c done\n", ""] and doc["exit_code"] == 0
    assert doc["other_writer"] == cmd_writer.last, "the other writer's change was lost"
    assert marker.read_text() == "run\n", "the command ran more than once"
    t = iso(time.time() + 1)
    hb = heartbeat(db.admin, device.macid, lambda hb: hb["sent_at"] >= t,
                   message="heartbeats go on after the conflicts")
    assert hb["other_writer"] == hb_writer.last
    steady_ok(agent, "a", pa)
    assert not agent.find_lines(r"failed unexpectedly|Traceback")


# ------------------------------------------------------------------ outage
def test_changes_during_an_outage_all_applied(db, device, start_agent, fault_proxy, tmp_path):
    macid = device.macid
    put(db, "g", type=macid, name="exports", global_modules={"shared": "V = 1\n"})
    user = "import shared\n" + loop_code("user").replace('"user started"',
                                                          '"user started", shared.V')
    put(db, "user", type=macid, name="user", code=user)
    for i in range(6):
        # w5 has a module of its own named like the global one: that change is not its.
        put(db, "w%d" % i, type=macid, name="w%d" % i, code=loop_code("w%d-r1" % i),
            modules={"shared": "V = 'own'\n"} if i == 5 else None)
    fault_proxy.start()
    agent = start_agent(device, url=fault_proxy.url, args=HB_ARGS)
    pids = {"w%d" % i: agent.wait_worker("w%d" % i) for i in range(6)}
    agent.wait_line(r"\[user\] user started 1")
    agent.wait_line(r"8 code document\(s\) for this device")
    mark = agent.mark()
    fault_proxy.refuse()
    agent.wait_line(r"database unreachable", after=mark, timeout=30)

    # While it cannot see the server:
    put(db, "w0", type=macid, name="w0", code=loop_code("w0-r2"))              # changed
    put(db, "w1", type=macid, name="w1", code=loop_code("w1-r2"))
    put(db, "w1", type=macid, name="w1", code=loop_code("w1-r3"))              # twice
    delete_doc(db.admin, "w2")                                                 # deleted
    delete_doc(db.admin, "w3")
    put(db, "w3", type=macid, name="w3", code=loop_code("w3-again"))           # recreated
    put(db, "w4", type=macid + 1, name="w4", code=loop_code("w4"))             # moved away
    put(db, "w5", type=str(macid), name="w5", code=loop_code("w5-r1"),        # same content
        modules={"shared": "V = 'own'\n"})
    put(db, "g", type=macid, name="exports", global_modules={"shared": "V = 2\n"})
    for i in range(3):
        put(db, "n%d" % i, type=macid, name="n%d" % i, code=loop_code("n%d" % i))
    markers = {}
    for i in range(3):
        markers[i], cmd = runs_once(tmp_path, "cmd%d" % i)
        command(db.admin, macid, "cmd%d" % i, cmd)
    put(db, "other", type=macid + 1, name="other", code=loop_code("other"))
    assert all(agent.worker(k).pid == v for k, v in pids.items())

    fault_proxy.listen()
    agent.wait_line(r"connected to the server again", after=mark, timeout=90)
    for pattern in (r"\[w0\] w0-r2 started", r"\[w1\] w1-r3 started", r"\[w3\] w3-again started",
                    r"\[user\] user started 2", r"\[n0\] n0 started", r"\[n1\] n1 started",
                    r"\[n2\] n2 started", r"\[w2\] w2-r1 quitting", r"\[w4\] w4-r1 quitting"):
        agent.wait_line(pattern, after=mark, timeout=30)
    for i in range(3):
        assert result(db.admin, "cmd%d" % i)["ret"][0] == "cmd%d done\n" % i
    wait_for(lambda: agent.worker("w2") is None and agent.worker("w4") is None,
             message="deleted and moved documents stopped")
    assert agent.worker("w5").pid == pids["w5"], "an unchanged worker was restarted"
    assert not agent.find_lines(r"\[w1\] w1-r2 started", after=mark)
    assert not agent.find_lines(r"other started")
    heartbeat(db.admin, macid, lambda hb: sorted(hb["running_ids"]) ==
              ["n0", "n1", "n2", "user", "w0", "w1", "w3", "w5"], timeout=30)
    for i in range(3):
        assert markers[i].read_text() == "run\n"
    assert agent.proc.poll() is None
