"""The calls user code gets inside a worker.

The runner installs these names into ``builtins`` (so code written for the
first himbeerecouch keeps working without imports); they can also be
imported explicitly::

    from himbeerecouch.runner.api import log, should_quit, get_database

Quitting: the supervisor stops a worker with SIGINT.  The runner's handler
calls :func:`request_quit`, which sets the flag returned by
:func:`should_quit` and calls every registered quit notification once, in the
main thread (like any Python signal handler), so notifications should be
short: set an event, close a socket, ...
"""
import _thread
import builtins
import sys

__all__ = ["log", "should_quit", "register_quit_notification",
           "remove_quit_notification", "get_acct", "get_database"]

_quit = False
# Each registration is [callable, once-token].  The token is a lock that is
# acquired without blocking and never released: whoever acquires it first
# calls the notification, so it runs exactly once even when a registration
# races with SIGINT.  Blocking locks are avoided on purpose: the signal
# handler runs in the main thread and could wait on itself.
_registrations = []
_database = None  # {"url", "name", "user", "password", "ca_file"}, set by the runner


def log(*args):
    """Print the arguments, separated by spaces, as one line on stdout."""
    # One write for the whole line keeps lines from threads from mixing.
    line = " ".join(map(str, args)) + "\n"
    # Text from the database may hold lone surrogates (valid JSON, not
    # encodable): print them escaped rather than fail the user's code.
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        line.encode(encoding)
    except UnicodeEncodeError:
        line = line.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        pass
    sys.stdout.write(line)
    sys.stdout.flush()


def should_quit():
    """True once the supervisor has asked this worker to stop."""
    return _quit


def register_quit_notification(f):
    """Call ``f()`` once when the worker is asked to stop.

    If the stop was already requested, ``f`` is called at once.
    """
    if not callable(f):
        raise TypeError("quit notification %r is not callable" % (f,))
    registration = [f, _thread.allocate_lock()]
    _registrations.append(registration)
    if _quit:
        _notify(registration)


def remove_quit_notification(f):
    """Forget one registration of ``f`` (nothing happens if there is none)."""
    for registration in list(_registrations):
        if registration[0] == f:
            try:
                _registrations.remove(registration)
            except ValueError:
                pass  # removed concurrently
            return


def request_quit():
    """Set the quit flag and run the notifications (the SIGINT handler)."""
    global _quit
    _quit = True
    for registration in list(_registrations):
        _notify(registration)


def _notify(registration):
    if not registration[1].acquire(False):
        return  # already called
    try:
        registration[0]()
    except BaseException as exc:  # one failing notification must not stop the others
        from himbeerecouch.runner.failures import format_exception

        sys.stderr.write("himbeerecouch: exception in quit notification %r:\n%s"
                         % (registration[0], format_exception(exc)))
        sys.stderr.flush()


def configure_database(database):
    """Remember where the device's database is (called by the runner)."""
    global _database
    _database = dict(database) if database else None


def get_acct():
    """Return a ``couchdb.Server`` logged in as this device."""
    if _database is None:
        raise RuntimeError("no database configured: get_acct() works only inside "
                           "a himbeerecouch worker")
    import couchdb  # lazily: most workers never touch the database

    from himbeerecouch.runner.tls import verifying_session

    # HTTPS servers verify with the lab's CA, as the supervisor's connections do.
    server = couchdb.Server(_database["url"],
                            session=verifying_session(ca_file=_database.get("ca_file")))
    if _database.get("user"):
        # On the client's resource, where couchdb-python keeps basic-auth
        # credentials: never in the URL, argv or the environment.
        server.resource.credentials = (_database["user"], _database.get("password") or "")
    return server


def get_database():
    """Return the device's ``couchdb.Database`` (by default nedm/raspberries)."""
    server = get_acct()
    return server[_database["name"]]


def install_builtins():
    """Make the API callable from user modules without importing anything."""
    for name in __all__:
        setattr(builtins, name, globals()[name])
