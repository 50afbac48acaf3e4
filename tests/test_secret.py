"""The device's login secret, its claim and fingerprint, and which password
the agent logs in with (issue 23), without agents.

The secret file is tested on the real file system (modes, a damaged file,
agents that start at once); the claim against the PBKDF2-HMAC-SHA1 test
vectors of RFC 6070 and against both servers, which must take it as a user
written by an admin; :class:`Login` against the real server too.
"""
import json
import os
import secrets
import stat
import threading

import pytest

from couchserver import http_request
from helpers import random_macid, wait_for

from himbeerecouch import discovery, identity
from himbeerecouch.agent import secret as device_secret
from himbeerecouch.agent.login import LEGACY, SECRET, Login, LoginChanged
from himbeerecouch.ops.discover import answer_row


# ------------------------------------------------------------------ the claim
def test_the_claim_is_pbkdf2_sha1_as_couchdb_stores_it():
    # RFC 6070, test vectors 1 and 2 (PBKDF2-HMAC-SHA1, 20 bytes).
    assert discovery.make_claim("password", "salt", 1)["derived_key"] == \
        "0c60c80f961f0e71f3a9b524af6012062fe037a6"
    claim = discovery.make_claim("password", "salt", 2)
    assert claim == {"password_scheme": "pbkdf2", "pbkdf2_prf": "sha", "iterations": 2,
                     "salt": "salt", "derived_key": "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"}


def test_fingerprint_names_device_and_claim():
    claim = discovery.make_claim(secrets.token_hex(32), secrets.token_hex(16))
    one = discovery.fingerprint(5, claim)
    assert len(one) == 12 and one == discovery.fingerprint(5, dict(claim))
    assert discovery.fingerprint(6, claim) != one
    assert discovery.fingerprint(5, dict(claim, salt=secrets.token_hex(16))) != one


def test_only_a_claim_of_the_right_form_counts():
    claim = discovery.make_claim(secrets.token_hex(32), secrets.token_hex(16))
    assert discovery.check_claim(claim) == claim
    for bad in (None, "x", dict(claim, password="pw"), dict(claim, pbkdf2_prf="sha256"),
                dict(claim, iterations=0), dict(claim, iterations=True),
                dict(claim, iterations="1000"), dict(claim, salt="not hex!"),
                dict(claim, derived_key="ab"), {k: v for k, v in claim.items() if k != "salt"}):
        assert discovery.check_claim(bad) is None, bad
    # What adopt makes of an answer: the fingerprint is its own, from the claim.
    row = answer_row("127.0.0.1", 1, {"MacID": 5, "claim": claim, "fingerprint": "forged",
                                      "hostname": 7})
    assert row["fingerprint"] == discovery.fingerprint(5, claim) and row["hostname"] is None
    assert row["mac"] == "00:00:00:00:00:05"
    assert answer_row("127.0.0.1", 1, {"MacID": "5", "claim": claim})["claim"] is None
    assert answer_row("127.0.0.1", 1, {"MacID": 5, "claim": dict(claim, iterations=-1)})[
        "fingerprint"] is None


def test_both_servers_take_a_claim_written_by_an_admin(couch):
    """The measured fact the design rests on, kept true: a _users document
    with only the claim (no password) logs in with the secret."""
    name = str(random_macid())
    secret = secrets.token_hex(32)
    claim = discovery.make_claim(secret, secrets.token_hex(16))
    users = couch.admin["_users"]
    users.save(dict(claim, _id="org.couchdb.user:" + name, name=name, type="user", roles=[]))
    try:
        status, body = http_request("GET", couch.url + "/_session", auth=(name, secret))
        assert status == 200 and body["userCtx"]["name"] == name
        assert http_request("GET", couch.url + "/_session", auth=(name, "wrong"))[0] == 401
        kept = users["org.couchdb.user:" + name]
        assert discovery.claim_of_user(kept) == claim      # stored as written, not rehashed
    finally:
        users.delete(users["org.couchdb.user:" + name])


# ------------------------------------------------------------------ the secret file
def test_the_secret_file_is_made_once_readable_by_its_owner_only(tmp_path):
    path = str(tmp_path / "new" / "secret-5")
    old = os.umask(0)
    try:
        made = device_secret.load_or_create(path, 5)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert os.listdir(os.path.dirname(path)) == ["secret-5"]       # no temporary left
    data = json.loads(open(path).read())
    assert made.secret == data["secret"] and len(bytes.fromhex(data["secret"])) == 32
    assert made.claim == discovery.make_claim(data["secret"], data["salt"], data["iterations"])
    again = device_secret.load_or_create(path, 5)
    assert (again.secret, again.fingerprint) == (made.secret, made.fingerprint)
    assert made.secret not in repr(made) and made.fingerprint in repr(made)


def test_agents_that_start_at_once_agree_on_one_secret(tmp_path):
    path = str(tmp_path / "secret-5")
    found, errors = [], []

    def make():
        try:
            found.append(device_secret.load_or_create(path, 5).secret)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(found) == 8 and len(set(found)) == 1


def test_a_secret_file_others_could_read_is_closed_and_said(tmp_path, caplog):
    path = str(tmp_path / "secret-5")
    made = device_secret.load_or_create(path, 5)
    os.chmod(path, 0o644)
    assert device_secret.load(path, 5).secret == made.secret
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "could be read by other users: made it 0600" in caplog.text


@pytest.mark.parametrize("content", [
    "", "not json", "[1]", '{"secret": "ab"}',
    '{"secret": "%s", "salt": "00", "iterations": 1}' % ("a" * 64)])
def test_a_damaged_secret_file_is_a_clear_error_and_stays(tmp_path, content):
    path = tmp_path / "secret-5"
    path.write_text(content)
    with pytest.raises(device_secret.SecretError, match="is damaged; remove it to make a new "
                                                        "secret"):
        device_secret.load_or_create(str(path), 5)
    assert path.read_text() == content             # nothing lost, nothing replaced


def test_a_link_in_place_of_the_secret_file_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    device_secret.load_or_create(str(target), 5)
    os.symlink(target, tmp_path / "secret-5")
    with pytest.raises(device_secret.SecretError, match="cannot read the secret file"):
        device_secret.load_or_create(str(tmp_path / "secret-5"), 5)


# ------------------------------------------------------------------ Login
def make_login(tmp_path, couch, macid, mode="auto", serial="00000000deadbeef"):
    me = identity.Identity(macid, serial)
    made = device_secret.load_or_create(str(tmp_path / ("secret-%d" % macid)), macid)
    return me, made, Login(me, made, mode, couch.url)


def put_user(couch, name, **fields):
    users = couch.admin["_users"]
    doc = users.get("org.couchdb.user:" + name) or {"_id": "org.couchdb.user:" + name}
    for key in ("password", "password_scheme", "pbkdf2_prf", "iterations", "salt",
                "derived_key"):
        doc.pop(key, None)
    doc.update(fields, name=name, type="user", roles=["raspberry"])
    users.save(doc)


def test_login_takes_the_secret_first_else_the_legacy_password(tmp_path, couch):
    macid = random_macid()
    me, made, login = make_login(tmp_path, couch, macid)
    posted = []
    login._post = posted.append
    try:
        assert login.kind == SECRET and not login.check()      # no user yet: nothing works
        assert login.accepted is False and not posted
        # CouchDB's authentication cache follows _users within about half a second.
        put_user(couch, me.user, password=me.password)          # provisioned for the old agent
        wait_for(login.check, timeout=5, message="the legacy password taken")
        assert login.kind == LEGACY and login.password == me.password
        assert posted == [LoginChanged(LEGACY, True)]
        generation = login.generation
        put_user(couch, me.user, **made.claim)                  # adopted
        wait_for(login.check, timeout=5, message="the secret taken")
        assert login.kind == SECRET and login.password == made.secret
        assert login.generation == generation + 1
        assert posted[-1] == LoginChanged(SECRET, True)
        assert not login.check() and len(posted) == 2           # nothing new: nothing posted
        assert made.secret not in repr(login) and me.password not in repr(login)
        # login = secret never falls back; login = legacy never asks.
        put_user(couch, me.user, password=me.password)
        strict = Login(me, made, "secret", couch.url)
        wait_for(lambda: not strict.check() and strict.accepted is False, timeout=5,
                 message="the secret refused")
        assert strict.kind == SECRET
        legacy = Login(me, None, "legacy", couch.url)
        assert legacy.password == me.password and legacy.fingerprint is None
        assert not legacy.check() and legacy.accepted is None
    finally:
        users = couch.admin["_users"]
        users.delete(users["org.couchdb.user:" + me.user])


def test_login_learns_nothing_from_a_server_that_does_not_answer(tmp_path, couch):
    """And starts with the kind that worked last (kept in the state folder):
    an offline start must not restart its workers once the server is back."""
    from cli_helpers import free_tcp_port
    me, made, login = make_login(tmp_path, couch, random_macid())
    nowhere = "http://127.0.0.1:%d" % free_tcp_port()
    login.retarget(nowhere, None)
    assert not login.check() and login.kind == SECRET and login.accepted is None
    remember = str(tmp_path / ("login-%d.json" % me.macid))
    try:
        put_user(couch, me.user, password=me.password)
        first = Login(me, made, "auto", couch.url, remember=remember)
        wait_for(first.check, timeout=5, message="the legacy password taken")
        assert json.loads(open(remember).read()) == {"login": LEGACY}
        assert made.secret not in open(remember).read()
        offline = Login(me, made, "auto", nowhere, remember=remember)
        assert offline.kind == LEGACY and not offline.check() and offline.kind == LEGACY
        assert Login(me, made, "secret", nowhere, remember=remember).kind == SECRET
    finally:
        users = couch.admin["_users"]
        users.delete(users["org.couchdb.user:" + me.user])
