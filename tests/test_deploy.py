"""`make deploy NFSROOT=... SERVER=...` into a temporary fake root, and the
deployed agent run from there against the test server.

The fake root has what the script looks for (etc/, usr/, usr/lib/python3.N,
a dpkg status file).  To run what was deployed, a fresh virtual environment
stands in for the Pi's python3: its only paths are the root's dist-packages
and, for psutil and setproctitle (which the Pi gets from its package manager),
this environment's site-packages.  Workers are started by that interpreter
with -I, so they also import the deployed copy.
"""
import os
import subprocess
import sys
import sysconfig

import psutil
import pytest

from agent import Agent
from cli_helpers import ROOT

PY_VERSION = "%d.%d" % sys.version_info[:2]


def make(*args, timeout=120):
    # -o: never (re)build the virtual environment from here; PY: this interpreter.
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "deploy",
                           "PY=%s" % sys.executable] + list(args),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def fake_root(path, packages=("python3", "python3-psutil")):
    for folder in ("etc", "usr/lib/python%s" % PY_VERSION, "usr/bin", "var/lib/dpkg"):
        (path / folder).mkdir(parents=True)
    (path / "var/lib/dpkg/status").write_text("".join(
        "Package: %s\nStatus: install ok installed\nVersion: 1\n\n" % p for p in packages))
    return path


def one_line(result):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("deploy: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_deploy_refuses_what_is_not_a_netboot_root(tmp_path):
    assert "own root" in one_line(make("NFSROOT=/"))
    (tmp_path / "to-root").symlink_to("/")
    assert "own root" in one_line(make("NFSROOT=%s" % (tmp_path / "to-root")))
    assert "not a folder" in one_line(make("NFSROOT=%s" % (tmp_path / "missing")))
    assert "does not look like a root file system" in one_line(make("NFSROOT=%s" % tmp_path))
    assert "no root folder given" in one_line(make())
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr").mkdir()
    assert "no Python 3" in one_line(make("NFSROOT=%s" % tmp_path))
    root = fake_root(tmp_path / "root")
    assert "no user name or password" in one_line(
        make("NFSROOT=%s" % root, "SERVER=http://admin:pw@127.0.0.1:5984"))
    assert not os.listdir(root / "usr" / "bin")     # nothing was installed


class DeployedAgent(Agent):
    """The deployed launcher, run by the stand-in for the Pi's python3, with the
    deployed server file and a configuration file, as the systemd unit does."""

    def __init__(self, *args, root, **kwargs):
        super().__init__(*args, **kwargs)
        self.root = root

    def command(self):
        return [self.python, str(self.root / "usr/local/bin/himbeerecouch"), "run",
                "--server-file", str(self.root / "etc/rspby/server"),
                "--config", str(self.root / "etc/rspby/himbeerecouch.conf")]


@pytest.fixture
def pi_python(tmp_path):
    """A python3 whose sys.path holds the deployed root, not this source tree."""
    def make_env(root):
        env = tmp_path / "pi-python"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True,
                       timeout=120)
        site = subprocess.run([str(env / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        deployed = root / ("usr/local/lib/python%s/dist-packages" % PY_VERSION)
        ours = os.path.dirname(os.path.dirname(psutil.__file__))
        with open(os.path.join(site, "deployed-root.pth"), "w") as f:
            f.write("%s\n%s\n" % (deployed, ours))
        return str(env / "bin" / "python")
    return make_env


def test_deploy_installs_into_the_root_and_the_deployed_agent_runs(
        tmp_path, couch, db, device, pi_python):
    root = fake_root(tmp_path / "root")
    project_before = sorted(os.listdir(ROOT))
    result = make("NFSROOT=%s" % root, "SERVER=%s" % couch.url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "python3-psutil" in out and "python3-setproctitle" in out and "python3-rpi.gpio" in out
    assert "missing in the root: python3-setproctitle, python3-rpi.gpio" in out
    assert sorted(os.listdir(ROOT)) == project_before          # no build/ left in the source

    site = root / ("usr/local/lib/python%s/dist-packages" % PY_VERSION)
    for path in ("himbeerecouch/__init__.py", "himbeerecouch/runner/__main__.py",
                 "himbeerecouch/sandbox/spawn.py", "couchdb/client.py",
                 "himbeerecouch-2.0.0.egg-info/PKG-INFO"):
        assert (site / path).is_file(), path
    launcher = root / "usr/local/bin/himbeerecouch"
    assert os.access(launcher, os.X_OK) and launcher.read_text().startswith("#!/usr/bin/python3")
    assert (root / "etc/rspby/server").read_text().strip() == couch.url
    assert (root / "etc/rspby/himbeerecouch.conf.example").is_file()
    unit = root / "etc/systemd/system/himbeerecouch.service"
    assert "KillSignal=SIGINT" in unit.read_text()
    link = root / "etc/systemd/system/multi-user.target.wants/himbeerecouch.service"
    assert os.readlink(link) == "/etc/systemd/system/himbeerecouch.service"
    assert not os.path.exists("/etc/systemd/system/himbeerecouch.service") or \
        not os.path.samefile(unit, "/etc/systemd/system/himbeerecouch.service")

    # Deploying again replaces the package, leftovers of the old one included.
    (site / "himbeerecouch" / "stale_module.py").write_text("x = 1\n")
    result = make("NFSROOT=%s" % root, "SERVICE=supervisord")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (site / "himbeerecouch" / "stale_module.py").exists()
    assert "server file /etc/rspby/server kept" in result.stdout
    assert (root / "etc/supervisor/conf.d/himbeerecouch.conf").is_file()

    # The deployed agent, run from the root, runs a code document.
    (root / "etc/rspby/himbeerecouch.conf").write_text(
        "[himbeerecouch]\ndatabase = %s\nmacid = %d\nserial = %s\nstate_dir = %s\n"
        "stop_timeout = 3\nfeed_heartbeat = 1\ndiscovery_address = 127.0.0.1\n"
        % (db.name, device.macid, device.serial, tmp_path / "state"))
    db.admin.save({"_id": "where", "type": device.macid, "name": "where",
                   "code": "import time\nimport himbeerecouch, couchdb\ndef main():\n"
                           "    log('package', himbeerecouch.__file__)\n"
                           "    log('client', couchdb.__file__)\n"
                           "    while not should_quit():\n        time.sleep(0.05)\n"})
    agent = DeployedAgent(couch.url, db.name, device, tmp_path / "state", python=pi_python(root),
                          root=root)
    try:
        agent.start()
        line = agent.wait_line(r"\[where\] package ", timeout=30)
        assert line.split(" package ", 1)[1].startswith(str(site) + "/himbeerecouch/")
        agent.wait_line(r"\[where\] client %s/couchdb/" % str(site).replace(".", r"\."))
        assert agent.stop() == 0
    finally:
        agent.close()


def test_sysv_service_and_old_agent_warning(tmp_path):
    root = fake_root(tmp_path / "root", packages=("python3", "python3-psutil",
                                                  "python3-setproctitle", "python3-rpi.gpio"))
    old = root / "etc/supervisor/conf.d/raspberry.conf"
    old.parent.mkdir(parents=True)
    old.write_text("[program:raspberry]\ncommand=python -c 'import himbeerecouch.prog as p; "
                   "p.run(\"/etc/rspby/server\")'\n")
    result = make("NFSROOT=%s" % root, "SERVICE=sysv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(root / "etc/init.d/himbeerecouch", os.X_OK)
    assert (root / "etc/default/himbeerecouch").is_file()
    assert "/etc/supervisor/conf.d/raspberry.conf seems to start the old agent" in result.stdout
    assert "all of them are installed in the root" in result.stdout
    assert "no server file" in result.stdout
    # Issue 23: where the Pis keep their login secrets, and what to set on a tmpfs.
    assert "set secret_file in /etc/rspby/himbeerecouch.conf to persistent storage" \
        in result.stdout
    assert sysconfig.get_paths()["purelib"] not in result.stdout


def test_deploy_says_where_the_pis_keep_their_login_secrets(tmp_path):
    from himbeerecouch.ops.deploy import secret_note
    root = fake_root(tmp_path / "root")
    assert "its state folder (/var/lib/himbeerecouch); if that does not survive a reboot" \
        in secret_note(str(root))
    conf = root / "etc/rspby/himbeerecouch.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[himbeerecouch]\nstate_dir = /run/himbeerecouch\n"
                    "secret_file = /persist/himbeerecouch-secret\n")
    assert "each Pi keeps its own in /persist/himbeerecouch-secret" in secret_note(str(root))
    conf.write_text("[himbeerecouch]\nlogin = legacy\n")
    assert "legacy password only" in secret_note(str(root))
