"""The operator commands, run as real processes against the real test server.

``push`` is shown with the real agent running what was pushed.  ``exec``,
``status`` and ``logs`` read what the agent writes by the documented
contract (command results, heartbeat and log documents); here a stand-in
for the device writes those documents over HTTP with the device's own
credentials, through the rules provisioning installed.
"""
import email.utils
import re
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import psutil
import pytest

from cli_helpers import ROOT, assert_one_line_error, delete_users, run_cli
from couchserver import http_request
from helpers import random_macid, url_with_credentials, wait_for

from himbeerecouch.ops.provision import provision
from himbeerecouch.ops.connection import Connection


@pytest.fixture
def fleet_db(couch, db, make_device):
    """The test database, provisioned, with one device (``fleet_db.device``)."""
    device = make_device()          # sets _security first; provisioning merges into it
    provision(Connection(couch.admin_url, db.name))
    db.device = device
    return db


def as_device(couch, db, device, method, doc_id, body=None, query=""):
    url = "%s/%s/%s%s" % (couch.url, urllib.parse.quote(db.name, safe=""),
                          urllib.parse.quote(doc_id, safe="/"), query)
    return http_request(method, url, body, auth=(device.user, device.password))


def write_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ credentials, help
def test_credentials_prints_macid_legacy_password_and_fingerprint(tmp_path):
    """On the device: the legacy password (the old tool's, still what a device
    not yet adopted logs in with) and, issue 23, the fingerprint of its own
    secret, never the secret."""
    import hashlib
    from himbeerecouch.agent import secret as device_secret
    macid = 202481587074134
    base = ["credentials", "--macid", str(macid), "--serial", "00000000abcdef01",
            "--state-dir", tmp_path / "state", "--config", tmp_path / "none.conf"]
    expected = hashlib.sha1(b"20248158707413400000000abcdef01").hexdigest()
    result = run_cli(*base, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"MacID": macid, "password": expected,
                                         "fingerprint": None}
    assert "fingerprint: none yet" in run_cli(*base).stdout
    assert not (tmp_path / "state").exists()        # it makes no secret itself
    kept = device_secret.load_or_create(str(tmp_path / "state" / ("secret-%d" % macid)), macid)
    assert json.loads(run_cli(*base, "--json").stdout)["fingerprint"] == kept.fingerprint
    plain = run_cli("credentials", "--macid", "0xb827eb123456", *base[3:])
    assert "202481587074134" in plain.stdout and expected in plain.stdout
    assert "fingerprint: %s" % kept.fingerprint in plain.stdout
    assert kept.secret not in plain.stdout
    # Where --secret-file (or secret_file) says; login = legacy has none.
    elsewhere = device_secret.load_or_create(str(tmp_path / "persistent" / "s"), macid)
    assert elsewhere.fingerprint != kept.fingerprint
    result = run_cli(*base, "--secret-file", tmp_path / "persistent" / "s", "--json")
    assert json.loads(result.stdout)["fingerprint"] == elsewhere.fingerprint
    (tmp_path / "legacy.conf").write_text("[himbeerecouch]\nlogin = legacy\n")
    legacy = run_cli(*base[:-2], "--config", tmp_path / "legacy.conf")
    assert "login = legacy" in legacy.stdout and kept.fingerprint not in legacy.stdout
    err = assert_one_line_error(run_cli("credentials", "--interface", "no-such-if0"))
    assert "no-such-if0" in err


def test_every_command_has_help(capsys):
    from himbeerecouch.cli import main
    for command in ("run", "provision", "discover", "adopt", "credentials", "push", "exec",
                    "status", "logs", "device", "rollout"):
        with pytest.raises(SystemExit) as exit:
            main([command, "--help"])
        assert exit.value.code == 0 and "usage:" in capsys.readouterr().out, command


# ------------------------------------------------------------------ push
def test_push_creates_then_updates_and_the_agent_runs_it(couch, fleet_db, start_agent, tmp_path):
    dev = fleet_db.device
    main = write_file(tmp_path, "main.py", "import helper\nimport time\n"
                      "def main():\n    log('pushed', helper.VERSION)\n"
                      "    while not should_quit():\n        time.sleep(0.05)\n")
    helper = write_file(tmp_path, "helper.py", "VERSION = 'v1'\n")
    result = run_cli("push", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--name", "Temperature logger", "--code", main, "--module",
                     "helper=" + helper)
    assert result.returncode == 0, result.stderr
    doc_id = "%d_temperature-logger" % dev.macid
    assert result.stdout.startswith("created %s " % doc_id)
    doc = fleet_db.admin[doc_id]
    assert doc["type"] == dev.macid and doc["name"] == "Temperature logger"
    assert doc["created_by"] == couch.admin_name
    assert email.utils.parsedate_to_datetime(doc["timestamp"])
    agent = start_agent(dev)
    agent.wait_line(r"\[Temperature logger\] pushed v1")

    # A setting made elsewhere survives a push; a module left out is gone.
    doc["restart"] = "always"
    fleet_db.admin.save(doc)
    write_file(tmp_path, "main.py", "import time\ndef main():\n    log('pushed v2')\n"
               "    while not should_quit():\n        time.sleep(0.05)\n")
    result = run_cli("push", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--name", "Temperature logger", "--code", main)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("updated %s " % doc_id)
    agent.wait_line(r"\[Temperature logger\] pushed v2")
    doc = fleet_db.admin[doc_id]
    assert "modules" not in doc and doc["restart"] == "always"
    # One code document of that name (the agent's log archive carries the name too).
    named = [r.id for r in fleet_db.admin.view("_all_docs") if not r.id.startswith("_")
             and fleet_db.admin[r.id].get("name") == "Temperature logger"
             and fleet_db.admin[r.id].get("type") == dev.macid]
    assert named == [doc_id]


def test_device_names_groups_and_a_paused_rollout(couch, fleet_db, make_device, start_agent,
                                                   tmp_path):
    """Issue 13: name and tag devices, push to a tag with a canary, watch the
    rollout, pause it, resume it; a name works where a MacID does."""
    canary, other = fleet_db.device, make_device()

    def cli(command, *rest):
        return run_cli(*command.split(), couch.admin_url, "--database", fleet_db.name, *rest)

    for dev, name in ((canary, "magnetometer-1"), (other, "magnetometer-2")):
        result = cli("device set", str(dev.macid), "--name", name, "--tag", "magnetometer")
        assert result.returncode == 0, result.stderr
    result = cli("device set", "magnetometer-2", "--add-tag", "hall-b")
    assert "tags hall-b, magnetometer" in result.stdout, result.stderr
    assert fleet_db.admin["%d_device" % other.macid]["tags"] == ["hall-b", "magnetometer"]
    v1 = write_file(tmp_path, "v1.py", LOOP_SOURCE % "v1")
    result = cli("push", "--tag", "magnetometer", "--name", "reader", "--code", v1)
    assert result.returncode == 0 and "group magnetometer" in result.stdout, result.stderr
    doc_id = "tag-magnetometer_reader"
    assert "timestamp" not in fleet_db.admin[doc_id]
    agents = [start_agent(d, args=["--heartbeat-interval", "1"]) for d in (canary, other)]
    for agent in agents:
        agent.wait_line(r"\[reader\] v1 started")
    running = "[%s, tag magnetometer] running" % doc_id
    status = wait_for(lambda: (lambda out: out.count(running) == 2 and out)(cli("status").stdout),
                      message="both devices run the group's document")
    assert "magnetometer-1" in status and "magnetometer-2" in status
    # The canary by its name; the rollout waits for it, then is paused.
    v2 = write_file(tmp_path, "v2.py", LOOP_SOURCE % "v2")
    assert cli("rollout pause", doc_id).returncode == 0
    result = cli("push", "--tag", "magnetometer", "--name", "reader", "--code", v2,
                 "--canary", "magnetometer-1", "--healthy-for", "1")
    assert result.returncode == 0, result.stderr
    agents[0].wait_line(r"\[reader\] v2 started")
    def rollout_report():
        report = json.loads(cli("rollout status", doc_id, "--json").stdout)
        return report if report["canaries"][str(canary.macid)] == "healthy" else None

    report = wait_for(rollout_report, message="canary healthy")
    assert report["state"] == "paused"
    assert {r["macid"]: r["current"] for r in report["devices"]} == {
        str(canary.macid): True, str(other.macid): False}
    assert not agents[1].find_lines(r"\[reader\] v2")
    assert cli("rollout resume", doc_id).returncode == 0
    agents[1].wait_line(r"\[reader\] v2 started")
    text = wait_for(lambda: "COMPLETE" in cli("rollout status", doc_id).stdout
                    and cli("rollout status", doc_id).stdout, message="rollout complete")
    assert "magnetometer-2" in text and "(canary)" in text
    # A name where a MacID goes; an unknown one is one line.
    assert cli("logs", "--device", "magnetometer-2").returncode == 0
    err = assert_one_line_error(cli("logs", "--device", "no-such-name"))
    assert "no device has this name" in err


LOOP_SOURCE = ("import time\ndef main():\n    log('%s started')\n"
               "    while not should_quit():\n        time.sleep(0.05)\n")


def test_push_updates_a_document_the_web_page_made(couch, fleet_db, tmp_path):
    dev = fleet_db.device
    fleet_db.admin.save({"_id": "web-made", "type": str(dev.macid), "name": "pump",
                         "code": "old", "created_by": "someone"})
    # A document with the slug id but another name must not be taken over either.
    fleet_db.admin.save({"_id": "%d_pump" % dev.macid, "type": dev.macid, "name": "Pump!",
                         "created_by": "someone"})
    code = write_file(tmp_path, "c.py", "def main():\n    pass\n")
    glob = write_file(tmp_path, "g.py", "X = 1\n")
    result = run_cli("push", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--name", "pump", "--code", code, "--global-module", "shared=" + glob)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("updated web-made ")
    doc = fleet_db.admin["web-made"]
    assert doc["code"] == "def main():\n    pass\n" and doc["global_modules"] == {"shared": "X = 1\n"}
    assert doc["created_by"] == "someone" and doc["type"] == str(dev.macid)
    result = run_cli("push", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--name", "pump too", "--code", code)
    assert result.stdout.startswith("created %d_pump-too " % dev.macid)


def test_push_errors_are_one_line(couch, fleet_db, tmp_path):
    dev = fleet_db.device
    code = write_file(tmp_path, "c.py", "def main():\n    pass\n")
    args = ["--database", fleet_db.name, "--name", "n"]
    err = assert_one_line_error(run_cli("push", couch.admin_url, "--device", dev.macid,
                                        "--code", str(tmp_path / "missing.py"), *args))
    assert "no such file" in err and "missing.py" in err
    unknown = random_macid()
    err = assert_one_line_error(run_cli("push", couch.admin_url, "--device", unknown,
                                        "--code", code, *args))
    assert "unknown device %d" % unknown in err
    wrong = url_with_credentials(couch.url, couch.admin_name, "wrong-pw")
    err = assert_one_line_error(run_cli("push", wrong, "--device", dev.macid, "--code", code,
                                        *args), "wrong-pw")
    assert "wrong user name or password" in err and "***" in err
    err = assert_one_line_error(run_cli("push", couch.admin_url, "--device", dev.macid,
                                        "--code", code, "--database", "test/missing", "--name",
                                        "n"), couch.admin_password)
    assert "does not exist" in err
    bad = run_cli("push", couch.admin_url, "--device", dev.macid, "--code", code,
                  "--module", "os=" + code, *args)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    err = assert_one_line_error(run_cli("push", couch.admin_url, "--device", dev.macid, *args))
    assert "nothing to push" in err


# ------------------------------------------------------------------ exec
class CommandStandIn:
    """Plays the device's part of the command contract (issue 3), over HTTP,
    as the device user: claim, run, write ret/exit_code/times or error."""

    def __init__(self, couch, db, device):
        self.couch, self.db, self.device = couch, db, device
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.errors = []

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        assert not self.errors, self.errors

    def run(self):
        query = "?filter=himbeerecouch/device&macid=%d&include_docs=true" % self.device.macid
        since = 0
        while not self.stop.wait(0.05):
            status, changes = as_device(self.couch, self.db, self.device, "GET", "_changes",
                                        query=query + "&since=%s" % since)
            if status != 200:
                self.errors.append((status, changes))
                return
            since = changes["last_seq"]
            for row in changes["results"]:
                doc = row.get("doc")
                if doc and doc.get("type") == "%d_cmd" % self.device.macid and \
                        "claimed_at" not in doc:
                    self.execute(doc)

    def save(self, doc):
        status, body = as_device(self.couch, self.db, self.device, "PUT", doc["_id"], doc)
        if status != 201:
            self.errors.append((status, body))
        doc["_rev"] = body.get("rev")

    def execute(self, doc):
        now = lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # noqa: E731
        doc.update(claimed_at=now(), claimed_by=self.device.user)
        self.save(doc)
        doc["started_at"] = now()
        try:
            done = subprocess.run(doc["cmd"], capture_output=True, text=True,
                                  timeout=doc.get("timeout", 300))
            doc.update(ret=[done.stdout, done.stderr], exit_code=done.returncode)
        except FileNotFoundError:
            doc.update(ret=["", ""], exit_code=None, error="program not found: %s" % doc["cmd"][0])
        doc["finished_at"] = now()
        self.save(doc)


def test_exec_prints_output_and_exits_with_the_code(couch, fleet_db):
    dev = fleet_db.device
    with CommandStandIn(couch, fleet_db, dev):
        result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device",
                         dev.macid, "--timeout", "20", "--", sys.executable, "-c",
                         "import sys; print('to stdout'); print('to stderr', file=sys.stderr);"
                         " sys.exit(3)")
        assert result.returncode == 3, result
        assert result.stdout == "to stdout\n" and result.stderr == "to stderr\n"
        result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device",
                         dev.macid, "--", "no-such-program-here")
        assert result.returncode == 127
        assert "program not found" in result.stderr and "Traceback" not in result.stderr
    docs = [r.doc for r in fleet_db.admin.view("_all_docs", include_docs=True)
            if r.id.startswith("%d_cmd_" % dev.macid)]
    assert len(docs) == 2
    for doc in docs:
        assert doc["type"] == "%d_cmd" % dev.macid and doc["created_by"] == couch.admin_name
        assert doc["claimed_by"] == dev.user


def test_exec_without_an_answer_and_errors(couch, fleet_db):
    dev = fleet_db.device
    result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--wait", "0.5", "--", "true")
    assert result.returncode == 124
    assert "no result from device %d" % dev.macid in result.stderr
    assert "stays queued" in result.stderr
    unknown = random_macid()
    err = assert_one_line_error(run_cli("exec", couch.admin_url, "--database", fleet_db.name,
                                        "--device", unknown, "--", "true"))
    assert "unknown device" in err
    err = assert_one_line_error(run_cli("exec", "http://127.0.0.1:9", "--device", dev.macid,
                                        "--", "true"))
    assert "http://127.0.0.1:9" in err


def test_exec_with_the_real_agent(couch, fleet_db, start_agent):
    dev = fleet_db.device
    start_agent(dev)
    result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--timeout", "20", "--wait", "40", "--", "sh", "-c", "echo out; exit 4")
    assert result.returncode == 4 and result.stdout == "out\n", result


# ------------------------------------------------------------------ status
def test_status_shows_devices_and_marks_silent_ones(couch, fleet_db, make_device):
    fresh, old = fleet_db.device, make_device()
    workers = [{"name": "alpha", "doc_id": "a", "rev": "1-x", "state": "running", "pid": 42,
                "restarts": 0, "last_exit_code": None, "error": None},
               {"name": "beta", "doc_id": "b", "rev": "1-y", "state": "backoff", "pid": None,
                "restarts": 3, "last_exit_code": 1, "error": "ValueError: boom"}]
    body = {"type": "heartbeat", "macid": fresh.macid, "ip": "10.0.0.5", "hostname": "pi-one",
            "version": "2.0.0", "heartbeat_interval": 10, "workers": workers,
            "running_ids": ["a"], "timestamp_source": "server"}
    status, answer = as_device(couch, fleet_db, fresh, "PUT",
                               "_design/himbeerecouch/_update/insert_with_timestamp/%d_heartbeat"
                               % fresh.macid, body)
    assert status == 201, answer
    an_hour_ago = email.utils.formatdate(time.time() - 3600, usegmt=True)
    status, answer = as_device(couch, fleet_db, old, "PUT", "%d_heartbeat" % old.macid,
                               {"type": "heartbeat", "created_by": old.user, "macid": old.macid,
                                "ip": "10.0.0.6", "timestamp": an_hour_ago,
                                "heartbeat_interval": 10, "workers": []})
    assert status == 201, answer
    result = run_cli("status", couch.admin_url, "--database", fleet_db.name, "--json")
    assert result.returncode == 0, result.stderr
    devices = {d["macid"]: d for d in json.loads(result.stdout)}
    assert devices[fresh.macid]["silent"] is False and devices[fresh.macid]["age_s"] < 30
    assert devices[old.macid]["silent"] is True and devices[old.macid]["age_s"] > 3000
    assert [w["state"] for w in devices[fresh.macid]["workers"]] == ["running", "backoff"]
    table = run_cli("status", couch.admin_url, "--database", fleet_db.name).stdout
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "HOSTNAME", "IP"]
    row = next(line for line in lines if line.startswith(str(old.macid)))
    assert "SILENT" in row and "10.0.0.6" in row
    row = next(line for line in lines if line.startswith(str(fresh.macid)))
    assert "SILENT" not in row and "pi-one" in row and "1 backoff, 1 running" in row
    assert any("beta [b] backoff" in line and "ValueError: boom" in line for line in lines)


def test_status_of_an_empty_database_and_errors(couch, fleet_db):
    result = run_cli("status", couch.admin_url, "--database", fleet_db.name)
    assert result.returncode == 0 and "no device has sent a heartbeat" in result.stdout
    wrong = url_with_credentials(couch.url, "nobody", "nothing")
    err = assert_one_line_error(run_cli("status", wrong, "--database", fleet_db.name),
                                "nothing")
    assert "wrong user name or password" in err


# ------------------------------------------------------------------ logs
def log_document(device, name, lines, dropped=0):
    return {"type": "%d_log" % device.macid, "created_by": device.user, "doc_id": name,
            "name": name, "dropped": dropped, "updated_at": "2026-11-26T23:30:00Z",
            "lines": [["2026-11-26T23:30:%02dZ" % i, stream, text]
                      for i, (stream, text) in enumerate(lines)]}


def test_logs_prints_and_follows(couch, fleet_db):
    dev = fleet_db.device
    log_id = "%d_log_a" % dev.macid
    doc = log_document(dev, "alpha", [("stdout", "first"), ("stderr", "oops")])
    status, answer = as_device(couch, fleet_db, dev, "PUT", log_id, doc)
    assert status == 201, answer
    other = log_document(dev, "beta", [("stdout", "from beta")])
    assert as_device(couch, fleet_db, dev, "PUT", "%d_log_b" % dev.macid, other)[0] == 201
    result = run_cli("logs", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid)
    assert result.returncode == 0, result.stderr
    assert "[alpha] first" in result.stdout and "[alpha] ! oops" in result.stdout
    assert "[beta] from beta" in result.stdout
    only = run_cli("logs", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                   "--name", "beta")
    assert "from beta" in only.stdout and "alpha" not in only.stdout
    err = assert_one_line_error(run_cli("logs", couch.admin_url, "--database", fleet_db.name,
                                        "--device", dev.macid, "--name", "gamma"))
    assert "alpha, beta" in err

    follow = subprocess.Popen([sys.executable, "-m", "himbeerecouch", "logs", couch.admin_url,
                               "--database", fleet_db.name, "--device", str(dev.macid),
                               "--name", "alpha", "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("oops" in line for line in seen), message="first lines")
        # The password is gone from the process's command line.
        wait_for(lambda: couch.admin_password not in " ".join(psutil.Process(follow.pid).cmdline()),
                 message="command line without the password")
        doc = fleet_db.admin[log_id]
        doc["lines"] = doc["lines"][1:] + [["2026-11-26T23:31:00Z", "stdout", "second"],
                                           ["2026-11-26T23:31:01Z", "stdout", "third"]]
        doc["dropped"] = 1
        status, answer = as_device(couch, fleet_db, dev, "PUT", log_id, dict(doc))
        assert status == 201, answer
        wait_for(lambda: any("third" in line for line in seen), message="followed lines")
        text = "".join(seen)
        assert text.count("first") == 1 and text.count("oops") == 1 and "second" in text
    finally:
        follow.send_signal(signal.SIGINT)
        try:
            follow.wait(10)
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
    assert "Traceback" not in follow.stderr.read()
    follow.stdout.close()
    follow.stderr.close()


def test_logs_of_a_device_without_logs(couch, fleet_db):
    dev = fleet_db.device
    result = run_cli("logs", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid)
    assert result.returncode == 0 and "no logs" in result.stderr
    err = assert_one_line_error(run_cli("logs", couch.admin_url, "--database", fleet_db.name,
                                        "--device", random_macid()))
    assert "unknown device" in err


def test_password_from_the_environment(couch, fleet_db):
    url = url_with_credentials(couch.url, couch.admin_name, "x").replace(":x@", "@")
    result = run_cli("status", url, "--database", fleet_db.name,
                     env={"HIMBEERECOUCH_PASSWORD": couch.admin_password})
    assert result.returncode == 0, result.stderr
    err = assert_one_line_error(run_cli("status", url, "--database", fleet_db.name))
    assert "HIMBEERECOUCH_PASSWORD" in err


def test_operator_user_can_use_the_tools(couch, fleet_db, tmp_path):
    dev = fleet_db.device
    name = "operator-%d" % random_macid()
    couch.admin["_users"].save({"_id": "org.couchdb.user:" + name, "type": "user", "name": name,
                                "roles": ["operator"], "password": "op-pw"})
    try:
        url = url_with_credentials(couch.url, name, "op-pw")
        # An operator cannot read _users: the device is known by its heartbeat.
        assert as_device(couch, fleet_db, dev, "PUT", "%d_heartbeat" % dev.macid,
                         {"type": "heartbeat", "created_by": dev.user})[0] == 201
        code = write_file(tmp_path, "c.py", "def main():\n    pass\n")
        result = run_cli("push", url, "--database", fleet_db.name, "--device", dev.macid,
                         "--name", "op code", "--code", code)
        assert result.returncode == 0, result.stderr
        assert fleet_db.admin["%d_op-code" % dev.macid]["created_by"] == name
    finally:
        delete_users(couch, [name])


def push_and_start(couch, fleet_db, start_agent, tmp_path, name, first):
    """Push a worker that runs ``first`` and then waits to be stopped, and start the
    agent (heartbeat every second); returns the agent once the worker started."""
    dev = fleet_db.device
    code = write_file(tmp_path, "c.py", "import sys, time\ndef main():\n    %s\n"
                      "    while not should_quit():\n        time.sleep(0.05)\n" % first)
    assert run_cli("push", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                   "--name", name, "--code", code).returncode == 0
    agent = start_agent(dev, args=["--heartbeat-interval", "1"])
    agent.wait_line(r"%s: STARTING -> RUNNING" % name)
    return agent


def test_status_and_logs_of_a_real_agent_in_a_provisioned_database(couch, fleet_db, start_agent,
                                                                    tmp_path):
    """The agent's own heartbeat and log documents pass the provisioned rules."""
    dev = fleet_db.device
    agent = push_and_start(couch, fleet_db, start_agent, tmp_path, "real",
                           "log('hello from real')")

    def running():
        result = run_cli("status", couch.admin_url, "--database", fleet_db.name, "--json")
        devices = {d["macid"]: d for d in json.loads(result.stdout or "[]")}
        d = devices.get(dev.macid)
        return d if d and not d["silent"] and [w["state"] for w in d["workers"]] == ["running"] \
            else None
    device = wait_for(running, timeout=30, message="status shows the running worker")
    assert device["timestamp_source"] == "server"
    wait_for(lambda: "hello from real" in run_cli(
        "logs", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid).stdout,
        timeout=30, message="logs show the worker's line")
    assert not agent.find_lines(r"forbidden|\b403\b")     # (a MacID may hold "403")


# ------------------------------------------------------------------ issue 12, point 3
def mac_address(macid, separator=":", upper=False):
    digits = "%012x" % macid
    text = separator.join(digits[i:i + 2] for i in range(0, 12, 2))
    return text.upper() if upper else text


def test_device_may_be_given_as_a_mac_address(couch, fleet_db, tmp_path):
    dev = fleet_db.device
    code = write_file(tmp_path, "c.py", "def main():\n    pass\n")
    for n, form in enumerate((mac_address(dev.macid), mac_address(dev.macid, "-", upper=True),
                              mac_address(dev.macid, ""))):
        result = run_cli("push", couch.admin_url, "--database", fleet_db.name, "--device", form,
                         "--name", "mac %d" % n, "--code", code)
        assert result.returncode == 0, result.stderr
        assert fleet_db.admin["%d_mac-%d" % (dev.macid, n)]["type"] == dev.macid
    bad = run_cli("push", couch.admin_url, "--device", "b8:27:eb:00:00", "--name", "x",
                  "--code", code)
    assert bad.returncode == 2
    assert "'b8:27:eb:00:00' is not a MacID (an integer) or a MAC address" in bad.stderr
    # provision: MAC:PASSWORD, the colons of the MAC address included.
    result = run_cli("provision", couch.admin_url, "--database", fleet_db.name, "--device",
                     "%s:%s" % (mac_address(dev.macid), dev.password))
    assert result.returncode == 0, result.stderr
    assert "device %d: user %s up to date" % (dev.macid, dev.user) in result.stdout
    # The agent's --macid too.
    result = run_cli("credentials", "--macid", mac_address(dev.macid, "-"), "--serial",
                     dev.serial, "--json")
    assert json.loads(result.stdout)["MacID"] == dev.macid


def test_every_device_option_has_help():
    from himbeerecouch.cli import build_parser
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    checked = 0
    for name, sub in subparsers.items():
        for action in sub._actions:
            if "--device" in action.option_strings or "--macid" in action.option_strings:
                assert action.help and "MAC address" in action.help, name
                checked += 1
    assert checked >= 6


def test_exec_usage_names_every_option_and_hints_at_double_dash(couch, fleet_db):
    usage = run_cli("exec", "--help").stdout.split("\n\n")[0]
    from himbeerecouch.cli import build_parser
    exec_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["exec"]
    for action in exec_parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert option in usage, (option, usage)
    dev = fleet_db.device
    result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "ls", "-la", "/tmp")
    assert result.returncode == 2
    assert "unrecognized arguments: -la /tmp" in result.stderr
    assert "go after --" in result.stderr and "-- ls -la /tmp" in result.stderr
    assert not any(r.id.startswith("%d_cmd" % dev.macid) for r in fleet_db.admin.view("_all_docs"))


def test_exec_says_a_failed_commands_error_once(couch, fleet_db, start_agent):
    dev = fleet_db.device
    start_agent(dev)
    result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--wait", "40", "--", "/usr/bin/nonexistent-prog")
    assert result.returncode == 127
    assert result.stderr.count("program not found") == 1, result.stderr
    assert result.stderr == ("himbeerecouch: device %d: program not found: "
                             "/usr/bin/nonexistent-prog\n" % dev.macid)
    # A command that printed to stderr and then timed out: both, on lines of their own.
    result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--timeout", "1", "--wait", "40", "--", "sh", "-c",
                     "printf 'no newline' >&2; sleep 30")
    lines = result.stderr.splitlines()
    assert lines[0] == "no newline" and "timed out after 1 s" in lines[1], result.stderr


def test_exec_cancel_and_the_agent_never_runs_it(couch, fleet_db, start_agent, tmp_path):
    dev = fleet_db.device
    marker = tmp_path / "ran"
    queued = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                     "--wait", "0.2", "--", "touch", str(marker))
    assert queued.returncode == 124
    doc_id = re.search(r"--cancel (\S+)`", queued.stderr).group(1)
    result = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--cancel", doc_id)
    assert result.returncode == 0 and "cancelled" in result.stdout, result
    doc = fleet_db.admin[doc_id]
    assert doc["cancelled_by"] == couch.admin_name and doc["cancelled_at"]
    again = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--cancel", doc_id)
    assert again.returncode == 0 and "already cancelled" in again.stdout
    # The agent starts after the cancellation and runs the next command, not that one.
    start_agent(dev)
    after = run_cli("exec", couch.admin_url, "--database", fleet_db.name, "--device", dev.macid,
                    "--wait", "40", "--", "echo", "next")
    assert after.returncode == 0 and after.stdout == "next\n", after
    doc = fleet_db.admin[doc_id]
    assert not marker.exists()
    assert not any(k in doc for k in ("claimed_at", "ret", "exit_code")), doc
    # A command the device ran is too late to cancel.
    ran = next(r.id for r in fleet_db.admin.view("_all_docs", include_docs=True)
               if r.doc.get("cmd") == ["echo", "next"])
    err = assert_one_line_error(run_cli("exec", couch.admin_url, "--database", fleet_db.name,
                                        "--cancel", ran))
    assert "too late to cancel" in err
    err = assert_one_line_error(run_cli("exec", couch.admin_url, "--database", fleet_db.name,
                                        "--cancel", "no-such-command"))
    assert "there is no command no-such-command" in err


def test_status_says_stopped_and_logs_mark_the_agents_lines(couch, fleet_db, start_agent,
                                                            tmp_path):
    dev = fleet_db.device
    agent = push_and_start(couch, fleet_db, start_agent, tmp_path, "marked",
                           "print('to stderr', file=sys.stderr, flush=True)")
    agent.wait_line(r"\[marked\] ! to stderr")

    def logs():
        text = run_cli("logs", couch.admin_url, "--database", fleet_db.name, "--device",
                       dev.macid).stdout
        return text if "to stderr" in text else None
    text = wait_for(logs, timeout=30, message="the worker's line in the logs")
    assert "[marked] ! to stderr" in text
    agent_lines = [line for line in text.splitlines() if "[marked] agent: " in line]
    assert any("STARTING -> RUNNING" in line for line in agent_lines), text
    assert not any("[marked] ! marked:" in line for line in text.splitlines()), text
    assert agent.stop(signal.SIGINT) == 0

    def stopped():
        result = run_cli("status", couch.admin_url, "--database", fleet_db.name, "--json")
        return next((d for d in json.loads(result.stdout) if d["macid"] == dev.macid
                     and d["stopped"]), None)
    wait_for(stopped, timeout=20, message="status says stopped")
    table = run_cli("status", couch.admin_url, "--database", fleet_db.name).stdout
    row = next(line for line in table.splitlines() if line.startswith(str(dev.macid)))
    assert "STOPPED" in row and "SILENT" not in row, table
