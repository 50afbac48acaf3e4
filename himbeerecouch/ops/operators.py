"""``himbeerecouch operator add|remove|list``: the people who may run the fleet.

An operator is a CouchDB user with the role ``operator``: provisioning makes
that role a member of the database and lets it write code and commands, so
an operator can use the page and the CLI (``push``, ``exec``, ``status``,
``logs``).  Managing users needs a server admin.

The new operator's password never travels on the command line (where ``ps``
shows it to everyone on the machine): it is asked for twice at a terminal,
or read from ``$HIMBEERECOUCH_OPERATOR_PASSWORD`` (scripts, no terminal).
"""
import getpass
import os
import sys

from ..errors import UserError
from .connection import Connection, add_admin_arguments, failures, hide_arguments
from .designdoc import OPERATOR_ROLE
from .users import USER_PREFIX, USERS_DB, user_id, with_roles

PASSWORD_VARIABLE = "HIMBEERECOUCH_OPERATOR_PASSWORD"


def add_parser(sub):
    p = sub.add_parser(
        "operator", help="add, remove or list operator users (role %s)" % OPERATOR_ROLE,
        description="Manage the users with the role %r, who may write code and commands "
                    "in a provisioned database (needs a server admin in ADMIN_URL).  The "
                    "password of a new operator is asked for at the terminal, or taken "
                    "from $%s; never from the command line." % (OPERATOR_ROLE, PASSWORD_VARIABLE))
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, text in (("add", "create the user (or give an existing one the role "
                                 "and a new password)"),
                         ("remove", "take the role away; a user left without roles is "
                                    "deleted")):
        a = actions.add_parser(action, help=text, description=text)
        add_admin_arguments(a, database=False)
        a.add_argument("name", metavar="NAME", help="the operator's user name")
        a.set_defaults(func=cmd_operator)
    a = actions.add_parser("list", help="the users with the role %s" % OPERATOR_ROLE)
    add_admin_arguments(a, database=False)
    a.set_defaults(func=cmd_operator, name=None)
    return p


def new_password(name):
    """The password for operator ``name``: from the environment, else a prompt."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is None and sys.stdin.isatty():
        password = getpass.getpass("password for operator %s: " % name)
        if getpass.getpass("the same again: ") != password:
            raise UserError("the two passwords differ; nothing changed")
    if password is None:
        raise UserError("no password for operator %s: run this at a terminal, or put it in $%s"
                        % (name, PASSWORD_VARIABLE), 2)
    if not password:
        raise UserError("an empty password is not allowed; nothing changed", 2)
    return password


def check_name(name):
    if not name or name.startswith("_") or ":" in name or name != name.strip():
        raise UserError("%r is not a usable user name (no leading '_', no ':', no "
                        "surrounding spaces)" % name, 2)


def add_operator(users, name, password):
    doc = users.get(user_id(name))
    created = doc is None
    doc, _ = with_roles(doc, name, [OPERATOR_ROLE])
    doc["password"] = password
    users.save(doc)
    return ("operator %s: created" % name if created
            else "operator %s: role %s, new password" % (name, OPERATOR_ROLE))


def remove_operator(users, name):
    doc = users.get(user_id(name))
    if doc is None or OPERATOR_ROLE not in (doc.get("roles") or []):
        raise UserError("%s is not an operator" % name)
    doc["roles"] = [r for r in doc["roles"] if r != OPERATOR_ROLE]
    if doc["roles"]:
        users.save(doc)
        return "operator %s: role %s removed (the user keeps %s)" % (
            name, OPERATOR_ROLE, ", ".join(doc["roles"]))
    users.delete(doc)
    return "operator %s: user deleted" % name


def list_operators(users):
    rows = users.view("_all_docs", startkey=USER_PREFIX, endkey=USER_PREFIX + "\ufff0",
                      include_docs=True)
    return sorted(r.doc["name"] for r in rows
                  if r.doc is not None and OPERATOR_ROLE in (r.doc.get("roles") or []))


def cmd_operator(args):
    if args.name is not None:
        check_name(args.name)
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch operator %s %s%s" % (args.action, conn.shown,
                                                       " " + args.name if args.name else ""))
    conn.whoami()
    password = new_password(args.name) if args.action == "add" else None
    with failures(conn, "%s operator users (this needs a server admin)" % (
            "listing" if args.action == "list" else "changing")):
        users = conn.server[USERS_DB]
        if args.action == "list":
            names = list_operators(users)
            print("\n".join(names) if names else "no operators on %s" % conn.url)
        elif args.action == "add":
            print(add_operator(users, args.name, password))
        else:
            print(remove_operator(users, args.name))
    return 0
