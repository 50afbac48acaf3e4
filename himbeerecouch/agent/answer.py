"""Being found on the LAN: the device's side of discovery (UDP port 53000).

A device with no server configured waits for a broadcast
(:func:`wait_for_server`, called by ``himbeerecouch run``), answers it with
its MacID and password, writes the URL into its server file and goes on;
while it waits it blinks the LED on GPIO 16 where RPi.GPIO can be imported.
With ``--answer-discovery`` a thread (:class:`AnswerThread`) keeps answering
afterwards.  ``himbeerecouch credentials`` prints what it would answer.

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

from .. import config as configuration
from .. import identity as ident
from ..arguments import add_identity_options
from ..discovery import DISCOVERY_PORT, MAX_DATAGRAM, parse_request, valid_server
from ..errors import EXIT_USAGE, UserError

log = logging.getLogger("himbeerecouch.discovery")

LED_PIN = 16                  # BCM numbering, as the old tool
BLINK_PERIOD = 0.4
POLL = 0.5                    # how often a waiting responder looks at its stop flag


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


class Responder:
    """A UDP socket on the discovery port that answers with this device's credentials.

    Several agents on one machine can listen on the same port at once
    (SO_REUSEADDR and SO_REUSEPORT: each gets its own copy of a broadcast).
    Answers leave from a socket of their own, so that each agent on a
    machine answers from its own port and the operator sees them all.
    """

    def __init__(self, identity, address="", port=DISCOVERY_PORT):
        self.identity = identity
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

        Returns the server URL it asked for (possibly invalid) or None.
        """
        try:
            raw, sender = self.sock.recvfrom(MAX_DATAGRAM + 1)
        except socket.timeout:
            return None
        try:
            url = parse_request(raw)
        except ValueError as e:
            self._throttle("ignored a discovery datagram from %s:%d: %s", sender[0], sender[1], e)
            return None
        answer = json.dumps({"MacID": self.identity.macid, "password": self.identity.password})
        try:
            self.reply.sendto(answer.encode("utf-8"), sender)
        except OSError as e:
            log.warning("could not answer the discovery broadcast of %s:%d: %s",
                        sender[0], sender[1], e.strerror or e)
            return None
        log.info("answered the discovery broadcast of %s:%d", sender[0], sender[1])
        return url


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


def wait_for_server(identity, server_file, address="", port=DISCOVERY_PORT):
    """Answer broadcasts until one names a usable server; returns its URL.

    Writes the URL into ``server_file``.  Returns None when SIGINT or SIGTERM
    arrive first.  SIGHUP makes it look at the server file again (someone
    may have written it by hand).  Call from the main thread.
    """
    stop, hup = [], []
    previous = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: hup.append(1))
    try:
        responder = Responder(identity, address, port)
    except OSError as e:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise OSError(e.errno, "cannot listen for discovery broadcasts on UDP port %d: %s"
                      % (port, e.strerror)) from None
    blinker = Blinker().start()
    log.info("no server configured: waiting for a discovery broadcast on UDP port %d "
             "(himbeerecouch discover http://host:5984)", port)
    try:
        while not stop:
            if hup:
                hup.clear()
                url = configuration.read_server_file(server_file)
                if url and valid_server(url):
                    log.info("SIGHUP: the server file now names %s", configuration.redact(url))
                    return valid_server(url)
            asked = responder.serve_one()
            if asked is None:
                continue
            url = valid_server(asked)
            if url is None:
                log.info("the broadcast names no usable server (%r): still waiting",
                         asked[:200])
                continue
            try:
                write_server_file(server_file, url)
                log.info("server %s written to %s", configuration.redact(url), server_file)
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
    """Keeps answering discovery broadcasts while the agent runs (``--answer-discovery``).

    A broadcast that names another usable server is taken as the old tool
    took it: when the server comes from the server file (``switch`` is
    true), the file is rewritten and this process gets SIGHUP, which makes
    the supervisor follow the new server.
    """

    def __init__(self, identity, server_file, current, address="", port=DISCOVERY_PORT,
                 switch=True):
        super().__init__(name="discovery", daemon=True)
        self.responder = Responder(identity, address, port)
        self.server_file = server_file
        self.current = current
        self.switch = switch
        self._stopping = threading.Event()

    def run(self):
        try:
            while not self._stopping.is_set():
                try:
                    asked = self.responder.serve_one()
                except OSError as e:
                    log.error("discovery responder stopped: %s", e.strerror or e)
                    return
                url = valid_server(asked) if asked else None
                if url is None or url == self.current:
                    continue
                if not self.switch:
                    log.info("a broadcast names server %s; staying with %s (given by --server)",
                             configuration.redact(url), configuration.redact(self.current))
                    continue
                try:
                    write_server_file(self.server_file, url)
                except OSError as e:
                    log.error("cannot write the server file %s: %s", self.server_file,
                              e.strerror or e)
                    continue
                log.info("a broadcast names server %s: switching to it",
                         configuration.redact(url))
                self.current = url
                os.kill(os.getpid(), signal.SIGHUP)
        finally:
            self.responder.close()

    def stop(self):
        self._stopping.set()


# ---------------------------------------------------------------- the command line
def add_parser(sub):
    p = sub.add_parser("credentials", help="this device's MacID and password",
                       description="Print this device's MacID and the password it logs in "
                                   "with (sha1 of the MacID and the board serial).")
    add_identity_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_credentials)


def cmd_credentials(args):
    try:
        me = ident.resolve(args.macid, args.serial, args.interface)
    except ident.IdentityError as e:
        raise UserError(str(e), EXIT_USAGE)
    if args.json:
        print(json.dumps({"MacID": me.macid, "password": me.password}))
    else:
        print("MacID:    %d" % me.macid)
        print("password: %s" % me.password)
    return 0
