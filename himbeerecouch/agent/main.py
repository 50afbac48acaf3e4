"""``himbeerecouch run``: the agent in the foreground (what systemd and supervisord start).

Loads the configuration and the device's identity, waits for a discovery
broadcast when no server is configured, then hands over to the supervisor.
"""
import logging
from dataclasses import replace

from .. import couch  # noqa: F401  (first: it imports the couchdb client lightly)
from .. import config as configuration
from ..arguments import add_ca_file_option, add_identity_options, positive_float
from ..errors import EXIT_USAGE, UserError
from ..identity import IdentityError

RUN_SETTINGS = ("server", "server_file", "config_file", "database", "macid", "serial",
                "interface", "state_dir", "stop_timeout", "worker_user", "command_user",
                "heartbeat_interval", "feed_heartbeat", "answer_discovery", "ca_file", "spare")


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
    p.add_argument("--answer-discovery", action="store_const", const=True, default=None,
                   help="keep answering discovery broadcasts once a server is configured")
    p.add_argument("--no-spare", dest="spare", action="store_const", const=False, default=None,
                   help="start every worker's interpreter only when it is needed, keeping "
                        "no warm spare (saves the spare's memory; reloads are slower)")
    p.add_argument("--discovery-port", type=int, default=53000,
                   help="UDP port of discovery broadcasts (default: %(default)s)")
    p.add_argument("--discovery-address", default="",
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
    config = _discovery_step(args, config, identity, overrides)
    if config is None:
        return 0
    supervisor = Supervisor(config, identity, printer, overrides)
    try:
        return supervisor.run()
    except RuntimeError as e:
        raise UserError(str(e))


def _discovery_step(args, config, identity, overrides):
    """Wait for a discovery broadcast when no server is configured; with
    --answer-discovery keep answering them.  None: stopped while waiting."""
    from . import answer
    if config.server is None:
        try:
            url = answer.wait_for_server(identity, config.server_file,
                                         args.discovery_address, args.discovery_port)
        except OSError as e:
            raise UserError(str(e.strerror or e))
        if url is None:
            return None
        try:
            config = configuration.load(overrides)
        except configuration.ConfigError as e:
            raise UserError(str(e), EXIT_USAGE)
        if config.server is None:      # the server file could not be written
            config = replace(config, server=url)
    if config.answer_discovery:
        try:
            answer.AnswerThread(identity, config.server_file, config.server,
                                args.discovery_address, args.discovery_port,
                                switch=args.server is None).start()
        except OSError as e:
            raise UserError("cannot listen for discovery broadcasts on UDP port %d: %s"
                            % (args.discovery_port, e.strerror or e))
    return config
