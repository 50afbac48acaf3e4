"""What the operator sub-commands share: the admin connection and clear errors.

Every operator command (``provision``, ``push``, ``exec``, ``status``,
``logs``) takes a server URL that carries an admin's or operator's
credentials.  :class:`Connection` splits them off (they travel in the HTTP
session, never in a message), and :func:`failures` turns whatever a request
raises into one :class:`~himbeerecouch.errors.UserError` line that names the
server without its password.
"""
import contextlib
import email.utils
import getpass
import os
import sys
import time
from urllib.parse import unquote, urlsplit, urlunsplit

import couchdb
import couchdb.http

from .. import config as configuration
from .. import couch
from ..arguments import DeviceName, add_ca_file_option
from ..errors import UserError
from .users import USERS_DB, user_id

PASSWORD_VARIABLE = "HIMBEERECOUCH_PASSWORD"


def rfc1123(when=None):
    """``Thu, 26 Nov 2026 23:30:00 GMT``: the only format the lab accepts in ``timestamp``."""
    return email.utils.formatdate(when, usegmt=True)


def iso_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def hide_arguments(title):
    """Replace this process's command line (ps, /proc/PID/cmdline) by ``title``.

    The URL on the command line carries a password; once parsed, nobody
    else on the machine needs to see it.
    """
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def split_url(url):
    """``http://u:p@h:1/x`` -> (``http://h:1/x``, ``u``, ``p``); checks the form."""
    try:
        configuration.check_server_url(url)
        parts = urlsplit(url)
        port = parts.port
    except (configuration.ConfigError, ValueError) as e:
        raise UserError(str(e) if isinstance(e, configuration.ConfigError)
                        else "not a server URL: %s" % configuration.redact(url), 2) from None
    netloc = parts.hostname if ":" not in parts.hostname else "[%s]" % parts.hostname
    if port:
        netloc += ":%d" % port
    bare = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if user is not None and password is None:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None and sys.stdin.isatty():
            password = getpass.getpass("password of %s on %s: " % (user, bare))
        if password is None:
            raise UserError("no password for %s: put it in the URL or in $%s"
                            % (user, PASSWORD_VARIABLE), 2)
    return bare, user, password


class Connection:
    """The server and one database, as the user named in the URL."""

    def __init__(self, url, database, timeout=couch.REQUEST_TIMEOUT, ca_file=None):
        self.url, self.user, self.password = split_url(url)
        self.shown = configuration.redact(url)       # fit for messages
        self.database = database
        self.timeout = timeout
        try:
            self.ca_file = configuration.usable_ca_file(ca_file) if ca_file else None
        except configuration.ConfigError as e:
            raise UserError(str(e), 2) from None
        self.session = self.new_session()
        self.server = couchdb.Server(self.url, session=self.session)
        if self.user is not None:
            self.server.resource.credentials = (self.user, self.password)
        self.db = self.database_named(database)
        self._name = None

    def database_named(self, name):
        """A ``couchdb.Database`` for ``name``, on this session and as this user
        (not contacted here)."""
        return couchdb.Database(self.server.resource(name), name)

    def new_session(self):
        """A new session to the same server, verifying HTTPS as this connection does."""
        return couch.verifying_session(self.timeout, self.ca_file)

    def whoami(self):
        """The user's name (checks the credentials); ``admin`` in an admin party."""
        if self._name is None:
            with failures(self, "logging in"):
                _, _, info = self.server.resource.get_json("_session")
            ctx = info.get("userCtx") or {}
            if self.user is not None and ctx.get("name") is None:
                raise UserError("%s: wrong user name or password" % self.shown)
            self._name = ctx.get("name") or "admin"
            self.roles = ctx.get("roles") or []
        return self._name

    def require_database(self):
        """Fails with one line unless the database exists and can be read."""
        self.whoami()
        with failures(self, "opening database %s" % self.database):
            try:
                self.db.info()
            except couchdb.http.ResourceNotFound:
                raise UserError("database %s does not exist on %s (create it with "
                                "`himbeerecouch provision`)" % (self.database, self.url)) from None
        return self.db

    def server_time(self):
        """The server's clock (its Date header), else ours: ages of heartbeats
        come out right even when this machine's clock is off."""
        try:
            _, headers, _ = self.server.resource.get_json("")
            return email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
        except Exception:  # noqa: BLE001 - any failure: fall back to our own clock
            return time.time()

    def find(self, selector, limit=10000):
        with failures(self, "searching %s" % self.database):
            _, _, result = self.db.resource.post_json(
                "_find", body={"selector": selector, "limit": limit})
        return result.get("docs", [])

    def device_by_name(self, reference):
        """The MacID of ``reference``: a MacID, or a device's name (its device document's)."""
        if not isinstance(reference, DeviceName):
            return reference
        with failures(self, "looking up device %r" % str(reference)):
            docs = self.find({"type": "device", "name": str(reference)})
        found = sorted({d.get("macid") for d in docs if isinstance(d.get("macid"), int)})
        if len(found) != 1:
            raise UserError("%s: %s" % (reference, "no device has this name (nor is it a MacID "
                                        "or MAC address)" if not found else
                                        "several devices have this name: %s"
                                        % ", ".join(map(str, found))))
        return found[0]

    def known_device(self, macid):
        """Fails unless ``macid`` has a user or a heartbeat on this server."""
        try:
            if self.server[USERS_DB].get(user_id("%d" % macid)) is not None:
                return
        except couch.TRANSPORT_ERRORS:
            pass    # not allowed to read _users (an operator): the heartbeat decides
        with failures(self, "looking up device %d" % macid):
            if self.db.get("%d_heartbeat" % macid) is not None:
                return
        raise UserError("unknown device %d: it has no user on %s and no heartbeat in %s"
                        % (macid, self.url, self.database))


@contextlib.contextmanager
def failures(conn, what):
    """Turn a failed request into one line naming the server (without password)."""
    try:
        yield
    except couch.ServerNotTrusted as e:
        raise UserError(str(e)) from None      # names the server already
    except couchdb.http.Unauthorized:
        raise UserError("%s: %s: wrong user name or password, or not allowed"
                        % (conn.shown, what)) from None
    except couchdb.http.Forbidden as e:
        reason = e.args[0][1] if e.args and isinstance(e.args[0], tuple) else e
        raise UserError("%s: %s: forbidden: %s" % (conn.shown, what, reason)) from None
    except couch.TRANSPORT_ERRORS as e:
        raise UserError("%s: %s: %s" % (conn.shown, what, couch.describe(e))) from None


def add_admin_arguments(p, database=True):
    p.add_argument("url", metavar="ADMIN_URL",
                   help="server URL with an admin's or operator's credentials, "
                        "http://user:password@host:5984 (the password may instead "
                        "be in $%s)" % PASSWORD_VARIABLE)
    if database:
        p.add_argument("--database", default=configuration.DEFAULT_DATABASE,
                       help="database (default: %(default)s)")
    else:
        p.set_defaults(database=configuration.DEFAULT_DATABASE)
    add_ca_file_option(p)
