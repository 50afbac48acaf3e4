"""Drop-in for an existing nEDM database: what the lab's web page sees, through its views only.

The database carries design documents that behave like the nEDM interface's
(tests/nedm.py).  A physicist writes code documents the way the page does
(through ``insert_with_timestamp``, whole-document saves, a deletion); the
agent runs as a device user with the role ``raspberries_writer``.
"""
import email.utils
import secrets

import couchdb
import pytest

import nedm
from helpers import wait_for

from himbeerecouch import couch as couchlib
from himbeerecouch.identity import device_password

DB = "nedm/raspberries"

LOOP = ("import time\ndef main():\n    log('%s started')\n"
        "    while not should_quit():\n        time.sleep(0.05)\n")


class Lab:
    def __init__(self, couch):
        self.couch = couch
        self.users = couch.admin["_users"]
        self.created = []
        if DB in couch.admin:
            del couch.admin[DB]
        self.admin = couch.admin.create(DB)
        nedm.install(self.admin)

    def user(self, name, password, roles):
        doc = {"_id": "org.couchdb.user:" + name, "type": "user", "name": name,
               "roles": roles, "password": password}
        old = self.users.get(doc["_id"])
        if old:
            doc["_rev"] = old["_rev"]
        self.users.save(doc)
        self.created.append(doc["_id"])
        return couchlib.open_database(self.couch.url, DB, name, password)

    def close(self):
        for doc_id in self.created:
            doc = self.users.get(doc_id)
            if doc:
                self.users.delete(doc)
        del self.couch.admin[DB]


class Pi:
    def __init__(self, macid, serial):
        self.macid, self.serial = macid, serial
        self.user = str(macid)
        self.password = device_password(macid, serial)


@pytest.fixture
def lab(couch):
    lab = Lab(couch)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def pi(lab):
    pi = Pi(0xB827EB000000 + secrets.randbits(24), secrets.token_hex(8))
    lab.user(pi.user, pi.password, ["raspberries_writer"])
    return pi


@pytest.fixture
def page(lab):
    """The web page, logged in as a physicist."""
    return lab.user("physicist", "pw-" + secrets.token_hex(4), ["raspberries_writer"])


def heartbeat_rows(lab):
    return lab.admin.view("document_type/document_type", reduce=False,
                          startkey=["heartbeat"], endkey=["heartbeat", {}]).rows


def running(lab, pi):
    """What the page shows for a device: (timestamp, ip, running ids)."""
    rows = lab.admin.view("raspberry_def/running_processes", reduce=False,
                          startkey=[pi.user], endkey=[pi.user, {}]).rows
    ips = [r.key[2] for r in rows if r.key[2] is not None]
    ids = sorted(r.value["_id"] for r in rows if r.key[2] is None)
    stamp = rows[0].key[1] if rows else None
    return stamp, ips, ids


def test_the_page_sees_the_device_and_its_scripts(lab, pi, page, start_agent):
    # A new script, created the way the page creates one.
    couchlib.stamp_document(page, "nedm_default", "script-a",
                            {"type": pi.macid, "name": "script a", "code": LOOP % "a",
                             "modules": {}})
    agent = start_agent(pi, database=DB)
    agent.wait_line(r"\[script a\] a started")
    agent.wait_line(r"heartbeat timestamps come from the server \(_design/nedm_default\)")
    rows = wait_for(lambda: [r for r in heartbeat_rows(lab) if r.id == "%d_heartbeat" % pi.macid],
                    message="device listed from its heartbeat")
    assert rows[0].key[0] == "heartbeat" and rows[0].key[1] >= 2026
    stamp, ips, ids = wait_for(lambda: (lambda r: r if r[2] == ["script-a"] else None)(running(lab, pi)),
                               message="script a among the running ids")
    assert ips == ["127.0.0.1"]
    assert email.utils.parsedate_to_datetime(stamp).year >= 2026   # new Date(timestamp) works
    hb = lab.admin["%d_heartbeat" % pi.macid]
    assert hb["created_by"] == pi.user and hb["timestamp_source"] == "server"
    assert hb["workers"][0]["state"] == "running"                 # the richer fields ride along

    # Code rows of the device, as the page lists them (key starts with the MacID).
    code_rows = lab.admin.view("document_type/document_type", reduce=False,
                               startkey=[pi.macid], endkey=[pi.macid, {}]).rows
    assert [r.id for r in code_rows] == ["script-a"]

    # An edit saved as a whole document.
    doc = page["script-a"]
    doc["code"] = LOOP % "a2"
    page.save(doc)
    agent.wait_line(r"\[script a\] a2 started")

    # A "global export" document: only global_modules; its modules reach the others.
    couchlib.stamp_document(page, "nedm_default", "exports",
                            {"type": pi.macid, "name": "exports",
                             "global_modules": {"labconst": "ANSWER = 42\n"}})
    couchlib.stamp_document(page, "nedm_default", "script-b",
                            {"type": pi.macid, "name": "script b",
                             "code": "import labconst\n" + (LOOP % "b").replace(
                                 "'b started'", "'b started', labconst.ANSWER"),
                             "modules": {}})
    agent.wait_line(r"\[script b\] b started 42")
    wait_for(lambda: running(lab, pi)[2] == ["script-a", "script-b"],
             message="two running scripts, the export runs nothing")

    # A deletion, as the page does it.
    page.delete(page["script-a"])
    wait_for(lambda: running(lab, pi)[2] == ["script-b"], message="deleted script gone")
    assert agent.worker("script-a") is None


def test_commands_and_logs_pass_the_labs_rules(lab, pi, page, start_agent):
    agent = start_agent(pi, database=DB)
    couchlib.stamp_document(page, "nedm_default", "cmd-1",
                            {"type": "%d_cmd" % pi.macid, "cmd": ["echo", "hi"]})
    doc = wait_for(lambda: (lambda d: d if "ret" in d else None)(lab.admin["cmd-1"]),
                   message="command result written under the lab's validation")
    assert doc["ret"][0] == "hi\n" and doc["created_by"] == "physicist"
    couchlib.stamp_document(page, "nedm_default", "chatty",
                            {"type": pi.macid, "name": "chatty", "restart": "never",
                             "code": "def main():\n    log('hello lab')\n"})
    wait_for(lambda: lab.admin.get("%d_log_chatty" % pi.macid), timeout=20,
             message="log document accepted by the lab's validation")
    assert not agent.find_lines(r"could not write|cannot write")


def test_provisioning_a_lab_database_keeps_the_page_working(couch, lab, pi, page, start_agent):
    from cli_helpers import run_cli
    designs = {d["_id"]: lab.admin[d["_id"]]["_rev"] for d in nedm.DESIGN_DOCS}
    out = run_cli("provision", couch.admin_url, "--database", DB)
    assert out.returncode == 0, out.stderr
    assert "raspberries_writer may write code and commands" in out.stdout
    # The lab's design documents are untouched; _security only gained roles.
    assert {i: lab.admin[i]["_rev"] for i in designs} == designs
    assert "_design/himbeerecouch" in lab.admin
    members = lab.admin.security["members"]["roles"]
    assert set(nedm.SECURITY["members"]["roles"]) <= set(members)
    assert "operator" in members and "raspberry" in members

    # The page still creates, edits and deletes code as before, and the agent runs it.
    couchlib.stamp_document(page, "nedm_default", "script-p",
                            {"type": pi.macid, "name": "script p", "code": LOOP % "p",
                             "modules": {}})
    agent = start_agent(pi, database=DB)
    agent.wait_line(r"\[script p\] p started")
    doc = page["script-p"]
    doc["code"] = LOOP % "p2"
    page.save(doc)
    agent.wait_line(r"\[script p\] p2 started")
    wait_for(lambda: running(lab, pi)[2] == ["script-p"], message="page sees it running")

    # A limited user writes code and commands for its own devices only.
    other = pi.macid + 1
    limited = lab.user("tech", "pw-" + secrets.token_hex(4),
                       ["raspberries_writer", "raspberry_lmtd", str(pi.macid)])
    limited.save({"_id": "lmtd-own", "type": pi.macid, "name": "own", "created_by": "tech",
                  "code": LOOP % "own"})
    agent.wait_line(r"\[own\] own started")
    limited.save({"_id": "lmtd-cmd", "type": "%d_cmd" % pi.macid, "cmd": ["true"],
                  "created_by": "tech"})
    for doc in ({"_id": "lmtd-other", "type": other, "name": "x", "created_by": "tech",
                 "code": "def main(): pass\n"},
                {"_id": "lmtd-other-cmd", "type": "%d_cmd" % other, "cmd": ["true"],
                 "created_by": "tech"}):
        with pytest.raises((couchdb.http.Forbidden, couchdb.http.Unauthorized)):
            limited.save(doc)
    wait_for(lambda: "ret" in lab.admin["lmtd-cmd"], message="the limited user's command ran")


def test_provisioned_rules_let_lab_devices_write_their_own_documents(couch, lab, pi):
    from cli_helpers import run_cli
    assert run_cli("provision", couch.admin_url, "--database", DB).returncode == 0
    device = couchlib.open_database(couch.url, DB, pi.user, pi.password)
    stamp = email.utils.formatdate(usegmt=True)
    device.save({"_id": "%d_heartbeat" % pi.macid, "type": "heartbeat", "running_ids": [],
                 "created_by": pi.user, "timestamp": stamp})
    device.save({"_id": "%d_log_x" % pi.macid, "type": "%d_log" % pi.macid, "lines": [],
                 "created_by": pi.user})
    with pytest.raises((couchdb.http.Forbidden, couchdb.http.Unauthorized)):
        device.save({"_id": "%d_heartbeat" % (pi.macid + 1), "type": "heartbeat",
                     "created_by": pi.user, "timestamp": stamp})


def test_a_device_provisioned_into_the_lab_database_writes_under_the_labs_rules(
        couch, lab, page, start_agent):
    """Issue 17: `provision --device` alone makes a device the lab's rules accept,
    and ours still keep it to its own heartbeat, logs and command results."""
    from cli_helpers import run_cli
    pi = Pi(0xB827EB000000 + secrets.randbits(24), secrets.token_hex(8))
    out = run_cli("provision", couch.admin_url, "--database", DB,
                  "--device", "%d:%s" % (pi.macid, pi.password))
    assert out.returncode == 0, out.stderr
    lab.created.append("org.couchdb.user:" + pi.user)
    assert sorted(lab.users["org.couchdb.user:" + pi.user]["roles"]) == [
        "raspberries_writer", "raspberry"]

    couchlib.stamp_document(page, "nedm_default", "script-q",
                            {"type": pi.macid, "name": "script q", "code": LOOP % "q",
                             "modules": {}})
    couchlib.stamp_document(page, "nedm_default", "cmd-q",
                            {"type": "%d_cmd" % pi.macid, "cmd": ["echo", "from the lab"]})
    agent = start_agent(pi, database=DB)
    agent.wait_line(r"\[script q\] q started")
    # The lab's page sees it: device, ip, running script (raspberry_def/running_processes).
    stamp, ips, ids = wait_for(
        lambda: (lambda r: r if r[2] == ["script-q"] else None)(running(lab, pi)),
        timeout=20, message="the provisioned device in running_processes")
    assert ips == ["127.0.0.1"] and email.utils.parsedate_to_datetime(stamp).year >= 2026
    # Its log document and the command's result were accepted.
    wait_for(lambda: lab.admin.get("%d_log_script-q" % pi.macid), timeout=20,
             message="log document written")
    result = wait_for(lambda: (lambda d: d if "ret" in d else None)(lab.admin["cmd-q"]),
                      timeout=20, message="command result written")
    assert result["ret"][0] == "from the lab\n"
    assert not agent.find_lines(r"could not write|cannot write|Forbidden|Must be a server admin")

    # With the lab's writer role, it still cannot write what is not its own.
    device = couchlib.open_database(couch.url, DB, pi.user, pi.password)
    stamp = email.utils.formatdate(usegmt=True)
    for doc in ({"_id": "%d_sneaky" % pi.macid, "type": pi.macid, "name": "sneaky",
                 "code": "def main(): pass\n", "created_by": pi.user},
                {"_id": "%d_heartbeat" % (pi.macid + 1), "type": "heartbeat",
                 "running_ids": [], "created_by": pi.user, "timestamp": stamp},
                {"_id": "_design/sneaky", "created_by": pi.user,
                 "validate_doc_update": "function (n, o, u) {}"}):
        with pytest.raises((couchdb.http.Forbidden, couchdb.http.Unauthorized)):
            device.save(doc)
    assert "%d_sneaky" % pi.macid not in lab.admin
    assert "_design/sneaky" not in lab.admin


def test_provisioning_a_plain_database_gives_a_device_the_device_role_only(couch, db):
    from cli_helpers import run_cli
    pi = Pi(0xB827EB000000 + secrets.randbits(24), secrets.token_hex(8))
    users = couch.admin["_users"]
    out = run_cli("provision", couch.admin_url, "--database", db.name,
                  "--device", "%d:%s" % (pi.macid, pi.password))
    try:
        assert out.returncode == 0, out.stderr
        assert users["org.couchdb.user:" + pi.user]["roles"] == ["raspberry"]
    finally:
        doc = users.get("org.couchdb.user:" + pi.user)
        if doc:
            users.delete(doc)
