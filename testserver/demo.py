"""`make demo` and `make server`: the whole product on this machine, without root.

Starts the CouchDB-protocol test server on 127.0.0.1, prepares the database
``nedm/raspberries`` with the real ``provision`` (security rules, server
timestamps, the web page, a device user for a made-up Pi), creates an
operator user, stores an example script, and prints the page's URL (as
``provision`` reports it), the operator's login and CLI commands that work as
printed.

``make demo`` (no options): the server lives in memory, the agent runs in the
foreground for the demo device, and Ctrl-C stops everything.

``make server`` (``--server-only --port P --data DIR``): the server keeps its
databases in DIR across runs and runs until Ctrl-C, without an agent; it
prints the command that runs one against it.
"""
import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from couchserver import CouchServer  # noqa: E402

from himbeerecouch.identity import device_password  # noqa: E402
from himbeerecouch.ops.connection import Connection, rfc1123  # noqa: E402
from himbeerecouch.ops.operators import add_operator  # noqa: E402
from himbeerecouch.ops.provision import provision  # noqa: E402

MACID = 0xB827EB0DE770          # b8:27:eb:0d:e7:70, a made-up Pi
MAC = "b8:27:eb:0d:e7:70"
SERIAL = "00000000demo0001"
DATABASE = "nedm/raspberries"
OPERATOR = "demo-operator"

EXAMPLE = '''\
import time

import helper   # a module of this document (see "modules")

def main():
    log("hello from the demo worker; helper says", helper.greeting())
    n = 0
    while not should_quit():
        n += 1
        log("tick", n)
        time.sleep(2)
    log("asked to quit after", n, "ticks; bye")
'''

HELPER = '''\
def greeting():
    return "the modules of a document are importable"
'''


def say(text=""):
    print(text, flush=True)


def private_file(path, text=None):
    """The text of ``path`` (0600), written first when it does not exist and
    ``text`` is given: secrets of a kept server are the same on every run."""
    if text is not None and not os.path.exists(path):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(text)
    with open(path) as f:
        return f.read().strip()


def command_path():
    """How to call the `himbeerecouch` command from here, as the user types it."""
    script = os.path.join(os.path.dirname(sys.executable), "himbeerecouch")
    if not os.access(script, os.X_OK):
        return "%s -m himbeerecouch" % shlex.quote(sys.executable)
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else script


def prepare(server, folder):
    """Provision the database, the device and the operator; store the example."""
    conn = Connection(server.admin_url, DATABASE)
    report = provision(conn, [(MACID, device_password(MACID, SERIAL))])
    for line in report:
        say("demo: provision: %s" % line)
    password = private_file(os.path.join(folder, "operator-password"),
                            "op-" + os.urandom(6).hex())
    say("demo: %s" % add_operator(conn.server["_users"], OPERATOR, password))
    db = conn.db
    if db.get("demo-script") is None:
        db["demo-script"] = {"type": MACID, "name": "demo ticker", "code": EXAMPLE,
                             "modules": {"helper": HELPER}, "created_by": "admin",
                             "timestamp": rfc1123()}
    for name, text in (("ticker.py", EXAMPLE), ("helper.py", HELPER)):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return password


def explain(server, folder, password, agent_command):
    cli = command_path()
    url = "http://%s@127.0.0.1:%d" % (OPERATOR, server.port)
    say()
    say("demo: server %s, database %s, device %d (%s)" % (server.url, DATABASE, MACID, MAC))
    say("demo: open the web page that provision reported above, and log in as")
    say("demo:   user %s, password %s" % (OPERATOR, password))
    say("demo: the server admin's URL (with its password) is in %s"
        % os.path.join(folder, "admin-url"))
    say("demo: try, in another terminal in %s:" % os.getcwd())
    say("  export HIMBEERECOUCH_PASSWORD=%s" % password)
    say("  %s status %s" % (cli, url))
    say("  %s logs %s --device %s --follow" % (cli, url, MAC))
    say("  %s exec %s --device %s -- uptime" % (cli, url, MAC))
    say("  %s push %s --device %s --name 'demo ticker' --code %s --module helper=%s"
        % (cli, url, MAC, shlex.quote(os.path.join(folder, "ticker.py")),
           shlex.quote(os.path.join(folder, "helper.py"))))
    say("demo: the demo device logs in with the legacy password; give it a secret of its own")
    say("demo: (it answers on 127.0.0.1 only):")
    say("  %s adopt \"$(cat %s)\" --address 127.0.0.1 %s"
        % (cli, shlex.quote(os.path.join(folder, "admin-url")), MAC))
    if agent_command:
        say("demo: run the agent of the demo device against it:")
        say("  " + " ".join(shlex.quote(a) for a in agent_command))
    say("demo: Ctrl-C stops everything")


def agent_arguments(server, folder):
    return ["run", "--server", server.url, "--database", DATABASE, "--macid", str(MACID),
            "--serial", SERIAL, "--state-dir", os.path.join(folder, "state"),
            "--server-file", os.path.join(folder, "server"),
            "--config", os.path.join(folder, "himbeerecouch.conf"),
            "--discovery-address", "127.0.0.1"]       # found on this machine only


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-only", action="store_true",
                        help="keep the server running, without an agent (make server)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: free)")
    parser.add_argument("--data", help="keep the databases in this folder across runs")
    args = parser.parse_args(argv)
    if args.data:
        folder = os.path.abspath(args.data)
        os.makedirs(folder, mode=0o700, exist_ok=True)
    else:
        folder = tempfile.mkdtemp(prefix="himbeerecouch-demo-")
    admin_password = private_file(os.path.join(folder, "admin-password"), os.urandom(12).hex())
    server = CouchServer(data_dir=os.path.join(folder, "couchdata") if args.data else None,
                         port=args.port or None, admin_password=admin_password)
    server.start()
    agent = None
    try:
        with open(os.open(os.path.join(folder, "admin-url"), os.O_WRONLY | os.O_CREAT
                          | os.O_TRUNC, 0o600), "w") as f:
            f.write(server.admin_url + "\n")
        password = prepare(server, folder)
        if args.server_only:
            command = shlex.split(command_path()) + agent_arguments(server, folder)
            explain(server, folder, password, command)
            try:
                while True:
                    signal.pause()
            except KeyboardInterrupt:
                return 0
        explain(server, folder, password, None)
        agent = subprocess.Popen([sys.executable, "-m", "himbeerecouch"]
                                 + agent_arguments(server, folder))
        # Ctrl-C reaches the agent too (same terminal): wait for it to stop its workers.
        while True:
            try:
                return agent.wait()
            except KeyboardInterrupt:
                continue
    finally:
        if agent and agent.poll() is None:
            agent.send_signal(signal.SIGINT)
            agent.wait()
        server.stop()
        if not args.data:
            shutil.rmtree(folder, ignore_errors=True)
        say("demo: stopped")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM too stops the agent and the server (the finally of main).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sys.exit(main())
