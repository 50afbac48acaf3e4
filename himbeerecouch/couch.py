"""Access to the database as the device.

Thin helpers over the ``couchdb`` client: one place builds sessions (always
with a timeout: some server error paths hang instead of answering), logs in,
and turns the client's many exception types into one :class:`CouchError`
whose text is safe to log (no credentials).
"""
import json
import socket
import sys
from http.client import HTTPException


def _import_client():
    """Import the ``couchdb`` client without ``pkg_resources``.

    Its ``__init__`` imports ``pkg_resources`` only to read its own version
    (and falls back to ``'?'`` without it): that costs the supervisor about
    7 MB of memory and 100 ms of start-up on a Pi.  Every module of the agent
    gets the client through this module, imported before any of them.
    """
    blocked = "pkg_resources" not in sys.modules
    if blocked:
        sys.modules["pkg_resources"] = None     # makes that import fail, at once
    try:
        import couchdb.http
        import couchdb.json
    finally:
        if blocked and sys.modules.get("pkg_resources", 0) is None:
            del sys.modules["pkg_resources"]
    return couchdb


couchdb = _import_client()

# After the client: the sessions it makes verify HTTPS servers with the lab's CA.
from .runner.tls import ServerNotTrusted, verifying_session  # noqa: E402,F401

REQUEST_TIMEOUT = 30.0

# ensure_ascii: text holding a lone surrogate (valid JSON: a document's name,
# a worker's error message) is sent escaped; the client's default encoder
# would fail to encode it as UTF-8 and the heartbeat would never be written.
couchdb.json.use(decode=json.loads,
                 encode=lambda obj: json.dumps(obj, allow_nan=False, ensure_ascii=True))

# Everything a request can raise when the server is down, slow, gone mid-way
# or answers with an error.  ValueError: the client's answer to a feed that
# was cut mid-line.
TRANSPORT_ERRORS = (couchdb.http.HTTPError, couchdb.http.ServerError, OSError,
                    socket.timeout, HTTPException, ValueError)


class CouchError(RuntimeError):
    """A request to the database failed; the message is fit for logs."""


def _first_line(body):
    """The first line of an error body, as words: bytes decoded, JSON's
    ``(error, reason)`` joined, at most 200 characters."""
    if isinstance(body, tuple):
        body = ": ".join(str(part) for part in body if part)
    elif isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    lines = str(body or "").strip().splitlines()
    return lines[0][:200] if lines else ""


def describe(error):
    """One line saying what went wrong with a request, in words, without credentials."""
    if isinstance(error, couchdb.http.ResourceNotFound):
        return "not found"
    if isinstance(error, couchdb.http.Unauthorized):
        return "unauthorized (wrong user name or password)"
    if isinstance(error, couchdb.http.ResourceConflict):
        return "conflict"
    if isinstance(error, couchdb.http.ServerError):
        args = error.args[0] if error.args else ""
        if isinstance(args, tuple) and len(args) == 2:
            status, body = args
            line = _first_line(body)
            return "server answered %s %s" % (status, json.dumps(line)) if line \
                else "server answered %s with an empty body" % status
        return "server error: %s" % _first_line(args)
    if isinstance(error, socket.timeout):
        return "timed out"
    # The client reads chunked answers itself: a connection cut in the middle
    # of one surfaces as a ValueError from parsing a chunk's length, or as
    # http.client's IncompleteRead / RemoteDisconnected.
    if isinstance(error, (ValueError, HTTPException, ConnectionResetError, BrokenPipeError)):
        return "connection dropped (the server or a proxy closed it mid-answer)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__


def answered(error):
    """Did the server answer the request that raised ``error`` (4xx), rather
    than fail to (no connection, a dropped one, a timeout, a 5xx)?"""
    return isinstance(error, couchdb.http.HTTPError) and \
        not isinstance(error, couchdb.http.ServerError)


def silence(url, timeout=2.0, ca_file=None):
    """Why the server at ``url`` does not answer HTTP, or None when it does
    (any status below 500).

    A cheap probe, without logging in: a 5xx (a proxy whose nodes are all
    down) counts as not answering.  HTTPS verifies as ``open_database`` does
    (a certificate that does not verify: the reason names the server).
    """
    server = couchdb.Server(url, session=verifying_session(timeout, ca_file))
    try:
        server.resource.head("")
        return None
    except TRANSPORT_ERRORS as e:
        return None if answered(e) else describe(e)


def server_answers(url, timeout=2.0, ca_file=None):
    """Does the server at ``url`` answer HTTP at all (see :func:`silence`)?"""
    return silence(url, timeout, ca_file) is None


def logs_in(url, user, password, timeout=REQUEST_TIMEOUT, ca_file=None):
    """Does the server at ``url`` take ``password`` for ``user``?  (``_session``
    with basic auth: True, or False for a refusal; raises TRANSPORT_ERRORS
    when it does not answer.)"""
    server = couchdb.Server(url, session=verifying_session(timeout, ca_file))
    server.resource.credentials = (user, password)
    try:
        _, _, info = server.resource.get_json("_session")
    except couchdb.http.Unauthorized:
        return False
    return (info.get("userCtx") or {}).get("name") == user


def refused(error):
    """Did the server refuse the credentials of the request that raised ``error``?"""
    return isinstance(error, couchdb.http.Unauthorized)


def open_database(url, name, user=None, password=None, timeout=REQUEST_TIMEOUT,
                  ca_file=None):
    """A ``couchdb.Database`` for ``name`` on ``url``, logged in as ``user``.

    The database is not contacted here.  Credentials travel in the client's
    session, never in a URL that could end up in a log line.  An HTTPS server
    must have a certificate that verifies with ``ca_file`` (else the system's
    authorities).
    """
    session = verifying_session(timeout, ca_file)
    server = couchdb.Server(url, session=session)
    if user is not None:
        server.resource.credentials = (user, password)
    db = couchdb.Database(server.resource(name).url, session=session)
    db.resource.credentials = server.resource.credentials
    return db


def server_of(db):
    """The ``couchdb.Server`` that ``db`` lives on, with the same session."""
    base = db.resource.url.rsplit("/", 1)[0]
    server = couchdb.Server(base, session=db.resource.session)
    server.resource.credentials = db.resource.credentials
    return server


def update_document(db, doc_id, change, attempts=10, current=None):
    """Apply ``change(doc)`` to the newest revision of ``doc_id`` and save it.

    ``doc`` is ``{"_id": doc_id}`` when the document does not exist yet.
    ``change`` returns the document to save, or None to leave it as it is.
    A conflict (someone saved in between) re-reads, re-applies and retries,
    so nothing another writer stored, and nothing ``change`` adds, is lost.
    ``current``, a revision of the document the caller already holds (from
    the feed, or its own last write), is tried first: one request, not two,
    when nobody wrote in between.
    """
    for _ in range(attempts):
        if current is not None:
            doc, current = current, None
        else:
            doc = db.get(doc_id) or {"_id": doc_id}
        new = change(dict(doc))
        if new is None:
            return None
        try:
            db.save(new)
            return new
        except couchdb.http.ResourceConflict:
            continue
    raise CouchError("%s: still in conflict after %d attempts" % (doc_id, attempts))


def stamp_document(db, design, doc_id, fields):
    """Create or merge ``doc_id`` through ``_design/<design>/_update/insert_with_timestamp``.

    The handler (the lab's ``nedm_default`` or provisioning's ``himbeerecouch``)
    sets ``timestamp`` from the server's clock and ``created_by`` from the
    writer.  Raises ``couchdb.http.ResourceNotFound`` when there is no such handler.
    """
    resource = db.resource("_design", design, "_update", "insert_with_timestamp", doc_id)
    status, _, _ = resource.put_json(body=fields)
    return status
