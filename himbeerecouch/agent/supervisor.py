"""The supervisor: one loop that owns every worker of this device.

Threads (the feed) only turn I/O into events; signal handlers only record the
signal.  The loop waits on one selector (worker pipes, and a wake-up pipe
that signals and events write to), then: acts on signals, applies events to
the wanted documents, reaps exited workers, fires due deadlines, and
reconciles: the wanted set of worker specs against the workers that run.
Nothing polls: when nothing happens the loop sleeps until the next deadline.
"""
import json
import logging
import os
import queue
import selectors
import signal
import sys
import time
import traceback
from dataclasses import replace

from .. import config as configuration
from ..documents import is_code_document, is_command_document, wanted_workers
from ..groups import (device_doc_id, device_tags, group_tag, healthy_for, settings_problems,
                      source_digest, tags_problem)
from ..sandbox.guardian import start_guardian
from ..sandbox.modules import BadModule
from . import cache
from .canaries import CanaryReports, CanaryWatcher
from .commands import Commands
from .devicelock import DeviceLock
from .feed import Changed, Feed, FeedDown, Snapshot
from .launcher import Launcher
from .login import Login, LoginChanged
from .printer import Message
from .publisher import Publisher
from .relocation import SILENT_AFTER, Relocation
from .revisions import Revisions, revisions_path
from .streams import WorkerStreams
from .worker import ACTIVE, State, Worker, after_exit, backoff_delay, describe_exit

log = logging.getLogger("himbeerecouch.supervisor")

RESTART_HOLD = 1.0      # a changed worker younger than this restarts only when it is this old
OFFLINE_GRACE = 10.0    # run the cached documents when the server says nothing this long
CACHE_DELAY = 0.5       # coalesce cache writes
CACHE_RETRY = 10.0      # a cache write that failed (a full disk) is tried again this late


class Supervisor:
    def __init__(self, config, identity, printer, overrides=None, login=None):
        self.config = config
        self.overrides = overrides or {}
        self.identity = identity
        # agent/login.py: the password every part logs in with (the legacy
        # one only, as the old agent, when none is given).
        self.login = login or Login(identity, None, "legacy", config.server, config.ca_file)
        self.relocation = Relocation(self.overrides)
        self._moved_from = None      # the server it left as its device document asked
        self.macid = identity.macid
        self.printer = printer
        self.workers = {}            # doc id -> Worker
        self.docs = {}               # doc id -> this device's documents, as known: code,
                                     # its device document, the group documents of its tags
        self.effective = {}          # doc id -> the revision it runs (revisions.py)
        self.tags = ()               # from its device document
        self.revisions = None
        self.canaries = None         # reads canaries' heartbeats while a rollout waits
        self.canary_heartbeats = {}
        self.wanted = {}             # doc id -> WorkerSpec
        self.synced = False          # docs came from the server (not the cache)
        self.quitting = False
        self.dirty = False
        self.deadlines = {}          # name -> monotonic time, besides the workers' own
        self.feed = None
        self._feed_error = None
        self._feed_said = None       # (error, retry_in) last logged
        self._signals = []
        self._events = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.streams = WorkerStreams(self._selector, self._line)
        self.observers = []          # callables(worker) told of every state change
        self.launcher = None
        self.guardian = None
        self.publisher = None
        self.commands = None
        self._report = True          # the heartbeat should say something new
        self._warned = set()         # (doc id, rev, text) of warnings already logged
        self._device_lock = None

    # ----------------------------------------------------------- set-up
    def _database_info(self):
        # Workers log in as the device: credentials written into the server
        # URL (an admin's, say) are not for user code to see.
        return {"url": configuration.without_credentials(self.config.server),
                "name": self.config.database, "ca_file": self.config.ca_file,
                "user": self.login.user, "password": self.login.password}

    def _lock_device(self):
        """One agent per device on this machine: refuse when another one runs."""
        os.makedirs(self.config.state_dir, mode=0o755, exist_ok=True)
        self._device_lock = DeviceLock(self.macid).acquire()
        self._selector.register(self._device_lock.fileno(), selectors.EVENT_READ,
                                self._device_lock)

    def _install_signals(self):
        def record(signum, frame):
            self._signals.append(signum)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD,
                       signal.SIGUSR1):
            signal.signal(signum, record)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def post(self, event):
        """Hand an event to the loop; safe from any thread."""
        self._events.put(event)
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is awake anyway

    def _start_feed(self):
        if self.feed is not None:
            self.feed.stop()
        self.feed = None
        if not self.config.server:
            log.error("no server configured (use --server or write the URL into %s)",
                      self.config.server_file)
            return
        self.feed = Feed(self.post, self.config.server, self.config.database,
                         self.login, self.macid,
                         heartbeat=self.config.feed_heartbeat, ca_file=self.config.ca_file,
                         tags=self.tags)
        log.info("following %s on %s as user %s", self.config.database,
                 configuration.redact(self.config.server), self.identity.user)
        self.feed.start()

    # ----------------------------------------------------------- the loop
    def run(self):
        """Supervise until SIGINT or SIGTERM; returns the exit status."""
        self._lock_device()
        self._install_signals()
        # Which password works: the one that worked last, checked at once in
        # the background; at the first start (none known yet) before anything
        # uses one, so that nothing starts with the wrong one (a server that
        # does not answer leaves the default: the secret).  Then at every refusal.
        self.login.retarget(self.config.server, self.config.ca_file)
        if not self.login.known:
            self.login.check()
        self.login.start(self.post)
        self.launcher = Launcher(self.macid, self.config.state_dir, self._database_info(),
                                 self.config.worker_user, spare=self.config.spare)
        # Before anything runs: a --command-user that cannot be is an error now.
        self.commands = Commands(self.config.server, self.config.database, self.login,
                                 self.config.state_dir, self.launcher.run_prefix + "commands/",
                                 ca_file=self.config.ca_file, user=self.config.command_user)
        self.launcher.cleanup_leftovers()
        self.guardian = start_guardian(self.launcher.run_prefix, self.launcher.import_base,
                                       self.launcher.import_prefix)
        self.publisher = Publisher(self.config.server, self.config.database, self.login,
                                   self.config.heartbeat_interval, self.config.state_dir,
                                   self.config.interface, ca_file=self.config.ca_file)
        self.printer.subscribe(self.publisher.logbook.add)
        self.observers.append(self.publisher.history.observe)
        self.revisions = Revisions(revisions_path(self.config.state_dir, self.macid), self.macid)
        self.canaries = CanaryWatcher(self.post, self.config.server, self.config.database,
                                      self.login, self.config.heartbeat_interval,
                                      ca_file=self.config.ca_file)
        if self.config.server:
            self.publisher.start()
            self.commands.start()
            self.canaries.start()
        self._cache_path = cache.cache_path(self.config.state_dir, self.macid)
        self._cached = cache.load(self._cache_path, self.macid, self.config.database)
        # The tags it had: the first feed already passes the groups' documents.
        self.tags = tuple(device_tags((self._cached or {}).get(device_doc_id(self.macid))))
        self.deadlines["offline"] = time.monotonic() + OFFLINE_GRACE
        self._start_feed()
        log.info("supervisor of device %d started (pid %d)", self.macid, os.getpid())
        while True:
            self._wait()
            self._handle_signals()
            self._handle_events()
            self._reap()
            self._fire_deadlines()
            if self.dirty:
                self._reconcile()
            if not self.quitting:
                self._keep_spare()
            if self._report:
                self._report = False
                self.publisher.submit(self.heartbeat_state())
            if self.quitting and not any(w.state in ACTIVE for w in self.workers.values()):
                break
        self._shutdown()
        return 0

    def _keep_spare(self):
        """Replace a spare that was used or died (SIGCHLD woke us), or look again later."""
        had = self.launcher.spare
        due = self.launcher.keep_spare()
        if due is not None:
            self.deadlines["spare"] = due
        if self.launcher.spare is not had:
            self._report = True

    def _next_deadline(self):
        times = list(self.deadlines.values())
        for w in self.workers.values():
            for t in (w.next_start, w.stop_deadline, w.healthy_at):
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def _wait(self):
        deadline = self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake_pipe()
            elif key.data is self._device_lock:
                self._device_lock.drain()
            else:
                self.streams.ready(key)

    def _drain_wake_pipe(self):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # ----------------------------------------------------------- signals
    def _handle_signals(self):
        while self._signals:
            signum = self._signals.pop(0)
            if signum in (signal.SIGINT, signal.SIGTERM):
                if not self.quitting:
                    log.info("%s: stopping every worker", signal.Signals(signum).name)
                self._begin_quit()
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGUSR1:
                self._dump_stacks()
            # SIGCHLD only wakes the loop: _reap looks at every worker anyway.

    def _begin_quit(self):
        self.quitting = True
        if self.feed:
            self.feed.stop()
        for w in list(self.workers.values()):
            w.pending_spec = None
            w.removing = True
            self._retire(w, "the supervisor is stopping")
        # After the workers' SIGINTs: ending the spare must not delay their stop.
        self.launcher.set_spare(False)

    def _reload(self, why="SIGHUP"):
        log.info("%s: reading the server file and the configuration again", why)
        try:
            new = configuration.load(self.overrides)
        except configuration.ConfigError as e:
            log.error("configuration not reloaded: %s", e)
            return
        old, self.config = self.config, new
        self.launcher.set_spare(new.spare)
        for key in ("worker_user", "command_user"):
            if getattr(new, key) != getattr(old, key):
                log.warning("--%s changes take effect at the next start of the supervisor",
                            key.replace("_", "-"))
        if new.ca_file != old.ca_file:
            # Kept for every connection alike, the workers' included.
            log.warning("--ca-file changes take effect at the next start of the supervisor "
                        "(a renewed CA file in the same place is read at every reconnection)")
            self.config = new = replace(new, ca_file=old.ca_file)
        if (new.server, new.database) != (old.server, old.database):
            self.login.retarget(new.server, new.ca_file)
            self._reconnect("the server or database changed")
            self.synced = False
        self._recompute()

    def _reconnect(self, why):
        """Everything that logs in does it again, with the server, database and
        password of now; running workers restart to get them too."""
        self.launcher.database = self._database_info()
        self.publisher.retarget(self.config.server, self.config.database)
        self.commands.retarget(self.config.server, self.config.database)
        self._start_feed()
        for w in self.workers.values():
            if w.state in (State.STARTING, State.RUNNING):
                w.pending_spec = w.pending_spec or w.spec
                w.stop_reason = why
                self._retire(w, why)

    def _on_login(self, event):
        if self.quitting:
            return
        if event.changed:
            self._reconnect("the device logs in with its %s now" % event.kind)
        elif self.feed is None or self._feed_error:
            self._start_feed()       # at once, not at the end of its backoff
            self.publisher.retarget(self.config.server, self.config.database)
        self._report = True

    def _dump_stacks(self):
        for ident, frame in sys._current_frames().items():
            for line in "".join(traceback.format_stack(frame)).rstrip().splitlines():
                log.info("stack of thread %d: %s", ident, line)
        for w in self.workers.values():
            # Before "running" the worker may not have its handler yet: SIGUSR1 would kill it.
            if w.state == State.RUNNING:
                self.launcher.interrupt(w, signal.SIGUSR1)

    # ----------------------------------------------------------- events
    def _handle_events(self):
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, CanaryReports):
                self.canary_heartbeats = event.heartbeats
                self._recompute()
                continue
            if isinstance(event, LoginChanged):
                self._on_login(event)
                continue
            if getattr(event, "feed", None) is not self.feed:
                continue    # from a feed replaced after SIGHUP
            if isinstance(event, Snapshot):
                self._on_snapshot(event)
            elif isinstance(event, Changed):
                self._on_change(event)
            elif isinstance(event, FeedDown):
                self._on_feed_down(event)

    def _on_snapshot(self, event):
        if self._feed_error:
            log.info("connected to the server again")
        self._feed_error = self._feed_said = None
        self._report = True
        self.docs = {i: d for i, d in event.docs.items() if self._mine(d)}
        for doc in event.docs.values():
            if is_command_document(doc, self.macid):
                self.commands.offer(doc)
        self.synced = True
        self.deadlines.pop("offline", None)
        self._recompute()
        log.info("%d code document(s) for this device", len(self.effective))
        self._schedule_cache()
        self._follow_tags()
        self._follow_server()

    def _on_change(self, event):
        doc = event.doc
        if doc is not None and is_command_document(doc, self.macid):
            self.commands.offer(doc)
            return
        if doc is not None and self._mine(doc):
            self.docs[event.doc_id] = doc
        elif event.doc_id in self.docs:
            del self.docs[event.doc_id]     # deleted, or addressed elsewhere now
        else:
            return
        self._recompute()
        self._schedule_cache()
        self._follow_tags()
        self._follow_server()

    def _mine(self, doc):
        """A document this device follows: its code, its device document, a group's."""
        return (is_code_document(doc, self.macid) or doc.get("_id") == device_doc_id(self.macid)
                or group_tag(doc) is not None)

    def _follow_tags(self):
        """When its device document's tags changed, follow the groups of the new
        ones: a new feed, whose selector passes their documents."""
        tags = tuple(device_tags(self.docs.get(device_doc_id(self.macid))))
        if tags != self.tags:
            log.info("tags of this device: %s", ", ".join(tags) or "none")
            self.tags = tags
            self._recompute()       # a removed tag's groups stop at once
            if self.feed is not None:
                self._start_feed()

    def _follow_server(self):
        """Move to the server its device document names (relocation.py)."""
        doc = self.docs.get(device_doc_id(self.macid))
        if doc is None or not self.synced:
            return              # a cached document is no word of the server's
        old = self.config.server
        if self.relocation.wanted(doc, self.config):
            self._reload("its device document names another server")
            if self.config.server != old:
                self._moved_from = old
                self.deadlines["moved"] = time.monotonic() + SILENT_AFTER

    def _on_feed_down(self, event):
        # Said when the error or the backoff step changes: every step up to
        # the longest says when the next try is, then one line covers them all.
        said = (event.error, event.retry_in)
        if said != self._feed_said:
            log.warning("database unreachable: %s; next try in %.0f s, or as soon as the "
                        "server answers again (workers keep running)",
                        event.error, event.retry_in)
            self._feed_said = said
        if event.error != self._feed_error:
            self._report = True
        self._feed_error = event.error
        if not self.synced:
            self._use_cache()

    def _use_cache(self):
        self.deadlines.pop("offline", None)
        if self._cached is None or self.synced or self.docs:
            return
        log.warning("server not reachable: running the %d cached document(s) until it is",
                    len(self._cached))
        self.docs = dict(self._cached)
        self._recompute()
        self._follow_tags()

    def _schedule_cache(self):
        self.deadlines.setdefault("cache", time.monotonic() + CACHE_DELAY)

    def _recompute(self):
        def warn(doc_id, text):
            # Named (the line must say which document), and once per revision:
            # this runs after every event.
            key = (doc_id, (self.docs.get(doc_id) or {}).get("_rev"), text)
            if key not in self._warned:
                if len(self._warned) > 10000:
                    self._warned.clear()    # bounded: at worst a warning is said again
                self._warned.add(key)
                log.warning("document %s: %s", doc_id, text, extra={"doc_id": doc_id})
        rollouts = self.revisions.rollouts
        self.effective, watch = self.revisions.choose(self.docs, self.tags,
                                                      self.canary_heartbeats, self.synced)
        if self.revisions.rollouts != rollouts:
            self._report = True     # the heartbeat says how its rollouts stand
        self.canaries.watch(watch)
        if self.revisions.dirty:
            self._schedule_cache()
        for doc_id, doc in self.effective.items():
            for text in settings_problems(doc):
                warn(doc_id, text)
        problem = tags_problem(self.docs.get(device_doc_id(self.macid)))
        if problem:
            warn(device_doc_id(self.macid), problem)
        self.wanted = wanted_workers(self.effective, self.config.default_limits, warn)
        self.dirty = True

    # ----------------------------------------------------------- reconcile
    def _reconcile(self):
        self.dirty = False
        if self.quitting:
            return
        for doc_id, w in list(self.workers.items()):
            if doc_id not in self.wanted:
                w.removing = True
                w.pending_spec = None
                self._retire(w, "its document is gone")
        for doc_id, spec in self.wanted.items():
            w = self.workers.get(doc_id)
            if w is None:
                w = self.workers[doc_id] = Worker(spec)
                for text in spec.warnings:
                    log.warning("document %s: %s", doc_id, text, extra={"doc_id": doc_id})
                self._launch(w, "new document %s" % spec.rev)
                continue
            w.removing = False
            target = w.pending_spec or w.spec
            if spec.fingerprint == target.fingerprint:
                target.rev, target.restart = spec.rev, spec.restart
                continue
            if w.state in ACTIVE:
                w.pending_spec = spec
                if w.state != State.STOPPING and w.next_start is None:
                    w.next_start = max(time.monotonic(), w.started_mono + RESTART_HOLD)
            else:
                w.spec, w.failures, w.next_start = spec, 0, None
                self._launch(w, "document changed to %s" % spec.rev)

    def _launch(self, w, why):
        w.next_start = None
        doc = self.effective.get(w.doc_id)
        w.doc = doc if doc is not None and source_digest(doc) == w.spec.digest else None
        w.healthy, w.healthy_at = False, None
        if w.spec.error:
            w.last_error = None     # the spec's error is the one shown
            self._refuse(w, w.spec.error)
            return
        if w.started_at is not None:
            w.restarts += 1
        w.transition(State.STARTING, why)
        w.last_error = w.last_traceback = None
        w.started_at, w.started_mono, w.running_since = time.time(), time.monotonic(), None
        try:
            self.launcher.start(w)
        except BadModule as e:
            w.last_error = str(e)
            self._refuse(w, w.last_error)
            return
        except OSError as e:
            w.last_error = "cannot start: %s" % (e.strerror or e)
            self._backoff(w, w.last_error)
            return
        self.streams.watch(w)
        self._changed(w)

    def _refuse(self, w, error):
        """``w``'s document cannot run as it is: FATAL until it changes."""
        log.error("cannot run document %s: %s", w.doc_id, error, extra={"doc_id": w.doc_id})
        w.transition(State.FATAL, "bad document")
        self._changed(w)
        self._failed(w, error, fatal=True)

    def _failed(self, w, error, fatal=False):
        """Count a failure of ``w``'s revision; roll it back when it is time."""
        if w.doc is not None and not w.pending_spec and self.revisions.failed(
                w.doc, error, fatal=fatal):
            self._recompute()       # the last healthy revision; reconcile starts it

    def _retire(self, w, why):
        """Stop ``w`` for good or for a restart; forget it when ``removing``."""
        if w.state in (State.STARTING, State.RUNNING):
            w.transition(State.STOPPING, why)
            w.next_start = None
            w.stop_deadline = time.monotonic() + self.config.stop_timeout
            self.launcher.interrupt(w, signal.SIGINT)
            self._changed(w)
        elif w.state == State.STOPPING:
            pass
        else:
            if w.state != State.STOPPED:
                w.transition(State.STOPPED, why)
            w.next_start = None
            if w.removing:
                self._forget(w)

    def _forget(self, w):
        self.workers.pop(w.doc_id, None)
        self._changed(w)

    def _backoff(self, w, why):
        w.failures += 1
        delay = backoff_delay(w.failures)
        w.next_start = time.monotonic() + delay
        w.transition(State.BACKOFF, "%s; restart in %.0f s" % (why, delay))
        self._changed(w)

    def heartbeat_state(self):
        """What the heartbeat says of the supervisor and its workers (loop thread only)."""
        workers = []
        for w in sorted(self.workers.values(), key=lambda w: w.doc_id):
            entry = w.snapshot()
            if w.doc is not None:
                entry.update(self.revisions.worker_report(w.doc), healthy=w.healthy)
                if entry.get("rolled_back_error") and not entry["error"]:
                    entry["error"] = entry["rolled_back_error"]
            workers.append(entry)
        return {
            "tags": list(self.tags),
            "rollouts": self.revisions.rollouts,
            "running_ids": [w["doc_id"] for w in workers if w["state"] == "running"],
            "workers": workers,
            "feed": {"connected": self.feed is not None and self.synced and not self._feed_error,
                     "error": self._feed_error},
            "state": "stopping" if self.quitting else "running",
            "spare": self.launcher.spare_state() if self.launcher else None,
            "login": self.login.kind,
            "server": configuration.without_credentials(self.config.server),
        }

    def _changed(self, w):
        self._report = True
        for observer in self.observers:
            observer(w)

    # ----------------------------------------------------------- deadlines
    def _fire_deadlines(self):
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.stop_deadline is not None and now >= w.stop_deadline and w.state == State.STOPPING:
                w.stop_deadline = None
                log.warning("%s did not stop within %.0f s: killing its process tree",
                            w.name, self.config.stop_timeout, extra={"doc_id": w.doc_id})
                self.launcher.kill(w)
            if w.healthy_at is not None and now >= w.healthy_at:
                w.healthy_at = None
                if w.state == State.RUNNING and w.doc is not None:
                    w.healthy = not self.revisions.rev_failures(w.doc)
                    self.revisions.ran_healthy(w.doc)
                    self._schedule_cache()
                    self._report = True
            if w.next_start is not None and now >= w.next_start:
                w.next_start = None
                if w.state == State.BACKOFF:
                    self._launch(w, "backoff over")
                elif w.state in (State.STARTING, State.RUNNING) and w.pending_spec:
                    self._retire(w, "document changed to %s" % w.pending_spec.rev)
        for name, when in list(self.deadlines.items()):
            if now >= when:
                del self.deadlines[name]
                if name == "offline":
                    self._use_cache()
                elif name == "moved" and not self.synced:
                    self.relocation.silent(self.config, self._moved_from)
                elif name == "cache":
                    if not (cache.save(self._cache_path, self.macid, self.config.database,
                                       self.docs) and self.revisions.save()):
                        # Else the cache stays stale until the next change.
                        self.deadlines["cache"] = now + CACHE_RETRY

    # ----------------------------------------------------------- output
    def _line(self, w, stream, line):
        if stream != "status":
            self.printer.write(Message(w.name, line, stream, w.doc_id))
            return
        try:
            msg = json.loads(line)
            event = msg["event"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable status line %r", w.name, line[:200])
            return
        if event == "running" and w.state == State.STARTING:
            w.running_since = time.monotonic()
            w.transition(State.RUNNING)
            if w.doc is not None:
                w.healthy_at = w.running_since + healthy_for(w.doc)
            self._changed(w)
        elif event in ("error", "fatal"):
            w.last_error = str(msg.get("error", "error"))[:2000]
            if msg.get("traceback"):
                w.record_traceback(str(msg["traceback"]))
            if event == "fatal":
                log.error("cannot run document %s: %s", w.doc_id, w.last_error,
                          extra={"doc_id": w.doc_id})
        elif event == "stacks":
            for text in str(msg.get("text", "")).splitlines():
                self.printer.write(Message(w.name, text, "stack", w.doc_id))

    # ----------------------------------------------------------- exits
    def _reap(self):
        for w in list(self.workers.values()):
            if w.process is None:
                continue
            code = w.process.popen.poll()
            if code is not None:
                self._on_exit(w, code)

    def _on_exit(self, w, code):
        self.streams.drain(w)
        leftovers = self.launcher.cleanup(w)
        w.last_exit = code
        w.stop_deadline = None
        now = time.monotonic()
        ran = now - w.running_since if w.running_since else 0.0
        if w.state == State.STOPPING:
            w.transition(State.STOPPED, describe_exit(code))
            if w.removing:
                self._forget(w)
            elif w.pending_spec and not self.quitting:
                why = w.stop_reason or "document changed to %s" % w.pending_spec.rev
                w.spec, w.pending_spec, w.failures, w.stop_reason = w.pending_spec, None, 0, None
                self._launch(w, why)
            else:
                self._changed(w)
            return
        if ran >= 60.0:
            w.failures = 0
        nxt = after_exit(w.spec.restart, code)
        w.healthy_at = None
        if code != 0:
            log.error("%s exited: %s%s", w.name, describe_exit(code),
                      ": %s" % w.last_error if w.last_error else "", extra={"doc_id": w.doc_id})
            if w.last_error is None:
                w.last_error = describe_exit(code)
            self._failed(w, w.last_error, fatal=nxt == State.FATAL)
        if leftovers:
            # Even after a clean exit: what it left running was killed, say so.
            note = "ended %d process(es) it left behind" % len(leftovers)
            w.last_error = "%s; %s" % (w.last_error, note) if w.last_error else note
        if w.pending_spec:
            # It ended while a change was held back: start the new revision now.
            w.spec, w.pending_spec, w.failures = w.pending_spec, None, 0
            w.transition(State.BACKOFF, describe_exit(code))
            self._launch(w, "document changed to %s" % w.spec.rev)
        elif nxt == State.BACKOFF:
            self._backoff(w, describe_exit(code))
        else:
            w.transition(nxt, describe_exit(code))
            self._changed(w)

    # ----------------------------------------------------------- the end
    def _shutdown(self):
        if self.feed:
            self.feed.stop()
        self.commands.stop()
        if self.publisher.is_alive():
            self.publisher.stop(dict(self.heartbeat_state(), state="stopped"))
        self.canaries.stop()
        self.login.stop()
        if self.deadlines.pop("cache", None) is not None:
            cache.save(self._cache_path, self.macid, self.config.database, self.docs)
            self.revisions.save()
        if self.guardian:
            popen, write_fd = self.guardian
            os.close(write_fd)      # the guardian finds nothing left and exits
            try:
                popen.wait(timeout=5)
            except Exception:
                popen.kill()
                popen.wait()
        signal.set_wakeup_fd(-1)
        self._device_lock.close()
        log.info("supervisor of device %d stopped", self.macid)
