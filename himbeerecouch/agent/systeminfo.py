"""What the heartbeat says about the device itself: ip, load, memory, disk, temperature.

Every reading is best effort: a value that cannot be read is ``None``, never
an exception (a Pi without a thermal zone, a container without /sys).
"""
import os
import socket
import time
from urllib.parse import urlsplit

import psutil

THERMAL = "/sys/class/thermal/thermal_zone0/temp"
BOOT = psutil.boot_time()


def ip_address(interface=None, server_url=None):
    """The IPv4 address of ``interface``; else the one this host uses to reach the server."""
    if interface:
        for addr in psutil.net_if_addrs().get(interface, []):
            if addr.family == socket.AF_INET:
                return addr.address
    if server_url:
        parts = urlsplit(server_url)
        try:
            # connect() on a UDP socket only picks a route: nothing is sent.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((parts.hostname, parts.port or 80))
                return s.getsockname()[0]
        except OSError:
            pass
    return None


def cpu_temperature(path=THERMAL):
    try:
        with open(path) as f:
            return round(int(f.read().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def device_info(state_dir):
    info = {"hostname": socket.gethostname(), "system_uptime": int(time.time() - BOOT)}
    try:
        info["load"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["load"] = None
    try:
        info["memory_free_mb"] = round(psutil.virtual_memory().available / 2**20, 1)
    except Exception:
        info["memory_free_mb"] = None
    try:
        info["disk_free_mb"] = round(psutil.disk_usage(state_dir).free / 2**20, 1)
    except OSError:
        info["disk_free_mb"] = None
    info["cpu_temperature"] = cpu_temperature()
    return info


class ProcessMeter:
    """CPU percent and RSS of worker processes, remembered between calls.

    psutil measures CPU percent between two calls on the same Process object,
    so the objects are kept by pid (and dropped when the pid is gone).
    """

    def __init__(self):
        self._procs = {}

    def measure(self, pid):
        if pid is None:
            return None, None
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
                proc.cpu_percent(None)
                return None, round(proc.memory_info().rss / 2**20, 1)
            return (round(proc.cpu_percent(None), 1),
                    round(proc.memory_info().rss / 2**20, 1))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self._procs.pop(pid, None)
            return None, None

    def forget_except(self, pids):
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
