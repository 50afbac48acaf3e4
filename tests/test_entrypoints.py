"""The old tool's entry points keep working: ``himbeerecouch.prog.run(path)``,
``himbeerecouch.util.getmacid()`` / ``getpassword()`` and
``himbeerecouch.broadcast_message`` (its behaviour: tests/test_discovery.py).
"""
import hashlib
import json
import signal
import sys

import pytest

from agent import Agent

import himbeerecouch
from himbeerecouch import identity, prog, util

# What deployed devices run (etc/ and the old supervisord entry), plus the
# keyword arguments a test needs, read from a file so that the serial stays
# off the command line.
OLD_CALL = ("import json, sys; import himbeerecouch.prog as p; "
            "sys.exit(p.run(sys.argv[1], **json.load(open(sys.argv[2]))))")


class OldEntryAgent(Agent):
    def __init__(self, *args, server_file, overrides_file, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_file, self.overrides_file = server_file, overrides_file

    def command(self):
        return [sys.executable, "-c", OLD_CALL, str(self.server_file), str(self.overrides_file)]


def test_prog_run_runs_the_agent_from_the_server_file(tmp_path, couch, db, device):
    db.admin.save({"_id": "old", "type": device.macid, "name": "old entry",
                   "code": "import time\ndef main():\n    log('started by prog.run')\n"
                           "    while not should_quit():\n        time.sleep(0.05)\n"})
    server_file = tmp_path / "server"
    server_file.write_text(couch.url + "\n")
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({
        "macid": device.macid, "serial": device.serial, "database": db.name,
        "state_dir": str(tmp_path / "state"), "config_file": str(tmp_path / "none.conf"),
        "stop_timeout": 3, "feed_heartbeat": 1, "discovery_address": "127.0.0.1"}))
    agent = OldEntryAgent(couch.url, db.name, device, tmp_path / "state",
                          server_file=server_file, overrides_file=overrides)
    try:
        agent.start()
        agent.wait_line(r"\[old entry\] started by prog.run", timeout=30)
        assert device.serial not in " ".join(agent.command())
        assert agent.stop(signal.SIGINT) == 0          # blocking until stopped, then 0
    finally:
        agent.close()


def test_prog_run_arguments():
    assert prog._arguments("/etc/rspby/server", {"macid": 5, "config_file": "/c",
                                                 "answer_discovery": True, "verbose": False}) == [
        "run", "--server-file", "/etc/rspby/server", "--answer-discovery", "--config", "/c",
        "--macid", "5"]
    with pytest.raises(TypeError):
        prog.run("/etc/rspby/server", no_such_option=1)


def test_util_getmacid_and_getpassword():
    assert util.getmacid("lo") == 0
    try:
        expected = identity.read_macid()
    except identity.IdentityError:
        with pytest.raises(identity.IdentityError):
            util.getmacid()
        return
    assert util.getmacid() == expected
    assert util.getserial() == identity.read_serial()
    assert util.getpassword() == hashlib.sha1(
        (str(expected) + util.getserial()).encode()).hexdigest()


def test_password_formula_matches_the_old_tool():
    # sha1(str(MacID) + serial), the serial being chars 10..26 of /proc/cpuinfo's Serial line.
    assert identity.device_password(202481587074134, "00000000abcdef01") == hashlib.sha1(
        b"20248158707413400000000abcdef01").hexdigest()


def test_broadcast_message_is_importable_from_the_package():
    from himbeerecouch.ops.discover import broadcast_message
    assert himbeerecouch.broadcast_message is broadcast_message
