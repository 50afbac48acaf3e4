"""How the bench sees a worker's ``main()`` start: a stamp on a FIFO.

The first statement of the user's ``main()`` takes ``time.time()``; the script
then writes one line ``<name> <edition> <pid> <time>`` to a FIFO the bench
reads (a write under PIPE_BUF bytes is atomic, so lines of many workers never
mix).  Latencies are computed from that time, not from the arrival of the
line, so neither the FIFO nor the bench's reader thread is measured.  The
bench holds the FIFO open for reading *and* writing: a worker's non-blocking
open always finds a reader.

The same :data:`SCRIPT` runs under himbeerecouch (as a code document) and
under supervisord (as a file, with :data:`PEER_SHIM` standing in for the
runner: SIGINT calls the quit notifications).  It imports nothing the
interpreter has not loaded already, and waits on a pipe for its quit
notification, so it stops the moment it is asked: an idle, cooperative worker.
"""
import os
import threading
import time
from dataclasses import dataclass

SCRIPT = r'''
import os, time

FIFO = %(fifo)r
NAME = %(name)s
EDITION = %(edition)d


def main():
    t = time.time()
    fd = os.open(FIFO, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, ("%%s %%d %%d %%.6f\n" %% (NAME, EDITION, os.getpid(), t)).encode())
    os.close(fd)
    r, w = os.pipe()
    register_quit_notification(lambda: os.write(w, b"q"))
    os.read(r, 1)
'''

PEER_SHIM = r'''
import signal, sys
_notes = []
def register_quit_notification(f):
    _notes.append(f)
signal.signal(signal.SIGINT, lambda s, f: [g() for g in _notes])
'''


def script(fifo, name, edition=0):
    """The user code of document ``name`` at ``edition`` (a new edition = new code)."""
    return SCRIPT % {"fifo": fifo, "name": repr(name), "edition": edition}


def peer_script(fifo):
    """The same script as a file for supervisord: its name is ``sys.argv[1]``."""
    return PEER_SHIM + SCRIPT % {"fifo": fifo, "name": "sys.argv[1]", "edition": 0} + "\nmain()\n"


@dataclass
class Stamp:
    name: str
    edition: int
    pid: int
    time: float      # time.time() in main(), in the worker


class StampFifo:
    """Collects the stamps of every worker; ``wait()`` for the one you expect."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "stamps.fifo")
        os.mkfifo(self.path, 0o666)
        self._fd = os.open(self.path, os.O_RDWR)
        self.stamps = []
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, daemon=True, name="stamps").start()

    def _read(self):
        rest = b""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:
                return
            if not data or self._closed:
                return
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            new = []
            for line in lines:
                if not line.strip():
                    continue
                name, edition, pid, t = line.decode().rsplit(" ", 3)
                new.append(Stamp(name, int(edition), int(pid), float(t)))
            with self._cond:
                self.stamps.extend(new)
                self._cond.notify_all()

    def mark(self):
        with self._cond:
            return len(self.stamps)

    def since(self, mark):
        with self._cond:
            return list(self.stamps[mark:])

    def wait(self, match, timeout=30, after=0, count=1):
        """The ``count`` stamps from position ``after`` on for which ``match(stamp)``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self.stamps[after:] if match(s)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("bench: %d of %d expected workers started within %.0f s"
                                       % (len(found), count, timeout))
                self._cond.wait(min(left, 0.5))

    def latest_pids(self, names):
        """``{name: pid}`` of the newest stamp of every name in ``names``."""
        out = {}
        with self._cond:
            for s in self.stamps:
                if s.name in names:
                    out[s.name] = s.pid
        return out

    def close(self):
        self._closed = True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"\n")
            os.close(fd)
        except OSError:
            pass
