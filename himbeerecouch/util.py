"""The old tool's helpers, kept for code that imports them.

``getmacid()`` and ``getpassword()`` give this device's id and password
exactly as the old ``himbeerecouch.util`` did (see himbeerecouch.identity,
which has the formulas); ``getserial()`` the board serial they use.
"""
from . import identity


def getmacid(interface=None):
    """The MacID: the MAC address of ``interface`` (default eth0) as an integer."""
    return identity.read_macid(interface)


def getserial():
    """Characters 10..26 of the ``Serial`` line of /proc/cpuinfo (``ERROR000000000`` if none)."""
    return identity.read_serial()


def getpassword(interface=None):
    """``sha1(str(getmacid()) + getserial()).hexdigest()``."""
    return identity.device_password(getmacid(interface), getserial())
