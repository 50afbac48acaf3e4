"""The status channel: one JSON object per line from worker to supervisor.

Events: ``running`` (with ``pid``), ``done``, ``error`` (``error``,
``traceback``), ``fatal`` (``error``, ``traceback``) and ``stacks`` (``text``).
"""
import json
import os


class StatusChannel:
    """Writes status lines to a pipe; never raises (the reader may be gone)."""

    def __init__(self, fd):
        self.fd = fd
        # The user's subprocesses must not inherit the pipe: the supervisor
        # would otherwise see no EOF until every grandchild had ended.
        os.set_inheritable(fd, False)
        os.set_blocking(fd, True)
        self._busy = False
        self._pending = []

    def send(self, event, **fields):
        """Write ``{"event": event, **fields}`` as one line."""
        message = {"event": event}
        message.update(fields)
        # ensure_ascii: lone surrogates from user text cannot break encoding.
        line = (json.dumps(message, default=str) + "\n").encode("ascii")
        if self._busy:
            # A signal handler (SIGUSR1) interrupted a write in progress in
            # this very thread: queue the line rather than splice it into the
            # middle of the other one; the interrupted write sends it.
            self._pending.append(line)
            return
        self._busy = True
        try:
            while True:
                self._write(line)
                if not self._pending:
                    break
                line = self._pending.pop(0)
        finally:
            self._busy = False

    def _write(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            # Supervisor gone (EPIPE) or fd closed by user code: nobody to
            # tell; PR_SET_PDEATHSIG takes care of the former.
            pass
