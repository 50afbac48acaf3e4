"""``himbeerecouch provision``: make a database ready for the fleet, idempotently.

One run creates the database if it is missing, installs or updates
``_design/himbeerecouch`` (only the parts it owns; a design document that is
already right is not written again), merges ``_security`` (adds the admin
roles and the members ``operator`` and ``raspberry``, drops nothing),
stores the fleet page in the page database (page.py), lets it run on CouchDB
3.2+ (csp.py), and creates or updates one user per ``--device``.  A second run
with the same arguments changes nothing.

A device's password is ``sha1(MacID + serial)``, and only the device knows
its serial, so ``--device MACID:PASSWORD`` gives the password (what
``himbeerecouch credentials`` prints on the device, or ``discover`` lists).
``--device MACID`` alone keeps the password of an existing user and only
makes sure of its role; for a user that does not exist yet it is an error.
"""
import argparse

import couchdb
import couchdb.http

from .. import couch, identity
from ..arguments import DEVICE_HELP, MAC_WITH_COLONS, macid
from ..errors import UserError
from . import csp, designdoc, page
from .connection import Connection, add_admin_arguments, failures, hide_arguments
from .users import USERS_DB, merged_roles, user_id, with_roles

def device_argument(text):
    """``MACID`` or ``MACID:PASSWORD`` -> (macid, password or None); the device
    may also be a MAC address (``b8:27:eb:12:34:56:PASSWORD``)."""
    mac = MAC_WITH_COLONS.match(text)
    if mac:
        device, sep, password = mac.group(0), text[mac.end():mac.end() + 1], text[mac.end() + 1:]
    else:
        device, sep, password = text.partition(":")
    try:
        value = macid(device)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError("%s: expected MACID or MACID:PASSWORD" % e) from None
    if sep and not password:
        raise argparse.ArgumentTypeError("empty password for device %d" % value)
    return value, (password or None)


def add_parser(sub):
    p = sub.add_parser(
        "provision", help="prepare a database for the fleet (idempotent)",
        description="Create the database, install _design/himbeerecouch (security rules, "
                    "filters, views, the timestamping update handler), merge _security "
                    "and create or update the device users.  Safe to run again.")
    add_admin_arguments(p)
    p.add_argument("--device", action="append", default=[], type=device_argument,
                   metavar="MACID[:PASSWORD]",
                   help=DEVICE_HELP + "; create or update its user (role raspberry); the password "
                        "is what `himbeerecouch credentials` prints on the device; without "
                        "it an existing user keeps its password (repeatable)")
    p.add_argument("--operator-role", action="append", default=[], metavar="ROLE",
                   help="a further role that may write code and commands, like 'operator' "
                        "(repeatable)")
    p.add_argument("--page-database", default=page.PAGE_DATABASE, metavar="NAME",
                   help="the database, readable by anyone, that holds the fleet page "
                        "(default: %(default)s)")
    p.set_defaults(func=cmd_provision)
    return p


def cmd_provision(args):
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch provision %s" % conn.shown)
    conn.whoami()
    report = provision(conn, args.device, args.operator_role, args.page_database)
    for line in report:
        print(line)
    return 0


LAB_DESIGN = "_design/nedm_default"


def lab_writer_roles(conn):
    """The writer role of a database of the lab's nEDM web interface, if it is one.

    Its page writes code and commands as users with the role ``<name>_writer``
    (``raspberries_writer`` for ``nedm/raspberries``): our rules must let them
    go on doing so, or provisioning would break the lab's page.
    """
    with failures(conn, "reading %s" % LAB_DESIGN):
        if conn.db.get(LAB_DESIGN) is None:
            return []
    name = conn.database.split("/", 1)[1] if conn.database.startswith("nedm/") else conn.database
    return [name + "_writer"]


def provision(conn, devices=(), operator_roles=(), page_database=page.PAGE_DATABASE):
    """Do the work; returns the lines that say what changed."""
    report = []
    lab_writers = lab_writer_roles(conn)
    lab = [r for r in lab_writers if r not in operator_roles]
    if lab:
        report.append("nEDM database: its writer role %s may write code and commands"
                      % ", ".join(lab))
        operator_roles = list(operator_roles) + lab
    report.append(ensure_database(conn))
    report.append(ensure_design_document(conn, operator_roles))
    report.extend(page.ensure_page(conn, page_database))
    report.extend(csp.ensure_csp(conn))
    report.append(ensure_security(conn, operator_roles))
    # The lab's own validate_doc_update lets only its writer role write at
    # all: a device needs it there for its heartbeat, logs and command
    # results.  Our rules keep a device (MacID name + device role) to those.
    for device, password in devices:
        report.append(ensure_device_user(conn, device, password, lab_writers))
    return report


def ensure_database(conn):
    with failures(conn, "creating database %s" % conn.database):
        try:
            conn.db.info()
            return "database %s: exists" % conn.database
        except couchdb.http.ResourceNotFound:
            conn.server.create(conn.database)
            return "database %s: created" % conn.database


def ensure_design_document(conn, operator_roles=()):
    wanted = designdoc.design_document(operator_roles)
    with failures(conn, "installing %s" % designdoc.DESIGN_ID):
        current = conn.db.get(designdoc.DESIGN_ID)
        # Earlier versions kept the page here; it lives in the page database now.
        attachments = page.drop_page_files((current or {}).get("_attachments"))
        if current is not None and all(current.get(k) == v for k, v in wanted.items()) \
                and attachments is None:
            return "%s: up to date" % designdoc.DESIGN_ID
        doc = dict(current or {})
        doc.update(wanted)     # keys it does not own (other attachments, ...) stay
        if attachments is not None:
            doc["_attachments"] = attachments
        conn.db.save(doc)
    return "%s: %s" % (designdoc.DESIGN_ID, "updated" if current else "installed")


def _merge_roles(section, roles):
    section = dict(section or {})
    section["names"] = list(section.get("names") or [])
    section["roles"], _ = merged_roles(section.get("roles"), roles)
    return section


def ensure_security(conn, operator_roles=()):
    member_roles = [designdoc.OPERATOR_ROLE] + list(operator_roles) + [designdoc.DEVICE_ROLE]
    with failures(conn, "reading the _security of %s" % conn.database):
        current = conn.db.security or {}
    wanted = dict(current)
    wanted["admins"] = _merge_roles(current.get("admins"), [])
    wanted["members"] = _merge_roles(current.get("members"), member_roles)
    if wanted == current:
        return "_security: up to date"
    with failures(conn, "writing the _security of %s" % conn.database):
        conn.db.security = wanted
    return "_security: members %s" % ", ".join(wanted["members"]["roles"])


def ensure_device_user(conn, macid, password=None, lab_roles=()):
    """Create or update the user of device ``macid``: the device role, plus
    ``lab_roles`` (the writer role of a lab database), never fewer roles."""
    name = identity.device_user(macid)
    with failures(conn, "reading user %s" % name):
        users = conn.server[USERS_DB]
        doc = users.get(user_id(name))
    if doc is None and password is None:
        raise UserError("device %d has no user yet: give its password, --device %d:PASSWORD "
                        "(`himbeerecouch credentials` on the device prints it)" % (macid, macid))
    changed = ["created"] if doc is None else []
    doc, added = with_roles(doc, name, [designdoc.DEVICE_ROLE] + list(lab_roles))
    changed += ["role %s" % role for role in added]
    with failures(conn, "checking the password of user %s" % name):
        if password is not None and ("created" in changed
                                     or not couch.logs_in(conn.url, name, password,
                                                          conn.timeout, conn.ca_file)):
            doc["password"] = password
            if "created" not in changed:
                changed.append("password")
    if not changed:
        return "device %d: user %s up to date" % (macid, name)
    with failures(conn, "writing user %s" % name):
        users.save(doc)
    return "device %d: user %s %s" % (macid, name, ", ".join(changed))
