"""The guardian: cleans up after a supervisor that died, however it died.

Run as ``python -I -m himbeerecouch.sandbox.guardian --prefix P
--import-base DIR --import-prefix Q`` with stdin a pipe whose write end only
the supervisor holds.  It waits for EOF on stdin, which the kernel delivers
when the supervisor is gone (even after SIGKILL, when no handler of the
supervisor's runs), then kills every process whose environment holds a
HIMBEERECOUCH_TAG starting with P and removes the folders DIR/Q*.

Standard library only and no psutil: it sits idle for the supervisor's
whole life on a small machine, so it must stay small.  Workers normally die
on their own through PR_SET_PDEATHSIG; the guardian catches what escaped
(processes that left the worker's session, double-forked daemons).
"""
import os
import signal
import sys
import time

TAG_VARIABLE = b"HIMBEERECOUCH_TAG"  # same as sandbox.environment.TAG_VARIABLE


def tagged_pids(prefix):
    """Pids of the processes whose HIMBEERECOUCH_TAG starts with ``prefix``."""
    needle = TAG_VARIABLE + b"=" + prefix.encode("utf-8")
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
        if any(entry.startswith(needle) for entry in environ.split(b"\0")):
            found.append(int(name))
    return found


def kill_tagged(prefix, deadline=30.0):
    """SIGSTOP then SIGKILL every tagged process, until none is left."""
    end = time.monotonic() + deadline
    killed = set()
    while time.monotonic() < end:
        # Freeze first so that nothing forks while we search; repeat the
        # search until it finds nothing new, then kill the lot.
        stopped = set()
        while time.monotonic() < end:
            new = set(tagged_pids(prefix)) - stopped
            if not new:
                break
            for pid in new:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    pass
            stopped |= new
        if not stopped:
            break
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.02)  # a zombie's environ reads empty: dead ones vanish
    return sorted(killed)


def remove_import_dirs(base, prefix):
    """Remove the folders ``base/prefix*`` (not following symbolic links)."""
    import shutil

    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _parse(argv):
    values = {"--prefix": None, "--import-base": None, "--import-prefix": None}
    args = list(argv)
    while args:
        key, sep, value = args.pop(0).partition("=")
        if key not in values or (not sep and not args):
            raise SystemExit("himbeerecouch guardian: bad argument %r" % key)
        values[key] = value if sep else args.pop(0)
    if not values["--prefix"]:
        raise SystemExit("himbeerecouch guardian: --prefix is required and not empty")
    if values["--import-base"] and not values["--import-prefix"]:
        raise SystemExit("himbeerecouch guardian: --import-base needs --import-prefix")
    return values


def main(argv=None):
    values = _parse(sys.argv[1:] if argv is None else argv)
    # Only the end of the supervisor may end us: not a Ctrl-C on its
    # terminal, not the TERM/HUP sent to its process group.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        import setproctitle

        setproctitle.setproctitle("himbeerecouch: guardian %s" % values["--prefix"])
    except ImportError:
        pass
    while True:
        try:
            if not os.read(0, 4096):
                break
        except OSError:
            break  # stdin unusable: treat like EOF
    kill_tagged(values["--prefix"])
    if values["--import-base"]:
        remove_import_dirs(values["--import-base"], values["--import-prefix"])
    return 0


def start_guardian(prefix, import_base, import_prefix):
    """Start the guardian for this supervisor; return ``(popen, write_fd)``.

    Keep ``write_fd`` open for the supervisor's whole life and never pass it
    to a child (it is created non-inheritable): its closing is the signal.
    Use a ``prefix`` unique to this supervisor run, or the guardian of an
    earlier run could kill the workers of the next one.
    """
    if not prefix:
        raise ValueError("start_guardian needs a tag prefix")
    folders = []
    if import_base is not None:
        if not import_prefix or os.sep in import_prefix:
            raise ValueError("bad import folder prefix %r" % (import_prefix,))
        folders = ["--import-base", import_base, "--import-prefix", import_prefix]
    import subprocess  # here: the guardian process itself does not need it

    read_fd, write_fd = os.pipe()  # both non-inheritable
    try:
        popen = subprocess.Popen(
            [sys.executable, "-I", "-m", "himbeerecouch.sandbox.guardian",
             "--prefix", prefix] + folders,
            stdin=read_fd, stdout=subprocess.DEVNULL, start_new_session=True,
            close_fds=True, cwd="/",
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return popen, write_fd


if __name__ == "__main__":
    sys.exit(main())
