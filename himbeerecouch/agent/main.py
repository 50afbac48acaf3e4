"""``himbeerecouch run``: the agent in the foreground (what systemd and supervisord start).

Loads the configuration, the device's identity and its login secret (made
at the first start), waits for a discovery broadcast when no server is
configured, keeps answering them (unless --no-answer-discovery), then hands
over to the supervisor.
"""
import logging
import os
from dataclasses import replace

from .. import couch  # noqa: F401  (first: it imports the couchdb client lightly)
from .. import config as configuration
from ..arguments import add_ca_file_option, add_identity_options, positive_float
from ..errors import EXIT_USAGE, UserError
from ..identity import IdentityError

RUN_SETTINGS = ("server", "server_file", "config_file", "database", "macid", "serial",
                "interface", "state_dir", "stop_timeout", "worker_user", "command_user",
                "heartbeat_interval", "feed_heartbeat", "answer_discovery", "ca_file", "spare",
                "login", "secret_file", "discovery_legacy_password", "discovery_address",
                "discovery_port")

log = logging.getLogger("himbeerecouch.agent")


def add_parser(sub):
    p = sub.add_parser("run", help="run the agent in the foreground",
                       description="Run the agent in the foreground: follow this device's "
                                   "documents and supervise one worker per code document.")
    p.add_argument("--server", help="CouchDB URL, e.g. http://host:5984")
    p.add_argument("--server-file", help="file holding the server URL (default: %s)"
                   % configuration.DEFAULT_SERVER_FILE)
    p.add_argument("--config", dest="config_file",
                   help="configuration file (default: %s)" % configuration.DEFAULT_CONFIG_FILE)
    p.add_argument("--database", help="database (default: %s)" % configuration.DEFAULT_DATABASE)
    add_identity_options(p)
    add_ca_file_option(p)
    p.add_argument("--state-dir", help="state folder (default: %s)"
                   % configuration.DEFAULT_STATE_DIR)
    p.add_argument("--stop-timeout", type=positive_float,
                   help="grace period between SIGINT and SIGKILL, seconds (default: 20)")
    p.add_argument("--worker-user", help="run workers as this user (supervisor runs as root)")
    p.add_argument("--command-user", help="run command documents as this user (default: the "
                                          "supervisor's user; it runs as root)")
    p.add_argument("--heartbeat-interval", type=positive_float,
                   help="seconds between heartbeat documents (default: 10)")
    p.add_argument("--feed-heartbeat", type=positive_float,
                   help="seconds between keep-alive lines of the changes feed (default: 5)")
    p.add_argument("--no-answer-discovery", dest="answer_discovery", action="store_const",
                   const=False, default=None,
                   help="stop answering discovery broadcasts once a server is configured "
                        "(adopt then no longer finds the device)")
    p.add_argument("--answer-discovery", action="store_const", const=True, default=None,
                   help="keep answering discovery broadcasts once a server is configured "
                        "(the default)")
    p.add_argument("--discovery-legacy-password", action="store_const", const=True,
                   default=None,
                   help="UNSAFE: put the legacy password into discovery answers, for old "
                        "operator scripts; anyone on the LAN can then log in as the device")
    p.add_argument("--login", choices=configuration.LOGIN_MODES,
                   help="which password the device logs in with: auto (its own secret, else "
                        "the legacy one; the default), secret, legacy (the old agent's only)")
    p.add_argument("--secret-file", help="file of the device's login secret (default: "
                                         "secret-<MacID> in the state folder; on a netboot Pi "
                                         "whose state folder does not survive a reboot, a "
                                         "file on persistent storage of its own)")
    p.add_argument("--no-spare", dest="spare", action="store_const", const=False, default=None,
                   help="start every worker's interpreter only when it is needed, keeping "
                        "no warm spare (saves the spare's memory; reloads are slower)")
    p.add_argument("--discovery-port", type=int,
                   help="UDP port of discovery broadcasts (default: 53000)")
    p.add_argument("--discovery-address",
                   help="address to listen on for discovery broadcasts (default: all)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(args):
    from .. import identity as ident
    from .printer import Printer, install
    from .supervisor import Supervisor

    overrides = {k: getattr(args, k, None) for k in RUN_SETTINGS}
    try:
        config = configuration.load(overrides)
        identity = ident.resolve(config.macid, config.serial, config.interface)
    except (configuration.ConfigError, IdentityError) as e:
        raise UserError(str(e), EXIT_USAGE)
    printer = Printer()
    install(printer, logging.DEBUG if args.verbose else logging.INFO)
    try:
        import setproctitle
        setproctitle.setproctitle("himbeerecouch: supervisor %d" % identity.macid)
    except ImportError:
        pass
    login = _device_login(config, identity)
    config = _discovery_step(config, identity, login, overrides)
    if config is None:
        return 0
    supervisor = Supervisor(config, identity, printer, overrides, login=login)
    try:
        return supervisor.run()
    except RuntimeError as e:
        raise UserError(str(e))


def _device_login(config, identity):
    """The Login of this device, its secret made at the first start."""
    from . import secret as device_secret
    from .login import Login
    if config.login == "legacy":
        log.info("login = legacy: device %d logs in with the legacy password only, and "
                 "cannot be adopted", identity.macid)
        return Login(identity, None, "legacy", config.server, config.ca_file)
    path = device_secret.secret_path(config, identity.macid)
    try:
        if not config.secret_file:
            # As the supervisor makes it (the secret file itself is 0600).
            os.makedirs(config.state_dir, mode=0o755, exist_ok=True)
        secret = device_secret.load_or_create(path, identity.macid)
    except OSError as e:
        raise UserError("cannot make the state folder %s: %s" % (config.state_dir,
                                                                e.strerror or e))
    except device_secret.SecretError as e:
        raise UserError(str(e))
    log.info("device %d: fingerprint %s (of its login secret in %s; `himbeerecouch adopt` "
             "lists it)", identity.macid, secret.fingerprint, path)
    remember = os.path.join(config.state_dir, "login-%d.json" % identity.macid)
    return Login(identity, secret, config.login, config.server, config.ca_file, remember)


def _discovery_step(config, identity, login, overrides):
    """Wait for a discovery broadcast when no server is configured; then keep
    answering them (unless --no-answer-discovery).  None: stopped while waiting."""
    from . import answer

    def responder():
        try:
            return answer.Responder(
                lambda: answer.device_answer(identity, login, config.discovery_legacy_password),
                config.discovery_address, config.discovery_port,
                on_adopt=login.adopting)
        except OSError as e:
            raise UserError("cannot listen for discovery broadcasts on UDP port %d: %s"
                            % (config.discovery_port, e.strerror or e)) from None

    if config.discovery_legacy_password:
        log.warning("--discovery-legacy-password: every discovery answer holds the legacy "
                    "password; anyone on the LAN who asks can log in as this device")
    if config.server is None:
        url = answer.wait_for_server(responder(), config.server_file, config.ca_file)
        if url is None:
            return None
        try:
            config = configuration.load(overrides)
        except configuration.ConfigError as e:
            raise UserError(str(e), EXIT_USAGE)
        if config.server is None:      # the server file could not be written
            config = replace(config, server=url)
        login.retarget(config.server, config.ca_file)
    if config.answer_discovery:
        answer.AnswerThread(responder(), lambda: login.url).start()
    return config
