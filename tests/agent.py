"""Runs the real agent (`himbeerecouch run`) as a subprocess for the tests.

``Agent`` starts the command for one device against the test server, collects
every line it prints (in a thread), and offers polling helpers with
deadlines: wait for a log line, find a worker process by its title.  ``close``
always ends the agent and every process its workers started (found by the
device's tag), also when a test fails.
"""
import os
import re
import signal as signals
import subprocess
import sys
import threading
import time

import psutil

from helpers import wait_for
from himbeerecouch.sandbox import proctree

TITLE = "himbeerecouch: "
SPARE_TITLE = "himbeerecouch: spare"


class Agent:
    def __init__(self, url, database, device, state_dir, args=(), stop_timeout=3,
                 feed_heartbeat=1, python=None):
        self.url, self.database, self.device = url, database, device
        self.python = python or sys.executable   # the interpreter that runs the agent
        self.state_dir = str(state_dir)
        self.args = list(args)
        self.stop_timeout, self.feed_heartbeat = stop_timeout, feed_heartbeat
        self.proc = None
        self.lines = []
        self._cond = threading.Condition()
        self._reader = None

    @property
    def macid(self):
        return self.device.macid

    @property
    def pid(self):
        return self.proc.pid

    def command(self):
        return [self.python, "-m", "himbeerecouch", "run",
                "--server", self.url, "--database", self.database,
                "--macid", str(self.device.macid), "--serial", self.device.serial,
                "--state-dir", self.state_dir,
                "--server-file", os.path.join(self.state_dir, "server"),
                "--config", os.path.join(self.state_dir, "himbeerecouch.conf"),
                "--stop-timeout", str(self.stop_timeout),
                "--feed-heartbeat", str(self.feed_heartbeat),
                # It answers discovery on loopback only (tests that broadcast
                # give 127.255.255.255 and a port of their own, after this).
                "--discovery-address", "127.0.0.1"] + self.args

    def start(self):
        os.makedirs(self.state_dir, exist_ok=True)
        # Another interpreter (an installed copy of the agent) runs from "/": in
        # the working folder, the source tree would shadow the installed package.
        cwd = None if self.python == sys.executable else "/"
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, cwd=cwd,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def mark(self):
        """A position in the output, for ``wait_line(after=...)``."""
        with self._cond:
            return len(self.lines)

    def find_lines(self, pattern, after=0):
        rx = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines[after:] if rx.search(line)]

    def wait_line(self, pattern, timeout=15, after=0, count=1):
        """The first line (from position ``after``) that matches the regex ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines[after:] if rx.search(line)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError("no line matching %r within %.0f s; last output:\n%s"
                                         % (pattern, timeout, tail))
                self._cond.wait(min(left, 0.2))

    def worker_processes(self, spare=False):
        """``{title: psutil.Process}`` of this agent's workers (and its spare runner)."""
        found = {}
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                title = " ".join(filter(None, child.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            # A child forked but not yet turned into the runner still carries
            # its parent's title ("himbeerecouch: supervisor ..."): not a worker.
            if (title.startswith(TITLE) and "guardian" not in title
                    and not title.startswith(TITLE + "supervisor ")
                    and (spare or title != SPARE_TITLE)):
                found[title] = child
        return found

    def spare(self):
        """The process of the agent's waiting spare runner, or None."""
        return self.worker_processes(spare=True).get(SPARE_TITLE)

    def wait_spare(self, timeout=15, other_than=None):
        """The spare runner's process once there is one (other than pid ``other_than``)."""
        def new_spare():
            proc = self.spare()
            return proc if proc is not None and proc.pid != other_than else None
        return wait_for(new_spare, timeout, message="no new spare runner; output:\n%s"
                        % "\n".join(self.lines[-40:]))

    def worker(self, doc_id):
        """The process of the worker of ``doc_id``, or None."""
        for title, proc in self.worker_processes().items():
            if title.endswith("[%s]" % doc_id):
                return proc
        return None

    def wait_worker(self, doc_id, timeout=15, other_than=None):
        """The pid of the worker of ``doc_id`` once it runs (and is not ``other_than``)."""
        def check():
            proc = self.worker(doc_id)
            if proc is not None and proc.pid != other_than:
                return proc.pid
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = check()
            if pid:
                return pid
            time.sleep(0.05)
        raise AssertionError("no worker for %s within %.0f s; output:\n%s"
                             % (doc_id, timeout, "\n".join(self.lines[-40:])))

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self, signum=signals.SIGINT, timeout=30):
        """Send ``signum`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        proctree.kill_tagged("%d/" % self.device.macid)
        if self._reader:
            self._reader.join(5)
        self.proc.stdout.close()
