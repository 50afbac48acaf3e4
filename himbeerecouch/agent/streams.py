"""The pipes of the workers, read on the supervisor's selector.

Each worker has three: stdout, stderr, and the status pipe of its typed
messages.  :class:`WorkerStreams` registers them on the loop's selector, reads
whatever is ready in bounded chunks, splits it into bounded lines and hands
every line to one callback: the loop decides what a line means.  When a
worker has exited, :meth:`WorkerStreams.drain` reads what it left behind (up
to a bound: a grandchild may still be writing) and lets go of its pipes.
"""
import errno
import logging
import os
import select
import selectors

from .output import MAX_LINE, LineSplitter

log = logging.getLogger("himbeerecouch.streams")

READ_CHUNK = 65536
STATUS_LINE_MAX = 1 << 20   # a status message carries a whole traceback or stack dump
DRAIN_MAX = 1 << 20         # what is read from a dead worker's pipes at most


class WorkerStreams:
    def __init__(self, selector, on_line):
        self.selector = selector
        self.on_line = on_line      # on_line(worker, stream name, text)

    def watch(self, w):
        """Register the pipes of ``w``'s new process."""
        for fd, stream, limit in ((w.process.stdout, "stdout", MAX_LINE),
                                  (w.process.stderr, "stderr", MAX_LINE),
                                  (w.process.status, "status", STATUS_LINE_MAX)):
            self.selector.register(fd, selectors.EVENT_READ, (w, stream, LineSplitter(limit)))

    def ready(self, key):
        """The selector says ``key``'s pipe can be read."""
        w, stream, splitter = key.data
        self._read(w, key.fd, stream, splitter)

    def drain(self, w):
        """Read what a dead worker left in its pipes, then unregister them."""
        for key in list(self.selector.get_map().values()):
            # Other keys (the wake-up pipe, the device lock) carry no tuple.
            if not isinstance(key.data, tuple) or key.data[0] is not w:
                continue
            _, stream, splitter = key.data
            budget = DRAIN_MAX
            while budget > 0 and self._read(w, key.fd, stream, splitter):
                budget -= READ_CHUNK
                if not select.select([key.fd], [], [], 0)[0]:
                    break
            self._close(w, key.fd, stream, splitter)

    def _read(self, w, fd, stream, splitter):
        """Read once; False when the pipe is closed (and now unregistered)."""
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno != errno.EIO:
                log.warning("%s: reading its %s failed: %s", w.name, stream, e)
            data = b""
        if not data:
            self._close(w, fd, stream, splitter)
            return False
        for line in splitter.feed(data):
            self.on_line(w, stream, line)
        return True

    def _close(self, w, fd, stream, splitter):
        for line in splitter.flush():
            self.on_line(w, stream, line)
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass
