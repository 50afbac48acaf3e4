"""Follows this device's documents in the database and turns them into events.

The feed thread owns no state of the supervisor: it posts events into the
supervisor's queue.  On every (re)connection it first posts a
:class:`Snapshot` of all of this device's documents, then one
:class:`Changed` per change of the continuous ``_changes`` feed, resuming from
the last sequence it delivered.  Any error (server down, refused, a dropped
connection, no heartbeat line for three periods) posts :class:`FeedDown` and
retries with exponential backoff, forever, until :meth:`Feed.stop`; while it
waits it probes the server every second, and reconnects at once when a server
that was down answers again (a long outage must not leave the device a whole
backoff step behind).

Server-side filtering uses a Mango selector (CouchDB 2+, no design document
needed).  Tombstones carry no ``type``, so the selector also lets every
deletion through; deletions of documents the supervisor does not know are
ignored by it.  The supervisor checks ``type`` again on every document.
"""
import logging
import threading
import time
from dataclasses import dataclass

from .. import couch
from ..documents import command_type, device_types
from ..groups import device_doc_id, group_type

log = logging.getLogger("himbeerecouch.feed")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
PROBE_PERIOD = 1.0     # while waiting to retry, ask this often whether the server is back
PROBE_TIMEOUT = 2.0


@dataclass
class Snapshot:
    """All of this device's documents, as of ``seq``."""
    feed: object
    docs: dict        # doc id -> document
    seq: object


@dataclass
class Changed:
    """One document changed (``doc`` is None when it was deleted)."""
    feed: object
    doc_id: str
    doc: dict
    seq: object


@dataclass
class FeedDown:
    feed: object
    error: str
    retry_in: float


def device_selector(macid, tags=()):
    """This device's code and commands, its device document, the group
    documents of its ``tags``, and every deletion."""
    types = list(device_types(macid)) + [command_type(macid)] + [group_type(t) for t in tags]
    return {"selector": {"$or": [{"type": {"$in": types}}, {"_id": device_doc_id(macid)},
                                 {"_deleted": True}]}}


class Feed(threading.Thread):
    """The thread that follows the ``_changes`` feed of one database for one device."""

    def __init__(self, post, url, database, login, macid, heartbeat=5.0,
                 ca_file=None, tags=()):
        super().__init__(name="feed", daemon=True)
        self.post = post
        self.url, self.database = url, database
        self.login = login           # agent/login.py: who it logs in as, and how
        self.macid = macid
        self.tags = tuple(tags)      # the selector passes the group documents of these
        self.heartbeat = heartbeat
        self.ca_file = ca_file
        self.seq = None
        self._connected = False
        self._stopping = threading.Event()
        self._unusable = set()

    def stop(self):
        """Ask the thread to end; it does at its next line or timeout."""
        self._stopping.set()

    @property
    def stopping(self):
        return self._stopping.is_set()

    def run(self):
        delay = BACKOFF_FIRST
        while not self.stopping:
            unreachable = True
            try:
                self._follow()
                error = "the server closed the changes feed"
            except couch.TRANSPORT_ERRORS as e:
                error = couch.describe(e)
                self.login.saw(e)
                # The server answered and refused (a wrong password, a missing
                # database): its coming "back" cannot change that.
                unreachable = not couch.answered(e)
            except Exception as e:   # a bug here must not end the feed for good
                log.exception("feed failed unexpectedly")
                error = "%s: %s" % (type(e).__name__, e)
            if self.stopping:
                break
            if self._connected:
                delay = BACKOFF_FIRST
            self.post(FeedDown(self, error, delay))
            if self._wait_to_retry(delay, unreachable):
                break
            delay = min(BACKOFF_MAX, delay * 2)

    def _wait_to_retry(self, delay, unreachable):
        """Wait ``delay`` seconds before the next try, or less: once a server
        that was ``unreachable`` (or seen down meanwhile) answers again, the
        backoff has done its job and waiting on would only keep the device out
        of sync.  True: stop.
        """
        end = time.monotonic() + delay
        seen_down = unreachable
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self._stopping.wait(min(PROBE_PERIOD, left)):
                return True
            if couch.server_answers(self.url, timeout=PROBE_TIMEOUT,
                                    ca_file=self.ca_file):
                if seen_down:
                    log.info("the server answers again: reconnecting now")
                    return False
            else:
                seen_down = True

    def _follow(self):
        self._connected = False
        user, password = self.login.user, self.login.password
        db = couch.open_database(self.url, self.database, user, password, ca_file=self.ca_file)
        selector = device_selector(self.macid, self.tags)
        # The full list first, after every reconnection: whatever changed
        # while we were away is in it, deletions included.
        try:
            result = db.changes(filter="_selector", _selector=selector, include_docs=True,
                                style="main_only")
        except RecursionError:
            # A document nests deeper than the JSON decoder recurses: list the
            # changes without documents, then read them one at a time.
            result = db.changes(filter="_selector", _selector=selector, style="main_only")
            for row in result.get("results", []):
                if not row.get("deleted") and self._usable(row["id"]):
                    row["doc"] = self._read(db, row)
        docs = {}
        for row in result.get("results", []):
            if not row.get("deleted") and row.get("doc") is not None and self._usable(row["id"]):
                docs[row["id"]] = row["doc"]
        self.seq = result.get("last_seq")
        self._connected = True
        self.post(Snapshot(self, docs, self.seq))
        # A separate session whose socket timeout is three heartbeat periods:
        # the client skips heartbeat lines, so a feed that goes quiet without
        # closing is noticed only through this timeout.
        feed_db = couch.open_database(self.url, self.database, user, password,
                                      timeout=3 * self.heartbeat, ca_file=self.ca_file)
        while True:
            try:
                for row in feed_db.changes(feed="continuous", since=self.seq, include_docs=True,
                                           heartbeat=int(self.heartbeat * 1000),
                                           filter="_selector", _selector=selector):
                    if self.stopping:
                        return
                    if "last_seq" in row:
                        return
                    if "id" not in row or not self._usable(row["id"]):
                        continue
                    doc = None if row.get("deleted") else row.get("doc")
                    self.seq = row.get("seq", self.seq)
                    self.post(Changed(self, row["id"], doc, self.seq))
                return
            except RecursionError:
                self._catch_up(db, selector)

    def _catch_up(self, db, selector):
        """The changes since ``seq``, their documents read one at a time."""
        result = db.changes(filter="_selector", _selector=selector, since=self.seq,
                            style="main_only")
        for row in result.get("results", []):
            if "id" not in row or not self._usable(row["id"]):
                continue
            doc = None if row.get("deleted") else self._read(db, row)
            self.seq = row.get("seq", self.seq)
            self.post(Changed(self, row["id"], doc, self.seq))
        self.seq = result.get("last_seq", self.seq)

    def _read(self, db, row):
        """One document; a stand-in saying why when it nests too deeply to decode."""
        try:
            return db.get(row["id"])
        except RecursionError:
            log.error("document %s nests too deeply to be read; fix or delete it", row["id"])
            rev = (row.get("changes") or [{}])[0].get("rev", "")
            return {"_id": row["id"], "_rev": rev, "type": self.macid,
                    "_unreadable": "its JSON nests too deeply for this agent to read it"}

    def _usable(self, doc_id):
        """False (said once) for an id no request can name: a lone surrogate."""
        try:
            doc_id.encode("utf-8")
            return True
        except UnicodeEncodeError:
            if doc_id not in self._unusable:
                self._unusable.add(doc_id)
                log.error("document %s ignored: its id holds a lone surrogate, which no "
                          "request to the database can name", ascii(doc_id))
            return False
