"""Turn exceptions from user code into readable text and status events.

Tracebacks start at the user's first frame (the runner's own frames and the
import machinery's are trimmed from the top) so that they read like the
user's script had been run directly.
"""
import os
import sys

_RUNNER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_runner_frame(tb):
    filename = tb.tb_frame.f_code.co_filename
    return filename.startswith(_RUNNER_DIR) or filename.startswith("<frozen importlib")


def trim(exc):
    """Drop the runner's frames from the top of ``exc``'s traceback."""
    tb = exc.__traceback__
    while tb is not None and _is_runner_frame(tb):
        tb = tb.tb_next
    if tb is not None or isinstance(exc, SyntaxError):
        # A SyntaxError names its place itself: with no user frame left it
        # reads like Python's own report of a script that does not compile.
        exc.__traceback__ = tb
    return exc


def format_exception(exc):
    """Full traceback text (with chained exceptions), runner frames trimmed."""
    import traceback

    trim(exc)
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def summary(exc):
    """One line, e.g. ``ValueError: boom``."""
    import traceback

    if isinstance(exc, SyntaxError):
        # str() of a SyntaxError names the file and line:
        # "invalid syntax (helper.py, line 3)".
        return "%s: %s" % (type(exc).__name__, exc)
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__


def is_user_syntax_error(exc, import_dir):
    """True for a SyntaxError in one of the document's own modules.

    Those cannot go away by restarting, so they are fatal (exit 78); a
    SyntaxError from compile()/exec() of some string is an ordinary error.
    """
    if not isinstance(exc, SyntaxError) or not exc.filename:
        return False
    folder = os.path.abspath(import_dir) + os.sep
    return os.path.abspath(exc.filename).startswith(folder)


def report(exc, channel, event="error"):
    """Print the traceback on stderr and send it as a status event."""
    text = format_exception(exc)
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # user code closed or replaced stderr
    channel.send(event, error=summary(exc), traceback=text)
