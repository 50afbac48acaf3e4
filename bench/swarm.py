"""A swarm: up to 100 simulated devices in one process, speaking the agent's protocol.

The fleet1000 phase starts ``python bench/swarm.py`` once per 100 devices
and writes one JSON object to its stdin: ``{"url", "database", "devices":
[[macid, password], ...], "heartbeat", "log_every"}`` (credentials never on
the command line).  Each device, in threads, does what an idle agent does to
the server, with the agent's own client library and selector:

- reads its snapshot (one filtered ``_changes`` POST), then follows the
  continuous ``_changes`` feed filtered by ``feed.device_selector``, with
  the agent's keep-alive period, reconnecting from its last sequence;
- writes its heartbeat document every ``heartbeat`` s, over the revision
  it wrote last, as the publisher does;
- writes its log document every ``log_every`` s (the publisher writes at
  most one per worker every 5 s, and only while the worker prints).

Feeds open at once; heartbeats and logs start with a ``write`` line on
stdin (so that the cost of idle feeds can be measured alone).  On stdout,
JSON lines: ``{"ready": n}`` once every device has read its snapshot and
asked for its feed; ``{"seen": doc id, "t": time}`` for each change that
reaches a device (not its own writes, which no selector matches);
``{"counts": {...}}`` after each ``counts`` line on stdin, and at the end
(stdin closed).
"""
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from himbeerecouch import couch  # noqa: E402
from himbeerecouch.agent.feed import device_selector  # noqa: E402

FEED_HEARTBEAT = 5.0          # the agent's default --feed-heartbeat
WRITERS = 4                   # threads that write heartbeats and logs for the swarm


class Swarm:
    def __init__(self, config):
        self.url, self.database = config["url"], config["database"]
        self.devices = [(int(m), p) for m, p in config["devices"]]
        self.heartbeat, self.log_every = config["heartbeat"], config["log_every"]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"snapshot": 0, "feed_opened": 0, "heartbeat": 0, "log": 0,
                       "errors": 0, "seen": 0}
        self.ready = 0
        self.out = threading.Lock()

    def say(self, **fields):
        with self.out:
            sys.stdout.write(json.dumps(fields) + "\n")
            sys.stdout.flush()

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def db(self, macid, password, timeout=10):
        return couch.open_database(self.url, self.database, str(macid), password,
                                   timeout=timeout)

    # ------------------------------------------------------------ feeds
    def follow(self, macid, password):
        selector = device_selector(macid)
        db = self.db(macid, password)
        feed_db = self.db(macid, password, timeout=3 * FEED_HEARTBEAT)
        since, first = None, True
        while not self.stopping.is_set():
            try:
                if since is None:
                    since = db.changes(filter="_selector", _selector=selector,
                                       style="main_only")["last_seq"]
                    self.count("snapshot")
                self.count("feed_opened")
                if first:
                    first = False
                    with self.lock:
                        self.ready += 1
                        if self.ready == len(self.devices):
                            self.say(ready=self.ready)
                for row in feed_db.changes(feed="continuous", since=since, include_docs=True,
                                           heartbeat=int(FEED_HEARTBEAT * 1000),
                                           filter="_selector", _selector=selector):
                    if "seq" in row:
                        since = row["seq"]
                    if row.get("id"):
                        self.count("seen")
                        self.say(seen=row["id"], macid=macid, t=time.time())
                    if self.stopping.is_set():
                        return
            except couch.TRANSPORT_ERRORS + (couch.CouchError,):
                self.count("errors")
                self.stopping.wait(1.0)

    # ------------------------------------------------------------ writes
    def write(self, share):
        """Heartbeats and logs of the devices ``share``, each on its own clock."""
        dbs = {macid: self.db(macid, password) for macid, password in share}
        revs, started = {}, time.time()
        n = max(1, len(share))
        # Spread the devices over the period, as agents started at random times are.
        due = {macid: (time.monotonic() + self.heartbeat * i / n,
                       time.monotonic() + self.log_every * i / n)
               for i, (macid, _) in enumerate(share)}
        while not self.stopping.is_set():
            now = time.monotonic()
            for macid, (beat_at, log_at) in list(due.items()):
                if now >= beat_at:
                    self._save(dbs[macid], revs, "%d_heartbeat" % macid, "heartbeat",
                               heartbeat_doc(macid, started))
                    beat_at += self.heartbeat
                if now >= log_at:
                    self._save(dbs[macid], revs, "%d_log_w" % macid, "log", log_doc(macid))
                    log_at += self.log_every
                due[macid] = (beat_at, log_at)
            soonest = min(min(t) for t in due.values()) if due else now + 1
            self.stopping.wait(max(0.0, soonest - time.monotonic()))

    def _save(self, db, revs, doc_id, what, fields):
        def merge(doc):
            doc.update(fields)
            return doc
        try:
            revs[doc_id] = couch.update_document(db, doc_id, merge, current=revs.get(doc_id))
            self.count(what)
        except couch.TRANSPORT_ERRORS + (couch.CouchError,):
            self.count("errors")

    # ------------------------------------------------------------ life
    def run(self):
        for device in self.devices:
            threading.Thread(target=self.follow, args=device, daemon=True).start()
        for line in sys.stdin:
            if line.strip() == "counts":
                with self.lock:
                    self.say(counts=dict(self.counts))
            elif line.strip() == "write":
                for i in range(WRITERS):
                    threading.Thread(target=self.write, args=(self.devices[i::WRITERS],),
                                     daemon=True).start()
        self.stopping.set()
        with self.lock:
            self.say(counts=dict(self.counts))


def heartbeat_doc(macid, started):
    """About the size and shape of an idle agent's heartbeat."""
    now = time.time()
    return {"type": "heartbeat", "macid": macid, "created_by": str(macid),
            "ip": "127.0.0.1", "hostname": "sim-%d" % macid, "version": "sim",
            "uptime": int(now - started), "heartbeat_interval": 10,
            "timestamp": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
            "timestamp_source": "device", "running_ids": [], "workers": [],
            "load": [0.0, 0.0, 0.0], "memory_free_mb": 700.0, "disk_free_mb": 9000.0,
            "cpu_temperature": 48.3, "feed": {"connected": True, "error": None},
            "state": "running", "spare": None, "logs_dropped": 0,
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}


def log_doc(macid):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"type": "%d_log" % macid, "doc_id": "w", "name": "w", "created_by": str(macid),
            "updated_at": now, "dropped": 0,
            "lines": [[now, "stdout", "reading %d" % i] for i in range(20)]}


def main():
    config = json.loads(sys.stdin.readline())
    Swarm(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
