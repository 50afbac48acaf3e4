"""Device documents, group code documents, staged rollouts and rollbacks.

Several real agents (one per MacID) against the real test server: operators'
edits are plain saves as an admin; what the test looks at is what a user sees,
the worker processes and the heartbeat documents.
"""
from helpers import loop_code, put_doc, wait_for

FAST = ["--heartbeat-interval", "1"]


def set_device(db, device, **fields):
    put_doc(db.admin, "%d_device" % device.macid, type="device", macid=device.macid, **fields)


def heartbeat_entry(db, device, doc_id):
    hb = db.admin.get("%d_heartbeat" % device.macid) or {}
    for w in hb.get("workers") or []:
        if w.get("doc_id") == doc_id:
            return w
    return None


def wait_entry(db, device, doc_id, timeout=20, **expected):
    """The worker entry of ``doc_id`` in the device's heartbeat, once it says ``expected``."""
    def check():
        entry = heartbeat_entry(db, device, doc_id)
        if entry and all(entry.get(k) == v for k, v in expected.items()):
            return entry
        return None
    return wait_for(check, timeout=timeout,
                    message="%s on %d: %r" % (doc_id, device.macid, expected))


def crash_code(tag):
    return "def main():\n    log(%r)\n    raise RuntimeError('broken %s')\n" % (tag, tag)


def test_group_document_runs_exactly_on_tagged_devices_and_follows_tags(db, make_device,
                                                                         start_agent):
    a, b, c = make_device(), make_device(), make_device()
    set_device(db, a, name="magnetometer-1", tags=["magnetometer", "hall-b"])
    set_device(db, b, name="magnetometer-2", tags=["hall-b"])
    put_doc(db.admin, "grp", type="tag:magnetometer", name="reader", code=loop_code("grp"))
    put_doc(db.admin, "own", type=a.macid, name="reader", code=loop_code("own"))
    agents = {d.macid: start_agent(d, args=FAST) for d in (a, b, c)}
    # The device's own document and the group's, of the same name, both run.
    agents[a.macid].wait_worker("grp")
    agents[a.macid].wait_worker("own")
    assert wait_entry(db, a, "grp", state="running")["tag"] == "magnetometer"
    wait_for(lambda: db.admin.get("%d_heartbeat" % b.macid), message="b's heartbeat")
    wait_for(lambda: db.admin.get("%d_heartbeat" % c.macid), message="c's heartbeat")
    assert agents[b.macid].worker("grp") is None and agents[c.macid].worker("grp") is None
    # Tagging b starts the group's worker there, and nothing else changes on a.
    pid_a = agents[a.macid].worker("grp").pid
    set_device(db, b, name="magnetometer-2", tags=["hall-b", "magnetometer"])
    agents[b.macid].wait_worker("grp")
    # Untagging a stops it there; its own document keeps running.
    own = agents[a.macid].worker("own").pid
    set_device(db, a, name="magnetometer-1", tags=["hall-b"])
    wait_for(lambda: agents[a.macid].worker("grp") is None, message="group worker gone on a")
    assert agents[a.macid].worker("own").pid == own
    assert pid_a != agents[b.macid].worker("grp").pid
    assert agents[c.macid].worker("grp") is None
