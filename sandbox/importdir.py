"""The private import folder of a worker.

Every worker gets a fresh folder ``<base>/<prefix>XXXXXXXX`` (mode 0700)
holding one ``<name>.py`` per module of its document plus the global
modules; it is put first on the worker's ``sys.path`` and removed when the
worker ends.  Names are validated before anything is written and files are
created relative to the folder's descriptor, so nothing can land outside it.
"""
import codecs
import os
import re
import shutil
import sys
import tempfile

from himbeerecouch.sandbox.modules import BadModule, validate_module_name

# PEP 263 coding declaration (first or second line).
_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)


def _check_prefix(prefix):
    if not isinstance(prefix, str) or not prefix or os.sep in prefix or "\0" in prefix \
            or prefix in (".", ".."):
        raise ValueError("bad import folder prefix %r" % (prefix,))


def _encode(source):
    """Bytes that Python decodes back to exactly ``source`` where possible.

    Old (Python 2) documents may declare another encoding with a coding
    cookie: honour it, or Python would misread our UTF-8.  Lone surrogates
    (possible in JSON) become backslash escapes, which inside a string
    literal give back the same string.
    """
    head = source[:1024].encode("utf-8", "backslashreplace").splitlines()[:2]
    for line in head:
        match = _CODING.match(line)
        if match:
            try:
                encoding = codecs.lookup(match.group(1).decode("ascii")).name
                return source.encode(encoding)
            except (LookupError, UnicodeError):
                break  # unknown codec or not representable: plain UTF-8
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            break  # the cookie may only follow a comment or blank line
    return source.encode("utf-8", "backslashreplace")


def make_import_dir(base, prefix, modules, owner_uid=None):
    """Write ``modules`` ({name: source}) into a new folder; return its path.

    Raises :class:`BadModule` (before writing anything) for a bad name or a
    source that is not a str.  ``owner_uid``: chown the folder and files to
    that user (a supervisor running as root, workers as another user).
    """
    encoded = _encode_modules(modules)
    path = new_import_dir(base, prefix, owner_uid)
    try:
        _write_all(path, encoded, owner_uid)
    except BaseException:
        remove_import_dir(path)
        raise
    return path


def new_import_dir(base, prefix, owner_uid=None):
    """A new, empty import folder (0700, owned by ``owner_uid``); its path.

    A warm spare starts in one before its document is known, so that its
    working folder and HOME are those of the worker it will become.
    """
    _check_prefix(prefix)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)  # mode 0700, unique
    if owner_uid is not None:
        try:
            os.chown(path, owner_uid, -1)
        except BaseException:
            remove_import_dir(path)
            raise
    return path


def fill_import_dir(path, modules, owner_uid=None):
    """Write ``modules`` into the existing, empty import folder ``path``.

    Raises :class:`BadModule` before writing anything, like make_import_dir.
    """
    _write_all(path, _encode_modules(modules), owner_uid)


def _encode_modules(modules):
    """Check every name and source; return {name: bytes} (BadModule if not)."""
    if not isinstance(modules, dict):
        raise BadModule("modules must be a mapping of name to source, not %s"
                        % type(modules).__name__)
    encoded = {}
    for name, source in modules.items():
        validate_module_name(name)
        if not isinstance(source, str):
            raise BadModule("source of module %r is %s, not text"
                            % (name, type(source).__name__))
        if "\0" in source:
            # Python refuses such a file with a SyntaxError that names no
            # file; better to say which module is broken here.
            raise BadModule("source of module %r contains a NUL character" % (name,))
        encoded[name] = _encode(source)
    return encoded


def _write_all(path, encoded, owner_uid):
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name, data in encoded.items():
            _write(dir_fd, name + ".py", data, owner_uid)
    finally:
        os.close(dir_fd)


def _write(dir_fd, filename, data, owner_uid):
    flags = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC
    fd = os.open(filename, flags, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner_uid is not None:
            os.fchown(fd, owner_uid, -1)
    finally:
        os.close(fd)


def remove_import_dir(path):
    """Remove an import folder and its contents; fine if it is already gone."""
    # rmtree uses descriptors and does not follow symbolic links.
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_ignore_missing)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: _ignore_missing(f, p, info[1]))


def _ignore_missing(function, path, exc):
    if not isinstance(exc, FileNotFoundError):
        raise exc


def remove_stale_import_dirs(base, prefix):
    """Remove folders ``<base>/<prefix>*`` left by an earlier run; return them."""
    _check_prefix(prefix)
    removed = []
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
            remove_import_dir(entry.path)
            removed.append(entry.path)
    return sorted(removed)
