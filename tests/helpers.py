"""Small helpers for the tests: polling with a deadline, reading a _changes feed."""
import queue
import socket
import threading
import time
import urllib.parse

import couchdb
import couchdb.http

_NOTHING = object()


def url_with_credentials(url, user, password):
    """``http://h:1`` + user + password -> ``http://user:password@h:1``."""
    parts = urllib.parse.urlsplit(url)
    netloc = "%s:%s@%s" % (urllib.parse.quote(user, safe=""),
                           urllib.parse.quote(password, safe=""), parts.netloc)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
