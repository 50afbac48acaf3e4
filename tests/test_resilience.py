"""The agent against a network and a server that fail (issue 2, points 6 and 7).

Real server, real agent, real workers.  Between the agent and the server sits
a ``StallingProxy`` that can drop every connection or go quiet without
closing them; the tests change the database directly (as admin, not through
the proxy) while the agent cannot see it, and then check what a user sees:
every change applied, nothing else restarted.

Point 6: the feed reconnects after any error and reconciles against the full
list of this device's documents.  Point 7: the agent starts from its cached
documents when the server cannot be reached, and catches up once it can.
"""
import os
import secrets
import signal
import socket
import urllib.parse

import couchdb
import couchdb.http
import psutil
import pytest

from agent import Agent
from couchserver import CouchServer, StallingProxy, free_port
from helpers import create_device_user, delete_doc, grant_members, loop_code, put_doc, wait_for

from himbeerecouch.agent import cache


@pytest.fixture
def proxy(couch):
    """A StallingProxy in front of the session's server."""
    parts = urllib.parse.urlsplit(couch.url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the proxy only reaches a server on 127.0.0.1")
    p = StallingProxy(parts.port or 5984).start()
    try:
        yield p
    finally:
        p.stop()


def same_pid(agent, doc_id, pid):
    proc = agent.worker(doc_id)
    return proc is not None and proc.pid == pid


def put(db, doc_id, **fields):
    return put_doc(db.admin, doc_id, **fields)


def delete(db, doc_id):
    delete_doc(db.admin, doc_id)


def three_workers(db, device):
    """a (to leave alone), b (to change), c (to delete): loops that run until asked."""
    for doc_id, name in (("a", "alpha"), ("b", "beta"), ("c", "gamma")):
        put(db, doc_id, type=device.macid, name=name, code=loop_code(name))


def start_live(db, device, start_agent, **options):
    """An agent running a, b, c, whose continuous feed is known to be up: c
    came through it (a drop before that would only hit the first request)."""
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta"))
    agent = start_agent(device, **options)
    agent.wait_line(r"2 code document\(s\) for this device")
    put(db, "c", type=device.macid, name="gamma", code=loop_code("gamma"))
    for name in ("alpha", "beta", "gamma"):     # each has printed its line: none is late
        agent.wait_line(r"\[%s\] %s started" % (name, name))
    return agent, {i: agent.wait_worker(i) for i in "abc"}


def change_while_away(db, device):
    put(db, "b", type=device.macid, name="beta", code=loop_code("beta2"))
    delete(db, "c")
    put(db, "d", type=str(device.macid), name="delta", code=loop_code("delta"))


def check_caught_up(agent, pids, mark):
    """b restarted with its new code, c stopped, d started, a untouched."""
    agent.wait_line(r"\[beta\] beta2 started", after=mark, timeout=20)
    agent.wait_line(r"\[delta\] delta started", after=mark, timeout=20)
    agent.wait_line(r"\[gamma\] gamma quitting", after=mark, timeout=20)
    wait_for(lambda: agent.worker("c") is None, timeout=20, message="deleted document's worker gone")
    assert agent.wait_worker("b", other_than=pids["b"]) != pids["b"]
    assert same_pid(agent, "a", pids["a"]), "an unchanged worker was restarted"
    assert not agent.find_lines(r"\[alpha\] alpha (quitting|started)", after=mark)
    assert agent.proc.poll() is None


# ------------------------------------------------------------------ 6. reconnect
@pytest.mark.parametrize("stalled", [False, True], ids=["dropped", "dropped-and-stalled"])
def test_dropped_connections_reconnect_and_reconcile(db, device, start_agent, proxy, stalled):
    agent, pids = start_live(db, device, start_agent, url=proxy.url)
    mark = agent.mark()
    if stalled:
        # The reconnection reaches the proxy but nothing gets through.
        proxy.stall()
    proxy.drop()
    agent.wait_line(r"database unreachable: .*workers keep running", after=mark)
    change_while_away(db, device)
    if stalled:
        assert same_pid(agent, "b", pids["b"]) and same_pid(agent, "c", pids["c"])
        assert agent.worker("d") is None
        proxy.resume()
    agent.wait_line(r"connected to the server again", after=mark, timeout=20)
    check_caught_up(agent, pids, mark)


def test_a_feed_cut_mid_chunk_is_said_in_words_and_recovers(db, device, start_agent, proxy):
    """A proxy (or a cluster node dying behind one) cuts the continuous feed in
    the middle of a change: the log says "connection dropped", not the HTTP
    client's ``invalid literal for int() with base 16: b''``."""
    agent, pids = start_live(db, device, start_agent, url=proxy.url)
    mark = agent.mark()
    proxy.cut_next_answer()
    put(db, "e", type=device.macid, name="epsilon", code=loop_code("epsilon"))
    agent.wait_line(r"database unreachable: connection dropped", after=mark)
    agent.wait_line(r"\[epsilon\] epsilon started", after=mark, timeout=20)
    assert all(same_pid(agent, i, pids[i]) for i in "abc")
    out = agent.output()
    assert "invalid literal" not in out and "b''" not in out and "ValueError" not in out


def test_silent_feed_is_noticed_and_recovers(db, device, start_agent, proxy):
    agent, pids = start_live(db, device, start_agent, url=proxy.url, feed_heartbeat=1)
    mark = agent.mark()
    proxy.stall()       # every connection stays open; no byte, no heartbeat line
    # Three heartbeat periods (3 s) of silence mean the connection is dead.
    agent.wait_line(r"database unreachable: timed out", after=mark, timeout=12)
    assert all(same_pid(agent, i, pids[i]) for i in "abc")
    change_while_away(db, device)
    proxy.resume()
    agent.wait_line(r"connected to the server again", after=mark, timeout=40)
    check_caught_up(agent, pids, mark)
    # And the feed is live again: a change now arrives through it.
    mark = agent.mark()
    put(db, "e", type=device.macid, name="epsilon", code=loop_code("epsilon"))
    agent.wait_line(r"\[epsilon\] epsilon started", after=mark)


@pytest.fixture
def disk_server(tmp_path):
    """A server of this test's own, on a data folder: it survives SIGKILL."""
    server = CouchServer(data_dir=tmp_path / "couchdata")
    try:
        server.start()
        yield server
    finally:
        server.close()


def provision(server, dbname):
    """The database and a device user on ``server``; returns (admin db, Device)."""
    admin = couchdb.Server(server.admin_url, session=couchdb.http.Session(timeout=30))
    database = admin.create(dbname)
    grant_members(database)
    device = create_device_user(admin["_users"], server.url)
    return database, device


def fresh_admin_db(server, dbname):
    """A new client: the old one's pooled connections died with the server."""
    admin = couchdb.Server(server.admin_url, session=couchdb.http.Session(timeout=30))
    return admin[dbname]


def agent_on_disk_server(server, tmp_path):
    """A database on ``server`` with a device running "alpha": (name, admin db,
    Device, Agent not started yet)."""
    dbname = "test/%s" % secrets.token_hex(6)
    database, device = provision(server, dbname)
    put_doc(database, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    return dbname, database, device, Agent(server.url, dbname, device, tmp_path / "state",
                                           feed_heartbeat=1)


def test_server_killed_mid_feed_and_restarted(disk_server, tmp_path):
    dbname, database, device, agent = agent_on_disk_server(disk_server, tmp_path)
    try:
        agent.start()
        agent.wait_line(r"1 code document\(s\) for this device")
        # b comes through the continuous feed: it is up when the server dies.
        put_doc(database, "b", type=device.macid, name="beta", code=loop_code("beta"))
        agent.wait_line(r"\[beta\] beta started")
        pids = {i: agent.wait_worker(i) for i in "ab"}
        mark = agent.mark()
        disk_server.kill()                       # SIGKILL, mid-feed
        agent.wait_line(r"database unreachable: .*workers keep running", after=mark)
        assert all(same_pid(agent, i, pids[i]) for i in "ab")
        disk_server.start()                      # same port, same data folder
        agent.wait_line(r"connected to the server again", after=mark, timeout=30)
        assert all(same_pid(agent, i, pids[i]) for i in "ab")
        database = fresh_admin_db(disk_server, dbname)
        put_doc(database, "b", type=device.macid, name="beta", code=loop_code("beta2"))
        put_doc(database, "n", type=device.macid, name="new", code=loop_code("new"))
        agent.wait_line(r"\[beta\] beta2 started", after=mark)
        agent.wait_line(r"\[new\] new started", after=mark)
        assert agent.wait_worker("b", other_than=pids["b"]) != pids["b"]
        assert same_pid(agent, "a", pids["a"])
        assert agent.stop(signal.SIGTERM) == 0
    finally:
        agent.close()


def test_server_back_after_a_long_outage_is_followed_at_once(disk_server, tmp_path):
    """Down longer than the backoff's current step: once the server answers
    again the device reconnects at once, not when that step ends."""
    dbname, database, device, agent = agent_on_disk_server(disk_server, tmp_path)
    try:
        agent.start()
        agent.wait_line(r"\[alpha\] alpha started")
        mark = agent.mark()
        disk_server.kill()
        # The backoff grows 1, 2, 4, 8 s: wait until a try is 8 s away.
        agent.wait_line(r"database unreachable: .*next try in 8 s", after=mark, timeout=60)
        disk_server.start()
        back = agent.mark()
        agent.wait_line(r"the server answers again: reconnecting now", after=back, timeout=6)
        agent.wait_line(r"connected to the server again", after=back, timeout=6)
        put_doc(fresh_admin_db(disk_server, dbname), "n", type=device.macid, name="new",
                code=loop_code("new"))
        agent.wait_line(r"\[new\] new started", after=back, timeout=10)
        assert agent.stop(signal.SIGTERM) == 0
    finally:
        agent.close()


# ------------------------------------------------------------------ 7. offline start
def closed_port_url():
    """A loopback URL where nothing listens (connections are refused)."""
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return "http://127.0.0.1:%d" % port


def run_once_to_fill_the_cache(db, device, start_agent, state, ids="abc"):
    agent = start_agent(device, state_dir=state)
    agent.wait_line(r"%d code document\(s\) for this device" % len(ids))
    pids = [agent.wait_worker(i) for i in ids if i != "crash"]
    path = cache.cache_path(str(state), device.macid)
    wait_for(lambda: sorted(cache.load(path, device.macid, db.name) or {}) == sorted(ids),
             message="documents cached")
    assert agent.stop(signal.SIGINT) == 0
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() !=
                             psutil.STATUS_ZOMBIE for p in pids),
             message="first run's workers gone")
    return path


def test_offline_start_runs_the_cached_workers(db, device, start_agent, tmp_path):
    three_workers(db, device)
    put(db, "crash", type=device.macid, name="crash",
        code="import sys\ndef main():\n    log('crash run')\n    sys.exit(1)\n")
    state = tmp_path / "state"
    path = run_once_to_fill_the_cache(db, device, start_agent, state, ids=["a", "b", "c", "crash"])
    assert os.stat(path).st_mode & 0o077 == 0     # documents are the supervisor's only
    agent = start_agent(device, state_dir=state, url=closed_port_url())
    agent.wait_line(r"running the 4 cached document\(s\)")
    for doc_id, name in (("a", "alpha"), ("b", "beta"), ("c", "gamma")):
        agent.wait_line(r"\[%s\] %s started" % (name, name))
        agent.wait_worker(doc_id)
    assert agent.find_lines(r"database unreachable: .*refused")
    # Restarts go on while offline: a crashing worker is started again.
    agent.wait_line(r"\[crash\] crash run", count=2)
    assert agent.stop(signal.SIGTERM) == 0


def test_offline_start_then_server_back_catches_up(db, device, start_agent, proxy, tmp_path):
    three_workers(db, device)
    state = tmp_path / "state"
    run_once_to_fill_the_cache(db, device, start_agent, state)
    proxy.stall()       # the server answers nothing: not even a refusal
    agent = start_agent(device, state_dir=state, url=proxy.url)
    agent.wait_line(r"running the 3 cached document\(s\)", timeout=30)
    pids = {i: agent.wait_worker(i) for i in "abc"}
    mark = agent.mark()
    change_while_away(db, device)
    proxy.resume()
    agent.wait_line(r"3 code document\(s\) for this device", after=mark, timeout=40)
    check_caught_up(agent, pids, mark)
    # The cache follows the server again.
    path = cache.cache_path(str(state), device.macid)
    wait_for(lambda: sorted(cache.load(path, device.macid, db.name) or {}) == ["a", "b", "d"],
             message="cache updated")


def test_corrupt_cache_is_reported_and_the_server_used(db, device, start_agent, tmp_path):
    put(db, "a", type=device.macid, name="alpha", code=loop_code("alpha"))
    state = tmp_path / "state"
    state.mkdir()
    path = cache.cache_path(str(state), device.macid)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\xff garbage \xfe" + os.urandom(256))
    agent = start_agent(device, state_dir=state)
    agent.wait_line(r"document cache .*documents-%d\.json is unreadable" % device.macid)
    agent.wait_line(r"\[alpha\] alpha started")
    agent.wait_worker("a")
    # Rebuilt from the server.
    wait_for(lambda: sorted(cache.load(path, device.macid, db.name) or {}) == ["a"],
             message="cache rewritten")
    assert agent.proc.poll() is None
