"""What the agent says while it cannot write to the database: little.

A server outage makes every write fail, every few seconds, for as long as it
lasts.  :class:`Outage` turns that into one line when writing starts failing,
at most one summary every ``SUMMARY_PERIOD`` seconds while it goes on, and
one line when writing works again: a log a person can read after the night.
"""
import threading
import time

SUMMARY_PERIOD = 300.0


class Outage:
    """The failures of one kind of write (``what``), said sparingly to ``log``."""

    def __init__(self, log, what, summary_period=SUMMARY_PERIOD, clock=time.monotonic):
        self.log, self.what = log, what
        self.summary_period, self.clock = summary_period, clock
        self._lock = threading.Lock()       # the command threads share one
        self._since = None      # when writing started failing, or None
        self._failures = 0      # failed writes since the last line said
        self._said_at = None

    @property
    def failing(self):
        return self._since is not None

    def failed(self, error):
        """A write failed with ``error`` (text)."""
        with self._lock:
            now = self.clock()
            self._failures += 1
            if self._since is None:
                self._since = self._said_at = now
                self._failures = 0
                self.log.warning("cannot write %s to the database (%s); retrying quietly, "
                                 "a summary every %d min", self.what, error,
                                 self.summary_period // 60)
            elif now - self._said_at >= self.summary_period:
                self.log.warning("still cannot write %s to the database after %s: %d more "
                                 "failed attempt(s), the last: %s", self.what,
                                 _duration(now - self._since), self._failures, error)
                self._said_at, self._failures = now, 0

    def ok(self):
        """A write worked."""
        with self._lock:
            if self._since is None:
                return
            self.log.info("writing %s to the database works again (it failed "
                         "for %s)", self.what, _duration(self.clock() - self._since))
            self._since, self._failures = None, 0


def _duration(seconds):
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    return "%.1f h" % (seconds / 3600)
