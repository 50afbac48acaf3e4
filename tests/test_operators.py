"""`himbeerecouch operator add|remove|list` against the real test server (issue 12, point 3).

The operator made by the CLI logs in and uses the tools; its password never
appears on a command line; without a terminal and without the variable, it
is a clear error and nothing is created.
"""
import os
import pty
import secrets
import subprocess
import sys

import psutil

from cli_helpers import ROOT, assert_one_line_error, delete_users, run_cli
from helpers import url_with_credentials, wait_for

from himbeerecouch.ops.provision import provision
from himbeerecouch.ops.connection import Connection


def user_doc(couch, name):
    return couch.admin["_users"].get("org.couchdb.user:" + name)


def test_add_list_remove_and_the_operator_works(couch, db):
    provision(Connection(couch.admin_url, db.name))
    name = "op-" + secrets.token_hex(3)
    password = "pw-" + secrets.token_hex(6)
    try:
        added = run_cli("operator", "add", couch.admin_url, name,
                        env={"HIMBEERECOUCH_OPERATOR_PASSWORD": password})
        assert added.returncode == 0, added.stderr
        assert "operator %s: created" % name in added.stdout
        assert password not in added.stdout + added.stderr
        assert user_doc(couch, name)["roles"] == ["operator"]
        listed = run_cli("operator", "list", couch.admin_url)
        assert name in listed.stdout.split(), listed
        # The new operator logs in and may use the tools on a provisioned database.
        as_operator = url_with_credentials(couch.url, name, password)
        status = run_cli("status", as_operator, "--database", db.name)
        assert status.returncode == 0 and "no device has sent a heartbeat" in status.stdout, status
        # An operator is no admin: it cannot make more operators.
        err = assert_one_line_error(run_cli("operator", "list", as_operator), password)
        assert "needs a server admin" in err
        removed = run_cli("operator", "remove", couch.admin_url, name)
        assert removed.returncode == 0 and "user deleted" in removed.stdout, removed
        assert user_doc(couch, name) is None
        assert name not in run_cli("operator", "list", couch.admin_url).stdout.split()
        err = assert_one_line_error(run_cli("operator", "remove", couch.admin_url, name))
        assert "is not an operator" in err
    finally:
        delete_users(couch, [name])


def test_remove_keeps_a_user_with_other_roles(couch):
    name = "lab-" + secrets.token_hex(3)
    couch.admin["_users"].save({"_id": "org.couchdb.user:" + name, "type": "user",
                                "name": name, "roles": ["raspberry_lmtd"], "password": "x"})
    try:
        added = run_cli("operator", "add", couch.admin_url, name,
                        env={"HIMBEERECOUCH_OPERATOR_PASSWORD": "newpw"})
        assert added.returncode == 0 and "new password" in added.stdout, added
        assert user_doc(couch, name)["roles"] == ["raspberry_lmtd", "operator"]
        removed = run_cli("operator", "remove", couch.admin_url, name)
        assert "keeps raspberry_lmtd" in removed.stdout, removed
        assert user_doc(couch, name)["roles"] == ["raspberry_lmtd"]
    finally:
        delete_users(couch, [name])


def test_no_password_without_a_terminal_is_an_error(couch):
    name = "op-" + secrets.token_hex(3)
    err = assert_one_line_error(run_cli("operator", "add", couch.admin_url, name))
    assert "HIMBEERECOUCH_OPERATOR_PASSWORD" in err
    assert user_doc(couch, name) is None
    err = assert_one_line_error(run_cli("operator", "add", couch.admin_url, "_bad",
                                        env={"HIMBEERECOUCH_OPERATOR_PASSWORD": "x"}))
    assert "not a usable user name" in err


def test_password_prompt_at_a_terminal_and_never_on_the_command_line(couch):
    """At a terminal the password is asked for twice; ps never shows it."""
    name = "op-" + secrets.token_hex(3)
    password = "typed-" + secrets.token_hex(6)
    env = dict(os.environ)
    env.pop("HIMBEERECOUCH_OPERATOR_PASSWORD", None)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "himbeerecouch", "operator", "add",
                             couch.admin_url, name], stdin=follower, stdout=follower,
                            stderr=follower, cwd=ROOT, env=env, start_new_session=True)
    os.close(follower)
    os.set_blocking(leader, False)
    seen = b""
    try:
        def prompted(text):
            nonlocal seen
            try:
                seen += os.read(leader, 1024)
            except BlockingIOError:
                pass
            return text in seen
        wait_for(lambda: prompted(b"password for operator %s: " % name.encode()),
                 timeout=30, message="first prompt")
        assert password not in " ".join(psutil.Process(proc.pid).cmdline())
        os.write(leader, password.encode() + b"\n")
        wait_for(lambda: prompted(b"the same again: "), timeout=10, message="second prompt")
        os.write(leader, password.encode() + b"\n")
        assert proc.wait(30) == 0
        assert user_doc(couch, name)["roles"] == ["operator"]
        assert password.encode() not in seen       # not echoed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
        delete_users(couch, [name])
