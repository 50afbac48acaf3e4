"""The service files of etc/, really used: supervisord and the init script start,
restart and stop the agent; systemd checks the unit.

Each test copies the shipped file and changes only paths (the interpreter,
/etc/rspby, /var/log, /run) to temporary ones; the agent's identity and
database come from a temporary configuration file, so no secret is on any
command line.  Everything started is ended by pid, also when a test fails.
"""
import configparser
import os
import re
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from cli_helpers import ROOT
from helpers import alive, wait_for

from himbeerecouch.sandbox import proctree

ETC = os.path.join(ROOT, "etc")
CODE = ("import time\ndef main():\n    log('%s worker up')\n"
        "    while not should_quit():\n        time.sleep(0.05)\n")


def agent_files(tmp_path, couch, db, device):
    """The server file and configuration file the services point to."""
    rspby = tmp_path / "rspby"
    rspby.mkdir()
    (rspby / "server").write_text(couch.url + "\n")
    (rspby / "himbeerecouch.conf").write_text(
        "[himbeerecouch]\ndatabase = %s\nmacid = %d\nserial = %s\nstate_dir = %s\n"
        "stop_timeout = 3\nfeed_heartbeat = 1\ndiscovery_address = 127.0.0.1\n"
        % (db.name, device.macid, device.serial, tmp_path / "state"))
    os.chmod(rspby / "himbeerecouch.conf", 0o600)
    (tmp_path / "log").mkdir()
    return rspby


def adjust(text, tmp_path, agent_command):
    text = text.replace("/usr/local/bin/himbeerecouch", agent_command)
    text = text.replace("/etc/rspby/", "%s/rspby/" % tmp_path)
    return text.replace("/var/log/", "%s/log/" % tmp_path)


def end(pid):
    if pid and alive(pid):
        os.kill(pid, signal.SIGKILL)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# ------------------------------------------------------------------ supervisord
def test_shipped_supervisord_entry(tmp_path):
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(os.path.join(ETC, "supervisor", "conf.d", "himbeerecouch.conf"))
    program = entry["program:himbeerecouch"]
    assert program["stopsignal"] == "INT"
    assert int(program["stopwaitsecs"]) > 20      # the workers' default grace period
    assert program["autorestart"] == "true"
    assert "--server-file /etc/rspby/server" in program["command"]


class Supervisord:
    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.conf = tmp_path / "supervisord.conf"
        self.proc = None

    def write(self, entry):
        (self.dir / "conf.d").mkdir()
        (self.dir / "conf.d" / "himbeerecouch.conf").write_text(entry)
        self.conf.write_text(
            "[unix_http_server]\nfile=%(d)s/supervisor.sock\nchmod=0700\n\n"
            "[supervisord]\nnodaemon=true\nlogfile=%(d)s/supervisord.log\n"
            "pidfile=%(d)s/supervisord.pid\nchilddir=%(root)s\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            "[supervisorctl]\nserverurl=unix://%(d)s/supervisor.sock\n\n"
            "[include]\nfiles = %(d)s/conf.d/*.conf\n" % {"d": self.dir, "root": ROOT})

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord",
                                      "-c", str(self.conf)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ctl(self, *args):
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl",
                               "-c", str(self.conf)] + list(args),
                              capture_output=True, text=True, timeout=60)

    def state(self):
        out = self.ctl("status", "himbeerecouch").stdout.split()
        return out[1] if len(out) > 1 else None

    def pid(self):
        out = self.ctl("pid", "himbeerecouch").stdout.strip()
        return int(out) if out.isdigit() and out != "0" else None

    def close(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def test_supervisord_starts_restarts_and_stops_the_agent(tmp_path, couch, db, device):
    db.admin.save({"_id": "sv", "type": device.macid, "name": "sv", "code": CODE % "sv"})
    agent_files(tmp_path, couch, db, device)
    with open(os.path.join(ETC, "supervisor", "conf.d", "himbeerecouch.conf")) as f:
        entry = adjust(f.read(), tmp_path, "%s -m himbeerecouch" % sys.executable)
    # Only to save time: RUNNING after one second of life instead of three.
    entry = re.sub(r"(?m)^startsecs=\d+$", "startsecs=1", entry)
    sv = Supervisord(tmp_path)
    sv.write(entry)
    program_log = tmp_path / "log" / "himbeerecouch.log"
    pids = []
    try:
        sv.start()
        wait_for(lambda: sv.state() == "RUNNING", timeout=30, message="agent RUNNING")
        pids.append(sv.pid())
        wait_for(lambda: "[sv] sv worker up" in read(program_log), timeout=30,
                 message="the worker's line in the program's log")
        # The process supervisord runs is the agent itself (it blocks).
        assert "himbeerecouch: supervisor %d" % device.macid in " ".join(
            psutil.Process(pids[0]).cmdline())

        result = sv.ctl("restart", "himbeerecouch")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: sv.state() == "RUNNING" and sv.pid() not in (None, pids[0]),
                 timeout=30, message="agent running again")
        pids.append(sv.pid())
        assert not alive(pids[0])
        text = read(program_log)
        assert "SIGINT: stopping every worker" in text           # stopsignal=INT reached it
        assert "stopped: himbeerecouch (exit status 0)" in read(tmp_path / "supervisord.log")
        wait_for(lambda: read(program_log).count("[sv] sv worker up") == 2, timeout=30,
                 message="the worker started again")

        result = sv.ctl("stop", "himbeerecouch")
        assert result.returncode == 0, result.stdout + result.stderr
        assert sv.state() == "STOPPED"
        assert not alive(pids[1])
        assert read(tmp_path / "supervisord.log").count("(exit status 0)") == 2
        assert not proctree.kill_tagged("%d/" % device.macid)     # no worker left behind
    finally:
        sv.close()
        for pid in pids:
            end(pid)
        proctree.kill_tagged("%d/" % device.macid)


# ------------------------------------------------------------------ init script
def test_init_script_start_status_reload_restart_stop(tmp_path, couch, db, device):
    if not shutil.which("start-stop-daemon"):
        pytest.skip("start-stop-daemon is not installed")
    db.admin.save({"_id": "init", "type": device.macid, "name": "init", "code": CODE % "init"})
    rspby = agent_files(tmp_path, couch, db, device)
    launcher = tmp_path / "himbeerecouch"
    launcher.write_text("#!/bin/sh\nexec %s -m himbeerecouch \"$@\"\n" % sys.executable)
    launcher.chmod(0o755)
    pidfile, logfile = tmp_path / "agent.pid", tmp_path / "log" / "agent.log"
    env = dict(os.environ, HIMBEERECOUCH_DEFAULTS=str(tmp_path / "no-defaults"),
               DAEMON=str(launcher), PIDFILE=str(pidfile), LOGFILE=str(logfile), STOP_WAIT="20",
               DAEMON_ARGS="run --server-file %s/server --config %s/himbeerecouch.conf"
                           % (rspby, rspby))
    script = os.path.join(ETC, "init.d", "himbeerecouch")

    def service(action):
        return subprocess.run(["sh", script, action], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    def pid():
        text = read(pidfile).strip()
        return int(text) if text.isdigit() else None

    pids = []
    try:
        assert service("start").returncode == 0
        pids.append(wait_for(pid, message="pid file"))
        wait_for(lambda: "[init] init worker up" in read(logfile), timeout=30,
                 message="the worker's line")
        status = service("status")
        assert status.returncode == 0 and "is running" in status.stdout
        assert "already running" in service("start").stdout

        assert service("reload").returncode == 0
        wait_for(lambda: "SIGHUP: reading the server file" in read(logfile),
                 message="SIGHUP reached the agent")
        assert alive(pids[0])

        assert service("restart").returncode == 0
        assert not alive(pids[0])
        pids.append(wait_for(lambda: pid() not in (None, pids[0]) and pid(),
                             message="new pid file"))
        assert "SIGINT: stopping every worker" in read(logfile)
        wait_for(lambda: read(logfile).count("[init] init worker up") == 2, timeout=30,
                 message="the worker started again")

        assert service("stop").returncode == 0
        assert not alive(pids[1]) and not os.path.exists(pidfile)
        assert service("status").returncode == 3
        assert service("stop").returncode == 0                    # stopping twice is fine
        assert service("bogus").returncode == 3
    finally:
        for p in pids + [pid()]:
            end(p)
        proctree.kill_tagged("%d/" % device.macid)


# ------------------------------------------------------------------ systemd
def test_systemd_unit(tmp_path):
    path = os.path.join(ETC, "systemd", "system", "himbeerecouch.service")
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str
    unit.read(path)
    service = unit["Service"]
    assert service["KillSignal"] == "SIGINT"
    assert service["Restart"] == "always"
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) > 20
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    with open(path) as f:
        text = f.read()
    copy = tmp_path / "himbeerecouch.service"
    copy.write_text(re.sub(r"/usr/local/bin/himbeerecouch", sys.executable, text))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
