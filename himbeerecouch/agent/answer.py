"""Being found on the LAN: the device's side of discovery (UDP port 53000).

A device with no server configured waits for a broadcast
(:func:`wait_for_server`, called by ``himbeerecouch run``), answers it, takes
the server it names (only an https one that verifies with the CA file, when
the device has one; else trust on first use), writes it into its server file
and goes on; while it waits it blinks the LED on GPIO 16 where RPi.GPIO can
be imported.  Afterwards a thread (:class:`AnswerThread`) keeps answering,
unless ``--no-answer-discovery``, and never moves: a configured device
changes its server only as its device document says (relocation.py) or by
hand.  ``himbeerecouch credentials`` prints what the device would answer.

An answer (:func:`device_answer`, format in himbeerecouch.discovery) holds no
secret: the MacID, host name, version, the server it follows, and the claim
and fingerprint of its login secret; the legacy password only with
``--discovery-legacy-password``.  Answering an ``adopt`` broadcast makes the
device ask its server every second for a minute whether it was adopted.

Malformed or oversized datagrams are logged (at most one line a second) and
ignored.  Tests use 127.0.0.1 and 127.255.255.255 only.
"""
import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time

from .. import __version__, couch
from .. import config as configuration
from .. import identity as ident
from ..arguments import add_identity_options
from ..discovery import DISCOVERY_PORT, MAX_DATAGRAM, parse_request, valid_server
from ..errors import EXIT_USAGE, UserError

log = logging.getLogger("himbeerecouch.discovery")

LED_PIN = 16                  # BCM numbering, as the old tool
BLINK_PERIOD = 0.4
POLL = 0.5                    # how often a waiting responder looks at its stop flag
TRUST_TIMEOUT = 10.0          # to check a server's certificate before taking it


class Throttle:
    """Lets one log line through per ``period`` seconds and counts the others."""

    def __init__(self, period=1.0):
        self.period = period
        self.next = 0.0
        self.suppressed = 0

    def __call__(self, text, *args):
        now = time.monotonic()
        if now < self.next:
            self.suppressed += 1
            return
        if self.suppressed:
            text += " (%d more such datagram(s) not logged)" % self.suppressed
            self.suppressed = 0
        self.next = now + self.period
        log.warning(text, *args)


def device_answer(identity, login, legacy_password=False):
    """What this device answers a discovery broadcast with (no secret in it)."""
    answer = {"MacID": identity.macid, "hostname": socket.gethostname(),
              "version": __version__, "server": configuration.without_credentials(login.url),
              "fingerprint": login.fingerprint, "claim": login.claim}
    if legacy_password:
        answer["password"] = identity.password     # --discovery-legacy-password: unsafe
    return answer


class Responder:
    """A UDP socket on the discovery port that answers with ``answer()``.

    Several agents on one machine can listen on the same port at once
    (SO_REUSEADDR and SO_REUSEPORT: each gets its own copy of a broadcast).
    Answers leave from a socket of their own, so that each agent on a
    machine answers from its own port and the operator sees them all.
    ``on_adopt`` is called after an answer to an ``adopt`` broadcast.
    """

    def __init__(self, answer, address="", port=DISCOVERY_PORT, on_adopt=None):
        self.answer = answer
        self.on_adopt = on_adopt
        self.address, self.port = address, port
        self._throttle = Throttle()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.reply = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self.sock.bind((address, port))
            self.reply.bind(("", 0))
        except OSError:
            self.close()
            raise
        self.sock.settimeout(POLL)

    def close(self):
        self.sock.close()
        self.reply.close()

    def serve_one(self):
        """Wait up to POLL seconds for one datagram; answer it.

        Returns ``(server URL it asked for (possibly invalid), sender)`` or None.
        """
        try:
            raw, sender = self.sock.recvfrom(MAX_DATAGRAM + 1)
        except socket.timeout:
            return None
        try:
            url, adopt = parse_request(raw)
        except ValueError as e:
            self._throttle("ignored a discovery datagram from %s:%d: %s", sender[0], sender[1], e)
            return None
        answer = json.dumps(self.answer())
        try:
            self.reply.sendto(answer.encode("utf-8"), sender)
        except OSError as e:
            log.warning("could not answer the discovery broadcast of %s:%d: %s",
                        sender[0], sender[1], e.strerror or e)
            return None
        log.info("answered the %s broadcast of %s:%d", "adopt" if adopt else "discovery",
                 sender[0], sender[1])
        if adopt and self.on_adopt is not None:
            self.on_adopt()
        return url, sender


def write_server_file(path, url):
    """Store ``url`` in the server file, atomically (a reader never sees half of it)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".server-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(url + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Blinker:
    """Blinks the LED on GPIO 16 while a device waits to be found, where it can."""

    _said_why_not = False

    def __init__(self):
        self._stop = threading.Event()
        self._thread = None
        self._gpio = None

    def start(self):
        try:
            import RPi.GPIO as GPIO
            GPIO.setwarnings(False)
            GPIO.setmode(GPIO.BCM)
            GPIO.setup(LED_PIN, GPIO.OUT)
        except Exception as e:  # noqa: BLE001 - ImportError off a Pi, RuntimeError without access
            if not Blinker._said_why_not:
                Blinker._said_why_not = True
                log.info("not blinking the LED on GPIO %d: RPi.GPIO is not usable here (%s)",
                         LED_PIN, e)
            return self
        self._gpio = GPIO
        self._thread = threading.Thread(target=self._blink, name="blink", daemon=True)
        self._thread.start()
        return self

    def _blink(self):
        on = False
        while not self._stop.wait(BLINK_PERIOD):
            on = not on
            try:
                self._gpio.output(LED_PIN, self._gpio.HIGH if on else self._gpio.LOW)
            except Exception:  # noqa: BLE001 - a LED is not worth a crash
                return

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * BLINK_PERIOD)
            try:
                self._gpio.output(LED_PIN, self._gpio.LOW)
                self._gpio.cleanup(LED_PIN)
            except Exception:  # noqa: BLE001
                pass


def first_contact_problem(url, ca_file):
    """Why a waiting device must not take ``url`` from a broadcast, or None.

    Without a CA file: None (trust on first use).  With one: only an https
    server whose certificate verifies with it, checked by connecting.
    """
    if not ca_file:
        return None
    if not url.lower().startswith("https://"):
        return ("it is not https: with a CA file (%s) only an https server whose certificate "
                "verifies with it is taken" % ca_file)
    why = couch.silence(url, TRUST_TIMEOUT, ca_file)
    if why is None:
        return None
    if "does not verify" in why:
        return why
    return "its certificate could not be checked (%s)" % why


def wait_for_server(responder, server_file, ca_file=None):
    """Answer broadcasts on ``responder`` until one names a server this device
    may take; returns its URL.

    Writes the URL into ``server_file``.  Returns None when SIGINT or SIGTERM
    arrive first.  SIGHUP makes it look at the server file again (someone
    may have written it by hand).  Call from the main thread; the responder
    is closed at the end.
    """
    stop, hup = [], []
    previous = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: hup.append(1))
    blinker = Blinker().start()
    log.info("no server configured: waiting for a discovery broadcast on UDP port %d "
             "(himbeerecouch adopt ADMIN_URL)%s", responder.port,
             "; only an https server that verifies with %s is taken" % ca_file if ca_file
             else "; the first server named is taken (trust on first use)")
    try:
        while not stop:
            if hup:
                hup.clear()
                url = configuration.read_server_file(server_file)
                if url and valid_server(url):
                    log.info("SIGHUP: the server file now names %s", configuration.redact(url))
                    return valid_server(url)
            served = responder.serve_one()
            if served is None:
                continue
            asked, sender = served
            url = valid_server(asked)
            if url is None:
                log.info("the broadcast names no usable server (%r): still waiting",
                         asked[:200])
                continue
            problem = first_contact_problem(url, ca_file)
            if problem:
                log.warning("not taking server %s from the broadcast of %s: %s; still waiting",
                            configuration.redact(url), sender[0], problem)
                continue
            try:
                write_server_file(server_file, url)
                log.info("server %s (from the broadcast of %s) written to %s",
                         configuration.redact(url), sender[0], server_file)
            except OSError as e:
                log.error("cannot write the server file %s: %s; using %s until the agent stops",
                          server_file, e.strerror or e, configuration.redact(url))
            return url
        log.info("%s while waiting for a discovery broadcast: stopping",
                 signal.Signals(stop[0]).name)
        return None
    finally:
        blinker.stop()
        responder.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


class AnswerThread(threading.Thread):
    """Keeps answering discovery broadcasts while the agent runs.

    A broadcast that names another server moves nothing: the device stays
    with the server it has (``server()`` says which) and says so, once per
    server named.
    """

    def __init__(self, responder, server):
        super().__init__(name="discovery", daemon=True)
        self.responder = responder
        self.server = server
        self._stopping = threading.Event()
        self._said = set()

    def run(self):
        try:
            while not self._stopping.is_set():
                try:
                    served = self.responder.serve_one()
                except OSError as e:
                    log.error("discovery responder stopped: %s", e.strerror or e)
                    return
                url = valid_server(served[0]) if served else None
                current = self.server()
                if url is None or url == configuration.without_credentials(current) \
                        or url in self._said:
                    continue
                if len(self._said) > 100:
                    self._said.clear()      # bounded: at worst a line is said again
                self._said.add(url)
                log.info("a broadcast from %s names server %s; staying with %s (a broadcast "
                         "never moves a device that has a server)", served[1][0],
                         configuration.redact(url), configuration.redact(current))
        finally:
            self.responder.close()

    def stop(self):
        self._stopping.set()


# ---------------------------------------------------------------- the command line
def add_parser(sub):
    p = sub.add_parser("credentials", help="this device's MacID, legacy password and fingerprint",
                       description="Print this device's MacID, the legacy password (sha1 of the "
                                   "MacID and the board serial, which an adopted device no "
                                   "longer needs) and the fingerprint of its own login secret, "
                                   "which `himbeerecouch adopt` lists.")
    add_identity_options(p)
    p.add_argument("--config", dest="config_file",
                   help="configuration file (default: %s)" % configuration.DEFAULT_CONFIG_FILE)
    p.add_argument("--state-dir", help="state folder (default: %s)"
                   % configuration.DEFAULT_STATE_DIR)
    p.add_argument("--secret-file", help="file of the login secret (default: in the state "
                                         "folder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_credentials)


def cmd_credentials(args):
    from . import secret as device_secret
    overrides = {k: getattr(args, k) for k in ("config_file", "state_dir", "secret_file",
                                               "macid", "serial", "interface")}
    try:
        config = configuration.load(overrides)
        me = ident.resolve(config.macid, config.serial, config.interface)
        path = device_secret.secret_path(config, me.macid)
        secret = device_secret.load(path, me.macid) if config.login != "legacy" else None
    except (configuration.ConfigError, ident.IdentityError, device_secret.SecretError) as e:
        raise UserError(str(e), EXIT_USAGE)
    fingerprint = secret.fingerprint if secret else None
    if args.json:
        print(json.dumps({"MacID": me.macid, "password": me.password,
                          "fingerprint": fingerprint}))
        return 0
    print("MacID:       %d" % me.macid)
    print("password:    %s (legacy)" % me.password)
    if secret:
        print("fingerprint: %s (of the login secret in %s)" % (fingerprint, path))
    elif config.login == "legacy":
        print("fingerprint: none (login = legacy: this device uses the legacy password only)")
    else:
        print("fingerprint: none yet (the agent makes the secret, in %s, when it starts)" % path)
    return 0
