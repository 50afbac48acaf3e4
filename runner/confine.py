"""Process set-up done before any user code runs.

Tie the worker's life to the supervisor, name it for ``ps``, apply resource
limits and reset the signal state inherited through exec.
"""
import faulthandler
import os
import resource
import signal
import sys


def set_parent_death_signal(sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` when the parent (thread) dies.

    No standard-library wrapper exists for prctl(2), hence ctypes.  Returns
    False where it is unavailable; the getppid() check still applies.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError, ImportError):
        return False


def set_title(title):
    """Show ``title`` in ps/top (/proc/pid/cmdline and comm) if possible.

    SPT_NOENV keeps setproctitle inside the argv area: by default it also
    overwrites the environment block, which would hide HIMBEERECOUCH_TAG in
    /proc/<pid>/environ from the supervisor and the guardian.  The
    supervisor passes the title on the command line to make room for it.
    """
    os.environ["SPT_NOENV"] = "1"
    try:
        import setproctitle

        setproctitle.setproctitle(title.replace("\0", " "))
        return True
    except ImportError:
        return False
    finally:
        # Read once when setproctitle starts up; user code need not see it
        # (unsetenv leaves the block that /proc/<pid>/environ shows alone).
        os.environ.pop("SPT_NOENV", None)


def apply_limits(limits):
    """Apply ``{"memory_mb", "cpu_seconds", "nofile"}`` as rlimits; None = keep.

    Soft and hard limits are both lowered so user code cannot raise them
    again; nothing is ever raised above the inherited hard limit.
    """
    def lower(kind, soft, hard):
        _, old_hard = resource.getrlimit(kind)
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(kind, (soft, hard))

    if limits.get("memory_mb"):
        size = limits["memory_mb"] * 1024 * 1024
        lower(resource.RLIMIT_AS, size, size)
    if limits.get("cpu_seconds"):
        # SIGXCPU at the soft limit (a clear "CPU time limit exceeded" exit),
        # SIGKILL a little later if the code catches it.
        seconds = limits["cpu_seconds"]
        lower(resource.RLIMIT_CPU, seconds, seconds + 5)
    if limits.get("nofile"):
        lower(resource.RLIMIT_NOFILE, limits["nofile"], limits["nofile"])


def reset_signal_mask():
    """Unblock every signal: exec keeps the supervisor's blocked set."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def supervisor_alive(supervisor_pid):
    """False if our parent is no longer the supervisor that started us.

    Closes the race between fork and prctl(PR_SET_PDEATHSIG): if the
    supervisor died before the latter, we were re-parented already.
    """
    return os.getppid() == supervisor_pid


def enable_faulthandler():
    """Print a Python traceback of every thread on SIGSEGV/SIGBUS/SIGABRT/..."""
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
