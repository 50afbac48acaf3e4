"""A real CouchDB-protocol server for the tests, and a proxy to misbehave with.

``CouchServer`` runs ``testserver/server.js`` (express-pouchdb on PouchDB 9; its
comments say where it differs from CouchDB) on a loopback port and ends its
"admin party".
``StallingProxy`` sits between a client and a server and can stall or drop the
connections, to simulate a network that goes quiet or breaks.

Standard library only (plus nothing): both talk to 127.0.0.1 and nothing else.
Install the server once with::

    cd testserver && npm ci --ignore-scripts --no-audit --no-fund
"""
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTSERVER_DIR = os.path.join(ROOT, "testserver")
SERVER_JS = os.path.join(TESTSERVER_DIR, "server.js")
INSTALL_HINT = "cd %s && npm ci --ignore-scripts --no-audit --no-fund" % TESTSERVER_DIR

# Every HTTP call of this module is bounded: some error paths of the server hang.
HTTP_TIMEOUT = 5.0

# Never let an http_proxy/HTTP_PROXY variable route loopback traffic elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CouchServerError(RuntimeError):
    """The test server could not be started or configured."""


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_request(method, url, body=None, auth=None, timeout=HTTP_TIMEOUT):
    """One JSON request to ``url``: returns ``(status, decoded body or None)``.

    ``body`` is encoded as JSON (with ``Content-Type: application/json``; the test
    server stores an empty document without it).  ``auth`` is ``(name, password)``.
    HTTP errors are returned, not raised; connection errors raise ``OSError``.
    """
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if auth is not None:
        token = base64.b64encode(("%s:%s" % auth).encode("utf-8")).decode("ascii")
        headers["Authorization"] = "Basic " + token
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
        e.close()
    try:
        return status, json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        return status, raw


class CouchServer:
    """``node testserver/server.js`` on 127.0.0.1, with an admin.

    ``data_dir=None`` keeps every database in memory (gone on restart); with a
    folder, databases and the server's config.json live there and survive
    ``restart()`` and ``kill()`` + ``start()``.  ``port=None`` lets the kernel pick
    a free port on the first start; later starts reuse it.
    """

    admin_name = "admin"

    def __init__(self, data_dir=None, port=None, admin_password=None, startup_timeout=30.0):
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self._port = port
        self.admin_password = admin_password or secrets.token_hex(12)
        self.startup_timeout = startup_timeout
        self._proc = None
        self._log_dir = None
        self._log_path = None
        self._log_file = None

    # -- addresses ------------------------------------------------------------

    @property
    def port(self):
        if self._port is None:
            raise CouchServerError("the server has not been started yet")
        return self._port

    @property
    def url(self):
        """``http://127.0.0.1:PORT``, no credentials."""
        return "http://%s:%d" % (HOST, self.port)

    @property
    def admin_url(self):
        """``http://admin:PASSWORD@127.0.0.1:PORT``."""
        return "http://%s:%s@%s:%d" % (self.admin_name, self.admin_password, HOST, self.port)

    @property
    def admin_auth(self):
        return (self.admin_name, self.admin_password)

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def output(self):
        """What the server wrote to stdout and stderr in its current (or last) run."""
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- life cycle -----------------------------------------------------------

    def start(self):
        if self.running:
            raise CouchServerError("the server is already running (pid %d)" % self._proc.pid)
        self._reap()
        self._remove_log()
        node = shutil.which("node")
        if node is None:
            raise CouchServerError("node is not installed (needed for %s)" % SERVER_JS)
        if not os.path.isdir(os.path.join(TESTSERVER_DIR, "node_modules", "express-pouchdb")):
            raise CouchServerError("the test server is not installed; run: " + INSTALL_HINT)

        if self._log_dir is None:
            self._log_dir = tempfile.mkdtemp(prefix="couchserver-log-")
        self._log_path = os.path.join(self._log_dir, "server.log")
        self._log_file = open(self._log_path, "wb")
        # --exit-with-parent: no server outlives a test run that was killed outright.
        command = [node, "--unhandled-rejections=warn", SERVER_JS, "--exit-with-parent",
                   "--port", str(self._port if self._port is not None else 0)]
        if self.data_dir is not None:
            command += ["--data", os.path.abspath(self.data_dir)]
        self._proc = subprocess.Popen(
            command, cwd=TESTSERVER_DIR, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT,
            # A Ctrl-C in the terminal (the demo) must not end the server before
            # the agent has written its last heartbeat: it is stopped explicitly.
            start_new_session=True)
        try:
            deadline = time.monotonic() + self.startup_timeout
            self._port = self._wait_listening(deadline)
            self._wait_answering(deadline)
            self._end_admin_party(deadline)
        except BaseException:
            self.kill()  # the error carries the server's output
            self._remove_log()
            raise
        return self

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL if it does not go.  Removes the server's log."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._reap()
        self._remove_log()

    def kill(self):
        """SIGKILL, as a crash would: no chance to clean anything up.

        ``output()`` still shows what it wrote until the next start or stop."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self._reap()

    def restart(self):
        """Stop and start again on the same port and data folder."""
        self.stop()
        return self.start()

    def close(self):
        """The same as ``stop()``."""
        self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- internals ------------------------------------------------------------

    def _remove_log(self):
        if self._proc is None and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = self._log_path = None

    def _reap(self):
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None and self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _fail(self, message):
        out = self.output().strip()
        raise CouchServerError("%s\n--- server output ---\n%s" % (message, out or "(none)"))

    def _check_alive(self):
        code = self._proc.poll()
        if code is not None:
            self._fail("the test server exited with status %d" % code)

    def _wait_listening(self, deadline):
        prefix = "listening on http://%s:" % HOST
        while True:
            for line in self.output().splitlines():
                if line.startswith(prefix):
                    return int(line[len(prefix):].strip())
            self._check_alive()
            if time.monotonic() > deadline:
                self._fail("the test server did not start listening within %.0f s"
                           % self.startup_timeout)
            time.sleep(0.02)

    def _wait_answering(self, deadline):
        last = None
        while True:
            self._check_alive()
            try:
                status, body = http_request("GET", self.url + "/", timeout=2)
                if status == 200:
                    return
                last = "HTTP %d %r" % (status, body)
            except OSError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                self._fail("the test server did not answer within %.0f s (last: %s)"
                           % (self.startup_timeout, last))
            time.sleep(0.02)

    def _is_admin(self):
        status, body = http_request("GET", self.url + "/_session", auth=self.admin_auth)
        return status == 200 and "_admin" in (body or {}).get("userCtx", {}).get("roles", [])

    def _end_admin_party(self, deadline):
        """``PUT /_config/admins/admin`` with the password as a JSON string.

        A server on a reused data folder already has its admin (config.json): then
        only check that our credentials work.
        """
        url = "%s/_config/admins/%s" % (self.url, self.admin_name)
        status, body = http_request("PUT", url, body=self.admin_password)
        if status not in (200, 401, 403):
            self._fail("could not create the admin: HTTP %d %r" % (status, body))
        while not self._is_admin():
            self._check_alive()
            if time.monotonic() > deadline:
                self._fail("the admin credentials are refused (PUT gave HTTP %d %r); "
                           "a reused data folder needs the same admin_password" % (status, body))
            time.sleep(0.02)


class _ProxiedConnection:
    """One client connection and its upstream twin."""

    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def close(self):
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class StallingProxy:
    """A loopback TCP proxy to ``127.0.0.1:target_port`` that can misbehave.

    ``stall()`` stops forwarding bytes in both directions (and end-of-stream too)
    while every connection stays open, as a network that silently goes quiet;
    ``resume()`` forwards again, without loss.  ``drop()`` closes every current
    connection at once.  ``cut_next_answer()`` forwards only the first half of
    the next bytes the server sends (the middle of a chunk of the continuous
    feed, say), then closes that connection.  New connections are accepted
    all the time.
    """

    def __init__(self, target_port, target_host=HOST):
        if target_host not in (HOST, "localhost"):
            raise ValueError("the proxy only talks to 127.0.0.1")
        self.target = (HOST, int(target_port))
        self._listener = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._cut = threading.Event()
        self._stopping = threading.Event()
        self._connections = set()
        self._lock = threading.Lock()
        self._threads = []
        self._port = None

    @property
    def port(self):
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    @property
    def connection_count(self):
        with self._lock:
            return len(self._connections)

    def start(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self._port or 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._stopping.clear()
        self._spawn(self._accept_loop)
        return self

    def stop(self):
        self._stopping.set()
        self._flowing.set()
        self.drop()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def stall(self):
        self._flowing.clear()

    def resume(self):
        self._flowing.set()

    def cut_next_answer(self):
        self._cut.set()

    def drop(self):
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for c in connections:
            c.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- internals ------------------------------------------------------------

    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True,
                             name="StallingProxy-%s" % target.__name__)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def _accept_loop(self):
        listener = self._listener
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _ProxiedConnection(client, upstream)
            with self._lock:
                if self._stopping.is_set():
                    connection.close()
                    return
                self._connections.add(connection)
            self._spawn(self._pump, connection, client, upstream)
            self._spawn(self._pump, connection, upstream, client)

    def _wait_flowing(self, connection):
        while not self._flowing.wait(0.05):
            if connection.closed.is_set():
                return False
        return not connection.closed.is_set()

    def _pump(self, connection, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not self._wait_flowing(connection):
                    return
                if not data:
                    break
                if source is connection.upstream and self._cut.is_set():
                    self._cut.clear()
                    sink.sendall(data[:max(1, len(data) // 2)])
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()
