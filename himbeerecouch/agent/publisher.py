"""Tells the database what this device is doing: the heartbeat and the log documents.

A thread of its own, so that a slow or absent server never blocks the loop.
The loop hands it the newest state with :meth:`Publisher.submit` (only the
latest counts); the thread writes the heartbeat document at most once a
second after a change and at least every ``interval`` seconds, and the log
documents of workers that printed at most every ``LOG_PERIOD`` seconds, and
the history and the log archive (history.py, logarchive.py) at most once a
minute.  A write that fails is retried at the next turn; nothing else waits
for it, and an outage is said in a few lines (:mod:`.outage`), not one per retry.

The heartbeat goes through an ``insert_with_timestamp`` update handler, so
that ``timestamp`` is the server's clock: the lab's ``nedm_default`` first (as
the old agent did), then provisioning's ``himbeerecouch``; where neither
exists, the device's clock, marked ``"timestamp_source": "device"``.
"""
import email.utils
import logging
import threading
import time

import couchdb.http

from .. import __version__, couch
from .history import History
from .logarchive import LogArchive
from .logbook import Logbook, iso
from .outage import Outage
from .systeminfo import ProcessMeter, device_info, ip_address

log = logging.getLogger("himbeerecouch.publisher")

STAMP_DESIGNS = ("nedm_default", "himbeerecouch")
MIN_GAP = 1.0          # coalesce heartbeats of bursts of state changes
LOG_PERIOD = 5.0
RETRY = 5.0
PROBE_AGAIN = 600.0    # look for an update handler again (after provisioning, say)


def rfc1123(t=None):
    """``Thu, 26 Nov 2026 23:30:00 GMT``, whatever the locale."""
    return email.utils.formatdate(t, usegmt=True)


class Publisher(threading.Thread):
    def __init__(self, url, database, login, interval, state_dir, interface=None,
                 ca_file=None):
        super().__init__(name="publisher", daemon=True)
        self.login = login            # agent/login.py: who it writes as, and how
        self.url, self.database = url, database
        self.ca_file = ca_file
        self.interval = interval
        self.state_dir, self.interface = state_dir, interface
        self.history = History(login.macid, login.user)
        self.logbook = Logbook(login.macid, LogArchive(login.macid, login.user))
        self.heartbeat_id = "%d_heartbeat" % login.macid
        self.started = time.time()
        self._db = None
        self._db_generation = None    # the login's, when _db was made
        self._fields = None
        self._changed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._meter = ProcessMeter()
        self._design = None           # the update handler that works, or "" for none
        self._probed_at = 0.0
        self._outage = Outage(log, "the heartbeat and logs")
        self._revs = {}               # doc id -> the document as we last wrote it
        self._dropped_said = {}       # worker doc id -> dropped lines already reported

    # ------------------------------------------------------------ called by the loop
    def submit(self, fields):
        """The newest state of the supervisor (a dict of heartbeat fields)."""
        with self._lock:
            self._fields, self._changed = fields, True
        self._wake.set()

    def retarget(self, url, database):
        with self._lock:
            self.url, self.database, self._db, self._design = url, database, None, None
        self._wake.set()

    def stop(self, final_fields=None):
        """Write a last heartbeat (best effort, bounded) and end the thread."""
        if final_fields is not None:
            self.submit(final_fields)
        self._stopping = True
        self._wake.set()
        self.join(timeout=5)

    # ------------------------------------------------------------ the thread
    def run(self):
        next_beat = 0.0
        next_logs = 0.0
        last_beat = 0.0
        while True:
            now = time.monotonic()
            with self._lock:
                changed, fields = self._changed, self._fields
            due = fields is not None and (now >= next_beat or (changed and now - last_beat >= MIN_GAP))
            if due or (self._stopping and changed):
                with self._lock:
                    self._changed = False
                ok = self._beat(fields)
                last_beat = now
                next_beat = now + (self.interval if ok else min(RETRY, self.interval))
                if not ok:
                    with self._lock:
                        self._changed = self._changed or changed
            if now >= next_logs or self._stopping:
                ok = self._write_logs()
                next_logs = now + (LOG_PERIOD if ok else RETRY)
            if self.history.due() and fields is not None:
                self._write_history()
            if self._stopping:
                return
            with self._lock:
                changed = self._changed
            wait = min(next_beat, next_logs) - time.monotonic()
            if changed:
                wait = min(wait, last_beat + MIN_GAP - time.monotonic())
            self._wake.wait(max(0.05, wait))
            self._wake.clear()

    def _database(self):
        if self._db is None or self._db_generation != self.login.generation:
            self._db_generation = self.login.generation
            self._db = couch.open_database(self.url, self.database, self.login.user,
                                           self.login.password, timeout=10,
                                           ca_file=self.ca_file)
        return self._db

    def _failed(self, what, error):
        self.login.saw(error)
        self._outage.failed("%s: %s" % (what, couch.describe(error)))
        return False

    # ------------------------------------------------------------ heartbeat
    def heartbeat_fields(self, fields):
        doc = dict(fields)
        pids = set()
        # The spare runner's memory counts too: it is what a reload costs to keep.
        spare = [doc["spare"]] if doc.get("spare") else []
        for w in doc.get("workers", []) + spare:
            w["cpu_percent"], w["rss_mb"] = self._meter.measure(w.get("pid"))
            pids.add(w.get("pid"))
        self._meter.forget_except(pids)
        doc.update(device_info(self.state_dir))
        doc.update({
            "type": "heartbeat",
            "macid": self.login.macid,
            "ip": ip_address(self.interface, self.url),
            "version": __version__,
            "uptime": int(time.time() - self.started),
            "heartbeat_interval": self.interval,
            "sent_at": iso(time.time()),
            "logs_dropped": self.logbook.dropped(),
        })
        return doc

    def _beat(self, fields):
        doc = self.heartbeat_fields(fields)
        ok = self._send(doc)
        self.history.record(doc, reached=ok)
        return ok

    def _send(self, doc):
        try:
            db = self._database()
            if self._design is None or time.monotonic() - self._probed_at > PROBE_AGAIN:
                self._design = self._find_handler(db, doc)
                if self._design:
                    return self._ok()
            if self._design:
                doc["timestamp_source"] = "server"
                couch.stamp_document(db, self._design, self.heartbeat_id, doc)
            else:
                self._save_with_device_clock(db, doc)
            return self._ok()
        except couch.TRANSPORT_ERRORS + (couch.CouchError,) as e:
            return self._failed("heartbeat", e)

    def _find_handler(self, db, doc):
        """Write ``doc`` through the first handler that exists; its name, or ''."""
        self._probed_at = time.monotonic()
        doc = dict(doc, timestamp_source="server")
        for design in STAMP_DESIGNS:
            try:
                couch.stamp_document(db, design, self.heartbeat_id, doc)
                log.info("heartbeat timestamps come from the server (_design/%s)", design)
                return design
            except couchdb.http.ResourceNotFound:
                continue
        log.info("no insert_with_timestamp handler in the database: "
                 "heartbeat timestamps come from this device's clock")
        return ""

    def _save_with_device_clock(self, db, doc):
        doc = dict(doc, timestamp=rfc1123(), timestamp_source="device",
                   created_by=self.login.user)
        self._save(db, self.heartbeat_id, doc)

    def _ok(self):
        self._outage.ok()
        return True

    def _save(self, db, doc_id, fields):
        """Save ``fields`` as ``doc_id``: over what we last wrote, else merged.

        Either way what another writer added stays: the document we last
        wrote (and merged their fields into) is the base of the next write.
        """
        def merge(doc):
            created_by = doc.get("created_by", self.login.user)
            doc.update(fields)
            doc["created_by"] = created_by      # may never change
            return doc
        self._revs[doc_id] = couch.update_document(db, doc_id, merge,
                                                   current=self._revs.get(doc_id))

    # ------------------------------------------------------------ history
    def _write_history(self):
        """The history rings and the log archive (each at most once a minute)."""
        try:
            db = self._database()
            self.history.write(db)
            self.logbook.archive.write(db)
            return self._ok()
        except couch.TRANSPORT_ERRORS + (couch.CouchError,) as e:
            return self._failed("history", e)

    # ------------------------------------------------------------ logs
    def _write_logs(self):
        pending = self.logbook.pending()
        if not pending:
            return True
        try:
            db = self._database()
            for worker_doc_id, fields, count in pending:
                doc_id = self.logbook.doc_id(worker_doc_id)
                fields = dict(fields, type="%d_log" % self.login.macid, doc_id=worker_doc_id,
                              created_by=self.login.user, updated_at=iso(time.time()))
                self._save(db, doc_id, fields)
                self.logbook.written(worker_doc_id, count)
                said = self._dropped_said.get(worker_doc_id, 0)
                if fields["dropped"] > said:
                    log.warning("%s: %d log line(s) could not be kept for the database "
                                "while it was unreachable", fields["name"],
                                fields["dropped"] - said, extra={"doc_id": worker_doc_id})
                    self._dropped_said[worker_doc_id] = fields["dropped"]
            return self._ok()
        except couch.TRANSPORT_ERRORS + (couch.CouchError,) as e:
            return self._failed("log documents", e)
