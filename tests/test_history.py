"""The device's history and log archive stay bounded: a simulated year on a fake clock.

The history code (himbeerecouch.agent.history, .logarchive) writes through
``couch.update_document`` into a small in-memory database here (a fake beside
the integration test in test_history_agent.py, which uses the real server).
"""
import json

import couchdb.http

from himbeerecouch.agent import history, logarchive
from himbeerecouch.agent.history import History
from himbeerecouch.agent.logarchive import LogArchive

MACID = 202481587074134
DAY = 86400
YEAR = 365 * DAY
# The bound stated in the README: two history documents a device, each below this.
HISTORY_DOC_BOUND = 512 * 1024


class Clock:
    def __init__(self, t):
        self.t = float(t)

    def __call__(self):
        return self.t


class MemoryDatabase:
    """Just enough of couchdb.Database for update_document: get, save, revisions."""

    def __init__(self):
        self.docs = {}
        self.largest = {}          # doc id -> the largest size it ever had (bytes of JSON)

    def get(self, doc_id):
        doc = self.docs.get(doc_id)
        return json.loads(json.dumps(doc)) if doc is not None else None

    def save(self, doc):
        stored = self.docs.get(doc["_id"])
        if stored is not None and stored["_rev"] != doc.get("_rev"):
            raise couchdb.http.ResourceConflict(("conflict", "stale"))
        n = int(stored["_rev"].split("-")[0]) + 1 if stored else 1
        doc["_rev"] = "%d-x" % n
        self.docs[doc["_id"]] = json.loads(json.dumps(doc))
        size = self.size(doc["_id"])
        self.largest[doc["_id"]] = max(self.largest.get(doc["_id"], 0), size)

    def size(self, doc_id):
        return len(json.dumps(self.docs[doc_id], separators=(",", ":")))


def heartbeat(t, workers=8):
    """A busy device: a worker that crashes every hour, the others steady."""
    hour = int(t // 3600)
    return {
        "load": [1.25 + (hour % 7), 1.0, 0.5],
        "cpu_temperature": 40.0 + (hour % 24),
        "memory_free_mb": 3000 - (hour % 100),
        "disk_free_mb": 120000 - hour % 1000,
        "workers": [{"doc_id": "worker-%d" % n, "name": "worker number %d" % n,
                     "state": "backoff" if n == 0 and t % 3600 < 300 else "running",
                     "restarts": hour if n == 0 else 0,
                     "cpu_percent": 12.5, "rss_mb": 35.7} for n in range(workers)],
    }


def silent(t, start):
    """The device is off for three days in month 11, and for the last two hours."""
    return start + 300 * DAY <= t < start + 303 * DAY or t >= start + YEAR - 2 * 3600


def test_a_year_of_history_stays_bounded_with_gaps_visible():
    start = 1767225600            # 2026-01-01T00:00:00Z, a multiple of every step
    clock = Clock(start)
    db = MemoryDatabase()
    h = History(MACID, str(MACID), clock=clock)
    writes = 0
    last_write = None
    sizes_over_time = []
    while clock.t < start + YEAR:
        if not silent(clock.t, start):
            h.record(heartbeat(clock.t, workers=10), reached=True)
            # Written at most once a minute; here every 3 days, which is enough
            # to show that the documents never grow.
            if h.due() and (last_write is None or clock.t - last_write >= 3 * DAY):
                h.write(db)
                writes += 1
                last_write = clock.t
                sizes_over_time.append(sum(db.size(i) for i in db.docs))
        # A sample every 15 minutes; every minute on the last day.
        clock.t += 60 if clock.t >= start + YEAR - DAY else 900
    clock.t = start + YEAR - 1           # the last second of the year
    h.write(db)
    assert sorted(db.docs) == ["%d_history_15m" % MACID, "%d_history_1m" % MACID]
    assert max(db.largest.values()) <= HISTORY_DOC_BOUND
    # After a month the room taken is what it is after a year.
    month = max(sizes_over_time[10:20])
    assert max(sizes_over_time[20:]) <= month * 1.05, (month, max(sizes_over_time))
    print("history after a simulated year: %s bytes, %d writes" %
          ({i: db.size(i) for i in sorted(db.docs)}, writes))

    coarse = db.docs["%d_history_15m" % MACID]
    assert coarse["type"] == "%d_history" % MACID and coarse["created_by"] == str(MACID)
    assert coarse["step"] == 900 and len(coarse["online"]) == coarse["slots"] == 2880
    assert coarse["start"] == start + YEAR - 30 * DAY
    temps = coarse["series"]["cpu_temperature"]
    assert len(temps) == 2880
    # The last two hours: silent, so null (8 quarter-hour slots), and the
    # workers' states show no data there.
    assert temps[-8:] == [None] * 8 and temps[-9] is not None
    assert coarse["online"][-8:] == [None] * 8 and coarse["online"][-9] == 1
    w0 = coarse["workers"]["worker-0"]
    assert w0["states"].endswith("." * 8) and "B" in w0["states"] and "R" in w0["states"]
    assert sum(r for r in w0["restarts"] if r) >= 29 * 24   # one restart an hour
    assert w0["name"] == "worker number 0"
    assert len(coarse["workers"]) == history.MAX_WORKERS

    fine = db.docs["%d_history_1m" % MACID]
    assert fine["step"] == 60 and len(fine["series"]["load"]) == 1440
    assert fine["series"]["load"][-120:] == [None] * 120
    assert all(v is not None for v in fine["series"]["load"][-1440:-120])
    assert max(v for v in fine["series"]["load"] if v is not None) <= 7.25


def test_the_three_silent_days_appear_in_the_30_day_ring():
    start = 1767225600
    clock = Clock(start + 290 * DAY)
    db = MemoryDatabase()
    h = History(MACID, str(MACID), clock=clock)
    while clock.t < start + 305 * DAY:
        if not silent(clock.t, start):
            h.record(heartbeat(clock.t, workers=1), reached=clock.t < start + 304 * DAY)
        clock.t += 600
    h.write(db)
    doc = db.docs["%d_history_15m" % MACID]
    first = doc["start"]
    at = lambda t: (t - first) // 900   # noqa: E731 (the slot of time t)
    online = doc["online"]
    gap = online[at(start + 300 * DAY):at(start + 303 * DAY)]
    assert gap == [None] * (3 * 96)
    assert online[at(start + 300 * DAY) - 1] == 1 and online[at(start + 303 * DAY)] == 1
    # The agent ran on its last day but its heartbeats did not reach the server.
    assert set(online[at(start + 304 * DAY):at(start + 305 * DAY)]) == {0}


def test_a_restarted_agent_keeps_the_stored_history():
    start = 1767225600
    clock = Clock(start)
    db = MemoryDatabase()
    first = History(MACID, str(MACID), clock=clock)
    for _ in range(30):
        first.record(heartbeat(clock.t, workers=1), reached=True)
        clock.t += 60
    first.write(db)
    clock.t += 3600                   # an hour without the agent
    second = History(MACID, str(MACID), clock=clock)
    second.record(heartbeat(clock.t, workers=1), reached=True)
    second.write(db)
    doc = db.docs["%d_history_1m" % MACID]
    loads = doc["series"]["load"]
    # Slots 0..29 from the first run, 30..89 without the agent, 90 the second run.
    assert loads[-1] is not None and loads[-61:-1] == [None] * 60 and loads[-62] is not None
    assert sum(v is not None for v in loads) == 31
    assert doc["workers"]["worker-0"]["states"][-62:] == "R" + "." * 60 + "R"


def test_bad_stored_history_is_replaced_not_fatal():
    clock = Clock(1767225600)
    db = MemoryDatabase()
    db.save({"_id": "%d_history_1m" % MACID, "step": 60, "start": "yesterday",
             "series": 5, "created_by": str(MACID)})
    db.save({"_id": "%d_history_15m" % MACID, "step": 900, "start": 1767225600 - 900,
             "online": [1, "x"], "series": {"load": "nope"}, "workers": {"w": {"states": 7}},
             "created_by": str(MACID)})
    h = History(MACID, str(MACID), clock=clock)
    h.record({"load": [0.5], "workers": "not a list"}, reached=True)
    h.write(db)
    assert db.docs["%d_history_1m" % MACID]["series"]["load"][-1] == 0.5
    assert db.docs["%d_history_15m" % MACID]["series"]["load"][-1] == 0.5


def test_log_archive_keeps_a_week_of_days_bounded():
    clock = Clock(1767225600)
    db = MemoryDatabase()
    archive = LogArchive(MACID, str(MACID), clock=clock)
    text = "x" * 500
    for day in range(30):
        for n in range(3000):       # 1.5 MB a day: more than a day document holds
            clock.t = 1767225600 + day * DAY + n * 20
            archive.add("logger", "logger", ["t", "stdout", "%d %d %s" % (day, n, text)])
            if n % 500 == 499:
                archive.write(db)
        archive.write(db)
    ids = sorted(db.docs)
    assert len(ids) == logarchive.DAYS
    assert all(i.startswith("%d_logarchive_logger_" % MACID) for i in ids)
    assert max(db.largest.values()) <= logarchive.DAY_BYTES * 1.1
    days = sorted(db.docs[i]["day"] for i in ids)
    assert days[0] == "2026-01-24" and days[-1] == "2026-01-30"   # the oldest went
    last = db.docs[archive.doc_id("logger", int(clock.t // DAY))]
    assert last["lines"][-1][2].startswith("29 2999 ")      # the latest lines kept
    assert last["dropped"] > 0 and last["type"] == "%d_logarchive" % MACID


def test_log_archive_drops_what_is_not_a_line_and_keeps_the_rest():
    clock = Clock(1767225600 + 3600)
    db = MemoryDatabase()
    archive = LogArchive(MACID, str(MACID), clock=clock)
    doc_id = archive.doc_id("logger", int(clock.t // DAY))
    db.save({"_id": doc_id, "created_by": str(MACID), "day": "2026-01-01", "dropped": "many",
             "lines": [["t", "stdout", "kept"], "junk", [1, 2], ["t", "stdout", None]]})
    archive.add("logger", "logger", ["t2", "stderr", "new"])
    archive.write(db)
    doc = db.docs[doc_id]
    assert doc["lines"] == [["t", "stdout", "kept"], ["t2", "stderr", "new"]]
    assert doc["dropped"] == 0 and doc["name"] == "logger"


def test_written_at_most_once_a_minute_and_retried_later_when_the_server_is_away():
    clock = Clock(1767225600)
    db = MemoryDatabase()
    h = History(MACID, str(MACID), clock=clock)
    h.record({"load": [1.0]}, reached=True)
    assert h.due()
    h.write(db)
    clock.t += history.WRITE_PERIOD - 1
    assert not h.due()
    clock.t += 1
    assert h.due()

    class Away(MemoryDatabase):
        def get(self, doc_id):
            raise ConnectionRefusedError("the server is away")

        def save(self, doc):
            raise ConnectionRefusedError("the server is away")
    try:
        h.write(Away())
    except ConnectionRefusedError:
        pass
    assert not h.due()                       # no hammering of an absent server
    clock.t += history.RETRY_PERIOD
    assert h.due()
