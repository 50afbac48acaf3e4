"""Fixtures around a real CouchDB-protocol server.

``couch``       one server for the whole session: the one ``COUCHDB_URL`` names
                (``http://admin:pw@127.0.0.1:5984``), else ``testserver/`` started
                on a free loopback port.
``db``          a fresh database per test, named ``test/<hex>`` (with a slash, as the
                product's ``nedm/raspberries``).
``device``      a device user of that database (role ``raspberry``), with the
                password the agent computes from its MacID and serial.
``make_device`` a factory for more of them.
"""
import os
import secrets
import sys
import urllib.parse

import couchdb
import couchdb.http
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from couchserver import CouchServer  # noqa: E402
from helpers import (DEVICE_ROLE, Device, create_device_user,  # noqa: E402,F401
                     grant_members, random_macid)

pytest_plugins = ["agent_fixtures"]


def _split_credentials(url):
    """``http://u:p@h:1/`` -> (``http://h:1``, ``u``, ``p``)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname
    if parts.port:
        netloc = "%s:%d" % (netloc, parts.port)
    bare = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return bare, user, password


def admin_session():
    return couchdb.http.Session(timeout=30)


class Couch:
    """The session's server: ``url`` (no credentials), ``admin_url``, ``admin``
    (a ``couchdb.Server`` logged in as admin), ``server`` (the ``CouchServer``, or
    None for an external ``COUCHDB_URL``)."""

    def __init__(self, admin_url, server=None):
        self.admin_url = admin_url
        self.url, self.admin_name, self.admin_password = _split_credentials(admin_url)
        self.server = server
        self.admin = couchdb.Server(admin_url, session=admin_session())

    @property
    def external(self):
        return self.server is None


class DatabaseHandle:
    """``name``, ``admin`` (``couchdb.Database`` as admin), ``url`` (the server's
    URL, no credentials)."""

    def __init__(self, name, admin, url):
        self.name = name
        self.admin = admin
        self.url = url


@pytest.fixture(scope="session")
def couch():
    external = os.environ.get("COUCHDB_URL")
    if external:
        yield Couch(external.rstrip("/"))
        return
    server = CouchServer()
    try:
        server.start()
        yield Couch(server.admin_url, server=server)
    finally:
        server.close()


@pytest.fixture
def db(couch):
    name = "test/%s" % secrets.token_hex(6)
    database = couch.admin.create(name)
    try:
        yield DatabaseHandle(name, database, couch.url)
    finally:
        try:
            del couch.admin[name]
        except couchdb.http.ResourceNotFound:
            pass


@pytest.fixture
def make_device(couch, db):
    """``make_device(macid=None, serial=None, roles=("raspberry",))`` -> Device.

    Creates the user in ``_users`` and makes the role ``raspberry`` the members of
    the test database; removes the users again after the test.
    """
    users = couch.admin["_users"]
    created = []
    grant_members(db.admin, DEVICE_ROLE)

    def make(macid=None, serial=None, roles=(DEVICE_ROLE,)):
        device = create_device_user(users, couch.url, macid, serial, roles)
        created.append("org.couchdb.user:" + device.user)
        return device

    try:
        yield make
    finally:
        for doc_id in created:
            try:
                doc = users.get(doc_id)
                if doc is not None:
                    users.delete(doc)
            except couchdb.http.ResourceNotFound:
                pass


@pytest.fixture
def device(make_device):
    return make_device()
