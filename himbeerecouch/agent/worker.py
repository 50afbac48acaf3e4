"""The life of one worker, as explicit states with checked transitions.

::

    STOPPED --> STARTING --> RUNNING --> STOPPING --> STOPPED
                  |  ^          |
                  v  |          v
                 BACKOFF <------+----> EXITED   (done, not restarted)
                  FATAL  (cannot run until its document changes)

A :class:`Worker` is a record: the supervisor's loop is the only code that
changes it, and it does so through :meth:`Worker.transition`, which refuses a
transition the diagram does not have and logs every one it makes.  What to do
after an exit is decided by :func:`after_exit` and :func:`backoff_delay`.
"""
import enum
import logging
import time

log = logging.getLogger("himbeerecouch.worker")

EX_CONFIG = 78            # the runner's exit code for "this code cannot run as it is"
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0       # a run this long resets the backoff
TRACEBACK_LINES = 30


class State(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FATAL = "fatal"


S = State
ALLOWED = {
    S.STOPPED: {S.STARTING, S.FATAL},
    S.STARTING: {S.RUNNING, S.BACKOFF, S.STOPPING, S.EXITED, S.FATAL},
    S.RUNNING: {S.BACKOFF, S.STOPPING, S.EXITED, S.FATAL},
    S.BACKOFF: {S.STARTING, S.STOPPED, S.FATAL},
    S.STOPPING: {S.STOPPED},
    S.EXITED: {S.STARTING, S.STOPPED, S.FATAL},
    S.FATAL: {S.STARTING, S.STOPPED, S.FATAL},
}
ACTIVE = (S.STARTING, S.RUNNING, S.STOPPING)   # a process exists


class TransitionError(RuntimeError):
    pass


def backoff_delay(failures):
    """Seconds to wait before start number ``failures`` after a failure: 1, 2, 4 ... 60.

    The exponent is capped: a worker that has failed for days (thousands of
    failures) must not overflow the float and take the supervisor down.
    """
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(max(failures - 1, 0), 32))


def after_exit(policy, exit_code):
    """The state a worker goes to when it exits on its own."""
    if exit_code == EX_CONFIG:
        return S.FATAL
    if policy == "always":
        return S.BACKOFF
    if policy == "never":
        return S.EXITED
    return S.EXITED if exit_code == 0 else S.BACKOFF


def describe_exit(code):
    if code is None:
        return "still running"
    if code < 0:
        return "killed by signal %d" % -code
    return "exit code %d" % code


class Worker:
    """What the supervisor knows about the worker of one code document."""

    def __init__(self, spec):
        self.spec = spec
        self.state = S.STOPPED
        self.process = None         # sandbox.spawn.WorkerProcess while ACTIVE
        self.tag = None             # marker in the environment of all its processes
        self.import_dir = None
        self.started_at = None      # wall clock, for people
        self.started_mono = None
        self.running_since = None   # monotonic, when main() began
        self.restarts = 0           # starts after the first one
        self.failures = 0           # failures since the last stable run
        self.last_exit = None
        self.last_error = None      # "ValueError: boom", or why it cannot run
        self.last_traceback = None  # last lines of the last traceback
        self.next_start = None      # monotonic deadline in BACKOFF, or a held restart
        self.stop_deadline = None   # monotonic deadline for SIGKILL in STOPPING
        self.pending_spec = None    # restart with this spec once stopped
        self.removing = False       # forget the worker once stopped
        self.stop_reason = None     # why it is restarted, when no document changed
        self.doc = None             # the revision of the document it runs
        self.healthy_at = None      # monotonic: when it has run long enough to be healthy
        self.healthy = False        # this run has (revisions.py)
        self.readers = {}           # fd -> (stream name, LineSplitter)

    @property
    def doc_id(self):
        return self.spec.doc_id

    @property
    def name(self):
        return self.spec.name

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def transition(self, new, why=""):
        if new not in ALLOWED[self.state]:
            raise TransitionError("%s [%s]: %s -> %s is not allowed"
                                  % (self.name, self.doc_id, self.state.name, new.name))
        log.info("%s: %s -> %s%s", self.name, self.state.name, new.name,
                 " (%s)" % why if why else "", extra={"doc_id": self.doc_id})
        self.state = new

    def record_traceback(self, text):
        lines = text.rstrip("\n").splitlines()
        self.last_traceback = "\n".join(lines[-TRACEBACK_LINES:])

    def snapshot(self):
        """The worker as the heartbeat and the command line show it."""
        return {
            "name": self.name,
            "doc_id": self.doc_id,
            "rev": self.spec.rev,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit,
            "error": self.spec.error or self.last_error,
            "traceback": self.last_traceback,
            "started_at": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))
                           if self.started_at else None),
        }
