"""The agent: what runs on every Pi (``himbeerecouch run``).

One supervisor loop (supervisor) owns every worker of the device; the feed,
the command executor (commands), the heartbeat and log writer (publisher,
logbook), the discovery responder (answer) and the login check (login, with
the device's secret: secret) are threads that turn I/O into events.  Workers
are started through the sandbox (launcher) and speak one typed message type
(printer, streams); relocation moves the device as its device document says.

May import: the shared modules at the package's bottom (identity, config,
couch, documents, discovery, errors, arguments) and ``himbeerecouch.sandbox``.
Never imports ``himbeerecouch.ops`` or ``himbeerecouch.cli``, and is never
imported by ``himbeerecouch.runner`` or ``himbeerecouch.sandbox``.
"""
