"""Runs command documents, at most once each, and writes their results back.

``{"type": "<MacID>_cmd", "cmd": ["prog", "arg"], "timeout": 300}`` runs
without a shell, in a session of its own, on one of a few threads of this
module (never on the loop, the feed or a worker).  Protocol, so that a
command runs at most once even when the supervisor dies at any point:

1. claim: ``claimed_at``/``claimed_by``/``claimed_run`` are saved before it runs
   (a conflict re-reads; a command someone else claimed is left alone);
2. run, with a timeout after which its whole process tree is killed;
3. the result is first kept in the state folder, then merged into the
   document (conflicts re-read and merge; a server that is down is retried
   until it answers), then forgotten.

A command with ``cancelled_at`` (an operator cancelled it before it was
claimed) is never run.  A command claimed by an earlier run of the
supervisor that has no result gets
the result kept in the state folder when there is one, else
``"error": "interrupted"``; it is never run again.
"""
import hashlib
import json
import logging
import os
import queue
import secrets
import subprocess
import threading
import time

from .. import couch
from ..sandbox import proctree
from ..sandbox.environment import worker_environment
from ..sandbox.spawn import switch_user
from .launcher import other_user
from .logbook import iso
from .outage import Outage

log = logging.getLogger("himbeerecouch.commands")

DEFAULT_TIMEOUT = 300.0
MAX_PARALLEL = 4
OUTPUT_CAP = 256 * 1024
RESULT_FIELDS = ("ret", "exit_code", "started_at", "finished_at", "error")


class BadCommand(ValueError):
    pass


def parse_command(doc):
    """``(argv, timeout)`` of a command document; BadCommand says what is wrong."""
    argv = doc.get("cmd")
    if (not isinstance(argv, list) or not argv
            or not all(isinstance(a, str) for a in argv)):
        raise BadCommand("'cmd' must be a non-empty list of strings, such as [\"uptime\"]")
    if not argv[0]:
        raise BadCommand("'cmd' names no program")
    if any("\0" in a for a in argv):
        raise BadCommand("'cmd' must not contain NUL characters")
    for a in argv:
        try:
            os.fsencode(a)
        except UnicodeEncodeError:
            # A lone surrogate (valid in JSON) has no bytes to pass to exec.
            raise BadCommand("'cmd' argument %s cannot be passed to a program "
                             "(it holds a lone surrogate)" % ascii(a)[:80]) from None
    timeout = doc.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise BadCommand("'timeout' must be a positive number of seconds, not %r" % (timeout,))
    return argv, float(timeout)


class Capture(threading.Thread):
    """Reads one output stream to its end, keeping the first ``OUTPUT_CAP`` bytes."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.kept, self.cut = stream, bytearray(), 0

    def run(self):
        try:
            for chunk in iter(lambda: self.stream.read1(65536), b""):
                room = OUTPUT_CAP - len(self.kept)
                self.kept += chunk[:max(room, 0)]
                self.cut += max(len(chunk) - max(room, 0), 0)
        except (OSError, ValueError):
            pass  # closed under us after the command ended

    def text(self):
        # Not UTF-8 (a binary, another encoding) stays readable: bytes become \xNN.
        text = bytes(self.kept).decode("utf-8", "backslashreplace")
        if self.cut:
            text += "\n[... output truncated: %d more bytes]" % self.cut
        return text


class Commands:
    """The command executor of one supervisor."""

    def __init__(self, url, database, login, state_dir, tag_prefix, max_parallel=MAX_PARALLEL,
                 ca_file=None, user=None):
        # login (agent/login.py): who it writes as, and how
        self.url, self.database, self.login = url, database, login
        self.ca_file = ca_file
        # Commands run as the supervisor's user (root on a Pi), or as --command-user.
        self.user = other_user(user, "command user", "--command-user").pw_name if user else None
        self.tag_prefix = tag_prefix
        self.run_token = secrets.token_hex(8)
        self.results_dir = os.path.join(state_dir, "results-%d" % login.macid)
        os.makedirs(self.results_dir, mode=0o700, exist_ok=True)
        self._queue = queue.Queue()
        self._seen = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._serial = 0
        self._threads = [threading.Thread(target=self._work, name="command-%d" % i, daemon=True)
                         for i in range(max_parallel)]
        self._stopping = False
        self._outage = Outage(log, "command claims and results")

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        self._stopping = True
        for _ in self._threads:
            self._queue.put(None)

    def retarget(self, url, database):
        self.url, self.database = url, database

    def offer(self, doc):
        """A command document seen in the feed; queued unless done, cancelled or
        already taken."""
        if any(k in doc for k in ("ret", "error", "cancelled_at")):
            return
        with self._lock:
            if doc["_id"] in self._seen:
                return
            self._seen.add(doc["_id"])
        self._queue.put(doc)

    # ------------------------------------------------------------ threads
    def _work(self):
        while True:
            doc = self._queue.get()
            if doc is None:
                return
            try:
                self._handle(doc)
            except Exception:   # one command must not end the executor
                log.exception("command %s failed unexpectedly", doc.get("_id"))

    def _release(self, doc_id):
        with self._lock:
            self._seen.discard(doc_id)

    def _db(self):
        """This thread's connection (kept: a new one per request costs a handshake)."""
        key = (self.url, self.database, self.login.generation)
        if getattr(self._local, "key", None) != key:
            self._local.db = couch.open_database(self.url, self.database, self.login.user,
                                                 self.login.password, ca_file=self.ca_file)
            self._local.key = key
        return self._local.db

    def _handle(self, doc):
        doc_id = doc["_id"]
        if doc.get("claimed_at"):
            if doc.get("claimed_run") == self.run_token:
                return          # ours, in progress or being written
            kept = self._kept_result(doc_id)
            if kept is None:
                kept = failure("interrupted: the agent stopped while this command was "
                               "running (claimed at %s); it is not run again"
                               % doc.get("claimed_at"))
            self._deliver(doc_id, kept)
            return
        # Retried until the server answers: nothing else would offer the command
        # again while the feed itself works (a 500 on this one write).  The
        # revision the feed brought is tried first: one request.
        answered, claimed = self._update_until_answered(
            doc_id, self._claim, doc, "command %s not claimed")
        if not answered:
            self._release(doc_id)
            return
        if claimed is None:
            return
        try:
            result = self.execute(claimed, self._next_tag())
        except Exception as e:  # claimed: it must get an answer, never hang unanswered
            log.exception("command %s failed unexpectedly", doc_id)
            result = failure("the agent could not run it: %s: %s" % (type(e).__name__, e))
        self._deliver(doc_id, result, claimed)

    def _claim(self, doc):
        if (doc.get("claimed_run") == self.run_token and "_rev" in doc
                and not any(k in doc for k in ("ret", "error"))):
            return doc          # our claim was saved but its answer was lost: run it
        # Cancelled (by an operator, before any device claimed it): never run.
        # The claim is saved over the revision read here, so a cancellation
        # saved meanwhile makes it conflict and be read again.
        if any(k in doc for k in ("ret", "error", "claimed_at", "cancelled_at")) \
                or doc.get("_deleted"):
            return None
        if "_rev" not in doc:
            return None         # deleted before we got to it
        doc.update(claimed_at=iso(time.time()), claimed_by=self.login.user,
                   claimed_run=self.run_token)
        return doc

    def _next_tag(self):
        with self._lock:
            self._serial += 1
            return "%scmd%d/" % (self.tag_prefix, self._serial)

    # ------------------------------------------------------------ running
    def execute(self, doc, tag):
        """Run the command of ``doc``; returns the result fields."""
        started = time.time()
        try:
            argv, timeout = parse_command(doc)
        except BadCommand as e:
            log.error("command %s not run: %s", doc["_id"], e)
            return failure(str(e))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, cwd="/",
                                    env=worker_environment(tag, home=None if self.user else "/",
                                                           user=self.user),
                                    **switch_user(self.user))
        except FileNotFoundError:
            return failure("program not found: %s" % argv[0], started)
        except PermissionError:
            return failure("permission denied: %s" % argv[0], started)
        except OSError as e:
            return failure("cannot run %s: %s" % (argv[0], e.strerror or e), started)
        log.info("command %s: running %s", doc["_id"], " ".join(argv)[:200])
        captures = [Capture(proc.stdout), Capture(proc.stderr)]
        for c in captures:
            c.start()
        error = None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            error = "timed out after %g s: its process tree was killed" % timeout
            proctree.kill_tree(proc.pid, tag)
            code = proc.wait()
        # Whatever it left running (holding our pipes) ends with it.
        for c in captures:
            c.join(1.0)
        if any(c.is_alive() for c in captures):
            proctree.kill_tagged(tag)
            for c in captures:
                c.join(5.0)
        proc.stdout.close()
        proc.stderr.close()
        result = {"ret": [captures[0].text(), captures[1].text()], "exit_code": code,
                  "started_at": iso(started), "finished_at": iso(time.time())}
        if error:
            result["error"] = error
        log.info("command %s: exit code %s%s", doc["_id"], code, " (%s)" % error if error else "")
        return result

    # ------------------------------------------------------------ results
    def _result_path(self, doc_id):
        return os.path.join(self.results_dir,
                            hashlib.sha1(doc_id.encode("utf-8", "surrogatepass")).hexdigest())

    def _kept_result(self, doc_id):
        try:
            with open(self._result_path(doc_id)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _keep(self, doc_id, result):
        try:
            tmp = self._result_path(doc_id) + ".tmp"
            with open(tmp, "w") as f:
                json.dump(result, f)
            os.replace(tmp, self._result_path(doc_id))
        except OSError as e:
            log.warning("command %s: result not kept on disk (%s)", doc_id, e.strerror)

    def _deliver(self, doc_id, result, current=None):
        """Merge ``result`` into the document; retry until the server takes it.

        ``current``: the revision we saved when claiming it, tried first.
        """
        self._keep(doc_id, result)

        def merge(doc):
            if "_rev" not in doc:
                return None     # the document was deleted meanwhile
            doc.update(result)
            return doc
        answered, _ = self._update_until_answered(
            doc_id, merge, current, "command %s: result not written yet")
        if not answered:
            return      # kept on disk: delivered by the next run
        try:
            os.unlink(self._result_path(doc_id))
        except OSError:
            pass
        # Delivered: the document now has a result, so it is never offered again,
        # and forgetting it keeps memory flat however many commands come.
        self._release(doc_id)


    def _update_until_answered(self, doc_id, change, current, what):
        """``couch.update_document``, retried with backoff until the server answers.

        ``(True, saved document or None)``, or ``(False, None)`` when the executor
        stops first.  ``what`` says, with the document id, what is not done yet.
        """
        delay = 1.0
        while True:
            try:
                saved = couch.update_document(self._db(), doc_id, change, current=current)
                self._outage.ok()
                return True, saved
            except couch.TRANSPORT_ERRORS + (couch.CouchError,) as e:
                if self._stopping:
                    return False, None
                self.login.saw(e)
                self._outage.failed("%s: %s" % (what % doc_id, couch.describe(e)))
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
                current = None      # a retry re-reads


def failure(error, started=None):
    now = iso(time.time())
    return {"ret": ["", error], "exit_code": None, "error": error,
            "started_at": iso(started) if started else now, "finished_at": now}
