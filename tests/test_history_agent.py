"""The real agent writes its history and log archive into a provisioned test database.

The database has provisioning's rules, so every write below passed
validate_doc_update as the device; the rules themselves (a device writes its
own history and archive, nothing of another device's) are shown over HTTP.
"""
import json
import time
import urllib.parse

from cli_helpers import delete_users
from couchserver import http_request
from helpers import random_macid, wait_for

from himbeerecouch.agent import history
from himbeerecouch.ops.connection import Connection
from himbeerecouch.ops.provision import provision

CRASHER = ("import time\n"
           "def main():\n"
           "    log('crashing on purpose')\n"
           "    time.sleep(0.5)\n"
           "    raise SystemExit(3)\n")


def doc_url(couch, db, doc_id):
    return "%s/%s/%s" % (couch.url, urllib.parse.quote(db.name, safe=""),
                         urllib.parse.quote(doc_id, safe=""))


def seeded_history(device, minutes_ago):
    """A minute ring as an earlier run of the agent left it, ``minutes_ago`` old."""
    step, slots = 60, 1440
    last = int(time.time() // step) - minutes_ago
    first = last - slots + 1
    load = [None] * slots
    load[-1] = 9.75
    return {"_id": "%d_history_1m" % device.macid, "type": "%d_history" % device.macid,
            "created_by": device.user, "tier": "1m", "step": step, "slots": slots,
            "start": first * step, "series": {"load": load}, "online": load[:-1] + [1],
            "workers": {}}


def test_agent_writes_bounded_history_with_the_gap_and_its_log_archive(
        couch, db, device, start_agent):
    provision(Connection(couch.admin_url, db.name), [(device.macid, device.password)])
    db.admin.save(seeded_history(device, minutes_ago=30))
    db.admin.save({"_id": "crash", "type": device.macid, "name": "crasher", "code": CRASHER})
    db.admin.save({"_id": "calm", "type": device.macid, "name": "calm",
                   "code": "import time\ndef main():\n    while not should_quit():\n"
                           "        time.sleep(0.2)\n"})
    start_agent(device)
    hid = "%d_history_1m" % device.macid

    def written():
        doc = db.admin.get(hid)
        return doc if doc and doc.get("updated_at") else None
    first = wait_for(written, timeout=30, message="the agent writes its history")
    loads = first["series"]["load"]
    assert len(loads) == 1440 and len(first["online"]) == 1440
    assert loads[-1] is not None and first["online"][-1] == 1      # its own sample, now
    # The seeded sample of 30 minutes ago, and the silence since: a gap of nulls.
    assert loads[-31] == 9.75 or loads[-32] == 9.75
    assert loads[-29:-1] == [None] * 28
    assert first["created_by"] == device.user and first["type"] == "%d_history" % device.macid
    assert len(json.dumps(first)) < 512 * 1024

    coarse = wait_for(lambda: db.admin.get("%d_history_15m" % device.macid), timeout=10)
    assert len(coarse["online"]) == 2880 and coarse["online"][-1] == 1

    # The next write comes a minute later, no sooner, and shows the crashes.
    def crashed():
        doc = db.admin.get(hid)
        w = doc["workers"].get("crash") if doc["_rev"] != first["_rev"] else None
        return doc if w and "B" in w["states"] else None
    second = wait_for(crashed, timeout=90, interval=1, message="the crashes in the history")
    assert int(second["_rev"].split("-")[0]) == int(first["_rev"].split("-")[0]) + 1
    crash = second["workers"]["crash"]
    assert crash["name"] == "crasher" and sum(r or 0 for r in crash["restarts"]) >= 1
    assert crash["states"][-1] != "." and len(crash["states"]) == 1440
    assert "R" in second["workers"]["calm"]["states"]
    assert second["events"] and any(e[1] == "crash" and e[2] == "backoff"
                                    for e in second["events"])
    assert len(second["workers"]) <= history.MAX_WORKERS

    archive = db.admin.get("%d_logarchive_crash_%d" % (device.macid, int(time.time() // 86400) % 7))
    assert archive is not None and archive["created_by"] == device.user
    assert archive["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert any(line[2] == "crashing on purpose" for line in archive["lines"])


def test_a_device_writes_only_its_own_history(couch, db, device, make_device):
    other = make_device(macid=random_macid())
    provision(Connection(couch.admin_url, db.name),
              [(device.macid, device.password), (other.macid, other.password)])
    me = (device.user, device.password)
    mine = {"type": "%d_history" % device.macid, "created_by": device.user, "online": []}
    status, _ = http_request("PUT", doc_url(couch, db, "%d_history_1m" % device.macid), mine,
                             auth=me)
    assert status == 201
    archive = {"type": "%d_logarchive" % device.macid, "created_by": device.user, "lines": []}
    status, _ = http_request("PUT", doc_url(couch, db, "%d_logarchive_x_3" % device.macid),
                             archive, auth=me)
    assert status == 201
    theirs = dict(mine, type="%d_history" % other.macid)
    status, body = http_request("PUT", doc_url(couch, db, "%d_history_1m" % other.macid),
                                theirs, auth=me)
    assert status == 403 and "history" in body["reason"]
    # Its own type under another id prefix is refused too.
    status, _ = http_request("PUT", doc_url(couch, db, "%d_code" % device.macid), mine, auth=me)
    assert status == 403
    # An operator may not write one either: the history is the device's word.
    op = "op-%d" % random_macid()
    couch.admin["_users"].save({"_id": "org.couchdb.user:" + op, "type": "user", "name": op,
                                "roles": ["operator"], "password": "oppw"})
    try:
        status, body = http_request(
            "PUT", doc_url(couch, db, "%d_history_15m" % device.macid),
            dict(mine, created_by=op), auth=(op, "oppw"))
        assert status == 403 and "written by the devices only" in body["reason"]
    finally:
        delete_users(couch, [op])
