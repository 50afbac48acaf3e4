"""Argument types and options that the agent's and the operator's commands share."""
import argparse


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def macid(text):
    """argparse type of ``--macid`` and ``--device``: a MacID (decimal, or 0x... hex)."""
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a MacID (an integer)" % text) from None


def add_identity_options(p):
    p.add_argument("--macid", type=macid, help="device id (default: from the MAC address)")
    p.add_argument("--serial", help="board serial (default: from /proc/cpuinfo)")
    p.add_argument("--interface", help="network interface whose MAC is the device id "
                                       "(default: eth0)")


def add_ca_file_option(p):
    p.add_argument("--ca-file", metavar="PATH",
                   help="PEM file of the certificate authority an HTTPS server's certificate "
                        "must verify with (default: the system's authorities)")
