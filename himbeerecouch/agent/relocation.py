"""Moving to another server, when the server the device trusts says so.

No datagram moves a device that has a server (answer.py only answers).  What
moves it is its device document (``<MacID>_device``) on the server it
follows: an operator writes ``"server": "https://new.lab:6984"`` there
(``himbeerecouch device set ADMIN_URL MAC --server URL``).  The agent writes
that URL into its server file and follows it, as after SIGHUP.  A device
given ``--server`` (or ``server`` in its configuration file) stays where it
is and says so: its server is the operator's choice on the device.

The agent never goes back by itself: a server that does not answer, or does
not know the device, may be down for a while.  When the new one has not
answered for a while the log says how to go back by hand.
"""
import logging

from .. import config as configuration
from .answer import write_server_file

log = logging.getLogger("himbeerecouch.relocation")

SILENT_AFTER = 60.0       # say how to go back when the new server is silent this long


def requested_server(doc):
    """``(URL, None)`` the device document asks for, ``(None, why not)``, or ``(None, None)``."""
    server = (doc or {}).get("server")
    if server is None:
        return None, None
    if not isinstance(server, str):
        return None, "its server must be a URL such as https://couch.lab:6984"
    try:
        url = configuration.check_server_url(server.strip())
    except configuration.ConfigError as e:
        return None, str(e)
    if configuration.without_credentials(url) != url:
        return None, "its server must carry no user name or password"
    return url, None


class Relocation:
    """Decides, from the device document, whether to move; writes the server file."""

    def __init__(self, overrides):
        self.overrides = overrides
        self._said = None
        self._seen = None       # (revision of the device document, server) last decided on

    def _say_once(self, key, level, text, *args):
        if key != self._said:
            self._said = key
            log.log(level, text, *args)

    def _server_is_given(self, config):
        """Does the server come from --server or the configuration file (not the server file)?"""
        if self.overrides.get("server") is not None:
            return True
        try:
            return "server" in configuration.read_config_file(config.config_file)
        except configuration.ConfigError:
            return True         # cannot tell: do not move

    def wanted(self, doc, config):
        """The server to move to now (its URL, written into the server file), or None."""
        seen = (doc.get("_rev"), config.server)
        if seen == self._seen:
            return None         # decided already (every change of the feed asks)
        self._seen = seen
        url, problem = requested_server(doc)
        here = configuration.redact(config.server)
        if problem:
            self._say_once(("bad", doc.get("_rev")), logging.WARNING,
                           "device document %s: %s; staying with %s", doc.get("_id"), problem,
                           here)
            return None
        if url is None or url == configuration.without_credentials(config.server):
            return None
        if self._server_is_given(config):
            self._say_once(("given", url), logging.WARNING,
                           "the device document asks to move to %s; staying with %s (given "
                           "by --server or the configuration file)", url, here)
            return None
        try:
            write_server_file(config.server_file, url)
        except OSError as e:
            self._say_once(("unwritable", url), logging.ERROR,
                           "cannot move to %s as the device document asks: cannot write the "
                           "server file %s: %s", url, config.server_file, e.strerror or e)
            return None
        log.info("moving to %s, as its device document on %s asks (written to %s)", url,
                 here, config.server_file)
        return url

    def silent(self, config, old):
        log.warning("%s has not answered (or not taken this device's login) for %.0f s "
                    "since the move; the device stays with it. To go back, write %s into %s "
                    "on the device and send the agent SIGHUP", configuration.redact(config.server),
                    SILENT_AFTER, configuration.redact(old), config.server_file)
