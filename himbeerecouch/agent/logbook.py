"""The last lines of each worker, kept for the database.

Every line a worker prints (and every line the supervisor says about it)
goes into a ring buffer of that worker: a bounded deque, so a flood or a long
server outage cannot grow memory.  The publisher writes the buffers of the
workers that printed into one document per worker, ``<MacID>_log_<doc id>``,
at most every few seconds.  Lines that fell out of the ring before they could
be written are counted, and the count is said in the document and the log.
Every line also goes to the log archive (logarchive.py), which keeps older days.
"""
import collections
import threading
import time

from .printer import SUPERVISOR

LINES = 200


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class WorkerLog:
    def __init__(self, name):
        self.name = name
        self.lines = collections.deque(maxlen=LINES)
        self.unwritten = 0     # lines added since the last successful write
        self.dropped = 0       # lines that were never written (cumulative)


class Logbook:
    def __init__(self, macid, archive=None):
        self.macid = macid
        self.archive = archive  # a LogArchive that keeps the older lines, or None
        self._lock = threading.Lock()
        self._logs = {}        # doc id -> WorkerLog

    def doc_id(self, worker_doc_id):
        return "%d_log_%s" % (self.macid, worker_doc_id)

    def add(self, message):
        """Printer subscriber: keep lines that belong to a worker."""
        if message.doc_id is None:
            return
        stream = "agent" if message.source == SUPERVISOR else message.stream
        with self._lock:
            log = self._logs.get(message.doc_id)
            if log is None:
                log = self._logs[message.doc_id] = WorkerLog(message.source)
            if message.source != SUPERVISOR:
                log.name = message.source
            if log.unwritten >= LINES:
                log.dropped += 1          # the oldest unwritten line falls out now
            line = [iso(message.time), stream, message.text]
            log.lines.append(line)
            log.unwritten = min(log.unwritten + 1, LINES)
            if self.archive is not None:
                self.archive.add(message.doc_id, log.name, line)

    def pending(self):
        """``[(doc id, fields, count)]`` of the logs with unwritten lines."""
        out = []
        with self._lock:
            for doc_id, log in self._logs.items():
                if log.unwritten:
                    out.append((doc_id, {"name": log.name, "lines": list(log.lines),
                                         "dropped": log.dropped}, log.unwritten))
        return out

    def dropped(self):
        """Lines of all workers that never reached the database."""
        with self._lock:
            return sum(log.dropped for log in self._logs.values())

    def written(self, doc_id, count):
        with self._lock:
            log = self._logs.get(doc_id)
            if log is not None:
                log.unwritten = max(0, log.unwritten - count)

    def forget(self, doc_id):
        with self._lock:
            self._logs.pop(doc_id, None)
