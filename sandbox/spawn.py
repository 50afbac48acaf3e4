"""Start a worker interpreter.

The worker is ``python -I -u -m himbeerecouch.runner`` in its own session,
with a minimal environment, stdin from /dev/null, stdout and stderr on
pipes, and two more pipes: the start-up data (in) and the status lines
(out).  Call :func:`spawn_worker` from the supervisor's main thread: the
worker's PR_SET_PDEATHSIG fires when the *thread* that created it ends, so
a worker spawned from a short-lived thread would be killed with it.
"""
import fcntl
import json
import os
import pwd
import subprocess
import sys

RUNNER_MODULE = "himbeerecouch.runner"
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; named in Python >= 3.10


class WorkerProcess:
    """A started worker: its Popen and the parent's ends of its pipes.

    ``status``, ``stdout`` and ``stderr`` are raw, non-blocking file
    descriptors for the supervisor's event loop; ``close()`` closes them
    (reaping the process is up to the caller, through ``popen``).
    """

    def __init__(self, popen, status, stdout, stderr, tag=None):
        self.popen = popen
        self.pid = popen.pid
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.tag = tag

    def close(self):
        """Close the pipe ends (idempotent)."""
        for attr in ("status", "stdout", "stderr"):
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
        if len(data) > 65536:
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, len(data))  # EPERM/EBUSY if too big
        os.set_blocking(write_fd, False)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


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


def spawn_worker(startup, env, cwd, user=None):
    """Start the worker described by ``startup``; return a :class:`WorkerProcess`.

    ``startup`` is the start-up data (see himbeerecouch.runner.startup);
    ``supervisor_pid`` defaults to this process.  ``env`` is used as is
    (build it with sandbox.environment.worker_environment).  Must be called
    from the main thread (see the module docstring).
    """
    startup = dict(startup)
    startup.setdefault("supervisor_pid", os.getpid())
    title = startup.setdefault("title", "himbeerecouch: %s [%s]" % (
        startup.get("name"), startup.get("doc_id")))
    payload = json.dumps(startup).encode("utf-8")
    identity = switch_user(user)

    fds = []
    try:
        startup_r = _prefilled_pipe(payload)
        fds.append(startup_r)
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
                "--startup-fd", str(startup_r), "--status-fd", str(status_w),
                "--title", title.replace("\0", " ")]
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
    return WorkerProcess(popen, status_r, out_r, err_r, tag=env.get("HIMBEERECOUCH_TAG"))
