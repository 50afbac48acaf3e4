"""Starts and ends worker processes for the supervisor's loop.

The loop decides *when*; this module knows *how*: the private import folder,
the environment, the start-up data sent over the worker's pipe, the marker
that finds every process a worker started, and the cleanup of what an earlier
run of the supervisor left behind.  The mechanisms themselves live in the
sandbox package, at the boundary between supervisor and worker.

It also keeps one *spare*: a runner interpreter started ahead of time, with
its own tag, session, environment and (empty) import folder, that waits for
start-up data.  :meth:`Launcher.start` hands the next document to it rather
than starting an interpreter then, and starts the next spare at once.  A
spare serves one document only, so every document still gets a fresh
interpreter; its limits arrive with the start-up data, applied before any
user code runs.
"""
import itertools
import logging
import os
import pwd
import secrets
import subprocess
import sys
import time

import psutil

from ..sandbox import proctree
from ..sandbox.environment import worker_environment
from ..sandbox.guardian import tagged_pids
from ..sandbox.importdir import (fill_import_dir, make_import_dir, new_import_dir,
                                 remove_import_dir, remove_stale_import_dirs)
from ..sandbox.modules import BadModule
from ..sandbox.spawn import hand_over, spawn_spare, spawn_worker
from .worker import backoff_delay, describe_exit

log = logging.getLogger("himbeerecouch.launcher")

PROBE_TIMEOUT = 30.0

# Run as the worker user: can it reach the import folders, read the CA file
# (its get_database() verifies the server with it), and import the runner?
_PROBE_NO_ENTRY = 3
_PROBE_NO_CA = 4
_PROBE = """
import os, sys
try:
    os.chdir(sys.argv[1])
except OSError as e:
    sys.stderr.write(e.strerror + "\\n")
    sys.exit(%d)
os.chdir("/")
try:
    if len(sys.argv) > 2:
        open(sys.argv[2], "rb").close()
except OSError as e:
    sys.stderr.write(e.strerror + "\\n")
    sys.exit(%d)
import himbeerecouch.runner
""" % (_PROBE_NO_ENTRY, _PROBE_NO_CA)


def _first_closed(path, uid, gids):
    """The first folder on the way to ``path`` that ``uid`` may not search."""
    import stat

    current = "/"
    for part in [p for p in path.split(os.sep) if p]:
        try:
            st = os.stat(current)
        except OSError:
            return current
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return current
        current = os.path.join(current, part)
    return path


def _supervisor_is_gone(proc, tag):
    """Is the supervisor that started the tagged ``proc`` dead?

    A tag reads ``<macid>/<supervisor pid>-<token>/...``.  A live process
    with that pid is the supervisor only if it is older than ``proc`` (a
    reused pid belongs to a younger process) and is no zombie.
    """
    try:
        pid = int(tag.split("/")[1].split("-")[0])
    except (IndexError, ValueError):
        return True      # not a tag of ours: whatever made it is no supervisor
    try:
        supervisor = psutil.Process(pid)
        return (supervisor.status() == psutil.STATUS_ZOMBIE
                or supervisor.create_time() > proc.create_time())
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False     # cannot tell: leave it alone


class LaunchError(RuntimeError):
    """Workers cannot be started at all as configured; the message says why."""


def other_user(name, what, option):
    """The passwd entry of ``name``, as whom ``option`` runs something (a worker,
    a command); LaunchError unless it exists and this process may switch to it."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LaunchError("%s %r does not exist" % (what, name)) from None
    if os.geteuid() != 0:
        raise LaunchError("%s needs the supervisor to run as root" % option)
    return entry


class Spare:
    """A started runner waiting for its document: process, tag, import folder."""

    def __init__(self, process, tag, import_dir):
        self.process, self.tag, self.import_dir = process, tag, import_dir
        self.pid = process.pid


class Launcher:
    """Spawns the workers of one supervisor (one device)."""

    def __init__(self, macid, state_dir, database, worker_user=None, spare=True):
        self.macid = macid
        self.import_base = os.path.join(state_dir, "imports")
        self.import_prefix = "hbc-%d-" % macid
        # Every process of every worker of this device carries a tag that
        # starts with this prefix, even after it left the worker's session.
        self.device_prefix = "%d/" % macid
        # Unique per run: a guardian of an earlier run must never match our workers.
        self.run_prefix = "%s%d-%s/" % (self.device_prefix, os.getpid(), secrets.token_hex(4))
        self.state_dir = state_dir
        self.database = database          # {"url", "name", "user", "password"}
        self.user = None
        self.home = None
        self._serial = itertools.count(1)
        self.use_spare = spare
        self.spare = None                 # the waiting Spare, if any
        self._spare_deaths = 0            # spares that died unused, in a row
        self._spare_not_before = 0.0      # monotonic time: no new spare before
        if worker_user:
            self.set_worker_user(worker_user)
        os.makedirs(self.import_base, mode=0o711, exist_ok=True)
        if self.user is not None:
            self._open_for_worker_user()

    def set_worker_user(self, name):
        """Run workers as ``name``; only possible when the supervisor is root."""
        entry = other_user(name, "worker user", "--worker-user")
        self.user, self.home = entry, entry.pw_dir

    def _open_for_worker_user(self):
        """Let the worker user reach its import folders, and nothing else here.

        The state folder and the import base become 0711: another user may
        pass through to the folder of its own worker (0700, its own), but may
        list neither, and the supervisor's files in them (document cache,
        command results) stay 0600/0700.  ``makedirs`` modes are cut by the
        umask (systemd's ``UMask=0077`` would lock the worker out), so set
        them explicitly.  Then prove it: start the worker interpreter once as
        that user in the import base, reading the CA file (``--ca-file``:
        the workers verify the server with it); a worker user that cannot even start
        is a configuration error to report now, in one clear line, rather
        than a worker failing with "Permission denied" forever.
        """
        for folder in (self.state_dir, self.import_base):
            try:
                if os.stat(folder).st_uid == os.geteuid():
                    os.chmod(folder, 0o711)
            except OSError as e:
                raise LaunchError("cannot prepare %s for the worker user: %s"
                                  % (folder, e.strerror)) from None
        name = self.user.pw_name
        groups = [g for g in os.getgrouplist(name, self.user.pw_gid) if g != self.user.pw_gid]
        ca_file = (self.database or {}).get("ca_file")
        argv = [sys.executable, "-I", "-c", _PROBE, self.import_base]
        if ca_file:
            argv.append(ca_file)
        try:
            probe = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=groups,
                close_fds=True, timeout=PROBE_TIMEOUT)
        except OSError as e:
            raise LaunchError(
                "worker user %s cannot run the interpreter %s (%s): install himbeerecouch "
                "where that user can read and execute it (not under /root)"
                % (name, sys.executable, e.strerror)) from None
        except subprocess.TimeoutExpired:
            raise LaunchError("the interpreter did not start as worker user %s within %.0f s"
                              % (name, PROBE_TIMEOUT)) from None
        lines = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        last = lines[-1] if lines else "exit code %d" % probe.returncode
        if probe.returncode == _PROBE_NO_ENTRY:
            closed = _first_closed(self.import_base, self.user.pw_uid,
                                   set(groups) | {self.user.pw_gid})
            raise LaunchError(
                "worker user %s cannot enter %s (%s; %s is not searchable by it): every "
                "folder above the state folder must be, or choose another --state-dir"
                % (name, self.import_base, last, closed))
        if probe.returncode == _PROBE_NO_CA:
            raise LaunchError("worker user %s cannot read the CA file %s (%s): its workers "
                              "could not verify the server; make the file readable by it"
                              % (name, ca_file, last))
        if probe.returncode != 0:
            raise LaunchError("as worker user %s, %s cannot import himbeerecouch: %s"
                              % (name, sys.executable, last))

    def cleanup_leftovers(self):
        """End the processes and remove the import folders of earlier runs.

        Only those whose supervisor is dead: the device lock already keeps a
        second agent from starting, and this check makes sure that no code
        path can ever end the workers of a supervisor that still runs.
        """
        killed = proctree.kill_tagged(self.device_prefix, select=_supervisor_is_gone)
        if killed:
            log.warning("ended %d process(es) left behind by an earlier run: %s",
                        len(killed), " ".join(map(str, killed)))
        removed = remove_stale_import_dirs(self.import_base, self.import_prefix)
        if removed:
            log.info("removed %d import folder(s) of an earlier run", len(removed))

    @property
    def _uid(self):
        return self.user.pw_uid if self.user else None

    @property
    def _user_name(self):
        return self.user.pw_name if self.user else None

    def _new_tag(self):
        # The trailing slash keeps one tag from being the prefix of another.
        return "%s%d/" % (self.run_prefix, next(self._serial))

    def _environment(self, tag, import_dir):
        return worker_environment(tag, home=self.home or import_dir, user=self._user_name)

    def _startup(self, spec, import_dir):
        return {
            "name": spec.name,
            "doc_id": spec.doc_id,
            "rev": spec.rev,
            "import_dir": import_dir,
            "main_module": "main",
            "title": "himbeerecouch: %s [%s]" % (spec.name, spec.doc_id),
            "supervisor_pid": os.getpid(),
            "limits": spec.limits,
            "database": self.database,
        }

    def start(self, worker):
        """Start ``worker``: hand it to the spare, or spawn its interpreter.

        Sets its process, tag and import folder.  Raises BadModule (the
        document cannot run) or OSError (the device cannot start it now:
        full disk, no memory, too many processes).
        """
        if self._start_on_spare(worker):
            return
        spec = worker.spec
        import_dir = make_import_dir(self.import_base, self.import_prefix, spec.modules,
                                     owner_uid=self._uid)
        tag = self._new_tag()
        try:
            process = spawn_worker(self._startup(spec, import_dir),
                                   self._environment(tag, import_dir), cwd=import_dir,
                                   user=self._user_name)
        except BaseException:
            remove_import_dir(import_dir)
            raise
        worker.process, worker.tag, worker.import_dir = process, tag, import_dir
        self.keep_spare()

    def _start_on_spare(self, worker):
        """Hand ``worker``'s document to the spare; False when there is none to use."""
        spare = self._live_spare()
        if spare is None:
            return False
        try:
            fill_import_dir(spare.import_dir, worker.spec.modules, owner_uid=self._uid)
        except BadModule:
            raise             # nothing written: the spare waits for the next document
        except BaseException:
            self._discard_spare()
            raise
        self.spare = None
        try:
            hand_over(spare.process, self._startup(worker.spec, spare.import_dir))
        except OSError as e:
            # Died or stopped since _live_spare() looked: start it cold instead.
            log.warning("the spare runner (pid %d) could not take a document (%s); "
                        "starting one", spare.pid, e.strerror or e)
            self._end_spare(spare)
            return False
        self._spare_deaths = 0
        worker.process, worker.tag, worker.import_dir = spare.process, spare.tag, spare.import_dir
        self.keep_spare()
        return True

    def _live_spare(self):
        """The spare if it still waits; a dead one is ended and cleaned up."""
        spare = self.spare
        if spare is not None and spare.process.popen.poll() is not None:
            log.warning("the spare runner (pid %d) ended unused: %s", spare.pid,
                        describe_exit(spare.process.popen.returncode))
            self._discard_spare()
            self._back_off_spare()
            spare = None
        return spare

    def keep_spare(self):
        """Start a spare if there should be one; return when to look again, or None.

        Call from the main thread (the spare's parent-death signal is tied
        to it) whenever a child may have ended, and at the returned time.
        """
        if not self.use_spare or self._live_spare() is not None:
            return None
        now = time.monotonic()
        if now < self._spare_not_before:
            return self._spare_not_before
        try:
            import_dir = new_import_dir(self.import_base, self.import_prefix,
                                        owner_uid=self._uid)
        except OSError as e:
            return self._spare_failed(e)
        tag = self._new_tag()
        try:
            process = spawn_spare(self._environment(tag, import_dir), cwd=import_dir,
                                  user=self._user_name)
        except OSError as e:
            remove_import_dir(import_dir)
            return self._spare_failed(e)
        self.spare = Spare(process, tag, import_dir)
        return None

    def _spare_failed(self, error):
        log.warning("cannot start a spare runner: %s", error.strerror or error)
        return self._back_off_spare()

    def _back_off_spare(self):
        """A spare that keeps dying (a broken interpreter, a full disk) must
        not cost a start every loop: wait like a crashing worker."""
        self._spare_deaths += 1
        self._spare_not_before = time.monotonic() + backoff_delay(self._spare_deaths)
        return self._spare_not_before

    def _discard_spare(self):
        spare, self.spare = self.spare, None
        if spare is not None:
            self._end_spare(spare)

    def _end_spare(self, spare):
        """Kill a spare that will serve no document, reap it, remove its folder.

        It ran no user code, so it started nothing: the one process is all.
        """
        spare.process.popen.kill()
        spare.process.popen.wait()
        spare.process.close()
        remove_import_dir(spare.import_dir)

    def set_spare(self, enabled):
        """Keep a spare from now on, or end the one there is (at stop, on SIGHUP)."""
        self.use_spare = enabled
        if not enabled:
            self._discard_spare()

    def spare_state(self):
        """What the heartbeat says of the spare: ``{"pid"}`` or None."""
        spare = self._live_spare() if self.use_spare else None
        return {"pid": spare.pid} if spare else None

    def interrupt(self, worker, signum):
        proctree.signal_worker(worker.pid, signum)

    def kill(self, worker):
        """SIGKILL the whole process tree of ``worker`` (escaped grandchildren included)."""
        return proctree.kill_tree(worker.pid, worker.tag)

    def cleanup(self, worker):
        """After the worker's process ended: end what it left behind, remove its folder."""
        # The worker is reaped: its pid may already be reused, so only the tag
        # (inherited by everything it started) finds what it left behind.
        # The full search (psutil, run twice) costs 10-25 ms with 100 processes,
        # between a worker's exit and its restart: run it only when the cheap
        # /proc scan finds something that carries the tag.
        leftovers = (proctree.kill_tagged(worker.tag)
                     if worker.tag and tagged_pids(worker.tag) else [])
        if leftovers:
            log.warning("%s: ended %d process(es) it left behind", worker.name, len(leftovers),
                        extra={"doc_id": worker.doc_id})
        if worker.process:
            worker.process.close()
        if worker.import_dir:
            remove_import_dir(worker.import_dir)
        worker.process = worker.tag = worker.import_dir = None
        return leftovers
