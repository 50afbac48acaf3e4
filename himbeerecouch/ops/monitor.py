"""``himbeerecouch status`` and ``logs``: what the fleet is doing, from the database.

``status`` reads every heartbeat document (``<MacID>_heartbeat``) and shows
one row per device: the age of its last heartbeat (against the server's
clock, so this machine's clock does not matter), ip, version and its workers;
a device silent for three heartbeat periods says SILENT, one whose agent
stopped (its last heartbeat says so) STOPPED.  ``logs`` prints the
log documents ``<MacID>_log_<doc id>`` (the last 200 lines of each worker)
and, with ``--follow``, the lines that arrive afterwards.
"""
import datetime
import email.utils
import json
import sys
import time

from ..errors import UserError
from ..arguments import add_device_argument
from ..groups import device_name, device_tags
from .connection import Connection, add_admin_arguments, failures, hide_arguments

DEFAULT_HEARTBEAT_INTERVAL = 10.0
SILENT_PERIODS = 3
FOLLOW_PERIOD = 1.0


def add_parsers(sub):
    p = sub.add_parser(
        "status", help="the devices, their last heartbeat and their workers",
        description="One row per device that sent a heartbeat: its age, ip, version and "
                    "workers.  Devices silent for %d heartbeat periods are marked SILENT, those "
                    "whose agent stopped STOPPED."
                    % SILENT_PERIODS)
    add_admin_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "logs", help="the last lines of a device's workers",
        description="Print the last lines each worker of the device printed (kept in the "
                    "database by the agent); --follow prints new lines as they arrive.")
    add_admin_arguments(p)
    add_device_argument(p)
    p.add_argument("--name", help="only the worker with this name (or document id)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(func=cmd_logs)


# ---------------------------------------------------------------- status
def parse_time(text):
    """Seconds since the epoch of an RFC 1123 or ISO 8601 time, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def heartbeat_time(doc):
    return parse_time(doc.get("timestamp")) or parse_time(doc.get("sent_at"))


def device_of(doc):
    if isinstance(doc.get("macid"), int):
        return doc["macid"]
    head = doc["_id"][:-len("_heartbeat")]
    try:
        return int(doc.get("created_by") or head)
    except ValueError:
        return head


def summary(doc, now, device_doc=None):
    """What ``status`` shows of one heartbeat document (and the device's document)."""
    when = heartbeat_time(doc)
    interval = doc.get("heartbeat_interval")
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        interval = DEFAULT_HEARTBEAT_INTERVAL
    age = None if when is None else max(0.0, now - when)
    workers = [w for w in (doc.get("workers") or []) if isinstance(w, dict)]
    return {
        "macid": device_of(doc),
        "name": device_name(device_doc),
        "tags": device_tags(device_doc),
        "hostname": doc.get("hostname"),
        "ip": doc.get("ip"),
        "version": doc.get("version"),
        "timestamp": doc.get("timestamp"),
        "timestamp_source": doc.get("timestamp_source"),
        "age_s": None if age is None else round(age, 1),
        "heartbeat_interval": interval,
        "silent": age is None or age > SILENT_PERIODS * interval,
        # The agent's last heartbeat says "stopped" when it stopped on purpose.
        "stopped": doc.get("state") == "stopped",
        "uptime": doc.get("uptime"),
        "load": doc.get("load"),
        "cpu_temperature": doc.get("cpu_temperature"),
        "running_ids": doc.get("running_ids") or [],
        "feed": doc.get("feed"),
        "workers": [{k: w.get(k) for k in ("name", "doc_id", "state", "pid", "restarts",
                                           "last_exit_code", "error", "rev", "tag",
                                           "rolled_back_from")} for w in workers],
    }


def human_age(seconds):
    if seconds is None:
        return "never"
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    if seconds < 172800:
        return "%d h" % (seconds // 3600)
    return "%d d" % (seconds // 86400)


def worker_counts(workers):
    counts = {}
    for w in workers:
        counts[w.get("state") or "?"] = counts.get(w.get("state") or "?", 0) + 1
    return ", ".join("%d %s" % (n, state) for state, n in sorted(counts.items())) or "none"


def render_status(devices):
    rows = [("DEVICE", "HOSTNAME", "IP", "LAST HEARTBEAT", "VERSION", "WORKERS")]
    details = {}
    for d in devices:
        seen = human_age(d["age_s"]) + " ago" if d["age_s"] is not None else "never"
        if d["stopped"]:
            seen = "STOPPED " + seen
        elif d["silent"]:
            seen = "SILENT " + seen
        name = "%s %s" % (d["macid"], d["name"]) if d["name"] else str(d["macid"])
        rows.append((name, d["hostname"] or "-", d["ip"] or "-", seen,
                     d["version"] or "-", worker_counts(d["workers"])))
        details[len(rows) - 1] = d
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        for w in details.get(n, {}).get("workers", []):
            text = "    %s [%s%s] %s" % (w["name"], w["doc_id"],
                                          ", tag %s" % w["tag"] if w.get("tag") else "",
                                          w["state"])
            if w.get("pid"):
                text += " pid %s" % w["pid"]
            if w.get("restarts"):
                text += " restarts %s" % w["restarts"]
            if w.get("rolled_back_from"):
                text += " ROLLED BACK from %s" % w["rolled_back_from"]
            if w.get("error"):
                text += ": %s" % str(w["error"]).splitlines()[0][:120]
            lines.append(text)
    return "\n".join(lines)


def cmd_status(args):
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch status %s" % conn.shown)
    conn.require_database()
    docs = [d for d in conn.find({"type": "heartbeat"}) if d["_id"].endswith("_heartbeat")]
    named = {d.get("macid"): d for d in conn.find({"type": "device"})}
    now = conn.server_time()
    devices = sorted((summary(d, now, named.get(device_of(d))) for d in docs),
                     key=lambda d: str(d["macid"]))
    if args.json:
        print(json.dumps(devices, indent=2))
    elif not devices:
        print("no device has sent a heartbeat to %s yet" % args.database)
    else:
        print(render_status(devices))
    return 0


# ---------------------------------------------------------------- logs
def log_documents(conn, macid):
    prefix = "%d_log_" % macid
    with failures(conn, "reading the logs of device %d" % macid):
        rows = conn.db.view("_all_docs", startkey=prefix, endkey=prefix + "\ufff0",
                            include_docs=True)
        return [r.doc for r in rows if r.doc is not None]


def valid_lines(doc):
    return [tuple(str(x) for x in line[:3]) for line in doc.get("lines") or []
            if isinstance(line, list) and len(line) >= 3]


def new_lines(old, new):
    """The lines of ``new`` that come after what ``old`` already showed.

    Both are windows onto one growing log (the last N lines), so the new
    lines follow the longest end of ``old`` that starts ``new``.
    """
    for k in range(min(len(old), len(new)), 0, -1):
        if old[len(old) - k:] == new[:k]:
            return new[k:]
    return new


def format_line(name, line):
    """``stamp [name] text``; ``!`` marks the worker's stderr, ``agent:`` what
    the agent said about the worker (started, exited, restarting ...)."""
    stamp, stream, text = line
    marker = {"stdout": "", "": "", "agent": " agent:"}.get(stream, " !")
    return "%s [%s]%s %s" % (stamp, name, marker, text)


def cmd_logs(args):
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch logs %s --device %s" % (conn.shown, args.device))
    args.device = conn.device_by_name(args.device)
    conn.require_database()

    def selected():
        docs = log_documents(conn, args.device)
        if args.name is None:
            return docs
        return [d for d in docs if args.name in (d.get("name"), d.get("doc_id"))]

    docs = selected()
    if not docs:
        conn.known_device(args.device)
        if args.name is not None:
            known = sorted({str(d.get("name")) for d in log_documents(conn, args.device)})
            if not args.follow:
                raise UserError("device %d has no log of a worker named %r%s"
                                % (args.device, args.name,
                                   " (there are: %s)" % ", ".join(known) if known else ""))
        elif not args.follow:
            print("device %d has no logs in %s yet" % (args.device, args.database),
                  file=sys.stderr)
            return 0
    shown, dropped = {}, {}
    out = []
    for doc in docs:
        lines = valid_lines(doc)
        shown[doc["_id"]], dropped[doc["_id"]] = lines, doc.get("dropped") or 0
        name = str(doc.get("name") or doc.get("doc_id") or doc["_id"])
        out += [(line[0], format_line(name, line)) for line in lines]
    for _, text in sorted(out, key=lambda x: x[0]):
        print(text)
    sys.stdout.flush()
    trouble = None
    while args.follow:
        time.sleep(FOLLOW_PERIOD)
        try:
            current = selected()
        except UserError as e:
            # The server may come back: say so once and keep following.
            if str(e) != trouble:
                print("himbeerecouch: %s (retrying)" % e, file=sys.stderr)
            trouble = str(e)
            continue
        trouble = None
        for doc in current:
            name = str(doc.get("name") or doc.get("doc_id") or doc["_id"])
            lines = valid_lines(doc)
            fresh = new_lines(shown.get(doc["_id"], []), lines)
            lost = (doc.get("dropped") or 0) - dropped.get(doc["_id"], 0)
            if lost > 0:
                print("[%s] ... %d line(s) dropped on the device" % (name, lost))
            for line in fresh:
                print(format_line(name, line))
            shown[doc["_id"]], dropped[doc["_id"]] = lines, doc.get("dropped") or 0
        sys.stdout.flush()
    return 0
