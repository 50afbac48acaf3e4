"""The server's ``[csp]`` setting for attachments: let the fleet page run.

CouchDB 3.2 and newer send ``Content-Security-Policy: sandbox`` with every
attachment (``[csp] attachments_enable = true``, ``attachments_header_value =
sandbox``), which stops the page's script.  Provisioning, as a server admin,
replaces that value on every node of the cluster with a policy that lets a
page run its own scripts and styles and talk to its own server, and nothing
from anywhere else: CSP stays on.  It is a server-wide setting (every
database's attachments get it), so provisioning says what it changed and why.
Without the right to change it, provisioning says so and what to ask for.
"""
import couchdb.http

from .. import couch

SECTION = "csp"
KEY = "attachments_header_value"
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
          "form-action 'self'; frame-ancestors 'self'")


def blocks_scripts(header_value):
    """True when a ``Content-Security-Policy`` value sandboxes the page without
    letting it run scripts with its own origin (cookies, requests)."""
    for directive in str(header_value or "").split(";"):
        words = directive.split()
        if words and words[0].lower() == "sandbox":
            allowed = {w.lower() for w in words[1:]}
            return not {"allow-scripts", "allow-same-origin"} <= allowed
    return False


def _nodes(conn):
    """The cluster's nodes (``_local`` where the server does not say)."""
    try:
        _, _, membership = conn.server.resource.get_json("_membership")
        return list(membership.get("all_nodes") or []) or ["_local"]
    except couch.TRANSPORT_ERRORS:
        return ["_local"]


def ensure_csp(conn):
    """Make the page runnable on this server; returns the lines of the report."""
    try:
        _, _, csp = conn.server.resource.get_json("_node/_local/_config/%s" % SECTION)
    except (couchdb.http.Unauthorized, couchdb.http.Forbidden):
        return ["server: cannot read its [csp] setting as %s (not a server admin): on "
                "CouchDB 3.2+ the page runs only once a server admin sets [csp] %s = %s "
                "(or runs this provision); see README, \"Running against Apache CouchDB\""
                % (conn.whoami(), KEY, POLICY)]
    except couch.TRANSPORT_ERRORS:
        return []      # not CouchDB 2+ (the test server has no configuration to show)
    if not isinstance(csp, dict):
        return []
    enabled = str(csp.get("attachments_enable", "true")).strip().lower() == "true"
    current = csp.get(KEY, "sandbox")
    if not enabled or not blocks_scripts(current):
        return ["server: [csp] lets the page run (%s = %s)" % (KEY, current if enabled
                                                                 else "off")]
    nodes = _nodes(conn)
    try:
        for node in nodes:
            conn.server.resource.put_json("_node/%s/_config/%s/%s" % (node, SECTION, KEY),
                                          body=POLICY)
    except couch.TRANSPORT_ERRORS as e:
        return ["server: could not change [csp] %s (%s): the page will not run until a "
                "server admin sets it to %s" % (KEY, couch.describe(e), POLICY)]
    return ["server: [csp] %s was %r, which stops every script in attachments (CouchDB "
            "3.2+); set on %d node(s) to %r: pages served from this server may run their "
            "own scripts, nothing from elsewhere" % (KEY, current, len(nodes), POLICY)]
