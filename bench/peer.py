"""The peer baseline: supervisord (PyPI ``supervisor``) running the same script 50 times.

supervisord gets 50 programs of the stamp script (``python -I -u script.py
pNN``, stop signal SIGINT, ``startsecs=0``), its XML-RPC interface on a free
127.0.0.1 port, and every program the environment variable
``HIMBEERECOUCH_TAG=bench-peer-<pid>/`` so that cleanup finds them even if
supervisord dies first.  One restart is timed from just before the request
to the new process's stamp in ``main()``:

- ``supervisorctl restart pNN``: the command line, as an operator types it
  (its own interpreter start included);
- the same two XML-RPC calls ``supervisorctl restart`` makes
  (``stopProcess`` then ``startProcess``), from the bench: supervisord's own
  part, without the CLI's start.
"""
import os
import subprocess
import sys
import time
import xmlrpc.client

from himbeerecouch.sandbox import proctree

from lab import free_port, sampled_rss_mb, terminate, wait_until
from stamps import peer_script

PROGRAMS = 50

CONF = """\
[supervisord]
nodaemon=true
logfile=%(dir)s/supervisord.log
pidfile=%(dir)s/supervisord.pid
childlogdir=%(dir)s
loglevel=warn

[inet_http_server]
port=127.0.0.1:%(port)d

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=http://127.0.0.1:%(port)d
"""

PROGRAM = """
[program:%(name)s]
command=%(python)s -I -u %(script)s %(name)s
stopsignal=INT
startsecs=0
autorestart=unexpected
stdout_logfile=NONE
stderr_logfile=NONE
environment=HIMBEERECOUCH_TAG="%(tag)s"
"""


class Supervisord:
    def __init__(self, lab, fifo, programs=PROGRAMS):
        self.dir = os.path.join(lab.tmp, "supervisord")
        os.makedirs(self.dir)
        self.fifo = fifo
        self.names = ["p%02d" % i for i in range(programs)]
        self.tag = "bench-peer-%d/" % os.getpid()
        self.port = free_port()
        script = os.path.join(self.dir, "script.py")
        with open(script, "w") as f:
            f.write(peer_script(fifo.path))
        self.conf = os.path.join(self.dir, "supervisord.conf")
        with open(self.conf, "w") as f:
            f.write(CONF % {"dir": self.dir, "port": self.port})
            for name in self.names:
                f.write(PROGRAM % {"name": name, "python": sys.executable, "script": script,
                                   "tag": self.tag})
        self.bin = os.path.dirname(sys.executable)
        self.proc = None
        lab.on_close(self.close)

    def start(self):
        mark = self.fifo.mark()
        self.proc = subprocess.Popen([os.path.join(self.bin, "supervisord"), "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.fifo.wait(lambda s: s.name in self.names, timeout=120, after=mark,
                       count=len(self.names))
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/RPC2" % self.port)
        wait_until(lambda: self._all_running(), 60, "all supervisord programs running", 0.1)
        return self

    def _all_running(self):
        try:
            return all(p["statename"] == "RUNNING" for p in self.rpc.supervisor.getAllProcessInfo())
        except OSError:
            return False

    def rss_mb(self):
        return sampled_rss_mb(self.proc.pid)

    def restart_cli(self, name):
        """ms from just before ``supervisorctl restart name`` to the new main() running."""
        return self._timed(name, lambda: subprocess.run(
            [os.path.join(self.bin, "supervisorctl"), "-c", self.conf, "restart", name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True))

    def restart_rpc(self, name):
        """ms from just before the stopProcess/startProcess calls to the new main() running."""
        def restart():
            self.rpc.supervisor.stopProcess(name)
            self.rpc.supervisor.startProcess(name)
        return self._timed(name, restart)

    def _timed(self, name, restart):
        old = self.fifo.latest_pids([name])[name]
        mark = self.fifo.mark()
        t0 = time.time()
        restart()
        (stamp,) = self.fifo.wait(lambda s: s.name == name and s.pid != old, after=mark)
        return (stamp.time - t0) * 1000

    def close(self):
        if self.proc is not None:
            terminate(self.proc, timeout=5)      # it stops its programs slowly
            self.proc = None
        proctree.kill_tagged(self.tag)
