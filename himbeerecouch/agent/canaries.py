"""Reads the heartbeats of the canaries of a pending rollout, and only then.

A device that holds a group document back (a staged rollout waits for its
canaries) must learn how the canaries fare.  This thread reads their
heartbeats in one request (``_all_docs`` with their ids) every ``period``
seconds while there is something to watch, and posts :class:`CanaryReports`
to the supervisor; with nothing to watch it sends no request at all.  So a
fleet adds requests only on the devices that wait, and only while they wait.
"""
import logging
import threading
from dataclasses import dataclass

from .. import couch

log = logging.getLogger("himbeerecouch.canaries")


@dataclass
class CanaryReports:
    """The canaries' heartbeats: ``{MacID str: heartbeat document or None}``."""
    heartbeats: dict


class CanaryWatcher(threading.Thread):
    def __init__(self, post, url, database, login, period, ca_file=None):
        super().__init__(name="canaries", daemon=True)
        self.post = post
        self.url, self.database, self.login = url, database, login
        self.period, self.ca_file = max(1.0, period), ca_file
        self._watch = frozenset()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._said = None

    def watch(self, macids):
        """Read the heartbeats of these devices from now on (an empty set: none)."""
        macids = frozenset(macids)
        if macids != self._watch:
            self._watch = macids
            self._wake.set()

    def stop(self):
        self._stopping.set()
        self._wake.set()

    def run(self):
        db, generation = None, None
        while not self._stopping.is_set():
            macids = self._watch
            if not macids:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                if db is None or generation != self.login.generation:
                    generation = self.login.generation
                    db = couch.open_database(self.url, self.database, self.login.user,
                                             self.login.password, ca_file=self.ca_file)
                rows = db.view("_all_docs", keys=["%s_heartbeat" % m for m in sorted(macids)],
                               include_docs=True)
                found = {row.key.rsplit("_", 1)[0]: row.doc for row in rows}
                self.post(CanaryReports({m: found.get(m) for m in macids}))
                self._said = None
            except couch.TRANSPORT_ERRORS as e:
                db = None
                self.login.saw(e)
                if self._said != couch.describe(e):
                    self._said = couch.describe(e)
                    log.warning("cannot read the canaries' heartbeats: %s", self._said)
            self._wake.wait(self.period)
            self._wake.clear()
