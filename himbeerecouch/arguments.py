"""Argument types and options that the agent's and the operator's commands share."""
import argparse
import re

from .identity import macid_from_mac

# A MAC address as people write it: b8:27:eb:00:00:01, B8-27-EB-00-00-01, b827eb000001.
# Twelve bare digits without a letter are a decimal MacID, not a MAC address.
_MAC = re.compile(r"[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}"
                  r"|(?=[0-9a-f]*[a-f])[0-9a-f]{12}", re.IGNORECASE)
# The start of ``--device b8:27:eb:00:00:01:PASSWORD`` (provision).
MAC_WITH_COLONS = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}(?=:|$)", re.IGNORECASE)

DEVICE_HELP = ("the device: its MacID (202481587074134) or MAC address "
               "(b8:27:eb:12:34:56, B8-27-EB-12-34-56, b827eb123456)")


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def macid(text):
    """argparse type of ``--macid`` and ``--device``: a MacID (decimal, or 0x...
    hex) or a MAC address in one of the usual forms."""
    text = text.strip()
    if _MAC.fullmatch(text):
        return macid_from_mac(text)
    try:
        value = int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not a MacID (an integer) or a MAC address (b8:27:eb:12:34:56)"
            % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("a MacID is not negative")
    return value


class DeviceName(str):
    """A device given by the name of its device document: the tools look it up."""


def device_reference(text):
    """argparse type of the operator's ``--device``: a MacID, a MAC address, or
    the name a device document gives a device (:class:`DeviceName`)."""
    try:
        return macid(text)
    except argparse.ArgumentTypeError:
        # Hex digits and separators only: a mistyped MacID or MAC address, not a name.
        if re.fullmatch(r"[0-9a-fx:\-\s]*", text, re.IGNORECASE):
            raise
        return DeviceName(text.strip())


def add_device_argument(p, **options):
    """``--device MACID`` of the operator's commands, required unless said otherwise."""
    options.setdefault("required", True)
    p.add_argument("--device", type=device_reference, metavar="MACID",
                   help=DEVICE_HELP + ", or its name", **options)


def add_identity_options(p):
    p.add_argument("--macid", type=macid, help="device id, a MacID or a MAC address "
                                               "(default: from the MAC address of --interface)")
    p.add_argument("--serial", help="board serial (default: from /proc/cpuinfo)")
    p.add_argument("--interface", help="network interface whose MAC is the device id "
                                       "(default: eth0)")


def add_ca_file_option(p):
    p.add_argument("--ca-file", metavar="PATH",
                   help="PEM file of the certificate authority an HTTPS server's certificate "
                        "must verify with (default: the system's authorities)")
