"""Who this device is: its MacID and the password it logs in with.

Both formulas are the old tool's, to the bit: existing CouchDB user documents
were made with them.  The MacID is the MAC address of a network interface read
as one hexadecimal integer; the password is the SHA-1 of the MacID's decimal
digits followed by the board's serial number.
"""
import hashlib
import os

DEFAULT_INTERFACE = "eth0"
NO_SERIAL = "ERROR000000000"


class IdentityError(RuntimeError):
    """The device id cannot be determined (no such interface, unreadable file)."""


def macid_from_mac(mac):
    """``"b8:27:eb:12:34:56"`` -> ``202481587074134``."""
    digits = mac.strip().replace(":", "").replace("-", "")
    if len(digits) != 12:
        raise IdentityError("not a MAC address: %r" % mac)
    try:
        return int(digits, 16)
    except ValueError:
        raise IdentityError("not a MAC address: %r" % mac) from None


def mac_address(macid):
    """``202481587074134`` -> ``"b8:27:eb:12:34:56"``."""
    return ":".join("%02x" % b for b in int(macid).to_bytes(6, "big"))


def read_macid(interface=None, sysfs="/sys/class/net"):
    """The MacID of ``interface`` (``eth0`` by default)."""
    interface = interface or DEFAULT_INTERFACE
    path = os.path.join(sysfs, interface, "address")
    try:
        with open(path) as f:
            return macid_from_mac(f.read())
    except OSError as e:
        raise IdentityError("cannot read the MAC address of %s: %s" % (interface, e.strerror)) from None


def read_serial(cpuinfo="/proc/cpuinfo"):
    """Characters 10..26 of the ``Serial`` line of /proc/cpuinfo, as the old tool read them."""
    try:
        with open(cpuinfo, errors="replace") as f:
            for line in f:
                if line[0:6] == "Serial":
                    return line[10:26]
    except OSError:
        pass
    return NO_SERIAL


def device_password(macid, serial):
    """``sha1(str(MacID) + serial).hexdigest()``."""
    return hashlib.sha1((str(int(macid)) + serial).encode("utf-8")).hexdigest()


def device_user(macid):
    """The CouchDB user name of a device."""
    return str(int(macid))


class Identity:
    """This device: MacID, serial, CouchDB user name and password."""

    def __init__(self, macid, serial):
        self.macid = int(macid)
        self.serial = serial
        self.user = device_user(self.macid)
        self.password = device_password(self.macid, serial)

    def __repr__(self):  # never show the password
        return "Identity(macid=%d)" % self.macid


def resolve(macid=None, serial=None, interface=None):
    """The identity from overrides, else from the hardware."""
    if macid is None:
        macid = read_macid(interface)
    if serial is None:
        serial = read_serial()
    return Identity(macid, serial)
