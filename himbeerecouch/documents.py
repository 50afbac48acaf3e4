"""What the database asks this device to run: code documents -> worker specs.

A code document (see README) may carry ``code`` (the main module), private
``modules``, ``global_modules`` exported to every worker of this device, and
optional ``restart`` and ``limits``.  This module turns the set of this
device's documents into one :class:`WorkerSpec` per document that has a main
module, and says what is wrong with the ones it cannot run.  It is pure: no
I/O, so the supervisor can call it after every event.
"""
import hashlib
import json
from dataclasses import dataclass, field

from .groups import source_digest
from .sandbox.modules import BadModule, validate_module_name

MAIN_MODULE = "main"
RESTART_POLICIES = ("on-failure", "always", "never")
DEFAULT_RESTART = "on-failure"
LIMIT_KEYS = ("memory_mb", "cpu_seconds", "nofile")
# Beyond these a limit is a typo, and the kernel could not take it anyway
# (the runner would fail with an overflow instead of a clear message).
LIMIT_MAX = {"memory_mb": 1 << 30, "cpu_seconds": 10 ** 9, "nofile": 1 << 30}
# A code document is source text; megabytes of it are a mistake (data pasted
# into the editor), and every byte is written to disk at each start.
MAX_SOURCE_BYTES = 1024 * 1024


class BadDocument(ValueError):
    """A code document this agent cannot run; the message says why."""


@dataclass
class WorkerSpec:
    """Everything needed to start the worker of one code document."""

    doc_id: str
    rev: str
    name: str
    modules: dict = field(default_factory=dict)   # main + private + global, by module name
    restart: str = DEFAULT_RESTART
    limits: dict = field(default_factory=dict)
    error: str = None          # set when the document cannot run: the worker is FATAL
    warnings: list = field(default_factory=list)
    digest: str = None         # names what the document runs (groups.source_digest)

    @property
    def fingerprint(self):
        """Changes exactly when the worker has to be restarted to take a change.

        The restart policy is left out: it is read at the next exit, so
        changing it alone restarts nothing.
        """
        blob = json.dumps([self.name, self.modules, self.limits, self.error],
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def device_types(macid):
    """The ``type`` values that address a code document to this device."""
    return (int(macid), str(int(macid)))


def command_type(macid):
    return "%d_cmd" % int(macid)


def is_code_document(doc, macid):
    t = doc.get("type")
    # bool is an int in Python: True must not match device 1.
    if isinstance(t, bool):
        return False
    return t in device_types(macid)


def is_command_document(doc, macid):
    return doc.get("type") == command_type(macid)


def _source_modules(doc, key):
    """The ``{name: source}`` object stored under ``key``, checked."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadDocument("%r must be an object of module name -> source, not %s"
                          % (key, type(value).__name__))
    for name, source in value.items():
        try:
            validate_module_name(name)
        except BadModule as e:
            raise BadDocument("%s: %s" % (key, e)) from None
        if not isinstance(source, str):
            raise BadDocument("%s[%r] must be a string of Python source, not %s"
                              % (key, name, type(source).__name__))
    return dict(value)


def _limits(doc, defaults):
    limits = {k: defaults.get(k) for k in LIMIT_KEYS}
    value = doc.get("limits")
    if value is None:
        return limits
    if not isinstance(value, dict):
        raise BadDocument("'limits' must be an object such as {\"memory_mb\": 256}")
    for key, number in value.items():
        if key not in LIMIT_KEYS:
            raise BadDocument("unknown limit %r (known: %s)" % (key, ", ".join(LIMIT_KEYS)))
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
            raise BadDocument("limits.%s must be a positive number, not %r" % (key, number))
        if not 1 <= number <= LIMIT_MAX[key]:
            # 0.5 would become 0, which the runner refuses; 1e30 overflows.
            raise BadDocument("limits.%s must be between 1 and %d, not %r"
                              % (key, LIMIT_MAX[key], number))
        limits[key] = int(number)
    return limits


def _restart(doc):
    policy = doc.get("restart", DEFAULT_RESTART)
    if policy not in RESTART_POLICIES:
        raise BadDocument("'restart' must be one of %s, not %r"
                          % (", ".join(RESTART_POLICIES), policy))
    return policy


def _name(doc):
    name = doc.get("name")
    if isinstance(name, str) and name.strip():
        # One line, printable: it goes into ps and every log prefix.  Control
        # characters (terminal escapes, bidi overrides) and lone surrogates
        # (valid JSON, but no process title or log can carry them) become U+FFFD.
        name = " ".join(name.split())[:80]
        return "".join(c if c.isprintable() or c == "\u200d" else "\ufffd" for c in name)
    return doc["_id"]


def collect_global_modules(docs, log=None):
    """Every document's ``global_modules``, merged; the first document id wins a clash."""
    merged, owner = {}, {}
    for doc_id in sorted(docs):
        try:
            modules = _source_modules(docs[doc_id], "global_modules")
        except BadDocument as e:
            if log:
                log(doc_id, "global modules ignored: %s" % e)
            continue
        for name, source in modules.items():
            if name in merged:
                if log and merged[name] != source:
                    log(doc_id, "global module %r is also exported by %s; that one is used"
                        % (name, owner[name]))
                continue
            merged[name], owner[name] = source, doc_id
    return merged


def worker_spec(doc, global_modules, default_limits):
    """The spec for one document, or None when it has no main module.

    A document that cannot run still gets a spec, with ``error`` set, so that
    the supervisor can show the error where users look.
    """
    doc_id, rev = doc["_id"], doc.get("_rev", "")
    spec = WorkerSpec(doc_id=doc_id, rev=rev, name=doc_id, digest=source_digest(doc))
    try:
        spec.name = _name(doc)
        if doc.get("_unreadable"):      # set by the feed; CouchDB forbids such a field
            raise BadDocument(doc["_unreadable"])
        private = _source_modules(doc, "modules")
        code = doc.get("code")
        if code is not None and not isinstance(code, str):
            raise BadDocument("'code' must be a string of Python source, not %s"
                              % type(code).__name__)
        if code is None and MAIN_MODULE not in private:
            return None
        if code is not None and MAIN_MODULE in private:
            spec.warnings.append("both 'code' and modules.main are set; 'code' is the main module")
        modules = dict(global_modules)
        modules.update(private)          # a document's own module shadows a global one
        if code is not None:
            modules[MAIN_MODULE] = code
        size = sum(len(s.encode("utf-8", "surrogatepass")) for s in modules.values())
        if size > MAX_SOURCE_BYTES:
            raise BadDocument("its modules hold %d bytes of source; at most %d are accepted"
                              % (size, MAX_SOURCE_BYTES))
        spec.modules = modules
        spec.restart = _restart(doc)
        spec.limits = _limits(doc, default_limits)
    except BadDocument as e:
        spec.modules, spec.error = {}, str(e)
    return spec


def wanted_workers(docs, default_limits, log=None):
    """``{doc_id: WorkerSpec}`` for a ``{doc_id: doc}`` of this device's code documents."""
    global_modules = collect_global_modules(docs, log)
    wanted = {}
    for doc_id, doc in docs.items():
        spec = worker_spec(doc, global_modules, default_limits)
        if spec is not None:
            wanted[doc_id] = spec
    return wanted
