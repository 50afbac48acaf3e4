"""The fleet web page's files, as they ship inside the package.

The page is built from ``web/`` (``make web``) into ``himbeerecouch/ops/web/``,
which ships inside the Python package, so that provisioning needs no Node.
:func:`attachments` gives ``{name: (content type, bytes)}``;
:func:`inline_attachments` the same in the form a document's
``_attachments`` takes on upload; :func:`fingerprint` what provisioning
records of them, so that provisioning twice writes once (page.py stores them).
"""
import base64
import hashlib
import json

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


def inline_attachments():
    """``{name: {"content_type", "data" (base64)}}`` for a document upload."""
    return {name: {"content_type": kind, "data": base64.b64encode(data).decode("ascii")}
            for name, (kind, data) in attachments().items()}


def fingerprint():
    """What provisioning writes, to compare with what it wrote last time: the
    build's source hash and the SHA-256 of every file.  (CouchDB stores text
    attachments compressed, so its digests are not those of our bytes.)"""
    return {"source_sha256": build_info().get("source_sha256"),
            "files": {name: [kind, hashlib.sha256(data).hexdigest()]
                      for name, (kind, data) in attachments().items()}}


def merged(stubs):
    """The ``_attachments`` to save: the page's files inline, every other
    attachment of the stored document kept as it is (its stub)."""
    out = {name: stub for name, stub in (stubs or {}).items() if isinstance(stub, dict)}
    for name, stub in list(out.items()):
        if "data" not in stub:
            out[name] = dict(stub, stub=True)
    out.update(inline_attachments())
    return out
