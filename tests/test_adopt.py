"""``himbeerecouch adopt`` with real agents, real datagrams and the real server (issue 23).

Devices answer the adopt broadcast with the claim of their own login secret;
``adopt`` lists them and changes nothing, or, given MACs, creates or replaces
exactly their users from their claims.  A new device then runs its code; a
device that ran with the legacy password is on its own secret within
seconds, its legacy password no longer logs in and its worker still reaches
the database.  The secret stays on the device: 0600, in no process title,
log line, heartbeat or worker environment, and a --worker-user worker cannot
read it.  Broadcasts go to 127.255.255.255 on a free port only.
"""
import json
import os
import secrets
import stat
import tempfile

import psutil
import pytest

from cli_helpers import assert_one_line_error, delete_users, free_udp_port, run_cli
from couchserver import http_request
from discovery_helpers import (CODE, LOOPBACK_BROADCAST, assert_none_in,  # noqa: F401
                               discovering_agent, fingerprint_of, secrets_of_device,
                               wait_listening)
from helpers import Device, grant_members, put_doc, random_macid, wait_for
from test_nedm_compat import DB as LAB_DB, lab, running  # noqa: F401 - a fixture
from test_worker_user import needs_root, world_venv  # noqa: F401 - a fixture

from himbeerecouch import identity
from himbeerecouch.agent import secret as device_secret
from himbeerecouch.ops.connection import Connection
from himbeerecouch.ops.provision import provision

REACH = """
import os, time
def main():
    said = None
    while not should_quit():
        try:
            get_database().info()
            now = "reached"
        except Exception as e:
            now = "not reached (%s)" % type(e).__name__
        if now != said:
            log("database", now, "from pid", os.getpid())
            said = now
        time.sleep(0.2)
"""


@pytest.fixture
def new_device(couch):
    """A device that has no user yet; its user (once adopted) goes after the test."""
    made = []

    def make():
        macid, serial = random_macid(), secrets.token_hex(8)
        made.append(identity.device_user(macid))
        return Device(macid, serial, identity.device_password(macid, serial), couch.url, [])
    yield make
    delete_users(couch, made)


@pytest.fixture
def fleet(couch, db):
    """The test database, provisioned (its members: operator, raspberry)."""
    grant_members(db.admin)
    provision(Connection(couch.admin_url, db.name))
    return db


def adopt(couch, database, port, *macs, timeout=1):
    return run_cli("adopt", couch.admin_url, "--database", database,
                   "--address", LOOPBACK_BROADCAST, "--port", port, "--timeout", timeout, *macs)


def user_doc(couch, device):
    return couch.admin["_users"].get("org.couchdb.user:" + device.user)


def logs_in(couch, user, password):
    status, body = http_request("GET", couch.url + "/_session", auth=(user, password))
    return status == 200 and body["userCtx"]["name"] == user


def test_adopt_without_macs_lists_and_changes_nothing(couch, fleet, device, new_device,
                                                      discovering_agent):
    port = free_udp_port()
    fresh = new_device()
    agents = {d.macid: discovering_agent(d, port, server=couch.url) for d in (device, fresh)}
    agents[fresh.macid].wait_line(r"refuses its secret and its legacy password: this device "
                                  r"is not adopted there yet")
    for agent in agents.values():
        wait_listening(agent)
    legacy_rev = user_doc(couch, device)["_rev"]
    result = adopt(couch, fleet.name, port, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["adopted"] == [] and listed["errors"] == []
    rows = {r["MacID"]: r for r in listed["devices"]}
    assert set(rows) == {device.macid, fresh.macid}
    for macid, agent in agents.items():
        assert rows[macid]["fingerprint"] == fingerprint_of(agent)
        assert rows[macid]["server"] == couch.url and rows[macid]["password"] is None
        assert rows[macid]["mac"] == identity.mac_address(macid)
    assert rows[device.macid]["user"] == "another password"
    assert rows[fresh.macid]["user"] == "none"
    text = adopt(couch, fleet.name, port)
    assert text.returncode == 0, text.stderr
    assert "nothing changed" in text.stdout
    line = next(l for l in text.stdout.splitlines() if l.startswith(str(fresh.macid)))
    assert identity.mac_address(fresh.macid) in line and fingerprint_of(agents[fresh.macid]) in line
    # Nothing changed on the server.
    assert user_doc(couch, fresh) is None
    assert user_doc(couch, device)["_rev"] == legacy_rev
    assert logs_in(couch, device.user, device.password)


def test_adopt_gives_a_new_device_its_account_and_it_runs_its_code(couch, lab, new_device,
                                                                   start_agent):
    """Into a database of the lab's nEDM interface, where a device needs the
    lab's writer role to write at all: adopt gives it, as provision does."""
    assert run_cli("provision", couch.admin_url, "--database", LAB_DB).returncode == 0
    fresh = new_device()
    lab.admin.save({"_id": "adopted", "type": fresh.macid, "name": "adopted",
                    "code": CODE % "adopted"})
    port = free_udp_port()
    agent = start_agent(fresh, database=LAB_DB, args=[
        "--discovery-port", str(port), "--discovery-address", LOOPBACK_BROADCAST])
    agent.wait_line(r"not adopted there yet")
    mark = agent.mark()
    result = adopt(couch, LAB_DB, port, identity.mac_address(fresh.macid))
    assert result.returncode == 0, result.stderr
    fingerprint = fingerprint_of(agent)
    assert "device %d (%s, " % (fresh.macid, identity.mac_address(fresh.macid)) in result.stdout
    assert "user %s created from its claim (fingerprint %s" % (fresh.user, fingerprint) \
        in result.stdout
    doc = user_doc(couch, fresh)
    assert doc["roles"] == ["raspberry", "raspberries_writer"]
    assert "password" not in doc and doc["pbkdf2_prf"] == "sha"
    agent.wait_line(r"logging in to .* with its own secret \(fingerprint %s\)" % fingerprint,
                    after=mark, timeout=10)
    agent.wait_line(r"\[adopted\] adopted is running", after=mark)
    # The lab's page sees it (its heartbeat passed the lab's rules).
    wait_for(lambda: running(lab, fresh)[2] == ["adopted"], timeout=20,
             message="the adopted device in running_processes")
    assert lab.admin["%d_heartbeat" % fresh.macid]["login"] == "secret"
    # Adopting again changes nothing.
    again = adopt(couch, LAB_DB, port, str(fresh.macid))
    assert again.returncode == 0, again.stderr
    assert "already adopted: its user holds this claim" in again.stdout
    assert user_doc(couch, fresh)["_rev"] == doc["_rev"]


def test_a_legacy_device_moves_onto_its_secret_and_its_worker_keeps_the_database(
        couch, fleet, device, start_agent):
    put_doc(fleet.admin, "reach", type=device.macid, name="reach", code=REACH)
    port = free_udp_port()
    agent = start_agent(device, args=["--discovery-port", str(port),
                                      "--discovery-address", LOOPBACK_BROADCAST])
    agent.wait_line(r"logging in to .* with the legacy password")
    before = agent.wait_line(r"\[reach\] database reached from pid \d+")
    old_pid = int(before.rsplit(" ", 1)[1])
    mark = agent.mark()
    result = adopt(couch, fleet.name, port, "%d=%s" % (device.macid, fingerprint_of(agent)[:6]))
    assert result.returncode == 0, result.stderr
    assert "replaced by its claim: its old password no longer logs in" in result.stdout
    # The legacy password is refused, by _session and by basic auth on the database
    # (CouchDB's authentication cache follows _users within about half a second).
    wait_for(lambda: not logs_in(couch, device.user, device.password), timeout=5,
             message="the legacy password refused")
    assert http_request("GET", "%s/%s" % (couch.url, fleet.name.replace("/", "%2F")),
                        auth=(device.user, device.password))[0] == 401
    agent.wait_line(r"logging in to .* with its own secret", after=mark, timeout=10)
    agent.wait_line(r"reach: RUNNING -> STOPPING \(the device logs in with its secret now\)",
                    after=mark)
    after = agent.wait_line(r"\[reach\] database reached from pid \d+", after=mark)
    new_pid = int(after.rsplit(" ", 1)[1])
    assert new_pid != old_pid
    # The old worker may have been refused in the second before the switch; the new never.
    assert not agent.find_lines(r"\[reach\] database not reached .* from pid %d$" % new_pid)
    hb = wait_for(lambda: (fleet.admin.get("%d_heartbeat" % device.macid) or {}).get("login")
                  == "secret", timeout=20, message="a heartbeat written with the secret")
    assert hb
    assert user_doc(couch, device)["roles"] == ["raspberry"]
    # Its own secret logs in (read as root here, as its supervisor does).
    kept = json.loads(open(os.path.join(agent.state_dir, "secret-%d" % device.macid)).read())
    assert logs_in(couch, device.user, kept["secret"])


def test_adopt_refuses_what_it_cannot_vouch_for(couch, fleet, new_device, start_agent):
    port = free_udp_port()
    fresh = new_device()
    agent = start_agent(fresh, args=["--discovery-port", str(port),
                                     "--discovery-address", LOOPBACK_BROADCAST])
    wait_for(lambda: agent.find_lines("not adopted there yet"), timeout=15)
    missing = random_macid()
    err = assert_one_line_error(adopt(couch, fleet.name, port, str(missing)), "pw@")
    assert "device %d (%s) did not answer within 1 s" % (
        missing, identity.mac_address(missing)) in err
    # A fingerprint that is not the device's: not adopted.
    wrong = "0" * 12 if not fingerprint_of(agent).startswith("0") else "1" * 12
    result = adopt(couch, fleet.name, port, "%d=%s" % (fresh.macid, wrong))
    err = assert_one_line_error(result)
    assert "answered from 127.0.0.1 with fingerprint %s, not %s: not adopted" % (
        fingerprint_of(agent), wrong) in err
    assert user_doc(couch, fresh) is None
    # One device missing among several: the others are adopted, the exit status says it.
    result = adopt(couch, fleet.name, port, str(fresh.macid), str(missing))
    assert result.returncode == 1
    assert "user %s created" % fresh.user in result.stdout
    assert "did not answer" in result.stderr
    bad = run_cli("adopt", couch.admin_url, "b8:27:eb:00:00")
    assert bad.returncode == 2 and "expected MAC or MAC=FINGERPRINT" in bad.stderr


def test_the_secret_stays_on_the_device(couch, fleet, device, start_agent):
    snoop = ("import os, subprocess, time\n"
             "def main():\n"
             "    log('environ', sorted(os.environ.items()))\n"
             "    log('ps', subprocess.run(['ps', '-eo', 'args'], capture_output=True,\n"
             "                             text=True).stdout)\n"
             "    log('database', get_database().info()['db_name'])\n"
             "    while not should_quit():\n"
             "        time.sleep(0.1)\n")
    port = free_udp_port()
    agent = start_agent(device, args=["--discovery-port", str(port), "--heartbeat-interval", "1",
                                      "--discovery-address", LOOPBACK_BROADCAST])
    agent.wait_line(r"with the legacy password")
    assert adopt(couch, fleet.name, port, str(device.macid)).returncode == 0
    agent.wait_line(r"with its own secret", timeout=10)
    put_doc(fleet.admin, "snoop", type=device.macid, name="snoop", code=snoop)
    agent.wait_line(r"\[snoop\] database ")
    path = os.path.join(agent.state_dir, "secret-%d" % device.macid)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    kept = json.loads(open(path).read())["secret"]
    # The serial is on the test agent's command line (--serial): all else is secret.
    found = [s for s in secrets_of_device(device, kept) if s != device.serial]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        assert_none_in(found, " ".join(proc.info["cmdline"] or []),
                       "the command line of pid %d" % proc.info["pid"])
    for proc in psutil.Process(agent.pid).children(recursive=True):
        with open("/proc/%d/environ" % proc.pid, "rb") as f:
            assert_none_in(found, f.read().decode("utf-8", "replace"),
                           "the environment of pid %d" % proc.pid)
    hb = wait_for(lambda: (fleet.admin.get("%d_heartbeat" % device.macid) or {}).get(
        "running_ids") == ["snoop"] and fleet.admin["%d_heartbeat" % device.macid],
        timeout=20, message="heartbeat with the snoop")
    assert_none_in(found, json.dumps(hb), "the heartbeat")
    logdoc = wait_for(lambda: fleet.admin.get("%d_log_snoop" % device.macid), timeout=20)
    assert_none_in(found, json.dumps(logdoc), "the log document")
    assert agent.stop() == 0
    assert_none_in(found, agent.output(), "the agent's log")
    for name in os.listdir(agent.state_dir):
        full = os.path.join(agent.state_dir, name)
        if os.path.isfile(full) and full != path:
            assert_none_in(found, open(full, errors="replace").read(), full)


@needs_root
def test_a_worker_user_cannot_read_the_secret_but_reaches_the_database(
        couch, fleet, device, start_agent, world_venv):
    base, python = world_venv
    state = tempfile.mkdtemp(prefix="state-", dir=base)     # the agent opens it to 0711
    path = os.path.join(state, "secret-%d" % device.macid)
    code = REACH.replace("    said = None\n", "    said = None\n    try:\n"
                         "        open(%r).read()\n        log('secret readable')\n"
                         "    except OSError as e:\n        log('secret', type(e).__name__)\n"
                         % path)
    put_doc(fleet.admin, "reach", type=device.macid, name="reach", code=code)
    port = free_udp_port()
    agent = start_agent(device, state_dir=state, python=python, args=[
        "--worker-user", "nobody", "--discovery-port", str(port),
        "--discovery-address", LOOPBACK_BROADCAST])
    agent.wait_line(r"\[reach\] database reached")
    assert adopt(couch, fleet.name, port, str(device.macid)).returncode == 0
    mark = agent.mark()
    agent.wait_line(r"with its own secret", timeout=10)
    agent.wait_line(r"\[reach\] database reached", after=mark)
    assert agent.find_lines(r"\[reach\] secret PermissionError")
    assert not agent.find_lines(r"secret readable")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert device_secret.load(path, device.macid).fingerprint == fingerprint_of(agent)
