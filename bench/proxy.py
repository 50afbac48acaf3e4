"""A loopback HTTP proxy that counts the requests passing through it.

The test server keeps no request statistics, so the fleet's agents talk to
the server through this proxy.  Bytes are forwarded untouched in both
directions (continuous feeds included); the client-to-server stream is also
parsed just enough to find where each request starts (request line and
headers, then a ``Content-Length`` or chunked body), and each request is
counted under a kind taken from its path: ``heartbeat`` (the
``<MacID>_heartbeat`` document, also through an update handler), ``feed``
(``_changes``), ``all_docs`` (a device reading the canaries' heartbeats while a
rollout waits), ``log``, ``command`` or ``other``.  Only 127.0.0.1.
"""
import collections
import socket
import threading
import urllib.parse

HOST = "127.0.0.1"


def kind_of(method, path):
    path = urllib.parse.unquote(path.split("?", 1)[0])
    if path.endswith("_heartbeat"):
        return "heartbeat"
    if path.endswith("/_changes"):
        return "feed"
    if path.endswith("/_all_docs"):
        return "all_docs"       # the canaries' heartbeats, read during a rollout
    if "_log_" in path:
        return "log"
    if "bench-cmd" in path:
        return "command"
    return "other"


class RequestParser:
    """Feeds on the client's bytes; calls ``count(method, path)`` once per request."""

    def __init__(self, count):
        self.count = count
        self.buf = b""
        self.body_left = 0        # bytes of a Content-Length body still to skip
        self.chunked = False

    def feed(self, data):
        self.buf += data
        while True:
            if self.body_left:
                n = min(self.body_left, len(self.buf))
                self.buf, self.body_left = self.buf[n:], self.body_left - n
                if self.body_left:
                    return
            elif self.chunked:
                line, sep, rest = self.buf.partition(b"\r\n")
                if not sep:
                    return
                size = int(line.split(b";")[0], 16)
                if len(rest) < size + 2:
                    return
                self.buf = rest[size + 2:]
                if size == 0:
                    self.chunked = False
            else:
                head, sep, rest = self.buf.partition(b"\r\n\r\n")
                if not sep:
                    return
                self.buf = rest
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (h.partition(":") for h in lines[1:])}
                self.count(method, path)
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    self.chunked = True
                else:
                    self.body_left = int(headers.get("content-length") or 0)


class CountingProxy:
    def __init__(self, target_port):
        self.target = (HOST, int(target_port))
        self.counts = collections.Counter()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(256)
        self.port = self._listener.getsockname()[1]
        self._sockets = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def snapshot(self):
        with self._lock:
            return collections.Counter(self.counts)

    def _count(self, method, path):
        with self._lock:
            self.counts[kind_of(method, path)] += 1
            self.counts["total"] += 1

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, upstream}
            parser = RequestParser(self._count)
            threading.Thread(target=self._pump, args=(client, upstream, parser.feed),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None),
                             daemon=True).start()

    def _pump(self, source, sink, inspect):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if inspect:
                    inspect(data)
                sink.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._sockets -= {source, sink}

    def close(self):
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
