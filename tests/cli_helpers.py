"""Helpers for the tests of the operator tools: run the real command line.

``run_cli(*args)`` runs ``python -m himbeerecouch ARGS`` as a subprocess
and returns the completed process (text output).  ``assert_one_line_error``
checks what every user error must look like: a non-zero exit status, one
line on stderr, no traceback, no password.
"""
import os
import socket
import subprocess
import sys

import couchdb.http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, env=None, timeout=60, input=None):
    full_env = dict(os.environ)
    full_env.pop("HIMBEERECOUCH_PASSWORD", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "himbeerecouch"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          cwd=ROOT)


def assert_one_line_error(result, *secrets):
    assert result.returncode != 0, result
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(err.splitlines()) == 1, result.stderr
    assert err.startswith("himbeerecouch: "), err
    for secret in secrets:
        assert secret not in result.stderr and secret not in result.stdout
    return err


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delete_users(couch, names):
    users = couch.admin["_users"]
    for name in names:
        try:
            doc = users.get("org.couchdb.user:%s" % name)
            if doc is not None:
                users.delete(doc)
        except couchdb.http.ResourceNotFound:
            pass
