"""Read and check the start-up data the supervisor hands to a worker.

The supervisor passes two file descriptors on the command line: one it has
already filled with UTF-8 JSON and closed (the start-up data: which document,
where its modules are, limits, database credentials) and one the worker
writes status lines to.  Credentials travel this way, never via argv or the
environment, because both are readable by other users through /proc.
"""
import json
import os

EX_CONFIG = 78  # sysexits.h: the supervisor does not retry until the document changes


class StartupError(Exception):
    """The command line or the start-up data is missing or garbled."""


def parse_argv(argv):
    """Return (startup_fd, status_fd, spare) from ``--startup-fd N --status-fd M``.

    An optional ``--title T`` is accepted and ignored: it only reserves
    room in the argv area for the process title (see confine.set_title).
    ``--spare``: started ahead of its document, which may come much later.
    Parsed by hand: argparse would pull in gettext, re and friends for two
    integers, and every worker pays for what the runner imports.
    """
    wanted = {"--startup-fd": None, "--status-fd": None}
    args = list(argv)
    spare = "--spare" in args
    if spare:
        args.remove("--spare")
    while args:
        arg = args.pop(0)
        key, sep, value = arg.partition("=")
        if key not in wanted and key != "--title":
            raise StartupError("unexpected argument %r" % arg)
        if not sep:
            if not args:
                raise StartupError("%s needs a value" % key)
            value = args.pop(0)
        if key == "--title":
            continue
        try:
            fd = int(value)
        except ValueError:
            raise StartupError("%s %r is not a file descriptor" % (key, value)) from None
        if fd < 3:
            # 0-2 are stdin/stdout/stderr: using them would mix protocols.
            raise StartupError("%s %d is not a file descriptor of its own" % (key, fd))
        wanted[key] = fd
    for key, fd in wanted.items():
        if fd is None:
            raise StartupError("missing %s" % key)
    return wanted["--startup-fd"], wanted["--status-fd"], spare


def read_startup(fd, limit=1 << 20):
    """Read all of ``fd`` until EOF, close it and return the checked data."""
    chunks = []
    size = 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise StartupError("start-up data larger than %d bytes" % limit)
            chunks.append(chunk)
    except OSError as exc:
        raise StartupError("cannot read the start-up fd %d: %s" % (fd, exc.strerror)) from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    raw = b"".join(chunks)
    if not raw.strip():
        raise StartupError("no start-up data on fd %d" % fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StartupError("start-up data is not UTF-8 JSON: %s" % exc) from None
    return check_startup(data)


def _need(data, key, kind, default=Ellipsis):
    value = data.get(key, default)
    if value is Ellipsis:
        raise StartupError("start-up data has no %r" % key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise StartupError("start-up data %r has the wrong type %s" % (key, type(value).__name__))
    return value


def check_startup(data):
    """Validate the decoded start-up data; fill in defaults; return a dict."""
    if not isinstance(data, dict):
        raise StartupError("start-up data is not a JSON object")
    out = {
        "name": _need(data, "name", str),
        "doc_id": _need(data, "doc_id", str),
        "rev": _need(data, "rev", str, ""),
        "import_dir": _need(data, "import_dir", str),
        "main_module": _need(data, "main_module", str, "main"),
        "supervisor_pid": _need(data, "supervisor_pid", int),
    }
    out["title"] = _need(data, "title", str,
                         "himbeerecouch: %s [%s]" % (out["name"], out["doc_id"]))
    if not os.path.isabs(out["import_dir"]):
        raise StartupError("import_dir %r is not an absolute path" % out["import_dir"])
    if not out["main_module"].isidentifier():
        raise StartupError("main_module %r is not a module name" % out["main_module"])

    limits = data.get("limits") or {}
    if not isinstance(limits, dict):
        raise StartupError("start-up data 'limits' is not an object")
    out["limits"] = {}
    for key in ("memory_mb", "cpu_seconds", "nofile"):
        value = limits.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value <= 0):
            raise StartupError("limit %r must be a positive integer or null, not %r"
                               % (key, value))
        out["limits"][key] = value

    database = data.get("database")
    if database is not None:
        if not isinstance(database, dict):
            raise StartupError("start-up data 'database' is not an object")
        for key in ("url", "name"):
            _need(database, key, str)
        for key in ("user", "password", "ca_file"):
            if database.get(key) is not None:
                _need(database, key, str)
    out["database"] = database
    return out
