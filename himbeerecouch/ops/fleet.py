"""``himbeerecouch push`` and ``exec``: send code and commands to one device.

``push`` makes the code document with a given name for a device hold the
given files.  It finds the document by ``type`` and ``name`` (so it also
updates documents the web page made); a new one gets the id
``<MacID>_<slug of the name>``.  Keys it does not manage (``restart``,
``limits``, ``created_by``, ...) stay as they were.

``exec`` stores a command document ``{"type": "<MacID>_cmd", "cmd": [...]}``,
waits for the device to write ``ret`` (or ``error``), prints the command's
stdout and stderr and exits with its exit code.  ``exec --cancel ID`` marks a
command that no device has claimed yet ``cancelled_at``/``cancelled_by``: the
agent never runs it, and the design rules keep a device from undoing that.
"""
import argparse
import re
import secrets
import sys
import time

import couchdb.http

from ..documents import RESTART_POLICIES
from ..errors import UserError
from ..sandbox.modules import BadModule, validate_module_name
from ..arguments import add_device_argument, device_reference, positive_float
from ..groups import DEFAULT_HEALTHY_FOR, group_type
from .connection import (Connection, add_admin_arguments, failures, hide_arguments, iso_now,
                         rfc1123)

DEFAULT_COMMAND_TIMEOUT = 300
WAIT_MARGIN = 30.0       # the device's time to notice, kill and report, beyond the timeout
POLL_FIRST, POLL_MAX = 0.1, 1.0
EXIT_NO_RESULT = 124     # as timeout(1)
EXIT_NOT_RUN = 127       # as a shell for a command it cannot run


def slug(name):
    """``"Temperature logger #2"`` -> ``"temperature-logger-2"``."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:60] or "code"


def read_source(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError("no such file: %s" % path) from None
    except UnicodeDecodeError:
        raise UserError("%s is not UTF-8 text" % path) from None
    except OSError as e:
        raise UserError("cannot read %s: %s" % (path, e.strerror)) from None


def module_argument(text):
    """``name=FILE`` -> (name, FILE)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError("expected NAME=FILE, not %r" % text)
    try:
        validate_module_name(name)
    except BadModule as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name, path


def add_parsers(sub):
    p = sub.add_parser(
        "push", help="create or update a device's code document",
        description="Make the code document NAME of device MACID hold these files "
                    "(created when there is none).  The agent on the device restarts "
                    "that worker within a second.")
    add_admin_arguments(p)
    add_device_argument(p, required=False)     # or --tag
    p.add_argument("--tag", help="write the group code document of this tag instead: it "
                                 "runs on every device whose device document has the tag")
    p.add_argument("--canary", action="append", type=device_reference, metavar="MACID",
                   help="with --tag: a staged rollout, a new revision runs first on this "
                        "device (repeatable), on the others once it ran healthy there")
    p.add_argument("--healthy-for", type=positive_float, metavar="S",
                   help="with --canary: seconds the canaries must run it without failing "
                        "(default: %g)" % DEFAULT_HEALTHY_FOR)
    p.add_argument("--name", required=True, help="name of the code (names the worker)")
    p.add_argument("--code", metavar="FILE", help="the main module (must define main())")
    p.add_argument("--module", action="append", default=[], type=module_argument,
                   metavar="NAME=FILE", help="a module private to this document (repeatable)")
    p.add_argument("--global-module", action="append", default=[], type=module_argument,
                   metavar="NAME=FILE",
                   help="a module every worker of the device can import (repeatable)")
    p.add_argument("--restart", choices=RESTART_POLICIES, help="restart policy")
    p.add_argument("--id", dest="doc_id", help="the document to write (default: the one "
                   "with this name, else <MacID>_<name>)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "exec", help="run a command on a device and wait for its output",
        description="Store a command for the device, wait for its result, print its stdout "
                    "and stderr and exit with its exit code (124: no result in time; 127: "
                    "it did not run, or was cancelled).  --cancel ID cancels a command that "
                    "no device has claimed yet: the agent never runs it.",
        usage=EXEC_USAGE)
    add_admin_arguments(p)
    add_device_argument(p, required=False)     # needed unless --cancel
    p.add_argument("--timeout", type=float, default=DEFAULT_COMMAND_TIMEOUT, metavar="S",
                   help="seconds the command may run on the device (default: %(default)s)")
    p.add_argument("--wait", type=float, metavar="S",
                   help="seconds to wait for the result (default: the timeout + %d)"
                        % WAIT_MARGIN)
    command = p.add_argument("cmd", nargs="+", metavar="PROG",
                             help="the program and its arguments")
    p.add_argument("--cancel", metavar="ID", action=cancel_action(command),
                   help="cancel the command document ID (exec names it when no result "
                        "came in time) if no device has claimed it yet")
    p.set_defaults(func=cmd_exec, parser=p,
                   extras_hint=" (options of the command go after --: "
                               "himbeerecouch exec ADMIN_URL --device MACID -- ls -la /tmp)")


def cancel_action(command):
    """The argparse action of ``--cancel``: with it, PROG is not needed.

    (PROG stays ``nargs="+"``: with ``"*"`` argparse gives it the empty list
    right after ADMIN_URL and treats the program after ``--device`` as unknown.)
    """
    class Cancel(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest, values)
            command.required = False
    return Cancel


EXEC_USAGE = ("himbeerecouch exec [-h] ADMIN_URL --device MACID [--database NAME] "
              "[--ca-file PATH] [--timeout S] [--wait S] -- PROG [ARG ...]\n"
              "       himbeerecouch exec [-h] ADMIN_URL [--database NAME] [--ca-file PATH] "
              "--cancel ID")


# ---------------------------------------------------------------- push
def find_code_document(conn, types, name, owner):
    docs = conn.find({"type": {"$in": types}, "name": name})
    docs.sort(key=lambda d: d["_id"])
    if len(docs) > 1:
        raise UserError("%s has %d code documents named %r (%s): choose one with --id"
                        % (owner, len(docs), name, ", ".join(d["_id"] for d in docs)))
    return docs[0] if docs else None


def new_document_id(conn, prefix, name):
    base = "%s_%s" % (prefix, slug(name))
    candidate, n = base, 1
    with failures(conn, "choosing a document id"):
        while conn.db.get(candidate) is not None:
            n += 1
            candidate = "%s-%d" % (base, n)
    return candidate


def cmd_push(args):
    if args.code is None and not args.module and not args.global_module:
        raise UserError("nothing to push: give --code, --module or --global-module", 2)
    code = read_source(args.code) if args.code is not None else None
    modules = {n: read_source(p) for n, p in args.module}
    global_modules = {n: read_source(p) for n, p in args.global_module}
    if (args.device is None) == (args.tag is None):
        raise UserError("push to one device (--device MACID) or to a group (--tag TAG)", 2)
    if (args.canary or args.healthy_for is not None) and args.tag is None:
        raise UserError("--canary and --healthy-for stage the rollout of a group: give --tag", 2)
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    target = "--tag %s" % args.tag if args.tag else "--device %s" % args.device
    hide_arguments("himbeerecouch push %s %s" % (conn.shown, target))
    me = conn.whoami()
    conn.require_database()
    if args.tag is not None:
        owner, types = "group %s" % args.tag, [group_type(args.tag)]
        prefix = "tag-%s" % slug(args.tag)
        # No timestamp: the lab's page lists documents with one, by their type's MacID.
        fields = {"type": group_type(args.tag), "created_by": me}
    else:
        args.device = conn.device_by_name(args.device)
        conn.known_device(args.device)
        owner, types, prefix = "device %d" % args.device, [args.device, str(args.device)], \
            "%d" % args.device
        fields = {"type": args.device, "created_by": me, "timestamp": rfc1123()}
    if args.doc_id:
        with failures(conn, "reading %s" % args.doc_id):
            doc = conn.db.get(args.doc_id)
        if doc is not None and doc.get("type") not in types:
            raise UserError("document %s is not a code document of %s" % (args.doc_id, owner))
    else:
        doc = find_code_document(conn, types, args.name, owner)
    created = doc is None
    if created:
        doc = dict(fields, _id=args.doc_id or new_document_id(conn, prefix, args.name))
    if args.canary or args.healthy_for is not None:
        rollout = dict(doc.get("rollout") if isinstance(doc.get("rollout"), dict) else {})
        if args.canary:
            rollout["canary"] = [str(conn.device_by_name(c)) for c in args.canary]
        if args.healthy_for is not None:
            rollout["healthy_for"] = args.healthy_for
        doc["rollout"] = rollout
    doc["name"] = args.name
    # The document holds exactly what was pushed: a file left out is gone.
    for key, value in (("code", code), ("modules", modules), ("global_modules", global_modules)):
        if value:
            doc[key] = value
        else:
            doc.pop(key, None)
    if args.restart:
        doc["restart"] = args.restart
    with failures(conn, "saving %s" % doc["_id"]):
        doc_id, rev = conn.db.save(doc)
    print("%s %s (%s) for %s" % ("created" if created else "updated", doc_id, rev, owner))
    return 0


# ---------------------------------------------------------------- exec
def command_document(macid, cmd, timeout, user):
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return {"_id": "%d_cmd_%s_%s" % (macid, stamp, secrets.token_hex(4)),
            "type": "%d_cmd" % macid, "cmd": list(cmd), "timeout": timeout,
            "created_by": user, "created_at": iso_now(), "timestamp": rfc1123()}


def wait_for_result(conn, doc_id, wait):
    """``(doc, done)``: the command document once it has ``ret`` or ``error``
    or was cancelled (done), or as it was after ``wait`` seconds (not done)."""
    deadline = time.monotonic() + wait
    delay = POLL_FIRST
    while True:
        with failures(conn, "reading %s" % doc_id):
            doc = conn.db.get(doc_id)
        if doc is None:
            raise UserError("command %s was deleted before it finished" % doc_id)
        if "ret" in doc or doc.get("error") or doc.get("cancelled_at"):
            return doc, True
        left = deadline - time.monotonic()
        if left <= 0:
            return doc, False
        time.sleep(min(delay, left))
        delay = min(POLL_MAX, delay * 1.5)


def cancel_command(conn, doc_id, me):
    """Mark command ``doc_id`` cancelled unless a device claimed it first.

    The save carries the revision that was checked, so a device that claims
    it meanwhile makes the save conflict; the command is then read again.
    """
    while True:
        with failures(conn, "reading %s" % doc_id):
            doc = conn.db.get(doc_id)
        if doc is None or not str(doc.get("type", "")).endswith("_cmd"):
            raise UserError("there is no command %s in %s" % (doc_id, conn.database))
        if doc.get("cancelled_at"):
            return "command %s was already cancelled (by %s at %s)" % (
                doc_id, doc.get("cancelled_by"), doc["cancelled_at"])
        if doc.get("claimed_at") or "ret" in doc or doc.get("error"):
            raise UserError("command %s: too late to cancel, device %s claimed it at %s"
                            % (doc_id, doc.get("claimed_by"), doc.get("claimed_at")))
        doc.update(cancelled_at=iso_now(), cancelled_by=me)
        try:
            with failures(conn, "cancelling %s" % doc_id):
                conn.db.save(doc)
        except couchdb.http.ResourceConflict:
            continue
        return "command %s cancelled: no device will run it" % doc_id


def cmd_exec(args):
    if args.cancel is not None:
        conn = Connection(args.url, args.database)
        hide_arguments("himbeerecouch exec %s --cancel %s" % (conn.shown, args.cancel))
        print(cancel_command(conn, args.cancel, conn.whoami()))
        return 0
    cmd = list(args.cmd or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.device is None:
        raise UserError("which device? give --device MACID (or --cancel ID)", 2)
    if not cmd:
        raise UserError("no command given: himbeerecouch exec URL --device M -- PROG ARGS", 2)
    if args.timeout <= 0:
        raise UserError("--timeout must be positive", 2)
    conn = Connection(args.url, args.database, ca_file=args.ca_file)
    hide_arguments("himbeerecouch exec %s --device %s" % (conn.shown, args.device))
    me = conn.whoami()
    conn.require_database()
    args.device = conn.device_by_name(args.device)
    conn.known_device(args.device)
    doc = command_document(args.device, cmd, args.timeout, me)
    with failures(conn, "storing the command"):
        conn.db.save(doc)
    wait = args.wait if args.wait is not None else args.timeout + WAIT_MARGIN
    result, done = wait_for_result(conn, doc["_id"], wait)
    if not done:
        state = ("the device claimed it at %s" % result["claimed_at"] if result.get("claimed_at")
                 else "it stays queued until the device takes it; `himbeerecouch exec "
                      "ADMIN_URL --cancel %s` cancels it" % doc["_id"])
        print("himbeerecouch: no result from device %d within %g s (command %s; %s)"
              % (args.device, wait, doc["_id"], state), file=sys.stderr)
        return EXIT_NO_RESULT
    return report_result(result, args.device)


def _write(stream, text):
    if text:
        stream.write(text)
        stream.flush()


def report_result(result, device):
    """Print what the command printed, then what went wrong (once); its exit status."""
    if result.get("cancelled_at") and "ret" not in result:
        print("himbeerecouch: command %s was cancelled by %s before device %d ran it"
              % (result["_id"], result.get("cancelled_by"), device), file=sys.stderr)
        return EXIT_NOT_RUN
    ret = result.get("ret") or [None, None]
    out, err = [x if isinstance(x, str) else "" for x in (list(ret) + [None, None])[:2]]
    error = result.get("error")
    if error and err.strip() == str(error).strip():
        err = ""        # the agent copies its own error into stderr: say it once
    _write(sys.stdout, out)
    _write(sys.stderr, err + ("\n" if error and err and not err.endswith("\n") else ""))
    code = result.get("exit_code")
    if error:
        print("himbeerecouch: device %d: %s" % (device, error), file=sys.stderr)
        if not isinstance(code, int):
            return EXIT_NOT_RUN
    if not isinstance(code, int) or isinstance(code, bool):
        return 0 if "ret" in result and not error else 1
    if code < 0:
        return 128 - code      # killed by signal -code, as a shell reports it
    return min(code, 255)
