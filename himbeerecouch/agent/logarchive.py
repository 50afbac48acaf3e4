"""Older log lines than the last 200: one document per worker and day, for a week.

Every line the logbook keeps for a worker is also queued here, and written at
most once a minute into ``<MacID>_logarchive_<doc id>_<n>``, ``n`` being the
day number (days since 1970) modulo ``DAYS``: the document of a day is
overwritten in place a week later, so the oldest day goes away without a
deletion (a device may delete nothing).  ``"type": "<MacID>_logarchive"``,
``day`` (``2026-12-01``, UTC), ``lines`` (``[time, stream, text]``, as in the
log document) and ``dropped``.  A day keeps at most ``DAY_BYTES`` of text, its
latest lines; what had to go is counted in ``dropped``.  So a worker's archive
is at most ``DAYS`` documents of about ``DAY_BYTES`` each.
"""
import collections
import threading
import time

from .. import couch

DAYS = 7
DAY_BYTES = 1 << 20
LINE_OVERHEAD = 32      # the time, the stream and the JSON around a line's text


def _size(line):
    return len(line[2]) + LINE_OVERHEAD


def _trim(lines, budget=DAY_BYTES):
    """The latest of ``lines`` that fit in ``budget``; and how many had to go."""
    total, keep = 0, 0
    for line in reversed(lines):
        total += _size(line)
        if total > budget:
            break
        keep += 1
    return lines[len(lines) - keep:], len(lines) - keep


class LogArchive:
    def __init__(self, macid, user, clock=time.time):
        self.macid, self.user, self.clock = macid, user, clock
        self._lock = threading.Lock()
        self._pending = {}     # worker doc id -> (name, deque of (day, line))
        self._bytes = {}       # worker doc id -> bytes pending
        self._dropped = collections.Counter()   # worker doc id -> lines lost before a write

    def doc_id(self, worker_doc_id, day):
        return "%d_logarchive_%s_%d" % (self.macid, worker_doc_id, day % DAYS)

    def add(self, worker_doc_id, name, line):
        """A line ``[iso time, stream, text]`` the logbook kept for a worker."""
        day = int(self.clock() // 86400)
        with self._lock:
            entry = self._pending.get(worker_doc_id)
            if entry is None:
                entry = self._pending[worker_doc_id] = (name, collections.deque())
            entry[1].append((day, line))
            self._bytes[worker_doc_id] = self._bytes.get(worker_doc_id, 0) + _size(line)
            # Bounded while the server is away: the oldest pending lines go first.
            while self._bytes[worker_doc_id] > DAY_BYTES:
                _, old = entry[1].popleft()
                self._bytes[worker_doc_id] -= _size(old)
                self._dropped[worker_doc_id] += 1
            if name and name != entry[0]:
                self._pending[worker_doc_id] = (name, entry[1])    # renamed meanwhile

    def write(self, db):
        """Write what is pending; raises couch errors (the lines then wait)."""
        with self._lock:
            pending, self._pending, self._bytes = self._pending, {}, {}
            dropped, self._dropped = self._dropped, collections.Counter()
        try:
            for worker_doc_id in list(pending):
                name, lines = pending[worker_doc_id]
                by_day = collections.OrderedDict()
                for day, line in lines:
                    by_day.setdefault(day, []).append(line)
                for day, day_lines in by_day.items():
                    self._write_day(db, worker_doc_id, name, day, day_lines,
                                    dropped.pop(worker_doc_id, 0))
                del pending[worker_doc_id]
        except Exception:
            with self._lock:       # put back what was not written, before newer lines
                for worker_doc_id, (name, lines) in pending.items():
                    newer = self._pending.get(worker_doc_id, (name, collections.deque()))[1]
                    lines.extend(newer)
                    self._pending[worker_doc_id] = (name, lines)
                    self._bytes[worker_doc_id] = sum(_size(line) for _, line in lines)
                self._dropped.update(dropped)
            raise

    def _write_day(self, db, worker_doc_id, name, day, lines, dropped):
        date = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))

        def change(doc):
            same_day = doc.get("day") == date and isinstance(doc.get("lines"), list)
            # What another hand left in the document that is not a line is dropped.
            stored = [line for line in doc["lines"] if isinstance(line, list) and len(line) == 3
                      and isinstance(line[2], str)] if same_day else []
            kept, cut = _trim(stored + lines)
            before = doc.get("dropped") if same_day and isinstance(doc.get("dropped"), int) else 0
            doc.update({"type": "%d_logarchive" % self.macid, "doc_id": worker_doc_id,
                        "name": name, "day": date, "lines": kept,
                        "dropped": before + dropped + cut,
                        "created_by": doc.get("created_by", self.user)})
            return doc
        couch.update_document(db, self.doc_id(worker_doc_id, day), change)
