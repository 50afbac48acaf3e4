"""The agent: what runs on every Pi (``himbeerecouch run``).

One supervisor loop (supervisor) owns every worker of the device; the feed,
the command executor (commands), the heartbeat and log writer (publisher,
logbook) and the discovery responder (answer) are threads that turn I/O into
events.  Workers are started through the sandbox (launcher) and speak one
typed message type (printer, streams).

May import: the shared modules at the package's bottom (identity, config,
couch, documents, discovery, errors, arguments) and ``himbeerecouch.sandbox``.
Never imports ``himbeerecouch.ops`` or ``himbeerecouch.cli``, and is never
imported by ``himbeerecouch.runner`` or ``himbeerecouch.sandbox``.
"""
