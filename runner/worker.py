"""The life of one worker: start-up data in, user ``main()`` run, status out.

Exit codes: 0 when ``main()`` returned (also after a quit request), 1 on an
uncaught exception, the code of a ``SystemExit`` raised by user code, 78
(EX_CONFIG) when the document cannot run as it is (a user module is not
valid Python, no callable ``main``, garbled start-up data) so that the
supervisor waits for the document to change, and 75 when the supervisor
was already gone at start-up.
"""
import _thread
import os
import signal
import sys

from himbeerecouch.runner import api, confine, failures
from himbeerecouch.runner.startup import EX_CONFIG, StartupError, parse_argv, read_startup
from himbeerecouch.runner.status import StatusChannel

EX_OK = 0
EX_ERROR = 1
EX_TEMPFAIL = 75  # the supervisor died before we were ready
SPARE_TITLE = "himbeerecouch: spare"  # as sandbox.spawn.SPARE_TITLE (no import: see __init__)


class _NotRunnable(Exception):
    """The document's modules cannot run as they are (exit 78)."""


def _say(message):
    sys.stderr.write("himbeerecouch.runner: %s\n" % message)
    sys.stderr.flush()


def run(argv):
    """Run one worker; return its exit code."""
    try:
        startup_fd, status_fd, spare = parse_argv(argv)
    except StartupError as exc:
        _say("bad command line: %s" % exc)
        return EX_CONFIG
    # First of all, before we can be orphaned unnoticed; the getppid()
    # check below covers a supervisor that died before this line.
    confine.set_parent_death_signal()
    try:
        channel = StatusChannel(status_fd)
    except OSError as exc:
        _say("bad status fd %d: %s" % (status_fd, exc.strerror))
        return EX_CONFIG
    # Early, so that a stop requested during start-up is not lost (user
    # code then sees should_quit() true from the start) and a stack dump
    # request does not kill us (SIGUSR1's default action).
    _install_signal_handlers(channel)
    if spare:
        confine.set_title(SPARE_TITLE)
    try:
        # A spare waits here, with the runner imported, until it is handed
        # its one document.
        data = read_startup(startup_fd)
    except StartupError as exc:
        _say("bad start-up data: %s" % exc)
        channel.send("fatal", error="bad start-up data: %s" % exc)
        return EX_CONFIG
    if not confine.supervisor_alive(data["supervisor_pid"]):
        _say("supervisor %d is gone; not starting" % data["supervisor_pid"])
        return EX_TEMPFAIL

    try:
        _prepare(data)
    except (OSError, ValueError) as exc:
        _say("cannot set up the worker: %s" % exc)
        channel.send("fatal", error="cannot set up the worker: %s" % exc)
        return EX_CONFIG
    return _run_user_code(data, channel)


def _prepare(data):
    """Confine the process and make the user API and modules available."""
    confine.reset_signal_mask()
    confine.set_title(data["title"])
    confine.apply_limits(data["limits"])
    confine.enable_faulthandler()
    sys.path.insert(0, data["import_dir"])
    # The import folder lives as long as this worker: caching bytecode in it
    # would only cost time and disk.
    sys.dont_write_bytecode = True
    api.configure_database(data["database"])
    api.install_builtins()


def _install_signal_handlers(channel):
    def on_sigint(signum, frame):
        # Quit, politely: no KeyboardInterrupt; user code polls
        # should_quit() or gets its notifications.  Later SIGINTs: nothing.
        if not api.should_quit():
            api.request_quit()

    def on_sigusr1(signum, frame):
        channel.send("stacks", text=_stacks(frame))

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGUSR1, on_sigusr1)


def _run_user_code(data, channel):
    name = data["main_module"]
    import_dir = data["import_dir"]
    try:
        main = _load_main(name, import_dir)
    except _NotRunnable as exc:
        _say(str(exc))
        channel.send("fatal", error=str(exc))
        return EX_CONFIG
    except BaseException as exc:
        return _outcome(exc, channel, import_dir)
    channel.send("running", pid=os.getpid())
    try:
        main()
    except BaseException as exc:
        return _outcome(exc, channel, import_dir)
    channel.send("done")
    return EX_OK


def _load_main(name, import_dir):
    try:
        __import__(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise _NotRunnable("no module %r in the import folder %s"
                               % (name, import_dir)) from None
        raise
    module = sys.modules[name]
    main = getattr(module, "main", None)
    if not callable(main):
        where = os.path.basename(getattr(module, "__file__", None) or name)
        what = "no main()" if main is None else "a main that is not callable"
        raise _NotRunnable("%s defines %s" % (where, what))
    return main


def _outcome(exc, channel, import_dir):
    """Report an exception that escaped user code; return the exit code."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return EX_OK
        if isinstance(code, int):
            return code
        # Like the interpreter: sys.exit("message") prints it and exits 1.
        try:
            sys.stderr.write("%s\n" % (code,))
        except (OSError, ValueError, AttributeError):
            pass  # user code closed or replaced stderr
        channel.send("error", error=failures.summary(exc))
        return EX_ERROR
    if isinstance(exc, KeyboardInterrupt) and api.should_quit():
        # User code restored the default SIGINT handler: still a clean stop.
        channel.send("done")
        return EX_OK
    if failures.is_user_syntax_error(exc, import_dir):
        failures.report(exc, channel, event="fatal")
        return EX_CONFIG
    failures.report(exc, channel, event="error")
    return EX_ERROR


def _stacks(interrupted_frame):
    """Text with the stack of every thread, the runner's frames left out."""
    import traceback

    threading = sys.modules.get("threading")
    names = {t.ident: t.name for t in threading.enumerate()} if threading else {}
    me = _thread.get_ident()
    parts = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            # Signal handlers run in the main thread: show what it was doing,
            # not the handler itself.
            frame = interrupted_frame
        entries = traceback.extract_stack(frame)
        while len(entries) > 1 and (entries[0].filename.startswith(failures._RUNNER_DIR)
                                    or entries[0].filename.startswith("<frozen")):
            entries.pop(0)
        name = names.get(ident, "MainThread" if ident == me else "thread")
        parts.append("Thread %s (%d), most recent call last:\n%s"
                     % (name, ident, "".join(traceback.format_list(entries))))
    return "\n".join(parts)
