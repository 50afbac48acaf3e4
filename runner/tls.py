"""HTTPS sessions that verify the server with the lab's own CA.

Labs put CouchDB behind HTTPS with a certificate authority of their own.
The ``couchdb`` client (1.2) cannot be given one: its connection pool makes
every HTTPS connection with Python's default context (the system's
authorities).  :class:`VerifyingPool` takes its place and makes them with a
context that trusts ``ca_file`` instead.  Verification is never switched off.
Its connections also keep a proxy's error page readable for the error text.

Shared by the supervisor (``himbeerecouch.couch``) and the workers'
``get_acct()``, so it imports only the standard library at module level; the
``couchdb`` client is imported when a session is made.
"""
import http.client
import ssl
import threading
from urllib.parse import urlsplit

SYSTEM_AUTHORITIES = "the system's certificate authorities"


class ServerNotTrusted(OSError):
    """An HTTPS connection could not be trusted: the server's certificate does
    not verify, or the CA file cannot be used.  The message names the server."""

    def __init__(self, message):
        super().__init__(ssl.SSL_ERROR_SSL, message)   # strerror: the message

    def __str__(self):
        return self.strerror


def tls_context(ca_file):
    """A verifying client context that trusts ``ca_file`` (the system's CAs for None).

    Raises OSError (unreadable file) or ssl.SSLError (no certificate in it).
    """
    return ssl.create_default_context(cafile=ca_file)


def _unusable(error):
    """Why a CA file could not be loaded, in words."""
    if isinstance(error, ssl.SSLError):
        return "no CA certificate in it (%s)" % (error.reason or error)
    return error.strerror or str(error)


def check_ca_file(ca_file):
    """The reason ``ca_file`` cannot be used as a CA file, or None when it can."""
    try:
        tls_context(ca_file)
    except OSError as e:      # ssl.SSLError is one too
        return _unusable(e)
    return None


class ErrorBodyResponse(http.client.HTTPResponse):
    """An HTTP response whose whole body can be read a second time.

    couchdb-python buffers a small non-JSON answer (a proxy's 503 page), then,
    to put it into the error it raises, reads the response again and gets
    nothing: ``server answered 503 with an empty body``, where HAProxy said
    ``503 Service Unavailable``.  A partial ``read(n)`` behaves as always.
    """
    _whole = None

    def read(self, amt=None):
        if amt is not None:
            return super().read(amt)
        if self._whole is None:
            self._whole = super().read()
        return self._whole


class VerifyingPool:
    """Keeps idle connections per (scheme, host), as the client's own pool,
    and makes HTTPS ones that verify with ``ca_file``."""

    def __init__(self, timeout, ca_file=None):
        self.timeout = timeout
        self.ca_file = ca_file
        self.conns = {}
        self.lock = threading.Lock()
        self._context = None

    def _connect(self, scheme, host):
        import couchdb.http

        if scheme == "http":
            conn = couchdb.http.HTTPConnection(host, timeout=self.timeout)
            conn.response_class = ErrorBodyResponse
            conn.connect()
            return conn
        if scheme != "https":
            raise ValueError("%s is not a supported scheme" % scheme)
        server = "https://%s" % host.rpartition("@")[2]    # never credentials
        if self._context is None:
            # Read once per pool (per session): a new session sees a renewed CA file.
            try:
                self._context = tls_context(self.ca_file)
            except OSError as e:
                raise ServerNotTrusted("%s: cannot use the CA file %s: %s"
                                       % (server, self.ca_file, _unusable(e))) from None
        conn = couchdb.http.HTTPSConnection(host, timeout=self.timeout, context=self._context)
        conn.response_class = ErrorBodyResponse
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as e:
            conn.close()
            raise ServerNotTrusted("%s: the server's certificate does not verify with %s: %s"
                                   % (server, self.ca_file or SYSTEM_AUTHORITIES,
                                      e.verify_message or e.reason or e)) from None
        return conn

    def get(self, url):
        scheme, host = urlsplit(url)[:2]
        with self.lock:
            idle = self.conns.setdefault((scheme, host), [])
            conn = idle.pop() if idle else None
        return conn if conn is not None else self._connect(scheme, host)

    def release(self, url, conn):
        scheme, host = urlsplit(url)[:2]
        with self.lock:
            self.conns.setdefault((scheme, host), []).append(conn)

    def __del__(self):
        for conns in list(self.conns.values()):
            for conn in conns:
                conn.close()


def verifying_session(timeout=None, ca_file=None):
    """A ``couchdb.http.Session`` whose HTTPS connections verify with ``ca_file``."""
    import couchdb.http

    session = couchdb.http.Session(timeout=timeout)
    session.connection_pool = VerifyingPool(timeout, ca_file)
    return session
