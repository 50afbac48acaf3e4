"""Which password the device logs in with: its own secret, or the legacy one.

Every part of the agent that talks to the database (feed, publisher,
commands, canaries, and the workers through their start-up data) takes the
user name and password from one :class:`Login`.  The ``login`` setting says
which passwords it may use:

- ``auto`` (the default): its secret (agent/secret.py) when the server takes
  it, else the legacy ``sha1(MacID + serial)``, so that a device provisioned
  for the old agent keeps working until it is adopted;
- ``secret``: its secret only;
- ``legacy``: the legacy password only, as the old agent (no secret is made).

Which one works is asked of the server (``_session``) at start, again after
any request was refused (401; at most once a second), and every second for
a minute after the device answered an ``adopt`` broadcast, so that an
adopted device is on its secret within seconds.  When the answer changes,
:class:`LoginChanged` goes to the supervisor, which reconnects everything and
restarts the workers.  The log says which kind it uses, never the password.
The kind that worked last is kept in the state folder (``login-<MacID>.json``,
no secret in it): a device that starts while its server cannot be reached
starts its cached workers with the password that will work, and does not
restart them when the server is back.
"""
import json
import logging
import threading
import time
from dataclasses import dataclass

from .. import config as configuration
from ..config import LOGIN_MODES
from .. import couch
from .cache import write_json

log = logging.getLogger("himbeerecouch.login")

SECRET, LEGACY = "secret", "legacy"
CHECK_GAP = 1.0          # at most one check a second, however many refusals
ADOPT_WINDOW = 60.0      # after an adopt broadcast, check every second this long
CHECK_TIMEOUT = 5.0


@dataclass
class LoginChanged:
    """The password that works changed (``kind``), or works again."""
    kind: str
    changed: bool        # another password than before: workers must restart


class Login:
    """The device's user and the password it logs in with now (thread-safe)."""

    def __init__(self, identity, secret, mode="auto", url=None, ca_file=None, remember=None):
        if mode not in LOGIN_MODES:
            raise ValueError("login must be one of %s" % ", ".join(LOGIN_MODES))
        self.macid, self.user = identity.macid, identity.user
        self.mode = mode
        self._secret = secret            # DeviceSecret, or None with login = legacy
        self._legacy = identity.password
        self.kind = LEGACY if mode == LEGACY else SECRET
        self._remember = remember        # where the kind that worked last is kept
        remembered = self._remembered()
        self.known = mode == LEGACY or remembered in (SECRET, LEGACY)
        if mode == "auto" and remembered == LEGACY:
            self.kind = LEGACY
        self.accepted = None             # did the server take it, when last asked
        self.generation = 0              # grows with every change of password
        self.url, self.ca_file = url, ca_file
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._fast_until = 0.0
        self._last_check = 0.0
        self._said = None
        self._post = None
        self._thread = None

    def __repr__(self):       # never the password
        return "Login(user=%s, kind=%s)" % (self.user, self.kind)

    def _remembered(self):
        try:
            with open(self._remember) as f:
                return json.load(f).get("login")
        except (TypeError, OSError, ValueError, AttributeError):
            return None      # none kept yet (or unreadable): the default

    @property
    def password(self):
        return self._legacy if self.kind == LEGACY else self._secret.secret

    @property
    def fingerprint(self):
        return self._secret.fingerprint if self._secret else None

    @property
    def claim(self):
        return self._secret.claim if self._secret else None

    # ------------------------------------------------------------ told by others
    def saw(self, error):
        """A request failed with ``error``: a refusal makes it ask again soon."""
        if couch.refused(error) and self.mode != LEGACY:
            self._wake.set()

    def adopting(self):
        """An ``adopt`` broadcast was answered: ask every second for a while."""
        if self.mode != LEGACY:
            self._fast_until = time.monotonic() + ADOPT_WINDOW
            self._wake.set()

    def retarget(self, url, ca_file):
        """The device follows another server now: ask it."""
        self.url, self.ca_file = url, ca_file
        self._wake.set()

    # ------------------------------------------------------------ the checks
    def check(self):
        """Ask the server which password works; True when that changed it."""
        self._wake.clear()       # this check answers every refusal seen so far
        self._last_check = time.monotonic()
        if self.mode == LEGACY or not self.url:
            return False
        kind = self._working_kind()
        if kind is None:
            return False                 # no answer: nothing learnt
        accepted = kind != "none"
        with self._lock:
            new_kind = kind if accepted else self.kind
            changed = new_kind != self.kind
            news = changed or accepted != self.accepted
            if changed:
                self.kind = new_kind
                self.generation += 1
            self.accepted = accepted
        self._say(accepted)
        if news and accepted:
            if self._remember and self._remembered() != self.kind:
                write_json(self._remember, {"login": self.kind}, "the login kind")
            if self._post is not None:
                self._post(LoginChanged(self.kind, changed))
        return changed

    def _working_kind(self):
        """``secret``, ``legacy``, ``none`` (refused both), or None (no answer)."""
        tries = [(SECRET, self._secret.secret)]
        if self.mode == "auto":
            tries.append((LEGACY, self._legacy))
        for kind, password in tries:
            try:
                if couch.logs_in(self.url, self.user, password, CHECK_TIMEOUT, self.ca_file):
                    return kind
            except couch.TRANSPORT_ERRORS:
                return None
        return "none"

    def _say(self, accepted):
        said = (self.kind, accepted, self.url)
        if said == self._said:
            return
        self._said = said
        server = configuration.redact(self.url)
        if not accepted:
            log.warning("%s refuses %s: this device is not adopted there yet (`himbeerecouch "
                        "adopt ADMIN_URL %d` on the operator's machine; fingerprint %s)",
                        server, "its secret and its legacy password" if self.mode == "auto"
                        else "its secret", self.macid, self.fingerprint)
        elif self.kind == SECRET:
            log.info("logging in to %s with its own secret (fingerprint %s)", server,
                     self.fingerprint)
        else:
            log.warning("logging in to %s with the legacy password, which anyone who can "
                        "read /proc/cpuinfo on this device can compute: adopt it "
                        "(`himbeerecouch adopt ADMIN_URL %d`; fingerprint %s)", server,
                        self.macid, self.fingerprint)

    # ------------------------------------------------------------ the thread
    def start(self, post):
        """Check in a thread of its own from now on, telling ``post`` of changes."""
        self._post = post
        if self.mode == LEGACY or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="login", daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._wake.set()

    def _run(self):
        while not self._stopping.is_set():
            fast = time.monotonic() < self._fast_until and not (
                self.kind == SECRET and self.accepted)
            self._wake.wait(CHECK_GAP if fast else None)
            self._wake.clear()
            gap = self._last_check + CHECK_GAP - time.monotonic()
            if gap > 0 and self._stopping.wait(gap):
                return
            if not self._stopping.is_set():
                try:
                    self.check()
                except Exception:    # a bug here must not end the checks for good
                    log.exception("checking the login failed unexpectedly")
