"""The bench's lab: the server, databases, device users, agents, and cleanup.

The server is the one ``COUCHDB_URL`` names (``http://admin:pw@127.0.0.1:5984``,
Apache CouchDB), else the test server.  Reuses the test suite's parts, imported
by path: ``tests/couchserver.py`` (the PouchDB-based server on a free 127.0.0.1
port), ``tests/helpers.py``
(device users) and ``tests/agent.py`` (the real ``himbeerecouch run`` as a
subprocess).  Everything started goes on one :class:`Lab`'s list of closers,
run in reverse order by :meth:`Lab.close`, also on failure or Ctrl-C: the
databases and device users it made are deleted, also on an external server.
"""
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import couchdb  # noqa: E402
import psutil  # noqa: E402

from agent import Agent  # noqa: E402  (tests/agent.py)
from couchserver import CouchServer, free_port  # noqa: E402,F401  (tests/couchserver.py)
from helpers import DEVICE_ROLE, create_device_user, grant_members  # noqa: E402

from himbeerecouch import identity  # noqa: E402
from himbeerecouch.sandbox import proctree  # noqa: E402

PI_OUI = 0xB827EB000000


class ExternalServer:
    """The server ``admin_url`` names, already running: nothing to start or
    stop.  Its pid, for CPU and memory, is the process listening on its port
    (for Apache CouchDB, the Erlang VM ``beam.smp``)."""

    def __init__(self, admin_url):
        parts = urllib.parse.urlsplit(admin_url)
        self.admin_url = admin_url.rstrip("/")
        self.port = parts.port or 5984
        self.url = "%s://%s:%d" % (parts.scheme, parts.hostname, self.port)
        self.pid = next((c.pid for c in psutil.net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                         and c.pid), None)
        if self.pid is None:
            raise RuntimeError("bench: no process of ours listens on port %d" % self.port)

    def start(self):
        pass

    stop = start


class Lab:
    """One server and everything the bench starts against it."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="himbeerecouch-bench-")
        self._closers = [lambda: shutil.rmtree(self.tmp, ignore_errors=True)]
        external = os.environ.get("COUCHDB_URL")
        self.server = ExternalServer(external) if external else CouchServer()
        self.server.start()
        self._closers.append(self.server.stop)
        self.admin = couchdb.Server(self.server.admin_url,
                                    session=couchdb.http.Session(timeout=30))
        self.users = self.admin["_users"]
        self._user_ids = []
        self.on_close(self._delete_users)
        self._macid = PI_OUI + secrets.randbits(16) * 256
        welcome = self.admin.resource.get_json()[2]
        self.server_name = "%s %s (%s, pid %d)" % (
            "Apache CouchDB" if "couchdb" in welcome else "the test server, express-pouchdb",
            welcome.get("version", "?"), psutil.Process(self.server.pid).name(), self.server.pid)

    @property
    def url(self):
        return self.server.url

    def on_close(self, fn):
        self._closers.append(fn)

    def close(self):
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception as e:   # noqa: BLE001 - cleanup must go on
                print("bench: cleanup step failed: %r" % e, file=sys.stderr)

    # ------------------------------------------------------------ database, devices
    def database(self, prefix="bench"):
        """A fresh database named ``<prefix>/<hex>`` that device users may use."""
        name = "%s/%s" % (prefix, secrets.token_hex(4))
        db = self.admin.create(name)
        self.on_close(lambda: self.admin.delete(name))
        grant_members(db, DEVICE_ROLE)
        return db

    def device(self):
        """A new device user (a Raspberry-Pi-like MacID no other run uses)."""
        self._macid += 1
        self._user_ids.append("org.couchdb.user:" + identity.device_user(self._macid))
        return create_device_user(self.users, self.url, self._macid)

    def device_logins(self, n):
        """``n`` more device users, made in one request; ``[(macid, password)]``."""
        logins, docs = [], []
        for _ in range(n):
            self._macid += 1
            password = identity.device_password(self._macid, "%016x" % self._macid)
            user = identity.device_user(self._macid)
            docs.append({"_id": "org.couchdb.user:" + user, "type": "user", "name": user,
                         "roles": [DEVICE_ROLE], "password": password})
            logins.append((self._macid, password))
        self._user_ids += [doc["_id"] for doc in docs]
        # In batches: CouchDB hashes each password as it stores it (600,000
        # PBKDF2 rounds by default, about 0.1 s a user).
        for i in range(0, n, 50):
            for ok, doc_id, why in self.users.update(docs[i:i + 50]):
                if not ok:
                    raise RuntimeError("bench: cannot create %s: %s" % (doc_id, why))
        return logins

    def _delete_users(self):
        rows = self.users.view("_all_docs", keys=self._user_ids)
        self.users.update([{"_id": row.key, "_rev": row.value["rev"], "_deleted": True}
                           for row in rows if row.value and not row.value.get("deleted")])

    # ------------------------------------------------------------ agents
    def agent(self, db, device, url=None, heartbeat_interval=10, feed_heartbeat=5,
              stop_timeout=5, start=True, server_file=False, args=(), quota=None):
        """``himbeerecouch run`` for ``device``; killed (with its workers) at close.

        ``server_file``: the URL goes into the agent's server file instead of
        onto its command line, so that :meth:`BenchAgent.retarget` can move it.
        """
        state = os.path.join(self.tmp, "state-%d" % device.macid)
        agent = BenchAgent(url or self.url, db.name, device, state, stop_timeout=stop_timeout,
                           feed_heartbeat=feed_heartbeat,
                           args=["--heartbeat-interval", str(heartbeat_interval)] + list(args))
        agent.server_file = server_file
        agent.quota = quota

        def close():
            agent.close()                 # SIGKILL by pid if still running
            kill_device(device.macid)     # and whatever of its workers is left, by tag
        self.on_close(close)
        return agent.start() if start else agent


class BenchAgent(Agent):
    """tests/agent.py's Agent, optionally reading its server URL from the server
    file, optionally under a CPU quota (a cpuquota.CpuQuota) with its workers."""

    server_file = False
    quota = None

    def command(self):
        cmd = super().command()
        if self.server_file:
            i = cmd.index("--server")
            del cmd[i:i + 2]
            self.retarget(self.url, signal_it=False)
        if self.quota is not None:
            # Join the group before the agent's interpreter starts: all it
            # starts (workers, spare, guardian, commands) inherits the group.
            cmd = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self.quota.procs] + cmd
        return cmd

    def retarget(self, url, signal_it=True):
        """Write ``url`` into the server file; SIGHUP makes the agent follow it."""
        os.makedirs(self.state_dir, exist_ok=True)
        with open(os.path.join(self.state_dir, "server"), "w") as f:
            f.write(url + "\n")
        self.url = url
        if signal_it:
            self.signal(signal.SIGHUP)


def wait_until(predicate, timeout, what, interval=0.01):
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("bench: %s did not happen within %.0f s" % (what, timeout))
        time.sleep(interval)


def rss_mb(pid):
    return psutil.Process(pid).memory_info().rss / 2**20


def sampled_rss_mb(pid, samples=5, every=0.4):
    """Median RSS of ``pid`` over a few samples."""
    values = []
    for i in range(samples):
        if i:
            time.sleep(every)
        values.append(rss_mb(pid))
    return statistics.median(values)


def cpu_seconds(pid):
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def server_usage(pid):
    """(CPU seconds, RSS MB) of the server and its children (CouchDB's JavaScript
    engines, for instance)."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    cpu = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    return cpu, sum(p.memory_info().rss for p in procs) / 2**20


def kill_device(macid):
    """Whatever is left of a device's workers (by their tag)."""
    return proctree.kill_tagged("%d/" % macid)


def terminate(popen, timeout=10):
    """SIGTERM, wait, SIGKILL."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except Exception:   # noqa: BLE001
            popen.kill()
            popen.wait(timeout)
