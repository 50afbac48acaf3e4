"""Find and kill every process that belongs to a worker.

A worker's processes are: the worker, its descendants, every process of its
session (sid == worker pid: they may have been re-parented to init), and
every process whose environment carries the worker's HIMBEERECOUCH_TAG
(even those that called setsid() and double-forked).  Killing freezes them
with SIGSTOP first, so that none can fork faster than we kill, then sends
SIGKILL, and searches again until nothing is left.
"""
import os
import signal
import time

import psutil

from himbeerecouch.sandbox.environment import TAG_VARIABLE

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)


def _protected():
    """This process and its ancestors: never ours to kill."""
    pids = {os.getpid()}
    try:
        for parent in psutil.Process().parents():
            pids.add(parent.pid)
    except _GONE:
        pass
    return pids


def _tag_of(proc):
    try:
        return proc.environ().get(TAG_VARIABLE)
    except (psutil.Error, OSError):
        return None


def _sid_of(pid):
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except _GONE:
        return False


def tree(pid, tag):
    """The processes of the worker ``pid`` tagged ``tag`` (see module doc)."""
    protected = _protected()
    found = {}
    try:
        root = psutil.Process(pid)
        # Trust the pid only while it is still our child (even a zombie pins
        # the number) or carries the tag: a reaped worker's pid may already
        # belong to somebody else.
        if root.ppid() == os.getpid() or (tag and _tag_of(root) == tag):
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    except _GONE:
        pass
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid in protected:
            continue
        # The kernel keeps a session id allocated while any member lives, so
        # sid == pid identifies the worker's session even after it died.
        if _sid_of(proc.pid) == pid or (tag and _tag_of(proc) == tag):
            found[proc.pid] = proc
    for pid_ in protected:
        found.pop(pid_, None)
    return list(found.values())


def find_tagged(prefix, select=None):
    """Every process whose HIMBEERECOUCH_TAG starts with ``prefix`` (and for
    which ``select(proc, tag)`` is true, when given)."""
    if not prefix:
        raise ValueError("an empty tag prefix would match every worker")
    protected = _protected()
    found = []
    for proc in psutil.process_iter():
        if proc.pid in protected:
            continue
        tag = _tag_of(proc)
        if tag is not None and tag.startswith(prefix) and (select is None or select(proc, tag)):
            found.append(proc)
    return found


def _signal(proc, sig):
    try:
        proc.send_signal(sig)  # psutil checks the pid was not reused
        return True
    except _GONE:
        return False


def _kill_all(finder, deadline, reap=False, spare=None):
    """Freeze, kill and re-search with ``finder()`` until nothing is left.

    ``reap``: wait for those of our own children that are not ``spare``.
    """
    end = time.monotonic() + deadline
    killed = set()
    while True:
        # Freeze: stop what we find, search again, until a search finds
        # nothing new; stopped processes cannot fork any more.
        stopped = {}
        while time.monotonic() < end:
            new = [p for p in finder() if p.pid not in stopped and _alive(p)]
            if not new:
                break
            for proc in new:
                if _signal(proc, signal.SIGSTOP):
                    stopped[proc.pid] = proc
        for proc in stopped.values():
            if _signal(proc, signal.SIGKILL):
                killed.add(proc.pid)
        if reap:
            _reap(stopped.values(), spare)
        left = [p for p in finder() if _alive(p)]
        if not left or time.monotonic() >= end:
            return sorted(killed)
        time.sleep(0.01)


def _reap(procs, spare):
    """Wait for our own children among ``procs``.

    Those are grandchildren re-parented to us if we are a child subreaper.
    ``spare`` (the worker) is left alone: its Popen must get the exit status.
    """
    me = os.getpid()
    for proc in procs:
        if proc.pid == spare:
            continue
        try:
            if proc.ppid() != me:
                continue
            proc.wait(timeout=1)
        except (psutil.Error, ChildProcessError):
            pass


def kill_tree(pid, tag, deadline=5.0):
    """SIGKILL the worker ``pid`` and all its processes; return the pids killed.

    The worker itself is not reaped (its Popen does that).  Returns once no
    live process is left or after ``deadline`` seconds.
    """
    return _kill_all(lambda: tree(pid, tag), deadline, reap=True, spare=pid)


def kill_tagged(prefix, deadline=5.0, select=None):
    """Kill every process tagged with ``prefix``* (leftovers of an earlier run),
    only those for which ``select(proc, tag)`` is true when it is given.

    Reaps nothing: leftovers are not our children, and if some are (the
    current run's workers), their Popen objects must get the exit status.
    """
    if not prefix:
        raise ValueError("an empty tag prefix would match every worker")
    return _kill_all(lambda: find_tagged(prefix, select), deadline)


def signal_worker(pid, sig):
    """Send ``sig`` to the worker ``pid`` only; False if it is gone."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
