"""The environment a worker starts with.

Built from scratch rather than copied from the supervisor's, so nothing the
supervisor was started with (credentials, COUCHDB_URL, proxies, ...) leaks
into user code.  ``HIMBEERECOUCH_TAG`` marks every process of a worker:
children inherit it, so the supervisor (and the guardian) can find them even
after they left the worker's session.
"""
import os
import pwd

TAG_VARIABLE = "HIMBEERECOUCH_TAG"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _home_of(user):
    try:
        entry = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.geteuid())
    except KeyError:
        return None
    return entry.pw_dir


def worker_environment(tag, home=None, user=None):
    """Return the environment for a worker tagged ``tag`` (running as ``user``)."""
    if not isinstance(tag, str) or not tag or "=" in tag or "\0" in tag:
        raise ValueError("bad worker tag %r" % (tag,))
    if home is None:
        home = _home_of(user)
        if not home or not os.path.isdir(home):
            home = "/"  # exists everywhere; better than a HOME that does not
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        TAG_VARIABLE: tag,
    }
    if user is not None:
        env["USER"] = env["LOGNAME"] = user
    if os.environ.get("TZ"):
        env["TZ"] = os.environ["TZ"]  # the lab's local time, nothing secret
    return env
