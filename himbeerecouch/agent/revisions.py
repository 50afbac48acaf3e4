"""Which revision of each document this device runs: rollouts and rollbacks.

The database holds the newest revision of every document; this module decides
what the device runs instead, and keeps what that needs in the state folder
(``revisions-<MacID>.json``), so that the decision survives a restart and an
outage:

- ``chosen``: for each group document, the revision the device last decided to
  run.  While a staged rollout of a newer one waits for its canaries (or was
  halted by one), the device keeps running this one.
- ``healthy``: for each document, the last revision that ran ``healthy_for``
  seconds without failing: what a crash-looping revision rolls back to.
- ``bad``: the revision a document was rolled back from (digest, rev, error),
  until a new revision replaces it.
- ``halted``: the revision whose rollout a canary's failure stopped.

Pure decisions from the documents and the canaries' heartbeats; the
supervisor calls :meth:`Revisions.choose` after every event.
"""
import json
import logging
import os
import time

from ..groups import (canary_verdict, device_doc_id, group_tag, rollback_of, rollout_of,
                      source_digest)
from .cache import write_json

log = logging.getLogger("himbeerecouch.revisions")

VERSION = 1
KINDS = ("chosen", "healthy", "bad", "halted")


def revisions_path(state_dir, macid):
    return os.path.join(state_dir, "revisions-%d.json" % macid)


class Revisions:
    def __init__(self, path, macid):
        self.path, self.macid = path, str(int(macid))
        self.kept = {k: {} for k in KINDS}
        self.failures = {}      # doc id -> (digest, [monotonic times of failures])
        self.rollouts = {}      # doc id -> what the heartbeat says of a held rollout
        self.dirty = False
        self._load()

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s): no kept revisions", self.path, e)
            return
        if not isinstance(data, dict) or data.get("version") != VERSION:
            log.warning("%s has an unknown format: no kept revisions", self.path)
            return
        for kind in KINDS:
            value = data.get(kind)
            if isinstance(value, dict):
                self.kept[kind] = {k: v for k, v in value.items() if isinstance(v, dict)}

    def save(self):
        """Write the file when something changed; False when that failed."""
        if not self.dirty:
            return True
        ok = write_json(self.path, dict(self.kept, version=VERSION), "the kept revisions")
        self.dirty = not ok
        return ok

    def _set(self, kind, doc_id, value):
        table = self.kept[kind]
        if value is None:
            if doc_id in table:
                del table[doc_id]
                self.dirty = True
        elif table.get(doc_id) != value:
            table[doc_id] = value
            self.dirty = True

    # ------------------------------------------------------------ deciding
    def choose(self, docs, tags, heartbeats, complete=True):
        """``({doc_id: doc to run}, {canary MacIDs to watch})``.

        ``docs`` are the newest documents the device knows (its own code
        documents, the group documents of its ``tags``, its device document);
        ``heartbeats`` the canaries' heartbeats last read.  When ``docs`` is
        ``complete`` (the server's list, not a guess before it answered), what
        is kept of documents no longer among them is forgotten.
        """
        run, watch = {}, set()
        self.rollouts = {}
        for doc_id, doc in docs.items():
            if doc_id == device_doc_id(self.macid):
                continue
            tag = group_tag(doc)
            if tag is not None and tag not in tags:
                continue
            chosen = self._staged(doc_id, doc, heartbeats, watch) if tag is not None else doc
            chosen = self._rolled_back(doc_id, chosen)
            if chosen is not None:
                run[doc_id] = chosen
        for kind in KINDS if complete else ():
            for doc_id in list(self.kept[kind]):
                if doc_id not in docs:
                    self._set(kind, doc_id, None)     # the document is gone
        return run, watch

    def _staged(self, doc_id, doc, heartbeats, watch):
        """The revision of group document ``doc`` this device runs now."""
        digest = source_digest(doc)
        kept = self.kept["chosen"].get(doc_id)
        rollout = rollout_of(doc)
        if (rollout is None or self.macid in rollout["canary"]
                or (kept is not None and source_digest(kept) == digest)):
            self._set("chosen", doc_id, doc)
            self._set("halted", doc_id, None)
            return doc
        halted = self.kept["halted"].get(doc_id)
        state, per = canary_verdict(rollout, doc_id, digest, heartbeats)
        if halted is not None and halted.get("digest") == digest:
            state = "halted"
        elif state == "failed":
            log.error("rollout of %s (rev %s) halted: a canary failed (%s); keeping %s",
                      doc_id, doc.get("_rev"), per, (kept or {}).get("_rev", "nothing"),
                      extra={"doc_id": doc_id})
            self._set("halted", doc_id, {"digest": digest, "rev": doc.get("_rev"),
                                         "canaries": per})
            state = "halted"
        elif state == "healthy" and not rollout["paused"]:
            log.info("rollout of %s: the canaries ran rev %s healthy; starting it",
                     doc_id, doc.get("_rev"), extra={"doc_id": doc_id})
            self._set("chosen", doc_id, doc)
            return doc
        elif rollout["paused"]:
            state = "paused"
        else:
            watch.update(rollout["canary"])
        self.rollouts[doc_id] = {"state": state, "target_rev": doc.get("_rev"),
                                 "target_digest": digest, "canaries": per,
                                 "running_rev": (kept or {}).get("_rev")}
        return kept

    def _rolled_back(self, doc_id, doc):
        """``doc``, or the last healthy revision when ``doc`` was rolled back."""
        bad = self.kept["bad"].get(doc_id)
        if doc is None or bad is None:
            return doc
        if bad.get("digest") != source_digest(doc):
            self._set("bad", doc_id, None)        # a new revision clears it
            return doc
        healthy = self.kept["healthy"].get(doc_id)
        return healthy if healthy is not None else doc

    # ------------------------------------------------------------ what happened
    def ran_healthy(self, doc):
        """``doc`` ran its healthy time without failing: a revision to roll back to."""
        self._set("healthy", doc["_id"], doc)

    def failed(self, doc, error, fatal=False, now=None):
        """A worker of ``doc`` failed; True when the device must roll it back:
        after ``rollback.failures`` failures within ``rollback.within`` seconds,
        or at once when the revision cannot run at all (``fatal``: it would
        never fail again, only stay down)."""
        now = time.monotonic() if now is None else now
        doc_id, digest = doc["_id"], source_digest(doc)
        seen, times = self.failures.get(doc_id, (None, []))
        if seen != digest:
            times = []
        times.append(now)
        self.failures[doc_id] = (digest, times)
        rule = rollback_of(doc)
        healthy = self.kept["healthy"].get(doc_id)
        if rule is None or healthy is None or source_digest(healthy) == digest:
            return False
        recent = [t for t in times if now - t <= rule["within"]]
        if len(recent) < rule["failures"] and not fatal:
            return False
        log.error("%s: rev %s failed %d times within %.0f s: rolling back to rev %s",
                  doc_id, doc.get("_rev"), len(recent), rule["within"], healthy.get("_rev"),
                  extra={"doc_id": doc_id})
        self._set("bad", doc_id, {"digest": digest, "rev": doc.get("_rev"), "error": error})
        return True

    def rev_failures(self, doc):
        seen, times = self.failures.get(doc["_id"], (None, []))
        return len(times) if seen == source_digest(doc) else 0

    def worker_report(self, doc):
        """The heartbeat's fields about the revision ``doc`` that a worker runs."""
        report = {"digest": source_digest(doc), "rev_failures": self.rev_failures(doc)}
        tag = group_tag(doc)
        if tag is not None:
            report["tag"] = tag
        bad = self.kept["bad"].get(doc["_id"])
        if bad is not None and bad.get("digest") != report["digest"]:
            report.update(rolled_back_from=bad.get("rev"), rolled_back_digest=bad.get("digest"),
                          rolled_back_error=bad.get("error"))
        return report
