"""Start a worker interpreter.

The worker is ``python -I -u -m himbeerecouch.runner`` in its own session,
with a minimal environment, stdin from /dev/null, stdout and stderr on
pipes, and two more pipes: the start-up data (in) and the status lines
(out).  Call :func:`spawn_worker` from the supervisor's main thread: the
worker's PR_SET_PDEATHSIG fires when the *thread* that created it ends, so
a worker spawned from a short-lived thread would be killed with it.

A *spare* (:func:`spawn_spare`) is the same interpreter started before its
document is known: it has imported the runner and waits on a start-up pipe
that is still open; :func:`hand_over` fills and closes that pipe, and the
spare becomes the worker.  It serves that one document and no other.
"""
import fcntl
import json
import os
import pwd
import subprocess
import sys

RUNNER_MODULE = "himbeerecouch.runner"
SPARE_TITLE = "himbeerecouch: spare"
TITLE_ROOM = 200  # characters of a worker's title a spare can show
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; named in Python >= 3.10


class WorkerProcess:
    """A started worker: its Popen and the parent's ends of its pipes.

    ``status``, ``stdout`` and ``stderr`` are raw, non-blocking file
    descriptors for the supervisor's event loop; ``close()`` closes them
    (reaping the process is up to the caller, through ``popen``).
    """

    def __init__(self, popen, status, stdout, stderr, tag=None, startup=None):
        self.popen = popen
        self.startup = startup  # a spare's open start-up pipe (write end), else None
        self.pid = popen.pid
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.tag = tag

    def close(self):
        """Close the pipe ends (idempotent)."""
        for attr in ("startup", "status", "stdout", "stderr"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __repr__(self):
        return "<WorkerProcess pid=%s tag=%r>" % (self.pid, self.tag)


def _close_all(fds):
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _prefilled_pipe(data):
    """A pipe whose buffer already holds ``data`` and whose write end is closed.

    Filled before the child exists, so a child that dies without reading
    can neither block the supervisor nor raise SIGPIPE/EPIPE in it.
    """
    read_fd, write_fd = os.pipe()
    try:
        _fill_and_close(write_fd, data)
    except BaseException:
        os.close(read_fd)
        raise
    return read_fd


def _fill_and_close(write_fd, data):
    """Write all of ``data`` into a pipe without ever blocking; close it.

    The pipe is first made large enough to hold ``data`` whole, so a reader
    that is slow (or stopped) cannot block the supervisor: the write then
    fails with BlockingIOError instead.
    """
    try:
        if len(data) > 65536:
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, len(data))  # EPERM/EBUSY if too big
        os.set_blocking(write_fd, False)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    finally:
        os.close(write_fd)


def switch_user(user):
    """Popen arguments that switch to ``user`` and its own groups only."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    if os.geteuid() != 0 and entry.pw_uid == os.geteuid():
        return {}  # already that user; setgroups() would need privileges
    # The user's own supplementary groups (on a Pi: gpio, i2c, spi, ...),
    # never the supervisor's.
    groups = [g for g in os.getgrouplist(user, entry.pw_gid) if g != entry.pw_gid]
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}


def _with_defaults(startup):
    """A copy of the start-up data with ``supervisor_pid`` and ``title`` filled in."""
    startup = dict(startup)
    startup.setdefault("supervisor_pid", os.getpid())
    startup.setdefault("title", "himbeerecouch: %s [%s]" % (
        startup.get("name"), startup.get("doc_id")))
    return startup


def _payload(startup):
    return json.dumps(startup).encode("utf-8")


def spawn_worker(startup, env, cwd, user=None):
    """Start the worker described by ``startup``; return a :class:`WorkerProcess`.

    ``startup`` is the start-up data (see himbeerecouch.runner.startup);
    ``supervisor_pid`` defaults to this process.  ``env`` is used as is
    (build it with sandbox.environment.worker_environment).  Must be called
    from the main thread (see the module docstring).
    """
    startup = _with_defaults(startup)
    startup_r = _prefilled_pipe(_payload(startup))
    return _spawn(startup_r, None, ["--title", startup["title"].replace("\0", " ")],
                  env, cwd, user)


def spawn_spare(env, cwd, user=None):
    """Start a spare runner that waits for its start-up data; a :class:`WorkerProcess`.

    Same interpreter, session, environment, working folder and user as
    :func:`spawn_worker`; only the start-up pipe stays open (``startup``).
    Main thread only, like spawn_worker.
    """
    startup_r, startup_w = os.pipe()  # both non-inheritable; the child gets startup_r
    # Room in the argv area for the title it will have as a worker (longer
    # titles are cut there); the spare shows SPARE_TITLE while it waits.
    args = ["--spare", "--title", SPARE_TITLE.ljust(TITLE_ROOM)]
    try:
        return _spawn(startup_r, startup_w, args, env, cwd, user)
    except BaseException:
        os.close(startup_w)
        raise


def hand_over(spare, startup):
    """Give ``spare`` its document: write the start-up data and close the pipe.

    Raises OSError (BrokenPipeError: the spare is dead; BlockingIOError:
    it does not read) and leaves the spare unusable either way.
    """
    write_fd, spare.startup = spare.startup, None
    if write_fd is None:
        raise ValueError("this spare was already handed a document")
    _fill_and_close(write_fd, _payload(_with_defaults(startup)))


def _spawn(startup_r, startup_w, title_args, env, cwd, user):
    """Popen the runner with ``startup_r`` as its start-up pipe (which this closes)."""
    identity = switch_user(user)
    fds = [startup_r]
    try:
        status_r, status_w = os.pipe()
        fds += [status_r, status_w]
        out_r, out_w = os.pipe()
        fds += [out_r, out_w]
        err_r, err_w = os.pipe()
        fds += [err_r, err_w]
        # --title only makes room in the argv area for the process title,
        # which the runner may not write over its environment (that would
        # hide HIMBEERECOUCH_TAG from /proc/<pid>/environ).
        argv = [sys.executable, "-I", "-u", "-m", RUNNER_MODULE,
                "--startup-fd", str(startup_r), "--status-fd", str(status_w)] + title_args
        # No preexec_fn: Popen can then use vfork/posix_spawn, which matters
        # for a supervisor process that has grown large.
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
            start_new_session=True, close_fds=True, pass_fds=(startup_r, status_w),
            env=env, cwd=cwd, **identity)
    except PermissionError as exc:
        _close_all(fds)
        if not identity:
            raise
        # Usually the interpreter or the package lives where the worker
        # user cannot reach it (e.g. a virtualenv under /root): say so.
        raise PermissionError(exc.errno, "worker user %r cannot run %s in %s: %s" % (
            user, sys.executable, cwd, exc.strerror)) from exc
    except BaseException:
        _close_all(fds)
        raise
    # The child has its copies; keeping ours would hide its EOFs from us.
    _close_all((startup_r, status_w, out_w, err_w))
    for fd in (status_r, out_r, err_r):
        os.set_blocking(fd, False)
    return WorkerProcess(popen, status_r, out_r, err_r, tag=env.get("HIMBEERECOUCH_TAG"),
                         startup=startup_w)
