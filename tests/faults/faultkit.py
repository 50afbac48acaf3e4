"""Tools of the fault suite: a misbehaving HTTP proxy, a conflicting writer,
and what a user looks at (the heartbeat, the log, the process table).

Everything talks to 127.0.0.1 only.  Every wait has a deadline; nothing sleeps
a fixed time and hopes.
"""
import json
import os
import secrets
import select
import socket
import threading

import couchdb
import couchdb.http
import psutil

from helpers import create_device_user, grant_members, wait_for

from himbeerecouch.sandbox import proctree

HOST = "127.0.0.1"

# The worker every fault test keeps beside the faulty ones: it must go on ticking.
STEADY = """\
import time
def main():
    i = 0
    while not should_quit():
        i += 1
        log("tick", i)
        for _ in range(5):
            if should_quit():
                break
            time.sleep(0.1)
"""


# ------------------------------------------------------------------ what users see
def heartbeat(database, macid, predicate=lambda hb: True, timeout=25,
              message="heartbeat"):
    """The device's heartbeat document once ``predicate(hb)`` holds."""
    def check():
        hb = database.get("%d_heartbeat" % macid)
        return hb if hb is not None and predicate(hb) else None
    return wait_for(check, timeout=timeout, interval=0.2, message=message)


def worker_of(hb, doc_id):
    """The heartbeat's entry of the worker of ``doc_id``, or {}."""
    return next((w for w in hb.get("workers", []) if w.get("doc_id") == doc_id), {})


def worker_hb(database, macid, doc_id, predicate, timeout=25, message=None):
    """The heartbeat entry of ``doc_id`` once ``predicate(entry)`` holds."""
    hb = heartbeat(database, macid, lambda hb: predicate(worker_of(hb, doc_id)),
                   timeout=timeout, message=message or "heartbeat entry of %s" % doc_id)
    return worker_of(hb, doc_id)


def log_document(database, macid, doc_id, predicate, timeout=25):
    """The log document ``<MacID>_log_<doc id>`` once ``predicate(texts)`` holds."""
    def check():
        doc = database.get("%d_log_%s" % (macid, doc_id))
        if doc is None:
            return None
        texts = [line[2] for line in doc.get("lines", [])]
        return doc if predicate(texts) else None
    return wait_for(check, timeout=timeout, interval=0.2,
                    message="log document of %s" % doc_id)


def tagged(macid):
    """Live processes whose HIMBEERECOUCH_TAG starts with ``<macid>/``."""
    out = []
    for proc in proctree.find_tagged("%d/" % macid):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            pass
    return out


def assert_nothing_left(macid, timeout=10):
    """No process of the device is left (checked after the agent stopped)."""
    try:
        wait_for(lambda: not tagged(macid), timeout=timeout, interval=0.1)
    except AssertionError:
        desc = []
        for p in tagged(macid):
            try:
                desc.append("%d %s" % (p.pid, " ".join(p.cmdline())))
            except psutil.Error:
                pass
        raise AssertionError("processes of device %d left behind: %s" % (macid, desc))


def dead(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def steady_ok(agent, doc_id, pid, tick_pattern=None):
    """The supervisor is up, ``doc_id`` still runs as ``pid`` and still works."""
    assert agent.proc.poll() is None, "the supervisor died:\n" + agent.output()[-3000:]
    proc = agent.worker(doc_id)
    assert proc is not None and proc.pid == pid, \
        "steady worker %s was restarted or is gone (%r, was %d)" % (doc_id, proc, pid)
    if tick_pattern:
        agent.wait_line(tick_pattern, after=agent.mark(), timeout=15)


# ------------------------------------------------------------------ databases
class Provisioned:
    """A database with a device user, on ``couch`` (the session's server)."""

    def __init__(self, couch, prefix="fault"):
        self.couch = couch
        self.name = "%s/%s" % (prefix, secrets.token_hex(6))
        self.admin = couch.admin.create(self.name)
        grant_members(self.admin)
        self.users = couch.admin["_users"]
        self.device = create_device_user(self.users, couch.url)

    def close(self):
        try:
            doc = self.users.get("org.couchdb.user:" + self.device.user)
            if doc is not None:
                self.users.delete(doc)
        except couchdb.http.HTTPError:
            pass
        try:
            del self.couch.admin[self.name]
        except couchdb.http.HTTPError:
            pass


def _bulk(couch, dbname, docs):
    import base64
    import urllib.parse
    import urllib.request
    url = "%s/%s/_bulk_docs" % (couch.url, urllib.parse.quote(dbname, safe=""))
    auth = base64.b64encode(("%s:%s" % (couch.admin_name, couch.admin_password))
                            .encode("utf-8")).decode("ascii")
    body = json.dumps({"docs": docs}, ensure_ascii=True)
    request = urllib.request.Request(url, data=body.encode("ascii"), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Basic " + auth})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def raw_put(couch, dbname, doc):
    """Save a new document with the JSON written by hand (``ensure_ascii``), through
    ``_bulk_docs``: lone surrogates, in the content or the id, which the ``couchdb``
    client can neither send nor name in a URL, stay escaped.  Returns the new
    revision, or None when the server refuses the document: the test server
    stores such ids, CouchDB answers 400 (an id must be valid UTF-8)."""
    import urllib.error
    try:
        answer = _bulk(couch, dbname, [doc])[0]
    except urllib.error.HTTPError as e:
        if e.code == 400:
            return None
        raise
    return answer.get("rev") if answer.get("ok", "rev" in answer) else None


def raw_delete(couch, dbname, doc_id, rev):
    _bulk(couch, dbname, [{"_id": doc_id, "_rev": rev, "_deleted": True}])


def admin_db(admin_url, name):
    server = couchdb.Server(admin_url, session=couchdb.http.Session(timeout=30))
    return server[name]


def command(database, macid, doc_id, cmd, **fields):
    doc = {"_id": doc_id, "type": "%d_cmd" % macid, "cmd": cmd}
    doc.update(fields)
    database.save(doc)
    return doc_id


def result(database, doc_id, timeout=30):
    def check():
        doc = database.get(doc_id)
        return doc if doc is not None and ("ret" in doc or "error" in doc) else None
    return wait_for(check, timeout=timeout, interval=0.1, message="result of %s" % doc_id)


# ------------------------------------------------------------------ a conflicting writer
class Hammer(threading.Thread):
    """Saves ``doc_id`` over and over (as another writer would), ignoring conflicts.

    Each save sets ``field`` to a counter; ``last`` is the last value that was
    stored.  ``stop()`` ends it.
    """

    def __init__(self, admin_url, dbname, doc_id, field="other_writer", gap=0.02):
        super().__init__(daemon=True, name="Hammer-%s" % doc_id)
        self.db = admin_db(admin_url, dbname)
        self.doc_id, self.field, self.gap = doc_id, field, gap
        self.saved = 0
        self.last = None
        self._halt = threading.Event()

    def start(self):
        super().start()
        return self

    def run(self):
        i = 0
        while not self._halt.is_set():
            i += 1
            try:
                doc = self.db.get(self.doc_id)
                if doc is not None:
                    doc[self.field] = i
                    self.db.save(doc)
                    self.saved += 1
                    self.last = i
            except (couchdb.http.ResourceConflict, couchdb.http.HTTPError, OSError):
                pass
            self._halt.wait(self.gap)

    def stop(self):
        self._halt.set()
        self.join(10)


# ------------------------------------------------------------------ a misbehaving proxy
INJECTED = json.dumps({"error": "unknown_error", "reason": "injected by the fault suite"})


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of a server on 127.0.0.1.

    It forwards each request on a fresh upstream connection (``Connection:
    close``), streaming the answer (continuous feeds included).  It can:

    - ``fail(predicate)``: answer ``500`` to every request for which
      ``predicate(method, path)`` is true (``fail(None)`` stops that);
    - ``refuse()``: stop listening and cut every connection (the server is
      unreachable: connections are refused); ``listen()`` takes them again on
      the same port.
    """

    def __init__(self, target_port):
        self.target = (HOST, int(target_port))
        self.port = None
        self.failures = 0           # 500s answered
        self.requests = []          # (method, path) of every request seen
        self._predicate = None
        self._listener = None
        self._lock = threading.Lock()
        self._conns = set()
        self._stopping = threading.Event()
        self._threads = []

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def reserve(self):
        """Pick a port without listening on it yet (the server is down at start)."""
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        return self

    def start(self):
        return self.listen()

    def listen(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port or 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def refuse(self):
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.drop()

    def drop(self):
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            _close(s)

    def fail(self, predicate):
        self._predicate = predicate

    def stop(self):
        self._stopping.set()
        self.refuse()
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- internals
    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _track(self, *socks):
        with self._lock:
            self._conns.update(socks)

    def _accept(self, listener):
        while not self._stopping.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._track(client)
            self._spawn(self._serve, client)

    def _serve(self, client):
        buf = b""
        try:
            while True:
                head, buf = _read_head(client, buf)
                if head is None:
                    return
                body, buf = _read_body(client, head, buf)
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                method, path = (request_line.split(" ") + ["", ""])[:2]
                with self._lock:
                    self.requests.append((method, path))
                predicate = self._predicate
                if predicate is not None and predicate(method, path):
                    self.failures += 1
                    data = INJECTED.encode()
                    client.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(data) + data)
                    continue
                self._forward(client, head, body)
                return      # the answer said "Connection: close"
        except OSError:
            pass
        finally:
            _close(client)

    def _forward(self, client, head, body):
        lines = head.split(b"\r\n")
        kept = [l for l in lines[1:] if l and not l.lower().startswith(b"connection:")]
        head = b"\r\n".join([lines[0]] + kept + [b"Connection: close"]) + b"\r\n\r\n"
        upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        self._track(upstream)
        try:
            upstream.sendall(head + body)
            while True:
                ready, _, _ = select.select([upstream, client], [], [], 0.5)
                if self._stopping.is_set():
                    return
                if upstream in ready:
                    data = upstream.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
                if client in ready:
                    return      # the client gave up (a feed it closed) or misbehaves
        finally:
            _close(upstream)


def _close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _read_body(sock, head, buf):
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        out = b""
        while True:
            while b"\r\n" not in buf:
                buf += _recv(sock)
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += _recv(sock)
            chunk, buf = buf[:size], buf[size + 2:]
            out += b"%x\r\n" % size + chunk + b"\r\n"
            if size == 0:
                return out, buf
    length = int(headers.get(b"content-length", b"0") or 0)
    while len(buf) < length:
        buf += _recv(sock)
    return buf[:length], buf[length:]


def _recv(sock):
    data = sock.recv(65536)
    if not data:
        raise OSError("connection closed mid-request")
    return data


def state_files(state_dir):
    out = []
    for root, _, files in os.walk(state_dir):
        out += [os.path.join(root, f) for f in files]
    return out

