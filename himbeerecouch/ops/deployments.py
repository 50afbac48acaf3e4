"""``himbeerecouch device set`` and ``rollout status|pause|resume``.

``device set`` writes a device document (``<MacID>_device``: its name, its
tags, and the server it is to move to, which the agent follows: see
agent/relocation.py).  ``rollout status`` reads a group code document, the
device documents that carry its tag and their heartbeats, and says which device runs which
revision, how the canaries fare and whether the rollout halted, with the same
verdict the devices reach themselves (:func:`himbeerecouch.groups.canary_verdict`).
``pause`` and ``resume`` set or clear ``rollout.paused`` on the group
document: the devices that are no canary then hold a new revision back.
"""
import json

from ..arguments import device_reference
from ..errors import UserError
from ..groups import (canary_entry, canary_verdict, device_doc_id, device_name, device_tags,
                      group_tag, rollout_of, source_digest)
from .connection import Connection, add_admin_arguments, failures, hide_arguments, iso_now
from .discover import public_server_url


def add_parsers(sub):
    p = sub.add_parser("device", help="name a device and give it tags",
                       description="Write the device document of a device: its name (shown "
                                   "wherever the device is, and accepted wherever a MacID is) "
                                   "and its tags (group code documents of a tag run on it).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    s = actions.add_parser("set", help="set the name and tags of a device")
    add_admin_arguments(s)
    s.add_argument("device", type=device_reference, metavar="MACID",
                   help="the device: MacID, MAC address or its current name")
    s.add_argument("--name", help="the device's new name")
    s.add_argument("--tag", action="append", metavar="T",
                   help="its tags are exactly these (repeatable)")
    s.add_argument("--add-tag", action="append", default=[], metavar="T", help="add a tag")
    s.add_argument("--remove-tag", action="append", default=[], metavar="T",
                   help="remove a tag")
    s.add_argument("--server", metavar="URL",
                   help="move the device to this server (without credentials): it writes "
                        "the URL into its server file and follows it; the device needs a "
                        "user there first (adopt or provision)")
    s.add_argument("--clear-server", action="store_true",
                   help="remove the server the device document names")
    s.set_defaults(func=cmd_device_set)

    p = sub.add_parser("rollout", help="the staged rollout of a group code document",
                       description="status: which device runs which revision of the group "
                                   "document DOC, the canaries' health, halted or not; pause "
                                   "and resume: stop or allow the spread of a new revision "
                                   "beyond the canaries.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, text in (("status", "show how the rollout stands"),
                         ("pause", "hold new revisions back from the devices that are no "
                                   "canary"),
                         ("resume", "let new revisions spread again")):
        s = actions.add_parser(action, help=text)
        add_admin_arguments(s)
        s.add_argument("doc_id", metavar="DOC", help="id of the group code document")
        if action == "status":
            s.add_argument("--json", action="store_true", help="print JSON")
        s.set_defaults(func=cmd_rollout)


# ---------------------------------------------------------------- device set
def cmd_device_set(args):
    if args.name is None and args.tag is None and not args.add_tag and not args.remove_tag \
            and args.server is None and not args.clear_server:
        raise UserError("nothing to set: give --name, --tag, --add-tag, --remove-tag, --server "
                        "or --clear-server", 2)
    server = public_server_url(args.server) if args.server is not None else None
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch device set %s %s" % (conn.shown, args.device))
    me = conn.whoami()
    conn.require_database()
    macid = conn.device_by_name(args.device)
    doc_id = device_doc_id(macid)
    with failures(conn, "reading %s" % doc_id):
        doc = conn.db.get(doc_id) or {"_id": doc_id, "created_by": me}
    doc.update(type="device", macid=macid, updated_at=iso_now(), updated_by=me)
    if args.name is not None:
        doc["name"] = args.name
    tags = list(args.tag) if args.tag is not None else device_tags(doc)
    tags = [t for t in tags + args.add_tag if t not in args.remove_tag]
    doc["tags"] = sorted(set(t.strip() for t in tags if t.strip()))
    if args.clear_server:
        doc.pop("server", None)
    if server is not None:
        doc["server"] = server
    with failures(conn, "saving %s" % doc_id):
        conn.db.save(doc)
    print("device %d: name %s, tags %s%s" % (
        macid, doc.get("name") or "-", ", ".join(doc["tags"]) or "none",
        ", moves to %s (if it follows its server file, not --server)" % doc["server"]
        if doc.get("server") else ""))
    return 0


# ---------------------------------------------------------------- rollout
def group_document(conn, doc_id):
    with failures(conn, "reading %s" % doc_id):
        doc = conn.db.get(doc_id)
    if doc is None or group_tag(doc) is None:
        raise UserError("%s is not a group code document (type \"tag:<tag>\") in %s"
                        % (doc_id, conn.database))
    return doc


def rollout_report(conn, doc):
    """Where the rollout of group document ``doc`` stands (a dict, for JSON)."""
    tag, digest = group_tag(doc), source_digest(doc)
    rollout = rollout_of(doc) or {"canary": [], "healthy_for": None, "paused": False}
    with failures(conn, "reading the device documents"):
        devices = {str(d["macid"]): d for d in conn.find({"type": "device"})
                   if isinstance(d.get("macid"), int) and tag in device_tags(d)}
    macids = sorted(set(devices) | set(rollout["canary"]))
    with failures(conn, "reading the heartbeats"):
        rows = conn.db.view("_all_docs", keys=["%s_heartbeat" % m for m in macids],
                            include_docs=True)
        heartbeats = {row.key.rsplit("_", 1)[0]: row.doc for row in rows}
    verdict, canaries = canary_verdict(rollout, doc["_id"], digest, heartbeats)
    rows, on_target = [], 0
    for m in macids:
        hb = heartbeats.get(m) or {}
        entry = canary_entry(hb, doc["_id"]) or {}
        held = (hb.get("rollouts") or {}).get(doc["_id"]) or {}
        on_target += entry.get("digest") == digest
        rows.append({"macid": m, "name": device_name(devices.get(m)),
                     "canary": m in rollout["canary"], "rev": entry.get("rev"),
                     "current": entry.get("digest") == digest, "state": entry.get("state"),
                     "held": held.get("state"), "rolled_back_from": entry.get("rolled_back_from"),
                     "error": entry.get("error")})
    halted = verdict == "failed" or any(r["held"] == "halted" for r in rows)
    if halted:
        state = "halted"
    elif rows and on_target == len(rows):
        state = "complete"
    elif rollout["paused"]:
        state = "paused"
    else:
        state = "waiting for the canaries" if verdict == "waiting" else "spreading"
    return {"doc_id": doc["_id"], "tag": tag, "rev": doc.get("_rev"), "digest": digest,
            "state": state, "canaries": canaries, "healthy_for": rollout["healthy_for"],
            "paused": rollout["paused"], "devices": rows}


def render_rollout(report):
    lines = ["%s (tag %s) rev %s: %s" % (report["doc_id"], report["tag"], report["rev"],
                                         report["state"].upper())]
    for macid, health in sorted(report["canaries"].items()):
        lines.append("  canary %s: %s (healthy after %g s)" % (macid, health,
                                                                report["healthy_for"]))
    for r in report["devices"]:
        text = "  %s%s%s: rev %s %s" % (r["macid"], " %s" % r["name"] if r["name"] else "",
                                        " (canary)" if r["canary"] else "", r["rev"] or "-",
                                        r["state"] or "not running")
        text += " [new revision]" if r["current"] else " [old revision]"
        if r["held"]:
            text += ", holding back: %s" % r["held"]
        if r["rolled_back_from"]:
            text += ", rolled back from %s: %s" % (r["rolled_back_from"], r["error"])
        lines.append(text)
    if not report["devices"]:
        lines.append("  no device has the tag %s" % report["tag"])
    return "\n".join(lines)


def cmd_rollout(args):
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch rollout %s %s %s" % (args.action, conn.shown, args.doc_id))
    conn.require_database()
    doc = group_document(conn, args.doc_id)
    if args.action == "status":
        report = rollout_report(conn, doc)
        print(json.dumps(report, indent=2) if args.json else render_rollout(report))
        return 0
    rollout = dict(doc.get("rollout") if isinstance(doc.get("rollout"), dict) else {})
    if args.action == "pause":
        rollout["paused"] = True
    else:
        rollout.pop("paused", None)
    doc["rollout"] = rollout
    with failures(conn, "saving %s" % doc["_id"]):
        conn.db.save(doc)
    print("rollout of %s %s" % (doc["_id"], "paused: devices that are no canary keep their "
                                "revision" if args.action == "pause" else "resumed"))
    return 0
