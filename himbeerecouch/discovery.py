"""The discovery protocol on UDP port 53000, which both sides speak.

The operator broadcasts ``{"server": "http://host:5984"}``; every device that
listens answers ``{"MacID": ..., "password": ...}`` to the sender.  The
device's side is :mod:`himbeerecouch.agent.answer`, the operator's
:mod:`himbeerecouch.ops.discover`.
"""
import json

from . import config as configuration

DISCOVERY_PORT = 53000
MAX_DATAGRAM = 65000          # the old tool's limit, both ways


def parse_request(raw):
    """The server URL asked for in a datagram (may be invalid), or raise ValueError."""
    if len(raw) > MAX_DATAGRAM:
        raise ValueError("oversized (%d bytes, at most %d)" % (len(raw), MAX_DATAGRAM))
    try:
        message = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("server"), str):
        raise ValueError('not of the form {"server": "http://host:5984"}')
    return message["server"]


def valid_server(url):
    """``url`` cleaned up if a device may use it, else None."""
    try:
        return configuration.check_server_url(url.strip())
    except configuration.ConfigError:
        return None
