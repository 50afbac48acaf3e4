"""The discovery protocol on UDP port 53000, which both sides speak.

The operator broadcasts ``{"server": "http://host:5984"}`` (``adopt`` adds
``"adopt": true``); every device that listens answers to the sender with
what an operator needs to recognise and adopt it, and no secret::

    {"MacID": 202481587074134, "hostname": "pi-17", "version": "2.0.0",
     "server": "http://couch.lab:5984",       # the one it follows, or null
     "fingerprint": "3f9a0c1e5b7d",           # also in the device's log
     "claim": {"password_scheme": "pbkdf2", "pbkdf2_prf": "sha",
               "iterations": 1000, "salt": "...", "derived_key": "..."}}

The claim is what CouchDB stores in a ``_users`` document for the device's
own login secret: an admin who writes it there creates the device's account
without ever learning the secret.  PBKDF2 with SHA-1 (CouchDB's ``"sha"``) is
the one both Apache CouchDB 3.4 and the PouchDB test server verify; the
secret is 256 random bits, so neither SHA-1 nor a small iteration count
makes guessing it any easier than guessing 256 bits.

A device run with ``--discovery-legacy-password`` adds ``"password"`` (the
old tool's answer, unsafe).  The device's side is
:mod:`himbeerecouch.agent.answer`, the operator's
:mod:`himbeerecouch.ops.discover` and :mod:`himbeerecouch.ops.adopt`.
"""
import hashlib
import json
import re

from . import config as configuration

DISCOVERY_PORT = 53000
MAX_DATAGRAM = 65000          # the old tool's limit, both ways

CLAIM_PRF = "sha"             # CouchDB's name for PBKDF2-HMAC-SHA1
CLAIM_ITERATIONS = 1000
CLAIM_FIELDS = ("password_scheme", "pbkdf2_prf", "iterations", "salt", "derived_key")
_HEX = re.compile(r"[0-9a-f]{16,128}")


def parse_request(raw):
    """``(server URL asked for (may be invalid), adopt?)`` of a datagram, or raise ValueError."""
    if len(raw) > MAX_DATAGRAM:
        raise ValueError("oversized (%d bytes, at most %d)" % (len(raw), MAX_DATAGRAM))
    try:
        message = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("server"), str):
        raise ValueError('not of the form {"server": "http://host:5984"}')
    return message["server"], message.get("adopt") is True


def valid_server(url):
    """``url`` cleaned up if a device may use it, else None."""
    try:
        return configuration.check_server_url(url.strip())
    except configuration.ConfigError:
        return None


def make_claim(secret, salt, iterations=CLAIM_ITERATIONS):
    """The ``_users`` fields CouchDB keeps for the password ``secret``."""
    key = hashlib.pbkdf2_hmac("sha1", secret.encode("utf-8"), salt.encode("utf-8"), iterations)
    return {"password_scheme": "pbkdf2", "pbkdf2_prf": CLAIM_PRF, "iterations": iterations,
            "salt": salt, "derived_key": key.hex()}


def fingerprint(macid, claim):
    """12 hex digits naming a device's claim: what the operator compares with
    what the device prints (``adopt`` lists it, the device logs it)."""
    blob = json.dumps([int(macid)] + [claim[k] for k in CLAIM_FIELDS])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def check_claim(claim):
    """``claim`` if it has the form :func:`make_claim` gives, else None."""
    if not isinstance(claim, dict) or set(claim) != set(CLAIM_FIELDS):
        return None
    if claim["password_scheme"] != "pbkdf2" or claim["pbkdf2_prf"] != CLAIM_PRF:
        return None
    iterations = claim["iterations"]
    if isinstance(iterations, bool) or not isinstance(iterations, int) \
            or not 1 <= iterations <= 10 ** 7:
        return None
    if not all(isinstance(claim[k], str) and _HEX.fullmatch(claim[k])
               for k in ("salt", "derived_key")):
        return None
    return claim


def claim_of_user(doc):
    """The claim fields of a ``_users`` document (to compare with a claim)."""
    return {k: (doc or {}).get(k) for k in CLAIM_FIELDS}
