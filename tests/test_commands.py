"""Command documents against the real server: run exactly as asked, or say why not."""
import os
import pwd
import signal

import psutil
import pytest

from helpers import wait_for


def command(db, device, doc_id, cmd, **fields):
    doc = {"_id": doc_id, "type": "%d_cmd" % device.macid, "cmd": cmd}
    doc.update(fields)
    db.admin.save(doc)
    return doc_id


def result(db, doc_id, timeout=20):
    return wait_for(lambda: (lambda d: d if ("ret" in d or "error" in d) else None)(db.admin[doc_id]),
                    timeout=timeout, message="result of %s" % doc_id)


def test_command_result_and_exit_code(db, device, start_agent):
    agent = start_agent(device)
    command(db, device, "c1", ["sh", "-c", "echo out; echo err >&2; exit 4"])
    doc = result(db, "c1")
    assert doc["ret"] == ["out\n", "err\n"]
    assert doc["exit_code"] == 4 and "error" not in doc
    assert doc["started_at"] <= doc["finished_at"] and doc["started_at"].endswith("Z")
    assert doc["claimed_by"] == device.user
    assert agent.find_lines(r"command c1: exit code 4")


def test_huge_output_is_capped_with_a_marker(db, device, start_agent):
    start_agent(device)
    command(db, device, "big", ["python3", "-c",
                                "import sys; sys.stdout.write('y' * (10 * 1024 * 1024)); "
                                "sys.stderr.buffer.write(b'caf\\xe9 \\xff')"])
    doc = result(db, "big", timeout=60)
    out, err = doc["ret"]
    assert out.startswith("y" * 1000)
    assert "[... output truncated: %d more bytes]" % (10 * 1024 * 1024 - 256 * 1024) in out
    assert len(out) < 300 * 1024
    assert err == "caf\\xe9 \\xff"           # not UTF-8, still readable
    assert doc["exit_code"] == 0


def test_timeout_kills_the_whole_tree(db, device, start_agent):
    start_agent(device)
    command(db, device, "slow", ["sh", "-c", "sleep 1000 & echo child $!; sleep 1000"],
            timeout=1)
    doc = result(db, "slow")
    assert doc["error"].startswith("timed out after 1 s")
    assert doc["exit_code"] == -signal.SIGKILL
    child = int(doc["ret"][0].split()[1])
    wait_for(lambda: not psutil.pid_exists(child) or
             psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
             message="the command's own child was killed")


def test_wrong_commands_say_why(db, device, start_agent, tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    start_agent(device)
    command(db, device, "missing", ["no-such-program-xyz"])
    command(db, device, "notlist", "uptime")
    command(db, device, "empty", [])
    command(db, device, "numbers", ["echo", 1])
    command(db, device, "badtimeout", ["true"], timeout="soon")
    command(db, device, "noexec", [str(script)])
    assert result(db, "missing")["error"] == "program not found: no-such-program-xyz"
    for doc_id in ("notlist", "empty", "numbers"):
        assert "'cmd' must be a non-empty list of strings" in result(db, doc_id)["error"]
    assert "'timeout' must be a positive number" in result(db, "badtimeout")["error"]
    assert result(db, "noexec")["error"] == "permission denied: %s" % script
    assert result(db, "missing")["ret"][1] == "program not found: no-such-program-xyz"


def test_commands_run_in_parallel_without_blocking_workers(db, device, start_agent):
    db.admin.save({"_id": "w", "type": device.macid, "name": "ticker",
                   "code": "import time\ndef main():\n    while not should_quit():\n"
                           "        log('tick')\n        time.sleep(0.2)\n"})
    agent = start_agent(device)
    agent.wait_line(r"\[ticker\] tick")
    for i in range(3):
        command(db, device, "p%d" % i, ["sleep", "2"])
    docs = [result(db, "p%d" % i) for i in range(3)]
    # All three overlap: each started before any finished.
    assert max(d["started_at"] for d in docs) <= min(d["finished_at"] for d in docs)
    mark = agent.mark()
    agent.wait_line(r"\[ticker\] tick", after=mark)


def test_killed_between_claim_and_result_is_interrupted_not_rerun(db, device, start_agent,
                                                                   tmp_path):
    marker = tmp_path / "runs"
    agent = start_agent(device, state_dir=tmp_path / "state")
    command(db, device, "once", ["sh", "-c", "echo run >> %s; sleep 1000" % marker])
    wait_for(lambda: marker.exists() and db.admin["once"].get("claimed_at"),
             message="command claimed and running")
    agent.proc.kill()
    agent.proc.wait()
    wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                          if p.info["cmdline"] and str(marker) in " ".join(p.info["cmdline"])],
             message="the command died with the supervisor (no orphan)")
    again = start_agent(device, state_dir=tmp_path / "state")
    doc = result(db, "once")
    assert doc["error"].startswith("interrupted")
    again.wait_line(r"following")
    assert marker.read_text() == "run\n"


def test_commands_stored_while_offline_run_when_back(db, device, start_agent, tmp_path):
    from couchserver import StallingProxy
    import urllib.parse
    port = urllib.parse.urlsplit(db.url).port
    with StallingProxy(port) as proxy:
        agent = start_agent(device, url=proxy.url)
        agent.wait_line(r"code document\(s\) for this device")
        proxy.stall()
        proxy.drop()
        command(db, device, "later", ["echo", "back"])
        agent.wait_line(r"database unreachable", timeout=20)
        assert "ret" not in db.admin["later"]
        proxy.resume()
        assert result(db, "later", timeout=60)["ret"][0] == "back\n"


def test_a_cancelled_command_is_never_run(db, device, start_agent, tmp_path):
    """Cancelled before the agent saw it (as the page and `exec --cancel` mark it),
    and while it runs: neither runs, the next command does (issue 12, point 5)."""
    marker = tmp_path / "ran"
    command(db, device, "early", ["touch", str(marker)], cancelled_at="2026-11-26T23:30:00Z",
            cancelled_by="someone")
    agent = start_agent(device)
    agent.wait_line(r"0 code document\(s\) for this device")
    command(db, device, "late", ["touch", str(marker)], cancelled_at="2026-11-26T23:30:00Z",
            cancelled_by="someone")
    command(db, device, "next", ["echo", "next"])
    assert result(db, "next")["ret"][0] == "next\n"
    for doc_id in ("early", "late"):
        doc = db.admin[doc_id]
        assert not any(k in doc for k in ("claimed_at", "ret", "exit_code", "error")), doc
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (the CI runs as root)")
def test_command_user_runs_commands_as_that_user(db, device, start_agent, tmp_path):
    """--command-user (issue 12, point 4); without it, commands run as the agent's user."""
    nobody = pwd.getpwnam("nobody")
    start_agent(device, args=["--command-user", "nobody"])
    command(db, device, "who", ["sh", "-c", "id -u; id -g; echo $HOME $USER"])
    out = result(db, "who")["ret"][0].split()
    home = nobody.pw_dir if os.path.isdir(nobody.pw_dir) else "/"   # /nonexistent: "/"
    assert out == [str(nobody.pw_uid), str(nobody.pw_gid), home, "nobody"], out


def test_command_user_from_the_configuration_file(db, device, start_agent, tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("[himbeerecouch]\ncommand_user = no-such-user-here\n")
    agent = start_agent(device, args=["--config", str(conf)])
    assert agent.proc.wait(60) != 0
    agent.stop()
    out = agent.output()
    assert "command user 'no-such-user-here' does not exist" in out, out
    assert "Traceback" not in out
