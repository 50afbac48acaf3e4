"""Secrets stay secret: the device password and the admin credentials never
appear in ``ps`` (any process's command line), the agent's log, the
environment of any worker or command, the heartbeat and log documents, or the
state folder.

The worst case is set up on purpose: the server URL is given with the
admin's credentials in it, on the agent's own command line.  The agent still
logs in as the device; workers and commands look around as hard as a user's
script could (``ps``, their environment, what the worker API holds) and print
what they find, so that a leak would land in the log and in the database.
"""
import re
import signal
import urllib.parse

import psutil

from faultkit import command, heartbeat, result, state_files, tagged
from helpers import put_doc, url_with_credentials, wait_for

SNOOP = """
import os, subprocess, time
import himbeerecouch.runner.api as api
def main():
    log("environ", sorted(os.environ.items()))
    db = dict(api._database or {})
    db.pop("password", None)        # the device's own: it needs it to log in
    log("database", db)
    log("ps", subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    log("child", child.pid)
    d = get_database()
    log("logged in, sees", d.name, len(d.info()) > 0)
    while not should_quit():
        time.sleep(0.1)
"""


def secrets_of(couch, device):
    found = [device.password]
    if couch.admin_password:
        found.append(couch.admin_password)
    return found


def assert_absent(secrets, text, where):
    for secret in secrets:
        if len(secret) >= 8:
            assert secret not in text, "a secret appears in %s" % where
        else:
            # A short password (the CouchDB of these notes uses "pw") is found
            # inside longer words by chance: look for it standing alone.
            alone = r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])" % re.escape(secret)
            assert not re.search(alone, text), "a secret appears in %s" % where


def test_secrets_never_leak(couch, db, device, start_agent):
    secrets = secrets_of(couch, device)
    admin_url = url_with_credentials(couch.url, couch.admin_name or "admin",
                                     couch.admin_password or "x")
    put_doc(db.admin, "snoop", type=device.macid, name="snoop", code=SNOOP)
    put_doc(db.admin, "crash", type=device.macid, name="crash", restart="never",
            code="def main():\n    raise RuntimeError('failing on purpose')\n")
    agent = start_agent(device, url=admin_url, args=["--heartbeat-interval", "1"])
    agent.wait_line(r"\[snoop\] logged in, sees %s True" % re.escape(db.name))
    child = int(agent.wait_line(r"\[snoop\] child \d+").rsplit(" ", 1)[1])
    command(db.admin, device.macid, "ps", ["ps", "-eo", "args"])
    command(db.admin, device.macid, "env", ["env"])
    command(db.admin, device.macid, "bad", ["no-such-program"])
    for doc_id in ("ps", "env", "bad"):
        doc = result(db.admin, doc_id)
        assert_absent(secrets, repr(doc), "the result of command %s" % doc_id)
    assert "ps -eo args" in result(db.admin, "ps")["ret"][0]

    # ps: every process's command line, the supervisor's included.
    for proc in psutil.process_iter(["pid", "cmdline"]):
        assert_absent(secrets, " ".join(proc.info["cmdline"] or []),
                      "the command line of pid %d" % proc.info["pid"])
    # Environments of every process of the device: workers, their children.
    procs = tagged(device.macid)
    assert child in [p.pid for p in procs] and len(procs) >= 2
    for proc in procs:
        with open("/proc/%d/environ" % proc.pid, "rb") as f:
            assert_absent(secrets, f.read().decode("utf-8", "replace"),
                          "the environment of pid %d" % proc.pid)
    # The heartbeat and the log documents.
    hb = heartbeat(db.admin, device.macid,
                   lambda hb: "snoop" in hb["running_ids"]
                   and any(w["doc_id"] == "crash" and w["error"] for w in hb["workers"]))
    assert_absent(secrets, repr(dict(hb)), "the heartbeat")
    logdoc = wait_for(lambda: db.admin.get("%d_log_snoop" % device.macid), timeout=20)
    assert_absent(secrets, repr(dict(logdoc)), "the log document")
    assert agent.stop(signal.SIGTERM) == 0
    # The agent's whole log, and every file of its state folder.
    assert_absent(secrets, agent.output(), "the agent's log")
    assert agent.find_lines(r"following .* on http://%s:\*\*\*@" % (couch.admin_name or "admin"))
    for path in state_files(agent.state_dir):
        with open(path, "rb") as f:
            assert_absent(secrets, f.read().decode("utf-8", "replace"), path)
    # Sanity: the checks would see a secret where one is.
    assert urllib.parse.quote(couch.admin_password or "x", safe="") in admin_url
