"""Discovery over UDP with real agents: 127.0.0.1 and 127.255.255.255 only.

An agent with no server waits for a broadcast, answers it (with no secret:
its MacID, host name, version, the server it follows and the claim of its
own login secret), writes the server file and runs its code; several agents
listen on one port at once; junk datagrams are logged and ignored; a device
with a CA file takes only an https server that verifies with it.  Once it
has a server an agent keeps answering (unless --no-answer-discovery) and no
datagram moves it; its device document on the server it follows does.
Every test passes the broadcast address 127.255.255.255 and a free port
explicitly: nothing leaves this machine.
"""
import inspect
import json
import re
import signal
import socket

import pytest

from cli_helpers import assert_one_line_error, free_udp_port, run_cli
from couchserver import StallingProxy
from discovery_helpers import (CODE, LOOPBACK_BROADCAST, assert_none_in, broadcast,
                               discovering_agent, secrets_of_device, udp_ports,  # noqa: F401
                               wait_listening)
from helpers import put_doc, wait_for
from test_tls import TlsTerminator, certificates  # noqa: F401 - a fixture

import himbeerecouch
from himbeerecouch.discovery import fingerprint, make_claim
from himbeerecouch.ops import discover as discovery


def couch_port(couch):
    return couch.server.port if couch.server else int(couch.url.rsplit(":", 1)[1])


def test_waiting_agent_is_found_writes_the_server_file_and_runs(couch, db, device,
                                                                discovering_agent):
    db.admin.save({"_id": "found", "type": device.macid, "name": "found",
                   "code": CODE % "found"})
    agent = discovering_agent(device)
    agent.wait_line(r"waiting for a discovery broadcast on UDP port %d" % agent.port)
    agent.wait_line(r"the first server named is taken \(trust on first use\)")
    assert not agent.find_lines("server .* written")
    result = run_cli("discover", couch.url, "--address", LOOPBACK_BROADCAST, "--port",
                     agent.port, "--timeout", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["ip"], r["MacID"], r["password"], r["fingerprint"]) for r in rows] == [
        ("127.0.0.1", device.macid, None, agent.fingerprint())]
    assert rows[0]["server"] is None            # it answered before taking one
    agent.wait_line(r"\[found\] found is running")
    assert agent.server_in_file() == couch.url
    # Off a Raspberry Pi there is no LED to blink: said once, not more.
    assert len(agent.find_lines(r"not blinking the LED on GPIO 16")) == 1
    # It keeps answering, now naming the server it follows.
    wait_listening(agent)
    answers = broadcast(couch.url, agent.port)
    assert [a["server"] for a in answers.values()] == [couch.url]


def test_the_answer_holds_no_secret_but_the_claim_of_its_own(couch, db, device,
                                                             discovering_agent):
    agent = discovering_agent(device, server=couch.url)
    agent.wait_line(r"following .* on ")
    wait_listening(agent)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(json.dumps({"server": couch.url}).encode(), (LOOPBACK_BROADCAST, agent.port))
        raw, _ = s.recvfrom(65536)
    answer = json.loads(raw)
    kept = agent.secret()
    assert_none_in(secrets_of_device(device, kept["secret"]), raw.decode(), "the answer")
    assert "password" not in answer
    assert set(answer) == {"MacID", "hostname", "version", "server", "fingerprint", "claim"}
    assert answer["MacID"] == device.macid and answer["server"] == couch.url
    assert answer["version"] == himbeerecouch.__version__ and answer["hostname"]
    # The claim is what CouchDB keeps for the secret; the fingerprint names it.
    assert answer["claim"] == make_claim(kept["secret"], kept["salt"], kept["iterations"])
    assert answer["claim"]["pbkdf2_prf"] == "sha" and len(kept["secret"]) == 64
    assert answer["fingerprint"] == fingerprint(device.macid, answer["claim"]) \
        == agent.fingerprint()


def test_several_agents_listen_on_one_port(couch, db, make_device, discovering_agent):
    port = free_udp_port()
    devices = [make_device(), make_device()]
    agents = [discovering_agent(d, port) for d in devices]
    for agent in agents:
        agent.wait_line(r"waiting for a discovery broadcast")
    answers = broadcast(couch.url, port)
    assert sorted(a["MacID"] for a in answers.values()) == sorted(d.macid for d in devices)
    assert {a["MacID"]: a["fingerprint"] for a in answers.values()} == {
        agent.macid: agent.fingerprint() for agent in agents}
    assert all(ip == "127.0.0.1" for ip, _ in answers)
    for agent in agents:
        agent.wait_line(r"following .* on %s" % re.escape(couch.url))


def test_junk_datagrams_are_logged_and_ignored(couch, db, device, discovering_agent):
    agent = discovering_agent(device)
    port = agent.port
    agent.wait_line(r"waiting for a discovery broadcast")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(json.dumps({"server": "x" * 65100}).encode(), (LOOPBACK_BROADCAST, port))
        for junk in (b"\xff\xfe not utf-8", b"not json", b"[1, 2]", b'{"server": 5}', b""):
            s.sendto(junk, (LOOPBACK_BROADCAST, port))
    agent.wait_line(r"ignored a discovery datagram from 127\.0\.0\.1:\d+: oversized")
    # A server that is no URL is answered (operators list devices that way) but not taken.
    answers = broadcast("not a url", port)
    assert [a["MacID"] for a in answers.values()] == [device.macid]
    agent.wait_line(r"names no usable server")
    assert not agent.find_lines("server .* written")
    answers = broadcast(couch.url, port)
    assert [a["MacID"] for a in answers.values()] == [device.macid]
    agent.wait_line(r"following .* on %s" % re.escape(couch.url))
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.output()


def test_no_datagram_moves_a_configured_device(couch, db, device, make_device,
                                               discovering_agent, start_agent):
    """Issue 23: a broadcast naming another server once switched a device
    that followed its server file.  Now it answers and stays."""
    db.admin.save({"_id": "k", "type": device.macid, "name": "kept", "code": CODE % "kept"})
    with StallingProxy(couch_port(couch)) as other:
        agent = discovering_agent(device, server=couch.url)
        agent.wait_line(r"\[kept\] kept is running")
        wait_listening(agent)
        mark = agent.mark()
        for message in ({"server": other.url}, {"server": other.url, "adopt": True}):
            answers = broadcast(None, agent.port, send_data=message)
            assert [(a["MacID"], a["server"]) for a in answers.values()] == [
                (device.macid, couch.url)]
        agent.wait_line(r"a broadcast from 127\.0\.0\.1 names server %s; staying with %s"
                        % (re.escape(other.url), re.escape(couch.url)), after=mark)
        assert agent.server_in_file() == couch.url
        # Still following the old server: a change there reaches it.
        put_doc(db.admin, "k", type=device.macid, name="kept", code=CODE % "still here")
        agent.wait_line(r"\[kept\] still here is running", after=mark)
        assert agent.server_in_file() == couch.url
        assert not agent.find_lines(r"following .* on %s" % re.escape(other.url))
        assert agent.stop() == 0
        # A device given --server answers and stays too.
        port = free_udp_port()
        given = start_agent(make_device(), args=["--discovery-port", str(port),
                                                 "--discovery-address", LOOPBACK_BROADCAST])
        wait_for(lambda: port in udp_ports(given.pid), message="answering socket")
        answers = broadcast(other.url, port)
        assert [a["server"] for a in answers.values()] == [couch.url]
        given.wait_line(r"names server %s; staying with" % re.escape(other.url))
        assert not given.find_lines(r"following .* on %s" % re.escape(other.url))


def test_the_device_document_moves_a_device_that_follows_its_server_file(
        couch, db, device, discovering_agent, start_agent):
    """What moves a device is the server it trusts: its device document there."""
    db.admin.save({"_id": "k", "type": device.macid, "name": "kept", "code": CODE % "kept"})
    with StallingProxy(couch_port(couch)) as other:
        agent = discovering_agent(device, server=couch.url)
        agent.wait_line(r"\[kept\] kept is running")
        mark = agent.mark()
        result = run_cli("device", "set", couch.admin_url, "--database", db.name,
                         device.macid, "--server", other.url)
        assert result.returncode == 0, result.stderr
        assert "moves to %s" % other.url in result.stdout
        agent.wait_line(r"moving to %s, as its device document on %s asks"
                        % (re.escape(other.url), re.escape(couch.url)), after=mark)
        agent.wait_line(r"following .* on %s" % re.escape(other.url), after=mark)
        assert agent.server_in_file() == other.url
        # Its workers restart, to reach the database there.
        agent.wait_line(r"kept: STOPPING -> STOPPED", after=mark)
        agent.wait_line(r"\[kept\] kept is running", after=mark)
        hb = wait_for(lambda: (db.admin.get("%d_heartbeat" % device.macid) or {}).get("server")
                      == other.url and db.admin["%d_heartbeat" % device.macid],
                      timeout=20, message="a heartbeat naming the new server")
        assert hb["login"] == "legacy"
        assert agent.stop() == 0
        # Given --server, the device stays, and says so.
        given = start_agent(device, args=["--no-answer-discovery"])
        given.wait_line(r"the device document asks to move to %s; staying with %s \(given by "
                        r"--server" % (re.escape(other.url), re.escape(couch.url)))
        assert given.find_lines(r"following .* on %s" % re.escape(couch.url))
    err = assert_one_line_error(run_cli("device", "set", couch.admin_url, "--database", db.name,
                                        device.macid, "--server", "http://u:pw@h:1"), "pw@")
    assert "without user name and password" in err


def test_no_answer_with_no_answer_discovery(couch, db, device, start_agent):
    port = free_udp_port()
    agent = start_agent(device, args=["--discovery-port", str(port), "--no-answer-discovery",
                                      "--discovery-address", LOOPBACK_BROADCAST])
    agent.wait_line(r"supervisor of device \d+ started")
    assert port not in udp_ports(agent.pid)
    assert not broadcast(couch.url, port, timeout=0.5)
    assert not agent.find_lines("broadcast")


def test_legacy_password_in_answers_only_when_asked_for(couch, db, device, discovering_agent):
    agent = discovering_agent(device, server=couch.url, extra=["--discovery-legacy-password"])
    agent.wait_line(r"--discovery-legacy-password: every discovery answer holds the legacy "
                    r"password")
    wait_listening(agent)
    answers = broadcast(couch.url, agent.port)
    assert [(a["MacID"], a["password"]) for a in answers.values()] == [
        (device.macid, device.password)]
    assert device.password not in agent.output()


def test_with_a_ca_file_only_a_verified_https_server_is_taken(couch, db, device, certificates,
                                                              discovering_agent):
    db.admin.save({"_id": "tls", "type": device.macid, "name": "tls", "code": CODE % "tls"})
    agent = discovering_agent(device, extra=["--ca-file", certificates["ca"]])
    agent.wait_line(r"only an https server that verifies with %s is taken"
                    % re.escape(certificates["ca"]))
    broadcast(couch.url, agent.port)
    agent.wait_line(r"not taking server %s from the broadcast of 127\.0\.0\.1: it is not "
                    r"https" % re.escape(couch.url))
    good = TlsTerminator(("127.0.0.1", couch_port(couch)), certificates["cert"],
                         certificates["key"])
    try:
        # An https server whose certificate the CA did not sign (it signed itself).
        other = TlsTerminator(("127.0.0.1", couch_port(couch)), certificates["other_ca"],
                              certificates["other_ca"][:-len(".pem")] + ".key")
        try:
            broadcast(other.url, agent.port)
            agent.wait_line(r"not taking server %s .*certificate does not verify with %s"
                            % (re.escape(other.url), re.escape(certificates["ca"])))
        finally:
            other.close()
        assert not agent.find_lines("server .* written")
        assert agent.proc.poll() is None
        broadcast(good.url, agent.port)
        agent.wait_line(r"server %s \(from the broadcast of 127\.0\.0\.1\) written"
                        % re.escape(good.url))
        agent.wait_line(r"\[tls\] tls is running")
        assert agent.server_in_file() == good.url
        assert agent.stop() == 0
    finally:
        good.close()


def test_sigint_while_waiting_exits_cleanly(couch, db, device, discovering_agent):
    agent = discovering_agent(device)
    agent.wait_line(r"waiting for a discovery broadcast")
    assert agent.stop(signal.SIGINT, timeout=10) == 0
    assert agent.find_lines(r"SIGINT while waiting for a discovery broadcast")


def test_port_in_use_by_another_program_is_one_line(device, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind((LOOPBACK_BROADCAST, 0))       # no SO_REUSEADDR: nobody can share it
        port = blocker.getsockname()[1]
        result = run_cli("run", "--macid", device.macid, "--serial", device.serial,
                         "--server-file", tmp_path / "server", "--config", tmp_path / "c.conf",
                         "--state-dir", tmp_path / "state", "--discovery-port", port,
                         "--discovery-address", LOOPBACK_BROADCAST, timeout=30)
    err = assert_one_line_error(result)
    assert "UDP port %d" % port in err


def test_discover_command_errors_and_defaults(couch):
    err = assert_one_line_error(run_cli("discover", "http://u:pw@127.0.0.1:5984",
                                        "--address", LOOPBACK_BROADCAST,
                                        "--port", free_udp_port(), "--timeout", "0"), "pw@")
    assert "without user name and password" in err
    err = assert_one_line_error(run_cli("discover", "nonsense", "--address", LOOPBACK_BROADCAST,
                                        "--port", free_udp_port(), "--timeout", "0"))
    assert "http://host:5984" in err
    result = run_cli("discover", couch.url, "--address", LOOPBACK_BROADCAST,
                     "--port", free_udp_port(), "--timeout", "0.2")
    assert result.returncode == 0 and "no device answered" in result.stdout
    # The old call keeps its signature; its LAN default is only ever inspected here.
    assert himbeerecouch.broadcast_message is discovery.broadcast_message
    params = inspect.signature(discovery.broadcast_message).parameters
    assert list(params)[:3] == ["server_name", "send_data", "timeout"]
    assert params["address"].default == "<broadcast>" and params["port"].default == 53000
    with pytest.raises(ValueError):
        broadcast("", free_udp_port(), send_data={"x": "y" * 70000})
