"""What runs inside each worker interpreter.

The supervisor starts every code document in a fresh interpreter as
``python -I -u -m himbeerecouch.runner --startup-fd N --status-fd M``.  The
modules here read the start-up data, confine the process, install the user
API (``log``, ``should_quit``, ``get_database``, ...) and call the document's
``main()``, reporting what happened as JSON lines on the status pipe.

This package must import nothing from the supervisor (``himbeerecouch.*``
outside ``himbeerecouch.runner``) and only the standard library at start-up,
so that a worker stays small; ``couchdb`` is imported only when user code
asks for the database.  Installed as ``himbeerecouch.runner``; the
supervisor starts it as a program and imports only ``tls`` from it (the
verifying HTTPS sessions that both sides make, standard library only).
"""
