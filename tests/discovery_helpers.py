"""What the discovery and adoption tests share: agents that listen, broadcasts.

Every broadcast goes to 127.255.255.255 on a free port, and every agent
listens there (``--discovery-address``): nothing leaves this machine.
``DiscoveringAgent`` runs ``himbeerecouch run`` with its server in its server
file (or none: it waits for a broadcast) rather than on its command line.
"""
import hashlib
import json
import os

import psutil
import pytest

from agent import Agent
from cli_helpers import free_udp_port
from helpers import wait_for

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

    @property
    def secret_file(self):
        return os.path.join(self.state_dir, "secret-%d" % self.macid)

    def server_in_file(self):
        with open(self.server_file) as f:
            return f.read().strip()

    def secret(self):
        """What the agent keeps in its secret file (JSON: secret, salt, iterations)."""
        with open(self.secret_file) as f:
            return json.load(f)

    def fingerprint(self):
        return fingerprint_of(self)

    def command(self):
        argv = super().command()
        at = argv.index("--server")
        del argv[at:at + 2]
        return argv + ["--discovery-port", str(self.port),
                       "--discovery-address", LOOPBACK_BROADCAST] + self.extra


@pytest.fixture
def discovering_agent(couch, db, tmp_path):
    """``start(device, port, extra=(), server=None)``: an agent listening on
    ``port``, its server file holding ``server`` (none: it waits)."""
    agents = []

    def start(device, port=None, extra=(), server=None):
        state = tmp_path / ("discovering-%d" % len(agents))
        state.mkdir()
        if server:
            (state / "server").write_text(server + "\n")
        agent = DiscoveringAgent(couch.url, db.name, device, state,
                                 port=port or free_udp_port(), extra=extra)
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.close()


def fingerprint_of(agent):
    """The fingerprint an agent printed at start."""
    line = agent.wait_line(r"fingerprint [0-9a-f]{12} \(of its login secret")
    return line.split("fingerprint ", 1)[1][:12]


def broadcast(url, port, timeout=1.0, **kwargs):
    return discovery.broadcast_message(url, timeout=timeout, address=LOOPBACK_BROADCAST,
                                       port=port, **kwargs)


def udp_ports(pid):
    try:
        conns = psutil.Process(pid).net_connections(kind="udp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in conns}


def wait_listening(agent):
    wait_for(lambda: agent.port in udp_ports(agent.pid), message="answering socket")


def secrets_of_device(device, secret=None):
    """Everything no answer, log line or process title may hold: the legacy
    password, the serial, SHA-1 and SHA-256 of them, and the device's own
    secret with its hashes."""
    found = [device.password, device.serial]
    if secret is not None:
        found.append(secret)
    for text in list(found):
        for algorithm in ("sha1", "sha256"):
            found.append(hashlib.new(algorithm, text.encode()).hexdigest())
    found.append(hashlib.sha1((str(device.macid) + device.serial).encode()).hexdigest())
    return found


def assert_none_in(found, text, where):
    for secret in found:
        assert secret not in text, "%s holds a secret (%s...)" % (where, secret[:4])
