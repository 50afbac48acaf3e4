"""One agent per device on a machine, whatever its state folder.

The lock is a listening Unix socket in the abstract namespace, named after the
MacID.  The kernel frees the name the moment its owner dies, however it dies
(SIGKILL included), it needs no folder that every possible agent can write
(a debugging run with ``--state-dir /tmp/x`` sees the service's lock), and a
second agent learns who holds it by connecting and reading the holder's pid
from the connection (``SO_PEERCRED``), which no file can fake or leave stale.

The holder accepts and drops such connections from its loop (``fileno`` and
``drain``), so that its listen queue never fills.  Abstract names belong to a
network namespace: agents in separate containers do not see each other.
"""
import os
import socket
import struct

_UCRED = struct.Struct("iII")    # pid, uid, gid


class DeviceBusy(RuntimeError):
    """Another live agent runs this device; ``pid`` is its process id (or None)."""

    def __init__(self, macid, pid):
        self.macid, self.pid = macid, pid
        who = "pid %d" % pid if pid else "a process this user may not see"
        super().__init__("another himbeerecouch agent for device %d is running (%s); "
                         "stop it first, or use another --macid" % (macid, who))


def lock_name(macid):
    return "\0himbeerecouch/device/%d" % macid


class DeviceLock:
    """Held for the supervisor's whole life; released by ``close`` or by death."""

    def __init__(self, macid):
        self.macid = macid
        self._sock = None

    def acquire(self):
        """Take the lock, or raise DeviceBusy naming the holder's pid."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)   # not inherited
        try:
            sock.bind(lock_name(self.macid))
        except OSError:
            sock.close()
            raise DeviceBusy(self.macid, holder_pid(self.macid)) from None
        sock.listen(8)
        sock.setblocking(False)
        self._sock = sock
        return self

    def fileno(self):
        return self._sock.fileno()

    def drain(self):
        """Accept and drop the connections of agents that asked who holds the lock."""
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.close()

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def holder_pid(macid, timeout=2.0):
    """The pid of the process that holds the lock of ``macid``, or None."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(lock_name(macid))
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    finally:
        probe.close()
    pid = _UCRED.unpack(raw)[0]
    return pid if pid > 0 and pid != os.getpid() else None
