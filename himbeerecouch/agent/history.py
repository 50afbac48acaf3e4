"""The device's own past, kept in the database in a bounded room.

The heartbeat says what *is*; this module keeps what *was*: load, CPU
temperature, free memory and disk, whether the heartbeat reached the server,
and for each worker its state, restarts, CPU and RSS.  Two rings of fixed
length, each one document that is overwritten in place:

- ``<MacID>_history_1m``:  one slot a minute for the last 24 hours (1440 slots);
- ``<MacID>_history_15m``: one slot every 15 minutes for the last 30 days (2880).

Both have ``"type": "<MacID>_history"``.  A slot keeps the worst that was seen
in it (highest load and temperature, least free memory and disk, the most
severe worker state, all restarts), so a short crash or a hot minute is not
averaged away.  A slot in which the agent did not run stays ``null`` (and
``"."`` in a worker's states): a silent device is a visible gap.  A slot in
which the agent ran but no heartbeat reached the server has ``online`` 0.

The documents are written at most once a minute (the 15-minute one only
when its slot changed), so a device left alone for a year takes the same room
as after a month: two documents of at most ``MAX_WORKERS`` workers each.  The
first write after a start reads what the documents already hold and keeps it.
"""
import logging
import threading
import time

from .. import couch
from .logbook import iso

log = logging.getLogger("himbeerecouch.history")

MAX_WORKERS = 8         # workers kept per document (the most recently seen)
MAX_EVENTS = 100        # exact state changes kept in the minute document
WRITE_PERIOD = 60.0     # seconds between writes, at least
RETRY_PERIOD = 15.0     # after a write that failed (the server is away or slow)

# State -> one letter; the order is severity, the worst seen in a slot counts.
STATE_CODES = {"running": "R", "starting": "s", "stopping": "t", "stopped": "S",
               "exited": "E", "backoff": "B", "fatal": "F"}
SEVERITY = "RstSEBF"
NO_DATA = "."

# Device series: the heartbeat field, how two values of one slot combine, rounding.
SERIES = {
    "load": (max, 2),
    "cpu_temperature": (max, 1),
    "memory_free_mb": (min, 0),
    "disk_free_mb": (min, 0),
}
WORKER_SERIES = {"cpu_percent": (max, 1), "rss_mb": (max, 1)}


class Tier:
    def __init__(self, name, step, slots):
        self.name, self.step, self.slots = name, step, slots


TIERS = (Tier("1m", 60, 24 * 60), Tier("15m", 15 * 60, 30 * 24 * 4))


def _combine(how, old, new):
    if new is None:
        return old
    if old is None:
        return new
    return how(old, new)


def _rounded(value, digits):
    """A finite number from a document, rounded (an int for 0 digits); else None."""
    value = _number(value)
    return None if value is None else round(value, digits or None)


def _worse(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a if SEVERITY.index(a) >= SEVERITY.index(b) else b


def _number(value):
    """A finite number from a document, else None (bad input never breaks the ring)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if value == value and abs(value) != float("inf") else None


class Slot:
    """What one slot of one tier saw."""

    __slots__ = ("values", "online", "workers")

    def __init__(self):
        self.values = {}          # series -> value
        self.online = None        # 1: a heartbeat reached the server; 0: none did
        self.workers = {}         # doc id -> {"name", "state", "restarts", series...}

    def worker(self, doc_id, name=None):
        w = self.workers.get(doc_id)
        if w is None:
            w = self.workers[doc_id] = {"name": name, "state": None, "restarts": 0}
        if name:
            w["name"] = name
        return w

    def merge(self, other):
        """Fold ``other`` (read from a stored document) into this slot."""
        for key, (how, _) in SERIES.items():
            self.values[key] = _combine(how, self.values.get(key), other.values.get(key))
        self.online = _combine(max, self.online, other.online)
        for doc_id, ow in other.workers.items():
            w = self.worker(doc_id, ow["name"])
            w["state"] = _worse(w["state"], ow["state"])
            w["restarts"] += ow["restarts"]
            for key, (how, _) in WORKER_SERIES.items():
                w[key] = _combine(how, w.get(key), ow.get(key))


class Ring:
    """The slots of one tier that fall in its window, by slot number (time // step)."""

    def __init__(self, tier):
        self.tier = tier
        self.slots = {}
        self.loaded = False       # the stored document was read and kept
        self.written_slot = None  # the newest slot when last written
        self.rev_doc = None       # the document as last written (saves a read)

    def slot(self, index):
        s = self.slots.get(index)
        if s is None:
            s = self.slots[index] = Slot()
            if len(self.slots) > self.tier.slots:
                oldest = index - self.tier.slots + 1
                for old in [i for i in self.slots if i < oldest]:
                    del self.slots[old]
        return s


class History:
    """Collects samples (any thread) and writes the rings (the publisher's thread)."""

    def __init__(self, macid, user, clock=time.time):
        self.macid, self.user = macid, user
        self.clock = clock
        self.rings = [Ring(t) for t in TIERS]
        self.events = []          # [iso time, doc id, state], newest last
        self._restarts = {}       # doc id -> restart count last seen
        self._lock = threading.Lock()
        self._next_write = None   # clock time of the next write; None: at once

    def doc_id(self, tier):
        return "%d_history_%s" % (self.macid, tier.name)

    # ------------------------------------------------------------ samples
    def _slots(self, t):
        return [ring.slot(int(t // ring.tier.step)) for ring in self.rings]

    def record(self, heartbeat, reached):
        """A heartbeat's figures; ``reached``: whether it got to the server."""
        t = self.clock()
        load = heartbeat.get("load")
        values = {key: _number(heartbeat.get(key)) for key in SERIES}
        values["load"] = _number(load[0]) if isinstance(load, list) and load else None
        with self._lock:
            for slot in self._slots(t):
                for key, (how, digits) in SERIES.items():
                    slot.values[key] = _combine(how, slot.values.get(key),
                                                _rounded(values[key], digits))
                slot.online = max(slot.online or 0, 1 if reached else 0)
            for w in heartbeat.get("workers") or []:
                if isinstance(w, dict) and isinstance(w.get("doc_id"), str):
                    self._worker(t, w)

    def _worker(self, t, w):
        doc_id = w["doc_id"]
        code = STATE_CODES.get(w.get("state"))
        restarts = w.get("restarts") if isinstance(w.get("restarts"), int) else 0
        new = max(0, restarts - self._restarts.get(doc_id, restarts))
        self._restarts[doc_id] = restarts
        for slot in self._slots(t):
            sw = slot.worker(doc_id, w.get("name"))
            sw["state"] = _worse(sw["state"], code)
            sw["restarts"] += new
            for key, (how, digits) in WORKER_SERIES.items():
                sw[key] = _combine(how, sw.get(key), _rounded(w.get(key), digits))

    def observe(self, worker):
        """Supervisor observer: every state change of a worker, as it happens."""
        snap = worker.snapshot()
        t = self.clock()
        with self._lock:
            self._worker(t, snap)
            self.events.append([iso(t), snap["doc_id"], snap["state"]])
            del self.events[:-MAX_EVENTS]

    # ------------------------------------------------------------ documents
    def due(self):
        return self._next_write is None or self.clock() >= self._next_write

    def write(self, db):
        """Write the rings that changed since their last write; raises couch errors."""
        now = self.clock()
        self._next_write = now + RETRY_PERIOD
        for ring in self.rings:
            current = int(now // ring.tier.step)
            if ring.loaded and ring.written_slot == current and ring.tier.step > WRITE_PERIOD:
                continue        # the coarse ring: once per slot is enough
            doc_id = self.doc_id(ring.tier)

            def change(stored, ring=ring, current=current):
                if not ring.loaded:
                    self._absorb(ring, stored, current)
                return self.document(ring, current, stored)
            ring.rev_doc = couch.update_document(db, doc_id, change, current=ring.rev_doc)
            ring.loaded, ring.written_slot = True, current
        self._next_write = now + WRITE_PERIOD

    def document(self, ring, current, stored=None):
        """The ring as a document ending with slot ``current`` (oldest slot first)."""
        tier = ring.tier
        first = current - tier.slots + 1
        with self._lock:      # the slots change under other threads
            return self._document(ring, first, current, stored)

    def _document(self, ring, first, current, stored):
        tier = ring.tier
        slots = [ring.slots.get(i) for i in range(first, current + 1)]
        seen = {}                  # doc id -> newest slot with data
        for n, s in enumerate(slots):
            for doc_id in (s.workers if s else ()):
                seen[doc_id] = n
        kept = sorted(seen, key=lambda d: (-seen[d], d))[:MAX_WORKERS]
        workers = {}
        for doc_id in sorted(kept):
            ws = [s.workers.get(doc_id) if s else None for s in slots]
            name = next((w["name"] for w in reversed(ws) if w and w["name"]), None)
            entry = {"name": name,
                     "states": "".join((w and w["state"]) or NO_DATA for w in ws),
                     "restarts": [w["restarts"] if w else None for w in ws]}
            for key in WORKER_SERIES:
                entry[key] = [w.get(key) if w else None for w in ws]
            workers[doc_id] = entry
        doc = dict(stored or {})
        doc.update({
            "type": "%d_history" % self.macid,
            "created_by": (stored or {}).get("created_by", self.user),
            "tier": tier.name, "step": tier.step, "slots": tier.slots,
            "start": first * tier.step,
            "updated_at": iso(self.clock()),
            "series": {key: [s.values.get(key) if s else None for s in slots] for key in SERIES},
            "online": [s.online if s else None for s in slots],
            "workers": workers,
        })
        if tier.step <= WRITE_PERIOD:
            doc["events"] = list(self.events)
        return doc

    def _absorb(self, ring, stored, current):
        """Keep what a stored document says of slots this run has not seen."""
        ring.loaded = True
        try:
            step, start = stored.get("step"), stored.get("start")
            if step != ring.tier.step or not isinstance(start, int):
                return
            first = start // step
            series = stored.get("series") or {}
            online = stored.get("online") or []
            workers = stored.get("workers") or {}
            oldest = current - ring.tier.slots + 1
            with self._lock:
                if ring.tier.step <= WRITE_PERIOD and not self.events:
                    self.events = [e for e in stored.get("events") or []
                                   if isinstance(e, list)][-MAX_EVENTS:]
                for n in range(len(online)):
                    index = first + n
                    if index < oldest or index > current:
                        continue
                    old = Slot()
                    for key in SERIES:
                        values = series.get(key) or []
                        old.values[key] = _number(values[n]) if n < len(values) else None
                    old.online = _number(online[n])
                    for doc_id, w in workers.items():
                        states = w.get("states") or ""
                        code = states[n] if n < len(states) else NO_DATA
                        if code not in SEVERITY:
                            continue
                        ow = old.worker(doc_id, w.get("name"))
                        ow["state"] = code
                        restarts = w.get("restarts") or []
                        ow["restarts"] = int(_number(restarts[n]) or 0) if n < len(restarts) else 0
                        for key in WORKER_SERIES:
                            values = w.get(key) or []
                            ow[key] = _number(values[n]) if n < len(values) else None
                    if old.online is None and not old.workers:
                        continue
                    ring.slot(index).merge(old)
        except (AttributeError, TypeError, ValueError, IndexError) as e:
            log.warning("history document %s is not as expected (%s): starting it afresh",
                        stored.get("_id"), e)
