"""Command round trip: PUT of a command document -> its result visible in the database.

"Visible" is seen by following the database's continuous ``_changes`` feed as
the admin (no polling that would load the server): the time is the arrival
of the first change of the document that carries ``ret``.  The PUT time is
taken just before the request.
"""
import threading
import time

import couchdb


class ResultWatcher:
    """Follows ``_changes`` of one database; remembers when each result arrived."""

    def __init__(self, admin_url, db_name):
        session = couchdb.http.Session(timeout=30)
        server = couchdb.Server(admin_url, session=session)
        self.db = server[db_name]
        self._seen = {}            # doc id -> arrival time.time() of its result
        self.claimed = {}          # doc id -> arrival time.time() of its claim
        self._cond = threading.Condition()
        self._stopping = False
        threading.Thread(target=self._follow, daemon=True, name="results").start()

    def _follow(self):
        while not self._stopping:
            try:
                for row in self.db.changes(feed="continuous", since="now", include_docs=True,
                                           heartbeat=1000):
                    now = time.time()
                    if self._stopping:
                        return
                    doc = row.get("doc") or {}
                    if "claimed_at" in doc:
                        self.claimed.setdefault(row["id"], now)
                    if "ret" in doc or "error" in doc:
                        with self._cond:
                            self._seen.setdefault(row["id"], now)
                            self._cond.notify_all()
            except Exception:   # noqa: BLE001 - a dropped feed: follow again
                time.sleep(0.1)

    def wait(self, doc_id, timeout=30):
        """Arrival time of ``doc_id``'s result."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while doc_id not in self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("bench: no result for command %s within %.0f s"
                                       % (doc_id, timeout))
                self._cond.wait(min(left, 0.5))
            return self._seen[doc_id]

    def stop(self):
        self._stopping = True


def round_trips(db, watcher, macids, count, gap=0.25, cmd=("true",), claims=None):
    """``count`` sequential commands, round-robin over ``macids``; ms each.

    ``claims``: a list that gets, for each, the ms to its claim being visible.
    """
    out = []
    for i in range(count):
        macid = macids[i % len(macids)]
        doc_id = "bench-cmd-%d-%d-%d" % (macid, i, time.monotonic_ns())
        t0 = time.time()
        db.save({"_id": doc_id, "type": "%d_cmd" % macid, "cmd": list(cmd)})
        out.append((watcher.wait(doc_id) - t0) * 1000)
        if claims is not None and doc_id in watcher.claimed:
            claims.append((watcher.claimed[doc_id] - t0) * 1000)
        time.sleep(gap)
    return out
