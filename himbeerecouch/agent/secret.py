"""The device's own login secret: made once, kept in a file only its owner reads.

256 random bits (64 hex digits), with the salt and iteration count of its
claim (:func:`himbeerecouch.discovery.make_claim`), as one JSON object in
``<state folder>/secret-<MacID>`` or where ``secret_file`` says (a netboot
Pi whose state folder is a tmpfs needs persistent storage of its own there,
or it would need adopting after every boot).

The file is created 0600 in one step (a temporary file linked into place, so
two agents starting at once agree on one secret and nobody ever reads half
of one), in a folder created 0700.  It is never rewritten: a new secret means
deleting the file, and adopting the device again.  A file others may read is
made 0600 again, and said.
"""
import json
import logging
import os
import re
import secrets
import stat

from ..discovery import CLAIM_ITERATIONS, fingerprint, make_claim
from .cache import sync_folder

log = logging.getLogger("himbeerecouch.secret")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SALT = re.compile(r"[0-9a-f]{32}")


class SecretError(RuntimeError):
    """The secret file cannot be used; the message says why and what to do."""


def secret_path(config, macid):
    """Where the secret is kept: ``secret_file``, else ``<state_dir>/secret-<MacID>``."""
    return os.path.abspath(config.secret_file or os.path.join(config.state_dir,
                                                              "secret-%d" % macid))


class DeviceSecret:
    """The secret and its claim; ``repr`` never shows the secret."""

    def __init__(self, macid, secret, salt, iterations, path):
        self.macid, self.path = macid, path
        self.secret = secret
        self.claim = make_claim(secret, salt, iterations)
        self.fingerprint = fingerprint(macid, self.claim)

    def __repr__(self):
        return "DeviceSecret(macid=%d, fingerprint=%s)" % (self.macid, self.fingerprint)


def load_or_create(path, macid):
    """The secret kept in ``path``, made first when there is none."""
    try:
        return _load(path, macid)
    except FileNotFoundError:
        pass
    _create(path)
    log.info("made this device's login secret, kept in %s", path)
    return _load(path, macid)


def load(path, macid):
    """The secret kept in ``path``, or None when there is none yet."""
    try:
        return _load(path, macid)
    except FileNotFoundError:
        return None


def _damaged(path, why):
    return SecretError("the secret file %s %s; remove it to make a new secret (the device "
                       "must then be adopted again)" % (path, why))


def _load(path, macid):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise SecretError("cannot read the secret file %s: %s" % (path, e.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _damaged(path, "is not a regular file")
        if st.st_mode & 0o077:
            os.fchmod(f.fileno(), 0o600)
            log.warning("the secret file %s could be read by other users: made it 0600 (if "
                        "someone did read it, remove it and adopt the device again)", path)
        raw = f.read(4096)
    try:
        data = json.loads(raw.decode("utf-8"))
        secret, salt, iterations = data["secret"], data["salt"], data["iterations"]
    except (ValueError, TypeError, KeyError):
        raise _damaged(path, "is damaged") from None
    if not (isinstance(secret, str) and _HEX64.fullmatch(secret) and isinstance(salt, str)
            and _SALT.fullmatch(salt) and type(iterations) is int and iterations > 0):
        raise _damaged(path, "is damaged")
    return DeviceSecret(macid, secret, salt, iterations, path)


def _create(path):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        raise SecretError("cannot make the folder of the secret file %s: %s"
                          % (path, e.strerror)) from None
    body = json.dumps({"secret": secrets.token_hex(32), "salt": secrets.token_hex(16),
                       "iterations": CLAIM_ITERATIONS}) + "\n"
    tmp = os.path.join(folder, ".secret-%s" % secrets.token_hex(8))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)            # whatever the umask
            os.write(fd, body.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)              # never over a secret another agent just made
        except FileExistsError:
            pass
        sync_folder(folder)
    except OSError as e:
        raise SecretError("cannot write the secret file %s: %s" % (path, e.strerror)) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
