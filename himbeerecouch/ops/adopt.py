"""``himbeerecouch adopt``: give the devices on the LAN accounts of their own.

It broadcasts the server's URL (never the admin's credentials) as an adopt
request; every device that listens answers with the claim of its own login
secret (himbeerecouch.discovery).  Without MACs it lists the devices that
answered (MacID, MAC address, host name, fingerprint, version, the server
each follows, and whether it has a user here and whether that user is this
claim) and changes nothing.  With MACs it creates or replaces the users of
exactly those devices from their claims, with the roles ``provision
--device`` gives (``raspberry``, and the lab's writer role in a nEDM
database), and says what it did.  Nobody learns a device's secret: a claim
is only what CouchDB stores for it.  A replaced user's old password (the
legacy one) no longer logs in; the device notices within seconds and logs
in with its secret.

Anyone on the LAN can answer in a device's name.  A MAC given as
``MAC=FINGERPRINT`` (the fingerprint the device logs, and ``himbeerecouch
credentials`` prints on it) is adopted only from an answer with that
fingerprint, and a device that answers with two different claims is never
adopted.
"""
import argparse
import json
import sys

import couchdb.http

from .. import identity
from ..arguments import DEVICE_HELP, macid
from ..discovery import claim_of_user
from ..errors import UserError
from . import designdoc
from .connection import Connection, add_admin_arguments, failures, hide_arguments
from .discover import add_broadcast_options, find_devices, public_server_url
from .provision import lab_writer_roles
from .users import USERS_DB, user_id, with_roles

# The other ways CouchDB keeps a password: gone once the claim is the login.
OLD_PASSWORD_FIELDS = ("password", "password_sha")


def adopt_argument(text):
    """``MAC`` or ``MAC=FINGERPRINT`` -> (macid, fingerprint or None)."""
    device, _, wanted = text.partition("=")
    try:
        value = macid(device)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError("%s: expected MAC or MAC=FINGERPRINT" % e) from None
    wanted = wanted.strip().lower() or None
    if wanted is not None and not all(c in "0123456789abcdef" for c in wanted):
        raise argparse.ArgumentTypeError("%r is not a fingerprint (hex digits)" % wanted)
    return value, wanted


def add_parser(sub):
    p = sub.add_parser(
        "adopt", help="list the devices on the LAN; give those named accounts of their own",
        description="Broadcast the server URL (without credentials) and list the devices "
                    "that answer, with the fingerprint each device also prints in its log. "
                    "Changes nothing unless devices are named: then it creates or replaces "
                    "exactly their users from the claims they sent (roles as `provision "
                    "--device`), and the devices log in with secrets of their own.")
    add_admin_arguments(p)
    p.add_argument("devices", nargs="*", type=adopt_argument, metavar="MAC[=FINGERPRINT]",
                   help=DEVICE_HELP + "; with =FINGERPRINT only an answer with that "
                        "fingerprint is adopted")
    add_broadcast_options(p, timeout=3.0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_adopt, parser=p, take_extras=_more_devices)
    return p


def _more_devices(args, extras):
    """The devices named after an option (``adopt URL --timeout 5 MAC``)."""
    rest = []
    for word in extras:
        if word.startswith("-"):
            rest.append(word)
            continue
        try:
            args.devices.append(adopt_argument(word))
        except argparse.ArgumentTypeError as e:
            args.parser.error("argument MAC[=FINGERPRINT]: %s" % e)
    return rest


def cmd_adopt(args):
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch adopt %s" % conn.shown)
    conn.whoami()
    url = public_server_url(conn.url)
    rows = find_devices(url, args, adopt=True)
    users = read_users(conn, {r["MacID"] for r in rows if r["MacID"] is not None}
                       | {m for m, _ in args.devices})
    for r in rows:
        r["user"] = user_state(users, r["MacID"], r["claim"])
    done, errors = [], []
    if args.devices:
        roles = [designdoc.DEVICE_ROLE] + lab_writer_roles(conn)
        for device, wanted in args.devices:
            try:
                done.append(adopt_device(conn, users, rows, device, wanted, roles, args.timeout))
            except UserError as e:
                errors.append(str(e))
    if args.json:
        print(json.dumps({"devices": rows, "adopted": done, "errors": errors}, indent=2))
    elif args.devices:
        for line in done:
            print(line["said"])
    else:
        print_devices(rows, args.timeout)
    for error in errors if not args.json else ():
        print("himbeerecouch: %s" % error, file=sys.stderr)
    return 1 if errors else 0


def read_users(conn, macids):
    """``{MacID: user document or None}``; empty when _users may not be read
    (an operator who is no server admin: every user is then "unknown")."""
    db = conn.database_named(USERS_DB)
    found = {}
    for m in sorted(macids):
        with failures(conn, "reading the user of device %d" % m):
            try:
                found[m] = db.get(user_id(identity.device_user(m)))
            except (couchdb.http.Unauthorized, couchdb.http.Forbidden):
                return {}
    return found


def user_state(users, device, claim):
    """What the server has for ``device``: ``none``, ``this claim``,
    ``another password`` or ``unknown`` (not allowed to read _users)."""
    if device is None:
        return None
    if device not in users:
        return "unknown"
    doc = users[device]
    if doc is None:
        return "none"
    if claim is not None and claim_of_user(doc) == claim \
            and not any(k in doc for k in OLD_PASSWORD_FIELDS):
        return "this claim"
    return "another password"


def print_devices(rows, timeout):
    if not rows:
        print("no device answered within %g s" % timeout)
        return
    print("%-16s %-18s %-16s %-13s %-8s %-18s %-28s %s" % (
        "MACID", "MAC", "HOST", "FINGERPRINT", "VERSION", "USER", "SERVER", "IP"))
    for r in rows:
        print("%-16s %-18s %-16s %-13s %-8s %-18s %-28s %s" % (
            r["MacID"], r["mac"], r["hostname"] or "-", r["fingerprint"] or "no claim",
            r["version"] or "-", r["user"] or "-", r["server"] or "none (waiting)",
            r["ip"]))
    print("nothing changed: `himbeerecouch adopt ADMIN_URL MAC...` adopts the devices named")


def answer_of(rows, device, wanted, timeout):
    """The one claim ``device`` answered with; UserError says why there is none."""
    mine = [r for r in rows if r["MacID"] == device]
    if not mine:
        raise UserError("device %d (%s) did not answer within %g s: is its agent running "
                        "and answering discovery (not --no-answer-discovery), and on this "
                        "LAN?" % (device, identity.mac_address(device), timeout))
    prints = sorted({r["fingerprint"] or "no claim" for r in mine})
    where = ", ".join(sorted({r["ip"] for r in mine}))
    if len(prints) > 1:
        raise UserError("device %d answered from %s with different claims (%s): not adopted; "
                        "compare with the fingerprint it logs and give MAC=FINGERPRINT"
                        % (device, where, ", ".join(prints)))
    row = mine[0]
    if row["claim"] is None:
        raise UserError("device %d offers no claim (an older agent, or login = legacy): give "
                        "it a user with `provision --device %d:PASSWORD`" % (device, device))
    if wanted is not None and not row["fingerprint"].startswith(wanted):
        raise UserError("device %d answered from %s with fingerprint %s, not %s: not adopted"
                        % (device, where, row["fingerprint"], wanted))
    return row


def adopt_device(conn, users, rows, device, wanted, roles, timeout):
    """Create or replace the user of ``device`` from its claim; what was done."""
    row = answer_of(rows, device, wanted, timeout)
    name = identity.device_user(device)
    before = users.get(device)
    doc, added = with_roles(dict(before) if before else None, name, roles)
    state = user_state(users, device, row["claim"])
    if state == "this claim" and not added:
        what = "already adopted: its user holds this claim"
    else:
        for key in OLD_PASSWORD_FIELDS:
            doc.pop(key, None)
        doc.update(row["claim"])
        with failures(conn, "writing the user of device %d" % device):
            conn.database_named(USERS_DB).save(doc)
        users[device] = doc
        if before is None:
            what = "user %s created from its claim" % name
        elif state == "this claim":
            what = "role %s added" % ", ".join(added)
        else:
            what = "user %s replaced by its claim: its old password no longer logs in" % name
    elsewhere = ""
    if row["server"] and row["server"] != conn.url:
        elsewhere = "; it follows %s, and logs in here once it moves here" % row["server"]
    said = "device %d (%s, %s): %s (fingerprint %s, roles %s)%s" % (
        device, row["mac"], row["hostname"] or "no host name", what, row["fingerprint"],
        ", ".join(doc["roles"]), elsewhere)
    return {"MacID": device, "fingerprint": row["fingerprint"], "roles": doc["roles"],
            "done": what, "said": said}
