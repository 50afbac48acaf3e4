"""himbeerecouch: the device agent that runs lab code from a CouchDB database.

Two programs share this package, each in a folder of its own:

- ``agent/``: what runs on every Pi (``himbeerecouch run``): the supervisor,
  its feed, workers, commands, heartbeat, logs and the answering side of
  discovery.  It may import the modules here and ``sandbox``; never ``ops``.
- ``ops/``: what an operator runs (provision, push, exec, status, logs,
  discover, deploy, the web page).  It may import the modules here (and
  ``sandbox.modules`` to check module names as the agent does); never ``agent``.
- here, at the bottom, what both need: ``identity``, ``config``, ``couch``,
  ``documents``, ``discovery`` (the protocol), ``errors``, ``arguments``; they
  import neither side.  ``cli`` only parses arguments and dispatches; nothing
  imports it.  ``prog`` and ``util`` are the old tool's entry points.
- ``runner`` and ``sandbox`` are the top-level folders ``runner/`` (what runs
  inside each worker: standard library only, nothing of the supervisor) and
  ``sandbox/`` (the boundary: nothing of the agent), linked in here so that a
  checkout imports as installed (setup.cfg says how).

This module stays tiny on purpose: every worker interpreter imports the package
``himbeerecouch.runner``, which imports this file first, and a worker must not
pay for (or see) the supervisor's code.  The old public calls are resolved
lazily.
"""

__version__ = "2.0.0"

__all__ = ["broadcast_message", "__version__"]


def __getattr__(name):
    if name == "broadcast_message":
        from .ops.discover import broadcast_message
        return broadcast_message
    raise AttributeError("module 'himbeerecouch' has no attribute %r" % name)
