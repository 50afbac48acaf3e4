"""The operator's tools: what a lab engineer runs against the server.

provision (with designdoc, the design functions in ``design/``, and
webassets, the built page in ``web/``), push and exec (fleet), status and
logs (monitor), discover (the asking side of discovery), adopt (accounts
for the devices that answer) and deploy (onto a netboot root).  connection
holds what they share: the admin connection and one-line errors.

May import: the shared modules at the package's bottom (identity, config,
couch, documents, discovery, errors, arguments) and
``himbeerecouch.sandbox.modules`` (module names are checked as the agent
checks them).  Never imports ``himbeerecouch.agent`` or ``himbeerecouch.cli``;
nothing on a device's run path imports it.
"""
