"""Device documents, group code documents, staged rollouts and rollbacks.

Several real agents (one per MacID) against the real test server: operators'
edits are plain saves as an admin; what the test looks at is what a user sees,
the worker processes and the heartbeat documents.
"""
import json

from cli_helpers import run_cli
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


def test_crash_looping_revision_rolls_back_to_the_last_healthy_one(db, device, start_agent):
    rollback = {"failures": 3, "within": 600, "healthy_for": 1}
    good = put_doc(db.admin, "own", type=device.macid, name="sensor", code=loop_code("v1"),
                   rollback=rollback)
    agent = start_agent(device, args=FAST)
    entry = wait_entry(db, device, "own", healthy=True)
    assert entry["rev"] == good["_rev"]
    bad = put_doc(db.admin, "own", type=device.macid, name="sensor", code=crash_code("v2"),
                  rollback=rollback)
    entry = wait_entry(db, device, "own", rolled_back_from=bad["_rev"], state="running")
    # The revision running is the healthy one, and the heartbeat says why.
    assert entry["rev"] == good["_rev"]
    assert "broken v2" in entry["rolled_back_error"] and "broken v2" in entry["error"]
    assert len(agent.find_lines(r"\[sensor\] v2$")) == 3
    agent.wait_line(r"rolling back to rev %s" % good["_rev"])
    agent.wait_line(r"\[sensor\] v1 started", count=2)
    # A new revision clears it.
    fixed = put_doc(db.admin, "own", type=device.macid, name="sensor", code=loop_code("v3"),
                    rollback=rollback)
    entry = wait_entry(db, device, "own", rev=fixed["_rev"], state="running")
    assert "rolled_back_from" not in entry


def test_rollback_false_keeps_restarting_the_new_revision(db, device, start_agent):
    put_doc(db.admin, "own", type=device.macid, name="sensor", code=loop_code("v1"),
            rollback={"healthy_for": 1})
    agent = start_agent(device, args=FAST)
    wait_entry(db, device, "own", healthy=True)
    bad = put_doc(db.admin, "own", type=device.macid, name="sensor", code=crash_code("v2"),
                  rollback=False)
    agent.wait_line(r"\[sensor\] v2$", count=3)
    entry = wait_entry(db, device, "own", rev=bad["_rev"])
    assert "rolled_back_from" not in entry and not agent.find_lines("rolling back")


def group_fleet(db, make_device, start_agent, names=("canary", "b", "c")):
    """Three tagged devices running revision v1 of group document ``grp``."""
    devices = [make_device() for _ in names]
    for d, name in zip(devices, names):
        set_device(db, d, name=name, tags=["lab"])
    v1 = put_doc(db.admin, "grp", type="tag:lab", name="logger", code=loop_code("v1"),
                 rollback={"healthy_for": 1})
    agents = [start_agent(d, args=FAST) for d in devices]
    for d in devices:
        wait_entry(db, d, "grp", rev=v1["_rev"], state="running")
    return devices, agents, v1


def push_v2(db, canary, code, healthy_for=2):
    return put_doc(db.admin, "grp", type="tag:lab", name="logger", code=code,
                   rollout={"canary": [str(canary.macid)], "healthy_for": healthy_for},
                   rollback={"failures": 2, "within": 600})


def test_rollout_spreads_after_the_canaries_healthy_time(db, make_device, start_agent):
    (canary, b, c), agents, v1 = group_fleet(db, make_device, start_agent)
    agents[2].stop()            # c is offline during the rollout
    v2 = push_v2(db, canary, loop_code("v2"), healthy_for=3)
    wait_entry(db, canary, "grp", rev=v2["_rev"], state="running")
    # The others wait for the canary, on the revision they had.
    hb = wait_for(lambda: (db.admin.get("%d_heartbeat" % b.macid) or {}).get("rollouts", {})
                  .get("grp"), message="b says it waits")
    assert hb["state"] == "waiting" and hb["target_rev"] == v2["_rev"]
    assert heartbeat_entry(db, b, "grp")["rev"] == v1["_rev"]
    wait_entry(db, canary, "grp", healthy=True)
    wait_entry(db, b, "grp", rev=v2["_rev"], state="running")
    agents[1].wait_line(r"\[logger\] v2 started")
    # c comes back and catches up with the revision the canary proved.
    agents.append(start_agent(c, args=FAST, state_dir=agents[2].state_dir))
    wait_entry(db, c, "grp", rev=v2["_rev"], state="running")


def test_rollout_halts_when_a_canary_crash_loops(couch, db, make_device, start_agent):
    (canary, b, c), agents, v1 = group_fleet(db, make_device, start_agent)
    wait_entry(db, canary, "grp", healthy=True)     # v1 is the canary's healthy revision
    v2 = push_v2(db, canary, crash_code("v2"))
    entry = wait_entry(db, canary, "grp", rolled_back_from=v2["_rev"], state="running")
    assert entry["rev"] == v1["_rev"]
    for d in (b, c):
        rollout = wait_for(lambda: ((db.admin.get("%d_heartbeat" % d.macid) or {})
                                    .get("rollouts", {}).get("grp") or {}).get("state")
                           == "halted", message="halted on %d" % d.macid)
        assert rollout
        assert heartbeat_entry(db, d, "grp")["rev"] == v1["_rev"]
    for agent in agents[1:]:
        assert not agent.find_lines(r"\[logger\] v2")
    # `rollout status` says so too, with the canary's failure.
    result = run_cli("rollout", "status", couch.admin_url, "--database", db.name, "grp",
                     "--json")
    report = json.loads(result.stdout)
    assert report["state"] == "halted", report
    assert report["canaries"][str(canary.macid)].startswith("failed: RuntimeError: broken v2")
    assert {r["macid"]: r["current"] for r in report["devices"]} == {
        str(d.macid): False for d in (canary, b, c)}


def test_device_restarted_mid_rollout_comes_back_on_its_old_revision(db, make_device,
                                                                     start_agent):
    (canary, b), agents, v1 = group_fleet(db, make_device, start_agent, names=("canary", "b"))
    v2 = push_v2(db, canary, loop_code("v2"), healthy_for=600)
    wait_entry(db, canary, "grp", rev=v2["_rev"], state="running")
    agents[1].stop()
    # A reboot with the server reachable ...
    again = start_agent(b, args=FAST, state_dir=agents[1].state_dir)
    again.wait_line(r"\[logger\] v1 started")
    wait_entry(db, b, "grp", rev=v1["_rev"], state="running")
    again.stop()
    # ... and one while the server cannot be reached: the kept source runs.
    offline = start_agent(b, args=FAST, state_dir=agents[1].state_dir,
                          url="http://127.0.0.1:9")
    offline.wait_line(r"\[logger\] v1 started", timeout=30)
    assert not again.find_lines(r"\[logger\] v2") and not offline.find_lines(r"\[logger\] v2")


def test_bad_tags_and_rollout_settings_are_said_and_nothing_dies(db, device, start_agent):
    set_device(db, device, tags="lab")
    put_doc(db.admin, "grp", type="tag:lab", name="logger", code=loop_code("grp"),
            rollout="soon", rollback={"failures": "three"})
    agent = start_agent(device, args=FAST)
    agent.wait_line(r"document %d_device: 'tags' must be a list of strings" % device.macid)
    assert agent.worker("grp") is None
    set_device(db, device, tags=["lab"])
    agent.wait_worker("grp")
    agent.wait_line(r"document grp: 'rollout' must be an object")
    agent.wait_line(r"document grp: rollback.failures must be a positive number")
    assert agent.proc.poll() is None


def test_a_revision_that_cannot_run_rolls_back_at_once(db, device, start_agent):
    rollback = {"healthy_for": 1}
    good = put_doc(db.admin, "own", type=device.macid, name="sensor", code=loop_code("v1"),
                   rollback=rollback)
    agent = start_agent(device, args=FAST)
    wait_entry(db, device, "own", healthy=True)
    bad = put_doc(db.admin, "own", type=device.macid, name="sensor",
                  code="def main(:\n    pass\n", rollback=rollback)
    entry = wait_entry(db, device, "own", rolled_back_from=bad["_rev"], state="running")
    assert entry["rev"] == good["_rev"] and "SyntaxError" in entry["rolled_back_error"]
    agent.wait_line(r"\[sensor\] v1 started", count=2)
