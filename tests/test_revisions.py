"""Unit tests of the device's choice of revisions (agent/revisions.py): pure
decisions from documents and canaries' heartbeats, kept in a real file."""
from himbeerecouch.agent.revisions import Revisions
from himbeerecouch.groups import source_digest

ME, CANARY = 11, 22


def group(rev, code, **extra):
    return dict({"_id": "grp", "_rev": rev, "type": "tag:lab", "name": "g", "code": code}, **extra)


def canary_heartbeat(doc, **entry):
    return {str(CANARY): {"workers": [dict({"doc_id": doc["_id"], "rev": doc["_rev"],
                                            "digest": source_digest(doc), "state": "running",
                                            "rev_failures": 0}, **entry)]}}


def test_a_new_revision_waits_for_the_canary_and_survives_a_restart(tmp_path):
    path = tmp_path / "revisions.json"
    store = Revisions(str(path), ME)
    v1 = group("1-a", "v1")
    run, watch = store.choose({"grp": v1}, ["lab"], {})
    assert run["grp"] is v1 and not watch
    store.save()
    v2 = group("2-b", "v2", rollout={"canary": [str(CANARY)], "healthy_for": 5})
    run, watch = store.choose({"grp": v2}, ["lab"], {})
    assert run["grp"]["_rev"] == "1-a" and watch == {str(CANARY)}
    assert store.rollouts["grp"]["state"] == "waiting"
    # Restarted (a new store on the same file), still without news: still v1.
    again = Revisions(str(path), ME)
    assert again.choose({"grp": v2}, ["lab"], {})[0]["grp"]["_rev"] == "1-a"
    # Pausing saves the document (a new _rev) but is no new revision.
    paused = dict(v2, _rev="3-c", rollout=dict(v2["rollout"], paused=True))
    run, watch = again.choose({"grp": paused}, ["lab"], canary_heartbeat(v2, healthy=True))
    assert run["grp"]["_rev"] == "1-a" and not watch and again.rollouts["grp"]["state"] == "paused"
    run, _ = again.choose({"grp": v2}, ["lab"], canary_heartbeat(v2, healthy=True))
    assert run["grp"]["_rev"] == "2-b"


def test_a_canary_failure_halts_for_good_and_another_tag_runs_nothing(tmp_path):
    store = Revisions(str(tmp_path / "r.json"), ME)
    v1 = group("1-a", "v1")
    store.choose({"grp": v1}, ["lab"], {})
    v2 = group("2-b", "v2", rollout={"canary": [str(CANARY)]})
    run, _ = store.choose({"grp": v2}, ["lab"], canary_heartbeat(v2, rev_failures=1,
                                                                  state="backoff"))
    assert run["grp"]["_rev"] == "1-a" and store.rollouts["grp"]["state"] == "halted"
    # The canary recovers later: the halt stands.
    run, watch = store.choose({"grp": v2}, ["lab"], canary_heartbeat(v2, healthy=True))
    assert run["grp"]["_rev"] == "1-a" and not watch
    assert store.choose({"grp": v2}, ["other"], {})[0] == {}


def test_rollback_after_repeated_failures_until_a_new_revision(tmp_path):
    store = Revisions(str(tmp_path / "r.json"), ME)
    good = {"_id": "own", "_rev": "1-a", "type": ME, "code": "ok"}
    store.ran_healthy(good)
    bad = dict(good, _rev="2-b", code="bad", rollback={"failures": 2, "within": 60})
    assert not store.failed(bad, "boom", now=100.0)
    assert not store.failed(bad, "boom", now=200.0)        # outside the window
    assert store.failed(bad, "boom", now=210.0)
    run, _ = store.choose({"own": bad}, [], {})
    assert run["own"]["_rev"] == "1-a"
    assert store.worker_report(run["own"])["rolled_back_from"] == "2-b"
    fixed = dict(bad, _rev="3-c", code="fixed")
    assert store.choose({"own": fixed}, [], {})[0]["own"]["_rev"] == "3-c"
    assert "rolled_back_from" not in store.worker_report(fixed)
    off = dict(bad, _rev="4-d", code="bad again", rollback=False)
    assert not any(store.failed(off, "boom", now=300.0 + i) for i in range(5))


def test_bad_settings_are_named_and_the_defaults_used(tmp_path):
    from himbeerecouch.groups import rollback_of, rollout_of, settings_problems, tags_problem
    doc = group("1-a", "v1", rollout="soon", rollback={"failures": "three", "within": -1})
    assert rollout_of(doc) is None
    assert rollback_of(doc) == {"failures": 3, "within": 600.0}
    problems = settings_problems(doc)
    assert any("'rollout' must be an object" in p for p in problems)
    assert any("rollback.failures" in p for p in problems)
    assert any("rollback.within" in p for p in problems)
    assert settings_problems(group("1-a", "v1", rollout={"canary": "123"}))
    assert not settings_problems(group("1-a", "v1", rollout={"canary": [123, "456"]},
                                       rollback=False))
    assert tags_problem({"tags": "lab"}) and tags_problem({"tags": ["lab", 3]})
    assert tags_problem({"tags": ["lab"]}) is None and tags_problem(None) is None
    # The store keeps deciding: a bad rollout runs the newest revision.
    store = Revisions(str(tmp_path / "r.json"), ME)
    assert store.choose({"grp": doc}, ["lab"], {})[0]["grp"] is doc


def test_nothing_kept_is_forgotten_before_the_server_answered(tmp_path):
    store = Revisions(str(tmp_path / "r.json"), ME)
    v1 = group("1-a", "v1")
    store.choose({"grp": v1}, ["lab"], {})
    store.ran_healthy(v1)
    store.choose({}, ["lab"], {}, complete=False)      # e.g. a reload before the first list
    assert store.kept["chosen"]["grp"] is v1 and store.kept["healthy"]["grp"] is v1
    store.choose({}, ["lab"], {})                       # the server's list: it is gone
    assert not store.kept["chosen"] and not store.kept["healthy"]
