"""The fleet web page, as attachments of ``_design/himbeerecouch``.

The page is built from ``web/`` (``make web``) into ``himbeerecouch/ops/web/``,
which ships inside the Python package, so that provisioning needs no Node.
Provisioning stores each file as an attachment of the design document; the
page then opens at ``<server>/<database>/_design/himbeerecouch/index.html``.

:func:`attachments` gives ``{name: (content type, bytes)}``;
:func:`inline_attachments` the same in the form a document's
``_attachments`` takes on upload; :func:`up_to_date` tells whether the
attachment stubs of a stored design document already hold exactly these files
(CouchDB's ``md5-<base64>`` digests), so that provisioning twice writes once.
"""
import base64
import hashlib
import json
from urllib.parse import quote

from importlib.resources import files as _files

PACKAGE = "himbeerecouch.ops"
FOLDER = "web"
INFO = "build-info.json"
ENTRY = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class MissingAssets(RuntimeError):
    """The package was installed without its built web page."""


def _folder():
    return _files(PACKAGE).joinpath(FOLDER)


def build_info():
    """What ``web/build.mjs`` wrote: the files, the hash of the sources."""
    try:
        return json.loads(_folder().joinpath(INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MissingAssets("the web page is missing from the package (%s/%s: %s); "
                            "rebuild it with `make web`" % (PACKAGE, FOLDER, e)) from None


def content_type(name):
    for suffix, kind in CONTENT_TYPES.items():
        if name.endswith(suffix):
            return kind
    return "application/octet-stream"


def attachments():
    """``{name: (content type, bytes)}`` of every file of the page."""
    folder = _folder()
    out = {}
    for name in build_info()["files"]:
        try:
            data = folder.joinpath(name).read_bytes()
        except OSError as e:
            raise MissingAssets("the web page file %s is missing from the package: %s"
                                % (name, e)) from None
        out[name] = (content_type(name), data)
    if ENTRY not in out:
        raise MissingAssets("the web page has no %s" % ENTRY)
    return out


def digest(data):
    """CouchDB's digest of an attachment: ``md5-<base64 of the MD5>``."""
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def inline_attachments():
    """``{name: {"content_type", "data" (base64)}}`` for a document upload."""
    return {name: {"content_type": kind, "data": base64.b64encode(data).decode("ascii")}
            for name, (kind, data) in attachments().items()}


def up_to_date(stubs):
    """True when ``stubs`` (a stored document's ``_attachments``) hold exactly
    the page's files, with the same content types.  Other attachments are
    not looked at (they are left alone)."""
    stubs = stubs or {}
    for name, (kind, data) in attachments().items():
        stub = stubs.get(name)
        if not isinstance(stub, dict):
            return False
        if stub.get("content_type") != kind or stub.get("digest") != digest(data):
            return False
    return True


def page_url(conn):
    """Where the page opens (``conn``: a ``tools.Connection``)."""
    return "%s/%s/_design/himbeerecouch/%s" % (conn.url, quote(conn.database, safe=""), ENTRY)


def csp_blocks_scripts(header_value):
    """True when a ``Content-Security-Policy`` value sandboxes the page without
    letting it run scripts with its own origin (cookies, requests)."""
    for directive in str(header_value or "").split(";"):
        words = directive.split()
        if words and words[0].lower() == "sandbox":
            allowed = {w.lower() for w in words[1:]}
            return not {"allow-scripts", "allow-same-origin"} <= allowed
    return False


def server_notes(conn):
    """Lines for provisioning's report about serving the page from this server.

    CouchDB 3.2 and newer send ``Content-Security-Policy: sandbox`` with every
    attachment by default (``[csp] attachments_enable``), which stops the
    page's script.  That is a server-wide setting, so it is only reported (with
    the fix), never changed.  Servers that do not show their configuration
    (the test server, a user who is not a server admin) get no warning.
    """
    lines = ["web page: %s" % page_url(conn)]
    try:
        _, _, csp = conn.server.resource.get_json("_node/_local/_config/csp")
    except Exception:  # noqa: BLE001 - not CouchDB 2+, not a server admin, ...
        return lines
    if not isinstance(csp, dict):
        return lines
    enabled = str(csp.get("attachments_enable", "false")).strip().lower() == "true"
    if enabled and csp_blocks_scripts(csp.get("attachments_header_value", "sandbox")):
        lines.append("web page: WARNING: this server sends 'Content-Security-Policy: %s' with "
                     "attachments, which stops the page; a server admin allows it with "
                     "[csp] attachments_enable = false (or attachments_header_value = sandbox "
                     "allow-scripts allow-same-origin allow-forms allow-modals)"
                     % csp.get("attachments_header_value", "sandbox"))
    return lines


def merged(stubs):
    """The ``_attachments`` to save: the page's files inline, every other
    attachment of the stored document kept as it is (its stub)."""
    out = {name: stub for name, stub in (stubs or {}).items() if isinstance(stub, dict)}
    for name, stub in list(out.items()):
        if "data" not in stub:
            out[name] = dict(stub, stub=True)
    out.update(inline_attachments())
    return out
