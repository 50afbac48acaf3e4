"""What the agent relies on from the CouchDB-protocol server, checked for real.

Runs against testserver/ (express-pouchdb on PouchDB 9) or the server COUCHDB_URL
names.  Everything the device does here, it does as the device user with the
``couchdb`` client, the way the agent does it.
"""
import socket
import time

import couchdb
import couchdb.http
import pytest

from couchserver import CouchServer, StallingProxy, http_request
from helpers import ChangesFeed, url_with_credentials, wait_for


def device_selector(macid):
    """The agent's selector: this device's code and command documents, plus every
    deletion (a tombstone carries no ``type``)."""
    return {"$or": [{"type": {"$in": [macid, str(macid), "%d_cmd" % macid]}},
                    {"_deleted": True}]}


def current_seq(database):
    """The database's last sequence, whatever its form (opaque on CouchDB)."""
    return database.info()["update_seq"]


def device_feed(server_url, dbname, since, selector, timeout=5, heartbeat=1000):
    """The feed exactly as the agent opens it."""
    return ChangesFeed(server_url, dbname, timeout=timeout,
                       heartbeat=heartbeat, include_docs=True, since=since,
                       filter="_selector", _selector={"selector": selector})


def test_fixtures_shape(couch, db, device):
    assert "@" not in couch.url and couch.url.startswith("http://")
    assert "/" in db.name
    assert db.name in couch.admin or db.name.replace("/", "") in couch.admin
    assert device.url.startswith("http://%s:%s@" % (device.user, device.password))
    assert 0xB827EB000000 <= device.macid <= 0xB827EBFFFFFF
    assert len(device.serial) == 16
    doc = couch.admin["_users"]["org.couchdb.user:" + device.user]
    assert doc["roles"] == ["raspberry"]


def test_selector_feed_delivers_matching_documents_promptly(db, device, make_device):
    other = make_device()
    db.admin.save({"_id": "before", "type": device.macid})
    since = current_seq(db.admin)

    with device_feed(device.url, db.name, since, device_selector(device.macid)) as feed:
        sent = time.monotonic()
        db.admin.save({"_id": "code", "type": device.macid, "code": "def main(): pass"})
        change = feed.wait_for_id("code", timeout=3)
        latency = time.monotonic() - sent
        assert change["doc"]["code"] == "def main(): pass"  # include_docs
        assert latency < 2, "the continuous feed is buffered (%.2f s)" % latency

        # Not for this device: never delivered.  The feed is in sequence order, so
        # once the later documents arrived, the earlier one was filtered out.
        db.admin.save({"_id": "not-mine", "type": other.macid})
        db.admin.save({"_id": "not-mine-str", "type": str(other.macid)})
        db.admin.save({"_id": "untyped", "name": "no type at all"})
        db.admin.save({"_id": "as-string", "type": str(device.macid)})
        db.admin.save({"_id": "command", "type": "%d_cmd" % device.macid, "cmd": ["true"]})
        feed.wait_for_id("as-string", timeout=3)
        feed.wait_for_id("command", timeout=3)
        assert feed.ids() == ["code", "as-string", "command"]  # since= honoured too


def test_type_selector_alone_never_sees_a_deletion(db, device):
    """A tombstone is ``{_id, _rev, _deleted}``: a selector on ``type`` misses it."""
    doc_id, _ = db.admin.save({"_id": "code", "type": device.macid})
    since = current_seq(db.admin)
    with device_feed(device.url, db.name, since, {"type": device.macid}) as feed:
        db.admin.delete(db.admin[doc_id])
        db.admin.save({"_id": "marker", "type": device.macid})
        feed.wait_for_id("marker", timeout=3)
        assert feed.ids() == ["marker"]


def test_or_deleted_selector_delivers_deletions(db, device, make_device):
    other = make_device()
    for doc in ({"_id": "code", "type": device.macid},
                {"_id": "command", "type": "%d_cmd" % device.macid, "cmd": ["true"]},
                {"_id": "theirs", "type": other.macid}):
        db.admin.save(doc)
    since = current_seq(db.admin)

    with device_feed(device.url, db.name, since, device_selector(device.macid)) as feed:
        # DELETE: the tombstone has no body.
        db.admin.delete(db.admin["code"])
        change = feed.wait_for_id("code", deleted=True, timeout=3)
        assert change["deleted"] is True
        assert change["doc"]["_deleted"] is True
        assert "type" not in change["doc"]

        # An update with "_deleted": true keeps its body in the tombstone.
        command = db.admin["command"]
        command["_deleted"] = True
        db.admin.save(command)
        change = feed.wait_for_id("command", deleted=True, timeout=3)
        assert change["doc"]["_deleted"] is True

        # Every deletion in the database comes through, other devices' too: the
        # agent must ignore tombstones of documents it does not know.
        db.admin.delete(db.admin["theirs"])
        change = feed.wait_for_id("theirs", deleted=True, timeout=3)
        assert "type" not in change["doc"]


def test_restart_on_a_data_folder_keeps_data_and_since_resumes(tmp_path):
    data = tmp_path / "couch"
    server = CouchServer(data_dir=data)
    try:
        server.start()
        port = server.port
        admin = couchdb.Server(server.admin_url, session=couchdb.http.Session(timeout=30))
        database = admin.create("nedm/raspberries")
        database.save({"_id": "a", "type": 1})
        seq = current_seq(database)

        # A continuous feed is open: the server must still stop at once.
        feed = ChangesFeed(server.admin_url, "nedm/raspberries", timeout=5,
                           heartbeat=1000, since=seq).start()
        database.save({"_id": "live", "type": 1})
        feed.wait_for_id("live", timeout=3)
        began = time.monotonic()
        server.restart()
        assert time.monotonic() - began < 5
        wait_for(feed.ended.is_set, timeout=3, message="the feed did not end with the server")
        feed.close()

        assert server.port == port
        assert (data / "config.json").exists()  # admins live in the data folder
        # Still no admin party (this anonymous PUT crashed pouchdb-server 4.2.0 and
        # hangs in a bare express-pouchdb: server.js makes it answer).
        assert http_request("PUT", server.url + "/anonymous", timeout=3)[0] == 401
        assert http_request("PUT", server.url + "/_config/admins/eve", body="x")[0] == 401
        admin = couchdb.Server(server.admin_url, session=couchdb.http.Session(timeout=30))
        database = admin["nedm/raspberries"]
        assert database["a"]["type"] == 1
        database.save({"_id": "b", "type": 1})
        assert [c["id"] for c in database.changes(since=seq)["results"]] == ["live", "b"]

        # A crash (SIGKILL) loses nothing that was acknowledged either.
        seq = current_seq(database)
        database.save({"_id": "c", "type": 1})
        server.kill()
        assert not server.running
        server.start()
        admin = couchdb.Server(server.admin_url, session=couchdb.http.Session(timeout=30))
        database = admin["nedm/raspberries"]
        assert [c["id"] for c in database.changes(since=seq)["results"]] == ["c"]
    finally:
        server.close()
    assert not server.running


def test_a_device_that_is_not_a_member_is_refused(couch, db, device, make_device):
    refused = (couchdb.http.Unauthorized,) if couch.server else (
        couchdb.http.Unauthorized, couchdb.http.Forbidden)
    session = couchdb.http.Session(timeout=5)

    # The member reads.
    db.admin.save({"_id": "code", "type": device.macid})
    assert couchdb.Server(device.url, session=session)[db.name]["code"]["type"] == device.macid

    # A logged-in user without the role: 401 on this server (CouchDB says 403).
    stranger = make_device(roles=[])
    database = couchdb.Database(couchdb.Server(stranger.url, session=session).resource(db.name),
                                db.name)
    with pytest.raises(refused):
        database.info()
    with pytest.raises(refused):
        database["code"]
    with pytest.raises(refused):
        database.changes(since=0)
    # ... also the agent's continuous feed, at once (express-pouchdb alone would
    # answer 200 and send heartbeats forever: server.js checks first).
    feed = device_feed(stranger.url, db.name, 0, device_selector(stranger.macid)).start()
    try:
        wait_for(feed.ended.is_set, timeout=3, message="a stranger's feed was not refused")
        assert isinstance(feed.error, refused), repr(feed.error)
    finally:
        feed.close()

    # Neither member nor stranger may delete the database or make another one;
    # a refused deletion leaves the server working (it wedged express-pouchdb).
    db_path = "/" + db.name.replace("/", "%2F")
    for who in (device, stranger):
        auth = (who.user, who.password)
        assert http_request("DELETE", couch.url + db_path, auth=auth)[0] in (401, 403)
        assert http_request("PUT", couch.url + "/test%2Fnot-" + who.user, auth=auth)[0] in (401, 403)
    assert db.admin["code"]["type"] == device.macid
    assert couchdb.Server(device.url, session=session)[db.name].info()["doc_count"] == 1

    # A wrong password and no credentials at all.
    for url in (url_with_credentials(couch.url, device.user, "wrong"), couch.url):
        with pytest.raises(couchdb.http.Unauthorized):
            couchdb.Server(url, session=session).resource(db.name).get_json()


def test_stalling_proxy_stalls_resumes_and_drops(couch, db, device):
    with StallingProxy(couch.server.port if couch.server else _port_of(couch.url)) as proxy:
        url = url_with_credentials(proxy.url, device.user, device.password)
        since = current_seq(db.admin)
        selector = device_selector(device.macid)

        feed = device_feed(url, db.name, since, selector, timeout=1, heartbeat=200).start()
        try:
            db.admin.save({"_id": "one", "type": device.macid})
            feed.wait_for_id("one", timeout=3)

            # Stalled: no bytes, no heartbeats; only the socket timeout notices.
            proxy.stall()
            db.admin.save({"_id": "two", "type": device.macid})
            wait_for(feed.ended.is_set, timeout=5, message="a stalled feed never timed out")
            assert isinstance(feed.error, (socket.timeout, TimeoutError)), repr(feed.error)
            assert feed.ids() == ["one"]
        finally:
            feed.close()

        proxy.resume()
        with device_feed(url, db.name, since, selector, timeout=5, heartbeat=200) as feed:
            feed.wait_for_id("two", timeout=3)
            assert feed.ids() == ["one", "two"]
            wait_for(lambda: proxy.connection_count > 0, timeout=3)
            proxy.drop()
            wait_for(feed.ended.is_set, timeout=3, message="a dropped feed did not end")
            assert feed.error is not None


def _port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])
