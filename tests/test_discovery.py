"""Discovery over UDP with real agents: 127.0.0.1 and 127.255.255.255 only.

An agent with no server waits for a broadcast, answers with its MacID and
password, writes the server file and runs its code; several agents listen
on one port at once; junk datagrams are logged and ignored; once it has a
server an agent answers only with --answer-discovery.  Every test passes
the broadcast address 127.255.255.255 and a free port explicitly: nothing
leaves this machine.
"""
import inspect
import json
import os
import signal
import socket

import psutil
import pytest

from agent import Agent
from cli_helpers import assert_one_line_error, free_udp_port, run_cli
from couchserver import StallingProxy
from helpers import wait_for

import himbeerecouch
from himbeerecouch.ops import discover as discovery

LOOPBACK_BROADCAST = "127.255.255.255"

CODE = """
import time
def main():
    log("%s is running")
    while not should_quit():
        time.sleep(0.05)
"""


class DiscoveringAgent(Agent):
    """`himbeerecouch run` without --server: the server file is all it has."""

    def __init__(self, *args, port, extra=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.port = port
        self.extra = list(extra)

    @property
    def server_file(self):
        return os.path.join(self.state_dir, "server")

    def command(self):
        argv = super().command()
        at = argv.index("--server")
        del argv[at:at + 2]
        return argv + ["--discovery-port", str(self.port),
                       "--discovery-address", LOOPBACK_BROADCAST] + self.extra


@pytest.fixture
def discovering_agent(couch, db, tmp_path):
    agents = []

    def start(device, port, extra=(), server=None):
        state = tmp_path / ("discovering-%d" % len(agents))
        state.mkdir()
        if server:
            (state / "server").write_text(server + "\n")
        agent = DiscoveringAgent(couch.url, db.name, device, state, port=port, extra=extra)
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.close()


def broadcast(url, port, timeout=1.0, **kwargs):
    return discovery.broadcast_message(url, timeout=timeout, address=LOOPBACK_BROADCAST,
                                       port=port, **kwargs)


def test_waiting_agent_is_found_writes_the_server_file_and_runs(couch, db, device,
                                                                discovering_agent):
    db.admin.save({"_id": "found", "type": device.macid, "name": "found",
                   "code": CODE % "found"})
    port = free_udp_port()
    agent = discovering_agent(device, port)
    agent.wait_line(r"waiting for a discovery broadcast on UDP port %d" % port)
    assert not os.path.exists(agent.server_file)
    result = run_cli("discover", couch.url, "--address", LOOPBACK_BROADCAST, "--port", port,
                     "--timeout", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["ip"], r["MacID"], r["password"]) for r in rows] == [
        ("127.0.0.1", device.macid, device.password)]
    agent.wait_line(r"\[found\] found is running")
    with open(agent.server_file) as f:
        assert f.read().strip() == couch.url
    # Off a Raspberry Pi there is no LED to blink: said once, not more.
    assert len(agent.find_lines(r"not blinking the LED on GPIO 16")) == 1
    # Once it has its server it no longer listens (no --answer-discovery).
    wait_for(lambda: not udp_ports(agent.pid), message="discovery socket closed")


def test_several_agents_listen_on_one_port(couch, db, make_device, discovering_agent):
    port = free_udp_port()
    devices = [make_device(), make_device()]
    agents = [discovering_agent(d, port) for d in devices]
    for agent in agents:
        agent.wait_line(r"waiting for a discovery broadcast")
    answers = broadcast(couch.url, port)
    assert sorted(a["MacID"] for a in answers.values()) == sorted(d.macid for d in devices)
    assert {a["MacID"]: a["password"] for a in answers.values()} == {
        d.macid: d.password for d in devices}
    assert all(ip == "127.0.0.1" for ip, _ in answers)
    for agent in agents:
        agent.wait_line(r"following .* on %s" % couch.url.replace(".", r"\."))


def test_junk_datagrams_are_logged_and_ignored(couch, db, device, discovering_agent):
    port = free_udp_port()
    agent = discovering_agent(device, port)
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
    assert not os.path.exists(agent.server_file)
    answers = broadcast(couch.url, port)
    assert [a["MacID"] for a in answers.values()] == [device.macid]
    agent.wait_line(r"following .* on %s" % couch.url.replace(".", r"\."))
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.output()


def test_answer_discovery_keeps_answering_and_follows_a_new_server(couch, db, device,
                                                                   discovering_agent):
    db.admin.save({"_id": "k", "type": device.macid, "name": "kept", "code": CODE % "kept"})
    port = free_udp_port()
    with StallingProxy(couch.server.port if couch.server else int(couch.url.rsplit(":", 1)[1])) \
            as proxy:
        agent = discovering_agent(device, port, extra=["--answer-discovery"], server=couch.url)
        agent.wait_line(r"\[kept\] kept is running")
        wait_for(lambda: port in udp_ports(agent.pid), message="answering socket")
        answers = broadcast(couch.url, port)
        assert [a["MacID"] for a in answers.values()] == [device.macid]
        mark = agent.mark()
        answers = broadcast(proxy.url, port)
        assert [a["MacID"] for a in answers.values()] == [device.macid]
        agent.wait_line(r"switching to it", after=mark)
        agent.wait_line(r"following .* on %s" % proxy.url.replace(".", r"\."), after=mark)
        with open(agent.server_file) as f:
            assert f.read().strip() == proxy.url
        assert agent.stop() == 0


def test_no_answer_once_configured_without_the_option(couch, db, device, start_agent):
    port = free_udp_port()
    agent = start_agent(device, args=["--discovery-port", str(port),
                                      "--discovery-address", LOOPBACK_BROADCAST])
    agent.wait_line(r"supervisor of device \d+ started")
    assert port not in udp_ports(agent.pid)
    assert not agent.find_lines("discovery")


def test_sigint_while_waiting_exits_cleanly(couch, db, device, discovering_agent):
    agent = discovering_agent(device, free_udp_port())
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


def udp_ports(pid):
    try:
        conns = psutil.Process(pid).net_connections(kind="udp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in conns}
