"""Which module names a code document may use.

A module name becomes a file name in the worker's import folder, which comes
first on ``sys.path``: a name must therefore be a plain identifier (no path
tricks such as ``../x``) and must not shadow the standard library or the
packages the worker itself relies on.
"""
import keyword
import os
import sys
import unicodedata

# Packages the runner or the supervisor import; a user module with one of
# these names would replace them inside the worker.
RESERVED = frozenset({"himbeerecouch", "couchdb", "psutil", "setproctitle", "RPi"})

_MAX_FILENAME_BYTES = 255  # NAME_MAX on Linux file systems


class BadModule(ValueError):
    """A module name or source a document cannot use; the message says why."""


def _stdlib_names():
    names = getattr(sys, "stdlib_module_names", None)  # Python >= 3.10
    if names is not None:
        return frozenset(names)
    # Python 3.9: what the interpreter has built in plus what its standard
    # library folders hold.
    import sysconfig

    found = set(sys.builtin_module_names)
    stdlib = sysconfig.get_paths()["stdlib"]
    for folder in (stdlib, os.path.join(stdlib, "lib-dynload")):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            found.add(entry.split(".", 1)[0])
    return frozenset(found)


STDLIB = _stdlib_names()


def validate_module_name(name):
    """Raise :class:`BadModule` unless ``name`` can be a user module; return it."""
    if not isinstance(name, str):
        raise BadModule("module name %r is not a string" % (name,))
    if not name.isidentifier():
        raise BadModule("module name %r is not a Python identifier" % (name,))
    if unicodedata.normalize("NFKC", name) != name:
        # The import statement normalizes identifiers (PEP 3131) and would
        # look for a different file than the one written.
        raise BadModule("module name %r is not in NFKC normal form" % (name,))
    if keyword.iskeyword(name):
        raise BadModule("module name %r is a Python keyword" % (name,))
    if name.startswith("_"):
        raise BadModule("module name %r starts with an underscore" % (name,))
    if name in STDLIB:
        raise BadModule("module name %r would shadow the standard library module %r"
                        % (name, name))
    if name in RESERVED:
        raise BadModule("module name %r would shadow the package %r that "
                        "himbeerecouch needs" % (name, name))
    if len((name + ".py").encode("utf-8")) > _MAX_FILENAME_BYTES:
        raise BadModule("module name %r is too long" % (name[:40] + "...",))
    return name
