"""`make demo` and `make server` as a new user meets them (issue 12, point 2).

testserver/demo.py runs as `make` runs it, in a session of its own; Ctrl-C is
SIGINT to that session's process group, as a terminal sends it.  What it
prints must work as printed: the page's URL answers, the operator's login
works, and the CLI commands it suggests run from the checkout.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading

import pytest

from cli_helpers import ROOT
from couchserver import http_request
from helpers import wait_for

DEMO = os.path.join(ROOT, "testserver", "demo.py")


class Demo:
    """demo.py in its own session; ``lines`` is what it printed so far."""

    def __init__(self, *args):
        env = dict(os.environ)
        env.pop("HIMBEERECOUCH_PASSWORD", None)
        self.proc = subprocess.Popen([sys.executable, DEMO] + list(args), cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern, timeout=60):
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError("demo ended:\n" + "\n".join(self.lines))
            return next((m for m in map(rx.search, list(self.lines)) if m), None)
        return wait_for(found, timeout=timeout, message="%r in:\n%s" % (pattern, self.lines))

    def ctrl_c(self):
        """SIGINT to its process group, as the terminal sends it; its exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(60)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(10)
        self.proc.stdout.close()


@pytest.fixture
def demo():
    started = []

    def start(*args):
        started.append(Demo(*args))
        return started[-1]
    yield start
    for d in started:
        d.close()


def login(demo):
    """(page URL, operator, password) as the demo printed them."""
    page = demo.wait_line(r"web page: (http\S+)").group(1)
    user, password = demo.wait_line(r"demo:   user (\S+), password (\S+)").groups()
    return page, user, password


def run_printed(demo, command):
    """Run the printed CLI line for ``command`` as printed, after the printed export."""
    password = demo.wait_line(r"^  export HIMBEERECOUCH_PASSWORD=(\S+)$").group(1)
    line = demo.wait_line(r"^  (\S+ %s .*)$" % command).group(1)
    env = dict(os.environ, HIMBEERECOUCH_PASSWORD=password)
    return subprocess.run(shlex.split(line), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_demo_provisions_prints_a_working_login_and_stops_on_ctrl_c(demo):
    d = demo()
    d.wait_line(r"\[demo ticker\] hello from the demo worker", timeout=120)
    page, user, password = login(d)
    assert page.startswith("http://127.0.0.1:")
    # The page answers, to the operator the demo made; the login works.
    status, body = http_request("GET", page, auth=(user, password))
    assert status == 200 and b"<html" in body.lower(), (status, body[:200])
    server = re.match(r"http://127\.0\.0\.1:\d+", page).group(0)
    status, body = http_request("POST", server + "/_session", {"name": user,
                                                               "password": password})
    assert status == 200 and body["ok"] and "operator" in body["roles"], body
    # The CLI lines work as printed (the path of the command included).
    result = run_printed(d, "status")
    assert result.returncode == 0, result
    assert "b827eb0de770" in "%x" % int(result.stdout.splitlines()[1].split()[0])
    assert "Traceback" not in result.stderr
    # The heartbeat carries the server's timestamp: the database was provisioned.
    status, beat = http_request("GET", server + "/nedm%2Fraspberries/202481586792304_heartbeat",
                                auth=(user, password))
    assert status == 200 and beat["timestamp_source"] == "server", beat
    assert d.ctrl_c() == 0
    assert d.lines[-1] == "demo: stopped", d.lines[-5:]
    with pytest.raises(OSError):
        http_request("GET", server, timeout=2)


def test_server_keeps_its_data_and_its_printed_agent_command_works(demo, tmp_path):
    data = tmp_path / "server"
    first = demo("--server-only", "--data", str(data))
    first.wait_line(r"Ctrl-C stops everything")
    page, user, password = login(first)
    agent_line = first.wait_line(r"^  (\S+ run --server .*)$").group(1)
    assert first.proc.poll() is None            # it keeps running
    agent = subprocess.Popen(shlex.split(agent_line), cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(agent.stdout), daemon=True)
        reader.start()
        wait_for(lambda: any("hello from the demo worker" in s for s in seen), timeout=60,
                 message="the demo worker, started by the printed agent command")
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            assert agent.wait(30) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            agent.stdout.close()
    assert first.ctrl_c() == 0
    # Again on the same data: the same login, the database and its documents kept.
    second = demo("--server-only", "--data", str(data))
    second.wait_line(r"Ctrl-C stops everything")
    page2, user2, password2 = login(second)
    assert (user2, password2) == (user, password)
    second.wait_line(r"database nedm/raspberries: exists")
    server = re.match(r"http://127\.0\.0\.1:\d+", page2).group(0)
    status, beat = http_request("GET", server + "/nedm%2Fraspberries/202481586792304_heartbeat",
                                auth=(user, password))
    assert status == 200 and beat["state"] == "stopped", beat
    assert second.ctrl_c() == 0
