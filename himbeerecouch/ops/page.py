"""The page database: where the fleet page lives, readable without a login.

A database whose ``_security`` has members (as provisioning sets for the
fleet database) answers a browser without a session with 401 JSON, even for
its design documents' attachments, so the page cannot be served from there to
show its own login form.  It lives instead in a small database of its own
(``himbeerecouch`` by default) that anyone may read and only admins write,
holding nothing but the page; the page logs in through ``_session`` and then
reads the fleet database named in its address (``?db=nedm%2Fraspberries``).
Nothing of the fleet database becomes readable without a login.
"""
from urllib.parse import quote

import couchdb.http

from . import webassets
from .connection import failures

PAGE_DATABASE = "himbeerecouch"
DESIGN_ID = "_design/himbeerecouch"

# Anyone may read; only server admins (and admins of this database) write.
_VALIDATE = """function (newDoc, oldDoc, userCtx, secObj) {
  var admins = (secObj && secObj.admins) || {};
  var roles = userCtx.roles || [];
  var i;
  if (roles.indexOf('_admin') !== -1 || (admins.names || []).indexOf(userCtx.name) !== -1) {
    return;
  }
  for (i = 0; i < (admins.roles || []).length; i++) {
    if (roles.indexOf(admins.roles[i]) !== -1) {
      return;
    }
  }
  throw({forbidden: 'this database holds the fleet page: only admins write to it'});
}"""

PUBLIC = {"admins": {"names": [], "roles": []}, "members": {"names": [], "roles": []}}


def page_url(conn, page_database=PAGE_DATABASE):
    """Where an operator opens the page for ``conn``'s fleet database."""
    return "%s/%s/%s/%s?db=%s" % (conn.url, quote(page_database, safe=""), DESIGN_ID,
                                  webassets.ENTRY, quote(conn.database, safe=""))


def _readable_by_anyone(security):
    members = (security or {}).get("members") or {}
    return not members.get("names") and not members.get("roles")


def ensure_page(conn, page_database=PAGE_DATABASE):
    """Create or update the page database; returns the lines of the report."""
    page_db = conn.database_named(page_database)
    lines = []
    with failures(conn, "creating the page database %s" % page_database):
        try:
            page_db.info()
        except couchdb.http.ResourceNotFound:
            conn.server.create(page_database)
            lines.append("page database %s: created" % page_database)
    with failures(conn, "opening the page database %s to readers" % page_database):
        # CouchDB 3 makes a new database admins-only: readers need it open.
        security = page_db.security
        if not _readable_by_anyone(security):
            page_db.security = dict(security or {}, members=PUBLIC["members"],
                                    admins=(security or {}).get("admins") or PUBLIC["admins"])
            lines.append("page database %s: readable by anyone (it holds only the page)"
                         % page_database)
    wanted = {"validate_doc_update": _VALIDATE, "page": webassets.fingerprint()}
    with failures(conn, "storing the page in %s" % page_database):
        current = page_db.get(DESIGN_ID)
        stubs = (current or {}).get("_attachments") or {}
        if current is not None and all(current.get(k) == v for k, v in wanted.items()) \
                and set(wanted["page"]["files"]) <= set(stubs):
            lines.append("web page: up to date")
        else:
            doc = dict(current or {"_id": DESIGN_ID}, **wanted)
            doc["_attachments"] = webassets.merged(stubs)
            page_db.save(doc)
            lines.append("web page: %s" % ("updated" if current else "installed"))
    lines.append("web page: %s" % page_url(conn, page_database))
    return lines


def drop_page_files(stubs):
    """The fleet design document's ``_attachments`` without the page's files
    (earlier versions kept the page there); None when there is nothing to drop."""
    names = set(webassets.attachments())
    if not names & set(stubs or {}):
        return None
    return {name: dict(stub, stub=True) for name, stub in stubs.items()
            if name not in names and isinstance(stub, dict)}
