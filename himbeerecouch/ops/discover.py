"""Finding devices on the LAN: the operator's side of discovery (UDP port 53000).

:func:`broadcast_message` (the old tool's call) and ``himbeerecouch discover``
broadcast ``{"server": URL}`` and collect every device's answer: its MacID,
host name, version, the server it follows and the fingerprint of its claim
(format: himbeerecouch.discovery); no password, unless a device runs with
``--discovery-legacy-password``.  ``himbeerecouch adopt`` (adopt.py) uses the
same broadcast.  The device's side is :mod:`himbeerecouch.agent.answer`.
"""
import json
import socket
import time

from .. import config as configuration
from ..discovery import DISCOVERY_PORT, MAX_DATAGRAM, check_claim, fingerprint
from ..errors import UserError
from ..identity import mac_address


def broadcast_message(server_name="", send_data=None, timeout=10, address="<broadcast>",
                      port=DISCOVERY_PORT):
    """Broadcast ``{"server": server_name}`` (or ``send_data``) and collect the answers.

    Returns ``{(ip, port): answer}`` for every device that answered within
    ``timeout`` seconds, ``answer`` being its decoded JSON (``{"MacID": ...,
    ...}``; the password only from a device run with
    ``--discovery-legacy-password``), as the old tool did.  Answers that are not JSON
    objects are skipped.  ``address`` is where the datagram goes:
    ``"<broadcast>"`` is the LAN's broadcast address.
    """
    payload = json.dumps({"server": server_name} if send_data is None else send_data)
    data = payload.encode("utf-8")
    if len(data) > MAX_DATAGRAM:
        raise ValueError("the message has %d bytes; at most %d fit in one datagram"
                         % (len(data), MAX_DATAGRAM))
    answers = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("", 0))
        sock.sendto(data, (address, port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                raw, sender = sock.recvfrom(MAX_DATAGRAM + 1)
            except socket.timeout:
                break
            try:
                answer = json.loads(raw.decode("utf-8"))
            except ValueError:
                continue
            if isinstance(answer, dict):
                answers[sender] = answer
    return answers


# ---------------------------------------------------------------- the command line
def add_parser(sub):
    p = sub.add_parser(
        "discover", help="find devices on the LAN and tell them the server",
        description="Broadcast the server URL on UDP; every device waiting for a server "
                    "takes it, and every listening device answers: MacID, host name, "
                    "version, the server it follows, the fingerprint of its login secret. "
                    "`himbeerecouch adopt` gives devices their accounts.")
    p.add_argument("server", metavar="SERVER_URL",
                   help="the URL the devices should use, without credentials")
    add_broadcast_options(p, timeout=10.0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_discover)


def add_broadcast_options(p, timeout):
    p.add_argument("--timeout", type=float, default=timeout,
                   help="seconds to collect answers (default: %(default)s)")
    p.add_argument("--address", default="<broadcast>",
                   help="where to send the broadcast (default: %(default)s, the LAN)")
    p.add_argument("--port", type=int, default=DISCOVERY_PORT,
                   help="UDP port (default: %(default)s)")


def public_server_url(url):
    """``url`` checked for a broadcast: a server URL without credentials."""
    try:
        url = configuration.check_server_url(url)
    except configuration.ConfigError as e:
        raise UserError(str(e), 2)
    if configuration.without_credentials(url) != url:
        raise UserError("the server URL goes to every device on the LAN: give it without "
                        "user name and password", 2)
    return url


def find_devices(url, args, adopt=False):
    """Broadcast ``url`` as ``args`` say (timeout, address, port); the answers
    as rows (:func:`answer_row`), sorted by MacID."""
    if args.timeout < 0 or not 0 < args.port < 65536:
        raise UserError("--timeout must not be negative and --port must be 1..65535", 2)
    message = {"server": url, "adopt": True} if adopt else None
    try:
        answers = broadcast_message(url, send_data=message, timeout=args.timeout,
                                    address=args.address, port=args.port)
    except OSError as e:
        raise UserError("cannot broadcast to %s:%d: %s" % (args.address, args.port,
                                                           e.strerror or e))
    rows = [answer_row(ip, port, a) for (ip, port), a in answers.items()]
    return sorted(rows, key=lambda r: (str(r["MacID"]), r["ip"], r["port"]))


def answer_row(ip, port, answer):
    """One device's answer, checked: the fingerprint is computed here from
    the claim (a claim of another form counts as none)."""
    macid = answer.get("MacID")
    macid = macid if type(macid) is int and 0 <= macid < 2 ** 48 else None
    claim = check_claim(answer.get("claim")) if macid is not None else None
    text = {k: answer.get(k) if isinstance(answer.get(k), str) else None
            for k in ("hostname", "version", "server", "password")}
    return dict(text, ip=ip, port=port, MacID=macid,
                mac=mac_address(macid) if macid is not None else None, claim=claim,
                fingerprint=fingerprint(macid, claim) if claim else None)


def cmd_discover(args):
    url = public_server_url(args.server)
    rows = find_devices(url, args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no device answered within %g s" % args.timeout)
        return 0
    print("%-16s %-6s %-16s %-18s %-16s %-8s %-13s %s" % (
        "IP", "PORT", "MACID", "MAC", "HOST", "VERSION", "FINGERPRINT", "SERVER"))
    for r in rows:
        print("%-16s %-6d %-16s %-18s %-16s %-8s %-13s %s" % (
            r["ip"], r["port"], r["MacID"], r["mac"], r["hostname"] or "-",
            r["version"] or "-", r["fingerprint"] or "none", r["server"] or "none (waiting)"))
    return 0
