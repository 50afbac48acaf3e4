"""himbeerecouch: the device agent that runs lab code from a CouchDB database.

This module stays tiny on purpose: every worker interpreter imports the package
``himbeerecouch.runner``, which imports this file first, and a worker must not
pay for (or see) the supervisor's code.  The old public calls are resolved
lazily.
"""

__version__ = "2.0.0"

__all__ = ["broadcast_message", "__version__"]


def __getattr__(name):
    if name == "broadcast_message":
        from .discovery import broadcast_message
        return broadcast_message
    raise AttributeError("module 'himbeerecouch' has no attribute %r" % name)
