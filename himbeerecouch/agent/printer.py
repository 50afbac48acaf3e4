"""The one place where lines become output.

Everything the agent says, and everything a worker prints, travels as a
:class:`Message`; only the :class:`Printer` adds the time and the
``[source]`` prefix.  Other parts (the log documents of the database) can
subscribe to the same messages.  The supervisor's own ``logging`` records
reach the printer through :class:`PrinterHandler`, so there is one format.
"""
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

SUPERVISOR = "himbeerecouch"


@dataclass(frozen=True)
class Message:
    """One line said by the supervisor or by a worker."""

    source: str               # worker name, or SUPERVISOR
    text: str
    stream: str = "stdout"    # stdout / stderr of a worker, or a logging level name
    doc_id: str = None        # the code document, for worker lines
    time: float = field(default_factory=time.time)


class Printer:
    """Writes messages to a text stream, one line each, and hands them to subscribers."""

    def __init__(self, stream=None):
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._subscribers = []

    def subscribe(self, callback):
        self._subscribers.append(callback)

    def write(self, message):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(message.time))
        marker = " !" if message.stream in ("stderr", "ERROR", "WARNING", "CRITICAL") else ""
        line = "%s [%s]%s %s\n" % (stamp, message.source, marker, message.text)
        with self._lock:
            try:
                try:
                    self._stream.write(line)
                except UnicodeEncodeError:
                    # A lone surrogate from a document: escaped, not lost.
                    encoding = getattr(self._stream, "encoding", None) or "utf-8"
                    self._stream.write(line.encode(encoding, "backslashreplace")
                                       .decode(encoding))
                self._stream.flush()
            except (OSError, ValueError, LookupError):
                pass  # a closed terminal must not kill the supervisor
        for callback in self._subscribers:
            callback(message)


class PrinterHandler(logging.Handler):
    """Routes the supervisor's logging records to the printer."""

    def __init__(self, printer):
        super().__init__()
        self.printer = printer

    def emit(self, record):
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a bad format string must not stop anything
            text = repr(record.msg)
        doc_id = getattr(record, "doc_id", None)
        for line in text.splitlines() or [""]:
            self.printer.write(Message(SUPERVISOR, line, record.levelname, doc_id,
                                       record.created))


def install(printer, level=logging.INFO):
    """Send the ``himbeerecouch`` loggers to ``printer``."""
    logger = logging.getLogger(SUPERVISOR)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(PrinterHandler(printer))
    logger.setLevel(level)
    logger.propagate = False
    return logger
