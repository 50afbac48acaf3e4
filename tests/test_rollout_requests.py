"""What a staged rollout costs in requests, counted by the benchmark's proxy.

Four real agents (one canary) talk to the server through bench/proxy.py's
counting proxy.  A device reads the canaries' heartbeats (one ``_all_docs``
request for all of them) once per heartbeat interval, and only while a
rollout of one of its groups waits for them: before and after, none.
"""
import os
import sys
import time
import urllib.parse

import pytest

from helpers import loop_code, put_doc, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from proxy import CountingProxy  # noqa: E402

INTERVAL = 1          # --heartbeat-interval of the agents
HEALTHY_FOR = 5


@pytest.fixture
def counting_proxy(couch):
    parts = urllib.parse.urlsplit(couch.url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.fail("the counting proxy reaches a server on 127.0.0.1 only")
    p = CountingProxy(parts.port)
    try:
        yield p
    finally:
        p.close()


def runs(db, device, doc_id, rev):
    hb = db.admin.get("%d_heartbeat" % device.macid) or {}
    return any(w.get("doc_id") == doc_id and w.get("rev") == rev and w.get("state") == "running"
               for w in hb.get("workers") or [])


def test_a_rollout_adds_one_request_per_waiting_device_and_interval(db, make_device, start_agent,
                                                                     counting_proxy):
    devices = [make_device() for _ in range(4)]
    canary, others = devices[0], devices[1:]
    for d in devices:
        put_doc(db.admin, "%d_device" % d.macid, type="device", macid=d.macid, tags=["lab"])
    v1 = put_doc(db.admin, "grp", type="tag:lab", name="logger", code=loop_code("v1"))
    for d in devices:
        start_agent(d, args=["--heartbeat-interval", str(INTERVAL)], url=counting_proxy.url)
    wait_for(lambda: all(runs(db, d, "grp", v1["_rev"]) for d in devices), timeout=20,
             message="v1 everywhere")
    # No rollout pending: no device reads another's heartbeat.
    before = counting_proxy.snapshot()
    time.sleep(3 * INTERVAL)        # a window of quiet to count in, not a wait for a state
    quiet = counting_proxy.snapshot() - before
    assert quiet["all_docs"] == 0, quiet

    start = counting_proxy.snapshot()
    began = time.monotonic()
    v2 = put_doc(db.admin, "grp", type="tag:lab", name="logger", code=loop_code("v2"),
                 rollout={"canary": [str(canary.macid)], "healthy_for": HEALTHY_FOR})
    wait_for(lambda: all(runs(db, d, "grp", v2["_rev"]) for d in devices), timeout=30,
             message="v2 everywhere")
    took = time.monotonic() - began
    during = counting_proxy.snapshot() - start
    # At most one read a heartbeat interval per waiting device (plus the first).
    assert 0 < during["all_docs"] <= len(others) * (took / INTERVAL + 2), (during, took)
    after = counting_proxy.snapshot()
    time.sleep(3 * INTERVAL)
    done = counting_proxy.snapshot() - after
    assert done["all_docs"] == 0, done
    print("\nrollout to %d devices (1 canary), healthy_for %d s, heartbeat every %d s: "
          "%.1f s; requests during it %s; canary reads %d; %d heartbeats"
          % (len(devices), HEALTHY_FOR, INTERVAL, took, dict(during), during["all_docs"],
             during["heartbeat"]))
