"""`make demo`: a local server, one device, one example script, the agent in the foreground.

Starts the CouchDB-protocol test server on 127.0.0.1 (in memory), creates the
database `nedm/raspberries`, a device user for a fixed demo device id, and an
example code document, then runs `himbeerecouch run` for that device.  Edit
the document (e.g. with curl, see the printed hint) and watch the worker
restart.  Ctrl-C stops the agent, its workers and the server.
"""
import os
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import couchdb  # noqa: E402
from couchserver import CouchServer  # noqa: E402

from himbeerecouch.identity import device_password  # noqa: E402

MACID = 0xB827EB0DE770          # b8:27:eb:0d:e7:70, a made-up Pi
SERIAL = "00000000demo0001"
DATABASE = "nedm/raspberries"

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


def main():
    workdir = tempfile.mkdtemp(prefix="himbeerecouch-demo-")
    server = CouchServer()
    server.start()
    agent = None
    try:
        admin = couchdb.Server(server.admin_url)
        db = admin.create(DATABASE)
        user, password = str(MACID), device_password(MACID, SERIAL)
        admin["_users"]["org.couchdb.user:" + user] = {
            "type": "user", "name": user, "roles": ["raspberry"], "password": password}
        db.resource.put_json("_security", {"members": {"roles": ["raspberry"], "names": []}})
        db["demo-script"] = {"type": MACID, "name": "demo ticker", "code": EXAMPLE,
                             "modules": {"helper": HELPER}, "global_modules": {}}
        print("demo: server %s, database %s, device %d" % (server.url, DATABASE, MACID))
        # The admin URL carries a password: into a private file, not onto the screen.
        admin_file = os.path.join(workdir, "admin-url")
        with open(os.open(admin_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(server.admin_url + "\n")
        print("demo: edit the script with\n"
              "  himbeerecouch push $(cat %s) --database %s --device %d --name 'demo ticker' "
              "--code FILE\nCtrl-C stops everything" % (admin_file, DATABASE, MACID))
        sys.stdout.flush()
        agent = subprocess.Popen(
            [sys.executable, "-m", "himbeerecouch", "run", "--server", server.url,
             "--database", DATABASE, "--macid", str(MACID), "--serial", SERIAL,
             "--state-dir", os.path.join(workdir, "state"),
             "--server-file", os.path.join(workdir, "server"),
             "--config", os.path.join(workdir, "himbeerecouch.conf")])
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
        subprocess.run(["rm", "-rf", workdir])
        print("demo: stopped")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
