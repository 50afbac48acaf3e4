"""`himbeerecouch provision` against the real test server, and the rules it installs.

Every rule is shown by the server itself: requests as a device, an operator,
a limited lab user and a stranger, over HTTP, get 201 or 403 as the rules say.
"""
import email.utils
import json
import secrets
import urllib.parse

import pytest

from cli_helpers import assert_one_line_error, delete_users, run_cli
from couchserver import http_request
from helpers import random_macid, url_with_credentials

from himbeerecouch.ops import designdoc
from himbeerecouch.ops.provision import provision
from himbeerecouch.ops.connection import Connection


def quoted(name):
    return urllib.parse.quote(name, safe="")


class Http:
    """Requests to one database as one user; returns (status, body)."""

    def __init__(self, couch, dbname, user=None, password=None):
        self.base = "%s/%s" % (couch.url, quoted(dbname))
        self.auth = (user, password) if user else None

    def get(self, doc_id):
        return http_request("GET", "%s/%s" % (self.base, quoted(doc_id)), auth=self.auth)

    def put(self, doc_id, doc):
        return http_request("PUT", "%s/%s" % (self.base, quoted(doc_id)), doc, auth=self.auth)

    def delete(self, doc_id, rev):
        return http_request("DELETE", "%s/%s?rev=%s" % (self.base, quoted(doc_id), rev),
                            auth=self.auth)

    def update(self, doc_id, body, **query):
        url = "%s/_design/himbeerecouch/_update/insert_with_timestamp/%s" % (
            self.base, quoted(doc_id))
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return http_request("PUT", url, body, auth=self.auth)

    def edit(self, doc_id, **changes):
        """Read, change, write back: (status, body)."""
        status, doc = self.get(doc_id)
        assert status == 200, (status, doc)
        doc.update(changes)
        return self.put(doc_id, doc)


@pytest.fixture
def users(couch):
    """``users(name, password, roles)`` creates a user; all are removed afterwards."""
    made = []

    def make(name, password, roles):
        couch.admin["_users"].save({"_id": "org.couchdb.user:" + name, "type": "user",
                                    "name": name, "roles": list(roles), "password": password})
        made.append(name)
        return name

    yield make
    delete_users(couch, made)


@pytest.fixture
def fleet(couch, db, users):
    """A provisioned database with two devices, an operator, a limited user, a stranger."""
    a, b = random_macid(), random_macid()
    pa, pb = secrets.token_hex(8), secrets.token_hex(8)
    # As in the lab's database, whose members include its limited users.
    db.admin.security = {"members": {"names": [], "roles": ["raspberry_lmtd"]}}
    try:
        provision(Connection(couch.admin_url, db.name), [(a, pa), (b, pb)])
        f = type("Fleet", (), {})()
        f.a, f.b = a, b
        f.dev_a = Http(couch, db.name, str(a), pa)
        f.dev_b = Http(couch, db.name, str(b), pb)
        f.op_name = users("op-" + secrets.token_hex(3), "oppw", ["operator"])
        f.op = Http(couch, db.name, f.op_name, "oppw")
        f.lim_name = users("lim-" + secrets.token_hex(3), "limpw", ["raspberry_lmtd", str(a)])
        f.lim = Http(couch, db.name, f.lim_name, "limpw")
        f.stranger = Http(couch, db.name, users("x-" + secrets.token_hex(3), "xpw", []), "xpw")
        f.admin = Http(couch, db.name, couch.admin_name, couch.admin_password)
        yield f
    finally:
        delete_users(couch, [str(a), str(b)])


def is_rfc1123(text):
    return email.utils.parsedate_to_datetime(text) is not None and text.endswith(" GMT") \
        and text[3:5] == ", "


# ------------------------------------------------------------------ provisioning
def test_provision_creates_everything_and_is_idempotent(couch):
    name = "test/prov-%s" % secrets.token_hex(4)
    a, b = random_macid(), random_macid()
    pa, pb = secrets.token_hex(8), secrets.token_hex(8)
    try:
        first = run_cli("provision", couch.admin_url, "--database", name,
                        "--device", "%d:%s" % (a, pa), "--device", "%d:%s" % (b, pb))
        assert first.returncode == 0, first.stderr
        assert "database %s: created" % name in first.stdout
        assert "_design/himbeerecouch: installed" in first.stdout
        assert couch.admin_password not in first.stdout + first.stderr
        db = couch.admin[name]
        ddoc = db["_design/himbeerecouch"]
        assert "insert_with_timestamp" in ddoc["updates"]
        assert set(ddoc["views"]) == {"heartbeats", "by_device"}
        assert set(ddoc["filters"]) >= {"device", "doc_type"}
        members = db.security["members"]["roles"]
        assert "operator" in members and "raspberry" in members
        for macid, password in ((a, pa), (b, pb)):
            status, info = http_request("GET", couch.url + "/_session",
                                        auth=(str(macid), password))
            assert status == 200 and info["userCtx"]["name"] == str(macid)
            assert "raspberry" in info["userCtx"]["roles"]
        revs = (ddoc.rev, couch.admin["_users"]["org.couchdb.user:%d" % a].rev)

        again = run_cli("provision", couch.admin_url, "--database", name,
                        "--device", "%d:%s" % (a, pa), "--device", "%d:%s" % (b, pb))
        assert again.returncode == 0, again.stderr
        assert "database %s: exists" % name in again.stdout
        assert "_design/himbeerecouch: up to date" in again.stdout
        assert "_security: up to date" in again.stdout
        assert "user %d up to date" % a in again.stdout
        assert revs == (db["_design/himbeerecouch"].rev,
                        couch.admin["_users"]["org.couchdb.user:%d" % a].rev)
    finally:
        if name in couch.admin:
            del couch.admin[name]
        delete_users(couch, [str(a), str(b)])


def test_security_is_merged_and_lab_documents_are_left_alone(couch, db):
    db.admin.security = {"admins": {"names": ["alice"], "roles": ["lab_admins"]},
                         "members": {"names": ["bob"], "roles": ["raspberry_lmtd"]},
                         "other": 1}
    db.admin.save({"_id": "_design/nedm_default", "language": "javascript",
                   "views": {"x": {"map": "function (doc) { emit(doc._id, null); }"}}})
    lab_rev = db.admin["_design/nedm_default"].rev
    # An older himbeerecouch design document with a key provisioning does not own.
    db.admin.save({"_id": "_design/himbeerecouch", "language": "javascript",
                   "validate_doc_update": "function (n, o, u) { }", "web": {"kept": True}})
    result = run_cli("provision", couch.admin_url, "--database", db.name)
    assert result.returncode == 0, result.stderr
    assert "_design/himbeerecouch: updated" in result.stdout
    security = db.admin.security
    assert security["admins"] == {"names": ["alice"], "roles": ["lab_admins"]}
    assert security["members"]["names"] == ["bob"]
    # A database with the lab's nedm_default: its writer role may go on writing code.
    lab_role = db.name + "_writer"
    assert "its writer role %s may write code" % lab_role in result.stdout
    assert security["members"]["roles"] == ["raspberry_lmtd", "operator", lab_role, "raspberry"]
    assert security["other"] == 1
    ddoc = db.admin["_design/himbeerecouch"]
    assert ddoc["web"] == {"kept": True}
    assert (ddoc["validate_doc_update"]
            == designdoc.design_document([lab_role])["validate_doc_update"])
    assert db.admin["_design/nedm_default"].rev == lab_rev


def test_device_without_password(couch, db, make_device):
    new = random_macid()
    result = run_cli("provision", couch.admin_url, "--database", db.name, "--device", str(new))
    err = assert_one_line_error(result)
    assert "device %d has no user yet" % new in err
    # An existing user keeps its password and gets the role.
    dev = make_device(roles=["lab"])
    result = run_cli("provision", couch.admin_url, "--database", db.name,
                     "--device", str(dev.macid))
    assert result.returncode == 0, result.stderr
    assert "role raspberry" in result.stdout
    status, info = http_request("GET", couch.url + "/_session", auth=(dev.user, dev.password))
    assert status == 200 and sorted(info["userCtx"]["roles"]) == ["lab", "raspberry"]
    # A new password is set when it differs.
    result = run_cli("provision", couch.admin_url, "--database", db.name,
                     "--device", "%d:%s" % (dev.macid, "new-secret"))
    assert result.returncode == 0 and "password" in result.stdout
    assert "new-secret" not in result.stdout
    status, _ = http_request("GET", couch.url + "/_session", auth=(dev.user, "new-secret"))
    assert status == 200


def test_provision_errors_are_one_line(couch, db):
    wrong = url_with_credentials(couch.url, couch.admin_name, "not-the-password")
    err = assert_one_line_error(run_cli("provision", wrong, "--database", db.name),
                                "not-the-password")
    assert "wrong user name or password" in err
    err = assert_one_line_error(run_cli("provision", "http://127.0.0.1:9", "--database", "x"))
    assert "refused" in err.lower()
    err = assert_one_line_error(run_cli("provision", "ftp://host", "--database", "x"))
    assert "http://host:5984" in err
    bad = run_cli("provision", couch.admin_url, "--device", "abc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert couch.admin_password not in bad.stderr
    assert run_cli("provision", "--help").returncode == 0


# ------------------------------------------------------------------ the rules
def heartbeat(macid, **extra):
    doc = {"type": "heartbeat", "created_by": str(macid), "running_ids": [], "ip": "127.0.0.1"}
    doc.update(extra)
    return doc


def code_doc(macid, creator, **extra):
    doc = {"type": macid, "name": "n", "code": "def main():\n    pass\n", "created_by": creator}
    doc.update(extra)
    return doc


def test_device_writes_only_its_own_heartbeat_and_logs(fleet):
    a, b = fleet.a, fleet.b
    assert fleet.dev_a.put("%d_heartbeat" % a, heartbeat(a))[0] == 201
    status, body = fleet.dev_a.put("%d_heartbeat" % b, heartbeat(b))
    assert status == 403, body
    status, body = fleet.dev_a.put("%d_heartbeat" % b, heartbeat(a))
    assert status == 403, body
    # created_by must be the writer, timestamp RFC 1123 only.
    assert fleet.dev_b.put("%d_heartbeat" % b, heartbeat(a))[0] == 403
    status, body = fleet.dev_b.put("%d_heartbeat" % b,
                                   heartbeat(b, timestamp="2026-11-26T23:30:00Z"))
    assert status == 403 and "bad_date_format" in body["reason"]
    assert fleet.dev_b.put("%d_heartbeat" % b,
                           heartbeat(b, timestamp="Thu, 26 Nov 2026 23:30:00 GMT"))[0] == 201
    log = {"type": "%d_log" % a, "created_by": str(a), "doc_id": "x", "name": "x",
           "lines": [["2026-11-26T23:30:00Z", "stdout", "hi"]], "dropped": 0}
    assert fleet.dev_a.put("%d_log_x" % a, log)[0] == 201
    other = dict(log, type="%d_log" % b)
    assert fleet.dev_a.put("%d_log_x" % b, other)[0] == 403
    assert fleet.dev_a.put("%d_log_y" % b, log)[0] == 403
    # Nothing else: no code, no other document, no deletion.
    assert fleet.dev_a.put("mine", code_doc(a, str(a)))[0] == 403
    assert fleet.dev_a.put("note", {"created_by": str(a)})[0] == 403
    assert fleet.dev_a.put("_design/mine", {"language": "javascript"})[0] in (401, 403)
    status, doc = fleet.dev_a.get("%d_heartbeat" % a)
    assert fleet.dev_a.delete(doc["_id"], doc["_rev"])[0] == 403


def test_device_writes_only_the_results_of_its_own_commands(fleet):
    a, b = fleet.a, fleet.b
    cmd = {"type": "%d_cmd" % a, "cmd": ["echo", "hi"], "created_by": fleet.op_name}
    assert fleet.op.put("ca", cmd)[0] == 201
    assert fleet.op.put("cb", dict(cmd, type="%d_cmd" % b))[0] == 201
    # A device may not create commands, not even for itself.
    assert fleet.dev_a.put("c-self", dict(cmd, created_by=str(a)))[0] == 403
    # It may write the result of its own command ...
    status, body = fleet.dev_a.edit("ca", ret=["hi\n", ""], exit_code=0,
                                    claimed_by=str(a))
    assert status == 201, body
    # ... but not change what runs, nor who created it, nor another device's command.
    assert fleet.dev_a.edit("ca", cmd=["rm", "-rf", "/"])[0] == 403
    assert fleet.dev_a.edit("ca", created_by=str(a))[0] == 403
    status, body = fleet.dev_a.edit("cb", ret=["forged", ""], exit_code=0)
    assert status == 403, body
    status, doc = fleet.dev_a.get("ca")
    assert fleet.dev_a.delete("ca", doc["_rev"])[0] == 403


def test_a_cancelled_command_stays_cancelled(fleet):
    """An operator cancels a command nobody claimed; no device can claim it or
    undo that, and a claimed command is too late to cancel (issue 12, point 5)."""
    a = fleet.a
    cmd = {"type": "%d_cmd" % a, "cmd": ["echo", "hi"], "created_by": fleet.op_name}
    assert fleet.op.put("c1", cmd)[0] == 201
    cancelled = {"cancelled_at": "2026-11-26T23:30:00Z", "cancelled_by": fleet.op_name}
    assert fleet.op.edit("c1", **cancelled)[0] == 201
    status, body = fleet.dev_a.edit("c1", claimed_at="2026-11-26T23:30:01Z", claimed_by=str(a))
    assert status == 403 and "cancelled" in body["reason"], body
    status, doc = fleet.dev_a.get("c1")
    del doc["cancelled_at"]
    status, body = fleet.dev_a.put("c1", doc)
    assert status == 403 and "cancelled" in body["reason"], body
    assert fleet.op.edit("c1", cancelled_at=None)[0] == 403     # nor the operator
    # Claimed first: too late to cancel.
    assert fleet.op.put("c2", cmd)[0] == 201
    assert fleet.dev_a.edit("c2", claimed_at="2026-11-26T23:30:01Z", claimed_by=str(a))[0] == 201
    status, body = fleet.op.edit("c2", **cancelled)
    assert status == 403 and "too late" in body["reason"], body


def test_only_admins_and_operators_write_code_and_commands(fleet):
    a, b = fleet.a, fleet.b
    assert fleet.op.put("code-a", code_doc(a, fleet.op_name))[0] == 201
    # created_by must be the writer's name, and never changes.
    status, body = fleet.op.put("code-x", code_doc(a, "someone-else"))
    assert status == 403 and "created_by" in body["reason"]
    assert fleet.op.edit("code-a", created_by="someone-else")[0] == 403
    assert fleet.op.edit("code-a", code="def main():\n    return 1\n")[0] == 201
    # Operators do not forge heartbeats or logs, but may clean them up.
    assert fleet.op.put("%d_heartbeat" % a, heartbeat(a, created_by=fleet.op_name))[0] == 403
    assert fleet.dev_a.put("%d_heartbeat" % a, heartbeat(a))[0] == 201
    status, doc = fleet.op.get("%d_heartbeat" % a)
    assert fleet.op.delete(doc["_id"], doc["_rev"])[0] == 200
    # The lab's limited users: code and commands for the devices in their roles only.
    assert fleet.lim.put("lim-a", code_doc(a, fleet.lim_name))[0] == 201
    assert fleet.lim.put("lim-b", code_doc(b, fleet.lim_name))[0] == 403
    assert fleet.lim.edit("lim-a", type=b)[0] == 403
    assert fleet.lim.put("lim-cmd", {"type": "%d_cmd" % a, "cmd": ["true"],
                                     "created_by": fleet.lim_name})[0] == 201
    # Anyone else cannot even read.
    assert fleet.stranger.get("code-a")[0] in (401, 403)
    assert fleet.stranger.put("s", {"created_by": "x"})[0] in (401, 403)
    # Admins may do anything.
    assert fleet.admin.put("admin-doc", {"anything": True})[0] == 201


def test_update_handler_stamps_server_time_and_keeps_the_rules(fleet):
    a, b = fleet.a, fleet.b
    status, body = fleet.dev_a.update("%d_heartbeat" % a, {"type": "heartbeat", "ip": "1.2.3.4",
                                                           "running_ids": ["x"]})
    assert status == 201, body
    status, doc = fleet.dev_a.get("%d_heartbeat" % a)
    assert doc["created_by"] == str(a) and doc["ip"] == "1.2.3.4"
    assert is_rfc1123(doc["timestamp"]), doc["timestamp"]
    # Merging keeps the fields the body lacks; ?overwrite=true drops them.
    assert fleet.dev_a.update("%d_heartbeat" % a, {"type": "heartbeat", "uptime": 5})[0] == 201
    doc = fleet.dev_a.get("%d_heartbeat" % a)[1]
    assert doc["ip"] == "1.2.3.4" and doc["uptime"] == 5
    assert fleet.dev_a.update("%d_heartbeat" % a, {"type": "heartbeat", "uptime": 6},
                              overwrite="true")[0] == 201
    doc = fleet.dev_a.get("%d_heartbeat" % a)[1]
    assert "ip" not in doc and doc["uptime"] == 6 and doc["created_by"] == str(a)
    # The handler refuses what a direct write would be refused.
    status, body = fleet.dev_a.update("%d_heartbeat" % b, {"type": "heartbeat"})
    assert status == 403, body
    assert fleet.dev_a.get("%d_heartbeat" % b)[0] == 404
    assert fleet.dev_a.update("code-by-device", code_doc(a, str(a)))[0] == 403
    assert fleet.dev_a.update("%d_heartbeat" % a, {"created_by": str(b)})[0] == 403
    # An operator creates code through it, as the lab's web page does.
    status, body = fleet.op.update("web-code", {"type": a, "name": "w", "code": "x = 1"})
    assert status == 201, body
    doc = fleet.op.get("web-code")[1]
    assert doc["created_by"] == fleet.op_name and is_rfc1123(doc["timestamp"])
    assert fleet.op.update("bad", "not an object")[0] == 400


def test_filters_and_views(couch, fleet, db):
    a, b = fleet.a, fleet.b
    assert fleet.op.put("code-a", code_doc(a, fleet.op_name, name="alpha"))[0] == 201
    assert fleet.op.put("code-a2", code_doc(str(a), fleet.op_name, name="beta"))[0] == 201
    assert fleet.op.put("code-b", code_doc(b, fleet.op_name))[0] == 201
    assert fleet.op.put("cmd-a", {"type": "%d_cmd" % a, "cmd": ["true"],
                                  "created_by": fleet.op_name})[0] == 201
    assert fleet.dev_a.put("%d_heartbeat" % a, heartbeat(a))[0] == 201
    rev = fleet.op.get("code-a2")[1]["_rev"]
    assert fleet.op.delete("code-a2", rev)[0] == 200
    base = "%s/%s/_changes?filter=himbeerecouch/device&macid=%d" % (couch.url, quoted(db.name), a)
    status, changes = http_request("GET", base, auth=fleet.dev_a.auth)
    assert status == 200, changes
    ids = {r["id"] for r in changes["results"]}
    assert {"code-a", "cmd-a", "code-a2"} <= ids
    assert "code-b" not in ids and "%d_heartbeat" % a not in ids
    url = "%s/%s/_changes?filter=himbeerecouch/doc_type&type=%s&handle_deleted=true" % (
        couch.url, quoted(db.name), urllib.parse.quote(json.dumps([str(b)])))
    ids = {r["id"] for r in http_request("GET", url, auth=fleet.dev_a.auth)[1]["results"]}
    assert "code-b" in ids and "code-a2" in ids and "code-a" not in ids
    view = "%s/%s/_design/himbeerecouch/_view/" % (couch.url, quoted(db.name))
    rows = http_request("GET", view + "heartbeats", auth=fleet.op.auth)[1]["rows"]
    assert [r["key"] for r in rows] == [str(a)]
    key = urllib.parse.quote(json.dumps([str(a), "code", "alpha"]))
    rows = http_request("GET", view + "by_device?key=" + key, auth=fleet.op.auth)[1]["rows"]
    assert [r["id"] for r in rows] == ["code-a"]


def test_only_operators_write_device_and_group_documents(fleet):
    """Issue 13: a device may not name or tag itself, nor write a group's code."""
    a, b = fleet.a, fleet.b
    device_doc = {"type": "device", "macid": a, "name": "magnetometer-3",
                  "tags": ["magnetometer"]}
    group = {"type": "tag:magnetometer", "name": "reader", "code": "def main(): pass\n"}
    for dev, who in ((fleet.dev_a, str(a)), (fleet.dev_b, str(b))):
        assert dev.put("%d_device" % a, dict(device_doc, created_by=who))[0] == 403
        assert dev.put("%d_device" % b, dict(device_doc, macid=b, created_by=who))[0] == 403
        assert dev.put("grp-%s" % who, dict(group, created_by=who))[0] == 403
    # The lab's limited users write code for their own devices only: no groups.
    assert fleet.lim.put("grp-lim", dict(group, created_by=fleet.lim_name))[0] == 403
    assert fleet.op.put("grp", dict(group, created_by=fleet.op_name))[0] == 201
    assert fleet.op.put("%d_device" % a, dict(device_doc, created_by=fleet.op_name))[0] == 201
    assert fleet.dev_a.edit("%d_device" % a, tags=["everything"])[0] == 403
    # A device document says which device it is, and holds tags as strings.
    # Issue 23: its server (where the device moves) is an http(s) URL without credentials.
    for bad in ({"macid": a}, {"macid": str(b)}, {"type": "devices"}, {"tags": "magnetometer"},
                {"tags": [1]}, {"name": 3}, {"server": 5}, {"server": "ftp://couch.lab"},
                {"server": "http://admin:pw@couch.lab:5984"}, {"server": "https://"}):
        status, body = fleet.op.put("%d_device" % b, dict(device_doc, macid=b,
                                                          created_by=fleet.op_name) | bad)
        assert status == 403, (bad, body)
    assert fleet.op.put("%d_device" % b, dict(device_doc, macid=b, created_by=fleet.op_name,
                                              server="https://couch2.lab:6984"))[0] == 201
