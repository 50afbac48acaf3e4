"""Turns the bytes a worker writes into bounded lines.

A worker may print without end, or write one endless line: the supervisor's
memory must not grow with it.  A :class:`LineSplitter` keeps at most
``max_line`` bytes of an unfinished line; what comes beyond is counted and
dropped, and the line says how much was cut.
"""

MAX_LINE = 8192


class LineSplitter:
    def __init__(self, max_line=MAX_LINE):
        self.max_line = max_line
        self._partial = bytearray()
        self._cut = 0

    def feed(self, data):
        """Lines completed by ``data`` (str, newline removed)."""
        lines = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._keep(data[start:])
                return lines
            self._keep(data[start:end])
            lines.append(self._take())
            start = end + 1

    def flush(self):
        """The unfinished line, if any (at end of stream)."""
        if self._partial or self._cut:
            return [self._take()]
        return []

    def _keep(self, chunk):
        room = self.max_line - len(self._partial)
        if len(chunk) > room:
            self._cut += len(chunk) - max(room, 0)
            chunk = chunk[:max(room, 0)]
        self._partial += chunk

    def _take(self):
        text = self._partial.decode("utf-8", "replace").rstrip("\r")
        if self._cut:
            text += " [... %d more bytes cut]" % self._cut
        self._partial = bytearray()
        self._cut = 0
        return text
