"""The agent's configuration: built-in defaults < configuration file < command line.

The configuration file is INI with one section ``[himbeerecouch]`` whose keys
are the long option names of ``himbeerecouch run`` (``stop_timeout = 30``).
The server URL comes from ``--server`` or else from the server file (the old
tool's ``/etc/rspby/server``: one line, the URL).  SIGHUP makes the
supervisor call :func:`load` again with the same command line.
"""
import configparser
import math
import os
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit, urlunsplit

from .documents import LIMIT_MAX
from .runner.tls import check_ca_file

DEFAULT_SERVER_FILE = "/etc/rspby/server"
DEFAULT_CONFIG_FILE = "/etc/rspby/himbeerecouch.conf"
DEFAULT_DATABASE = "nedm/raspberries"
DEFAULT_STATE_DIR = "/var/lib/himbeerecouch"
SECTION = "himbeerecouch"
LOGIN_MODES = ("auto", "secret", "legacy")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which value and why."""


@dataclass(frozen=True)
class Config:
    server: str = None
    server_file: str = DEFAULT_SERVER_FILE
    config_file: str = DEFAULT_CONFIG_FILE
    database: str = DEFAULT_DATABASE
    macid: int = None
    serial: str = None
    interface: str = None
    state_dir: str = DEFAULT_STATE_DIR
    stop_timeout: float = 20.0
    worker_user: str = None
    command_user: str = None     # commands run as this user (default: the supervisor's)
    heartbeat_interval: float = 10.0
    feed_heartbeat: float = 5.0  # seconds between the server's keep-alive lines on the feed
    memory_mb: int = None        # default limits for every worker
    cpu_seconds: int = None
    nofile: int = None
    answer_discovery: bool = True   # keep answering broadcasts (answers hold no secret)
    discovery_legacy_password: bool = False   # put the legacy password in answers: unsafe
    discovery_address: str = ""  # where to listen for discovery broadcasts ("": everywhere)
    discovery_port: int = 53000
    login: str = "auto"          # auto (secret, else legacy), secret, legacy (agent/login.py)
    secret_file: str = None      # default: <state_dir>/secret-<MacID>
    ca_file: str = None          # the lab's CA: HTTPS servers must verify with it
    spare: bool = True           # keep one warm runner interpreter for the next start
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def default_limits(self):
        return {"memory_mb": self.memory_mb, "cpu_seconds": self.cpu_seconds,
                "nofile": self.nofile}


_FIELD_TYPES = {f.name: f.type for f in fields(Config)}
# Zero makes no sense for these: a limit of 0 would stop every worker before
# it starts, a zero period would make the agent spin.
_POSITIVE = frozenset({"memory_mb", "cpu_seconds", "nofile", "feed_heartbeat",
                       "heartbeat_interval"})


def _convert(key, value):
    kind = _FIELD_TYPES[key]
    if value is None or kind is str:
        return value
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "yes", "true", "on"):
                return True
            if text in ("0", "no", "false", "off"):
                return False
            raise ValueError(value)
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError("%s: %r is not a valid %s" % (key, value, kind.__name__)) from None
    if not math.isfinite(number):
        raise ConfigError("%s: %r is not a finite number" % (key, value))
    if number < 0:
        raise ConfigError("%s: must not be negative" % key)
    if number == 0 and key in _POSITIVE:
        raise ConfigError("%s: must be positive" % key)
    if key in LIMIT_MAX and number > LIMIT_MAX[key]:
        raise ConfigError("%s: must be at most %d" % (key, LIMIT_MAX[key]))
    return number


def read_config_file(path):
    """The ``[himbeerecouch]`` values of ``path``; a missing file is no error."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            parser.read_file(f)
    except FileNotFoundError:
        return {}
    except (OSError, configparser.Error) as e:
        raise ConfigError("cannot read configuration file %s: %s" % (path, e)) from None
    if not parser.has_section(SECTION):
        return {}
    values = {}
    for key, value in parser.items(SECTION):
        key = key.replace("-", "_")
        if key not in _FIELD_TYPES or key in ("extra", "config_file"):
            raise ConfigError("%s: unknown setting %r" % (path, key))
        values[key] = _convert(key, value)
    return values


def read_server_file(path):
    """The server URL stored in ``path``, or None when there is none yet."""
    try:
        with open(path) as f:
            url = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError("cannot read server file %s: %s" % (path, e.strerror)) from None
    return url or None


def check_server_url(url):
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number
    except ValueError as e:
        raise ConfigError("server URL %r is not usable: %s" % (redact(url), e)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("server URL must look like http://host:5984, not %r" % redact(url))
    return url.rstrip("/")


def redact(url):
    """``url`` without its password, fit for logs and heartbeats."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    # The host and port exactly as written (brackets of an IPv6 address
    # included, a bad port too): only the credentials change.
    hostport = parts.netloc.rpartition("@")[2]
    netloc = "%s:***@%s" % (parts.username, hostport)
    return urlunsplit(parts._replace(netloc=netloc))


def without_credentials(url):
    """``url`` with no user name or password at all (what workers and the
    discovery answer may see)."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def load(overrides):
    """The configuration: defaults, then the file, then ``overrides`` (non-None values)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(_FIELD_TYPES)
    if unknown:
        raise ConfigError("unknown settings: %s" % ", ".join(sorted(unknown)))
    config_file = overrides.get("config_file", DEFAULT_CONFIG_FILE)
    values = read_config_file(config_file)
    values.update({k: _convert(k, v) for k, v in overrides.items()})
    config = replace(Config(), **values)
    if config.server is None:
        config = replace(config, server=read_server_file(config.server_file))
    if config.server is not None:
        config = replace(config, server=check_server_url(config.server))
    if not config.database:
        raise ConfigError("database: must not be empty")
    if config.ca_file:
        config = replace(config, ca_file=usable_ca_file(config.ca_file))
    if not 0 < config.discovery_port < 65536:
        raise ConfigError("discovery_port: must be 1..65535")
    if config.login not in LOGIN_MODES:
        raise ConfigError("login: %r is not one of %s" % (config.login, ", ".join(LOGIN_MODES)))
    return config


def usable_ca_file(path):
    """``path`` made absolute (workers run in other folders), once it proves usable."""
    reason = check_ca_file(path)
    if reason:
        raise ConfigError("ca_file: cannot use %s: %s" % (path, reason))
    return os.path.abspath(path)
