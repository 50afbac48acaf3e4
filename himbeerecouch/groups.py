"""Device documents, group code documents, rollouts and rollbacks: the formats.

What both sides read the same way (the agent decides from it, ``rollout
status`` reports from it), pure and without I/O:

- a **device document** ``<MacID>_device`` (``type`` ``"device"``) names a
  device and gives it ``tags``;
- a **group code document** (``type`` ``"tag:<tag>"``) runs on every device
  whose device document carries the tag;
- its optional ``rollout`` (``canary``, ``healthy_for``, ``paused``) stages a
  new revision, and ``rollback`` says when a crash-looping revision goes back
  to the last healthy one.

A revision is identified by the digest of what runs (:func:`source_digest`),
not by ``_rev``: pausing a rollout saves the document, and must not look like
a new revision to the devices.
"""
import hashlib
import json

DEVICE_TYPE = "device"
GROUP_PREFIX = "tag:"
DEFAULT_HEALTHY_FOR = 60.0
DEFAULT_ROLLBACK = {"failures": 3, "within": 600.0}
# What a revision runs: a change of anything else (rollout, restart, tags) is
# no new revision.
SOURCE_KEYS = ("name", "code", "modules", "global_modules", "limits")


def device_doc_id(macid):
    return "%d_device" % int(macid)


def group_type(tag):
    return GROUP_PREFIX + tag


def group_tag(doc):
    """The tag a group code document is for, or None."""
    t = doc.get("type")
    if isinstance(t, str) and t.startswith(GROUP_PREFIX) and len(t) > len(GROUP_PREFIX):
        return t[len(GROUP_PREFIX):]
    return None


def device_tags(device_doc):
    """The tags of a device document (strings only; anything else is ignored)."""
    tags = (device_doc or {}).get("tags")
    if not isinstance(tags, list):
        return []
    return sorted({t for t in tags if isinstance(t, str) and t})


def device_name(device_doc):
    name = (device_doc or {}).get("name")
    return name if isinstance(name, str) and name.strip() else None


def source_digest(doc):
    """12 hex digits naming what a document runs (see the module's docstring)."""
    blob = json.dumps([doc.get(k) for k in SOURCE_KEYS], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _bad_number(value):
    return isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0


def _number(value, default):
    return default if _bad_number(value) else float(value)


def rollout_of(doc):
    """``{"canary": [MacID str...], "healthy_for": s, "paused": bool}`` or None."""
    r = doc.get("rollout")
    if not isinstance(r, dict):
        return None
    canary = r.get("canary")
    canary = [str(c) for c in canary if isinstance(c, (int, str)) and not isinstance(c, bool)] \
        if isinstance(canary, list) else []
    return {"canary": canary, "healthy_for": _number(r.get("healthy_for"), DEFAULT_HEALTHY_FOR),
            "paused": r.get("paused") is True}


def _rollback_settings(doc):
    r = doc.get("rollback")
    return r if isinstance(r, dict) else {}


def rollback_of(doc):
    """``{"failures": n, "within": s}``, or None when ``"rollback": false``."""
    if doc.get("rollback") is False:
        return None
    r = _rollback_settings(doc)
    return {"failures": max(1, int(_number(r.get("failures"), DEFAULT_ROLLBACK["failures"]))),
            "within": _number(r.get("within"), DEFAULT_ROLLBACK["within"])}


def healthy_for(doc):
    """Seconds a revision runs without failing before it counts as healthy: the
    rollout's ``healthy_for``, else ``rollback.healthy_for``, else 60."""
    rollout = rollout_of(doc)
    if rollout is not None:
        return rollout["healthy_for"]
    return _number(_rollback_settings(doc).get("healthy_for"), DEFAULT_HEALTHY_FOR)


def settings_problems(doc):
    """What is wrong with a document's ``rollout`` and ``rollback`` (texts; the
    agent says them and uses the defaults instead)."""
    problems = []
    r = doc.get("rollout")
    if r is not None:
        if not isinstance(r, dict):
            problems.append("'rollout' must be an object such as {\"canary\": [\"<MacID>\"], "
                            "\"healthy_for\": 120}; ignored")
        else:
            canary = r.get("canary", [])
            if not isinstance(canary, list) or not all(
                    str(c).isdigit() and not isinstance(c, bool) for c in canary):
                problems.append("rollout.canary must be a list of MacIDs")
            if "healthy_for" in r and _bad_number(r["healthy_for"]):
                problems.append("rollout.healthy_for must be a number of seconds; %g is used"
                                % DEFAULT_HEALTHY_FOR)
    r = doc.get("rollback")
    if r is not None and r is not False:
        if not isinstance(r, dict):
            problems.append("'rollback' must be false or an object such as {\"failures\": 3, "
                            "\"within\": 600}; the defaults are used")
        else:
            for key in ("failures", "within", "healthy_for"):
                if key in r and _bad_number(r[key]):
                    problems.append("rollback.%s must be a positive number; the default is used"
                                    % key)
    return problems


def tags_problem(device_doc):
    """Why the tags of a device document cannot all be used, or None."""
    tags = (device_doc or {}).get("tags")
    if tags is None or (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        return None
    return "'tags' must be a list of strings; only its strings are used"


def canary_entry(heartbeat, doc_id):
    """The worker entry of ``doc_id`` in a canary's heartbeat, or None."""
    for w in (heartbeat or {}).get("workers") or []:
        if isinstance(w, dict) and w.get("doc_id") == doc_id:
            return w
    return None


def canary_verdict(rollout, doc_id, digest, heartbeats):
    """What the canaries' heartbeats say of revision ``digest`` of ``doc_id``.

    ``heartbeats`` maps a canary's MacID (str) to its heartbeat (or None).
    Returns ``(state, per_canary)``: state ``"failed"`` (a canary rolled back
    from it, or it failed there), ``"healthy"`` (every canary reports it
    running, with no failure, for ``healthy_for`` seconds: ``"healthy": true``
    in its worker entry) or ``"waiting"``.
    """
    per, failed, healthy = {}, False, True
    for macid in rollout["canary"]:
        entry = canary_entry(heartbeats.get(macid), doc_id)
        if entry is None:
            per[macid], healthy = "no report", False
            continue
        if entry.get("rolled_back_digest") == digest or (
                entry.get("digest") == digest
                and (entry.get("rev_failures") or entry.get("state") == "fatal")):
            per[macid], failed = "failed: %s" % (entry.get("rolled_back_error")
                                                  or entry.get("error") or entry.get("state")), True
        elif (entry.get("digest") == digest and entry.get("state") == "running"
              and entry.get("healthy") is True):
            per[macid] = "healthy"
        else:
            per[macid], healthy = ("running, not yet healthy" if entry.get("digest") == digest
                                   else "not yet on it"), False
    if failed:
        return "failed", per
    return ("healthy" if healthy else "waiting"), per
