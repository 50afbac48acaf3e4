"""Small helpers for the tests: polling with a deadline, reading a _changes feed."""
import queue
import secrets
import socket
import threading
import time
import urllib.parse

import couchdb
import couchdb.http
import psutil

from himbeerecouch import identity

_NOTHING = object()

DEVICE_ROLE = "raspberry"
PI_OUI = 0xB827EB000000  # Raspberry Pi Foundation


class Device:
    """A device user: ``macid`` (int), ``serial``, ``user``, ``password``, ``url``
    (the server's URL with the device's credentials)."""

    def __init__(self, macid, serial, password, url, roles):
        self.macid = macid
        self.serial = serial
        self.user = identity.device_user(macid)
        self.password = password
        self.url = url
        self.roles = list(roles)

    def __repr__(self):
        return "Device(macid=%d, user=%r)" % (self.macid, self.user)


def random_macid():
    return PI_OUI + secrets.randbits(24)


def grant_members(database, role=DEVICE_ROLE):
    """Make ``role`` the members of ``database`` (a ``couchdb.Database`` as admin)."""
    security = {"admins": {"names": [], "roles": []},
                "members": {"names": [], "roles": [role]}}
    if database.security != security:
        database.security = security


def create_device_user(users, url, macid=None, serial=None, roles=(DEVICE_ROLE,)):
    """Create the ``_users`` document of a device (``users``: the ``_users``
    database as admin) with the password the agent computes; return a Device.
    ``url`` is the server's URL without credentials."""
    macid = random_macid() if macid is None else int(macid)
    serial = secrets.token_hex(8) if serial is None else serial
    password = identity.device_password(macid, serial)
    user = identity.device_user(macid)
    users.save({"_id": "org.couchdb.user:" + user, "type": "user", "name": user,
                "roles": list(roles), "password": password})
    return Device(macid, serial, password, url_with_credentials(url, user, password), roles)


def url_with_credentials(url, user, password):
    """``http://h:1`` + user + password -> ``http://user:password@h:1``."""
    parts = urllib.parse.urlsplit(url)
    netloc = "%s:%s@%s" % (urllib.parse.quote(user, safe=""),
                           urllib.parse.quote(password, safe=""), parts.netloc)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def gone(pid):
    """True when ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def poll_until(predicate, timeout=10.0):
    """Like wait_for, but returns False instead of raising at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def alive(pid):
    """Is process ``pid`` running (a zombie is not)?"""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate, timeout=10, interval=0.05, message=""):
    """Call ``predicate()`` until it returns something truthy; return that.

    Raises ``AssertionError`` with ``message`` and the last value (or the last
    exception the predicate raised) when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    last = _NOTHING
    while True:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - reported if the deadline passes
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError("%s (waited %.1f s; last value: %r)"
                                 % (message or "condition not met", timeout, last))
        time.sleep(interval)


class _RecordingPool(couchdb.http.ConnectionPool):
    """A connection pool that remembers its connections, so they can be shut."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opened = []

    def get(self, url):
        conn = super().get(url)
        self.opened.append(conn)
        return conn


class ChangesFeed:
    """A continuous ``_changes`` feed read by the ``couchdb`` client in a thread.

    ``ChangesFeed(server_url, dbname, timeout=5, **opts)`` calls
    ``Database.changes(feed='continuous', **opts)`` of the ``couchdb`` client on a
    session of its own with socket timeout ``timeout`` and queues every change.
    ``get()`` / ``wait_for_id()`` take them out; ``close()`` shuts the connection.
    When the feed ends, ``error`` holds the exception it ended with (or None) and
    ``ended`` is set.
    """

    def __init__(self, server_url, dbname, timeout=5, **opts):
        opts.setdefault("feed", "continuous")
        self.session = couchdb.http.Session(timeout=timeout)
        self._pool = _RecordingPool(timeout)
        self.session.connection_pool = self._pool
        # No HEAD request first (as Server[dbname] makes): a refusal shows in the feed.
        server = couchdb.Server(server_url, session=self.session)
        self.db = couchdb.Database(server.resource(dbname), dbname)
        self.opts = opts
        self.changes = queue.Queue()
        self.seen = []
        self.error = None
        self.ended = threading.Event()
        self.closing = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="ChangesFeed")

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        try:
            for change in self.db.changes(**self.opts):
                self.changes.put(change)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            self.ended.set()

    def get(self, timeout=5):
        """The next change; ``AssertionError`` if none comes within ``timeout``."""
        try:
            change = self.changes.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no change within %.1f s (feed ended: %s, error: %r)"
                                 % (timeout, self.ended.is_set(), self.error)) from None
        self.seen.append(change)
        return change

    def wait_for_id(self, doc_id, timeout=5, deleted=None):
        """Read changes until one for ``doc_id`` comes (optionally a deletion or
        not); returns it.  Everything read stays in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no change for %r within %.1f s; seen: %r"
                                     % (doc_id, timeout, self.seen))
            change = self.get(timeout=left)
            if change.get("id") == doc_id and (
                    deleted is None or bool(change.get("deleted")) == deleted):
                return change

    def ids(self):
        return [c.get("id") for c in self.seen]

    def close(self):
        self.closing = True
        for conn in self._pool.opened:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            conn.close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ documents
LOOP = """
import time
def main():
    log("%(tag)s started")
    while not should_quit():
        time.sleep(0.05)
    log("%(tag)s quitting")
"""


def loop_code(tag):
    """A worker that logs ``<tag> started``, runs until asked to quit, then
    logs ``<tag> quitting``."""
    return LOOP % {"tag": tag}


def put_doc(database, doc_id, **fields):
    """Create or replace a document (``database``: a ``couchdb.Database`` as
    admin) the way the web page saves it: every field replaced."""
    doc = database.get(doc_id) or {"_id": doc_id}
    for key in [k for k in doc if not k.startswith("_")]:
        del doc[key]
    doc.update(fields)
    database.save(doc)
    return doc


def delete_doc(database, doc_id):
    database.delete(database[doc_id])
