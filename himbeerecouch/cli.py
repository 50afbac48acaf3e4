"""The ``himbeerecouch`` command line: parses the arguments and dispatches.

Each side registers its own sub-commands: the agent (``run``,
``credentials``) in :mod:`himbeerecouch.agent`, the operator's tools
(``provision``, ``operator``, ``discover``, ``adopt``, ``push``, ``exec``, ``status``,
``logs``, ``device``, ``rollout``) in :mod:`himbeerecouch.ops`.  Nothing imports this module but the entry points
(``python -m himbeerecouch`` and the ``himbeerecouch`` script).
"""
import argparse
import sys

from . import __version__
from . import couch  # noqa: F401  (first: it imports the couchdb client lightly)
from .errors import run_command


def build_parser():
    from .agent import answer, main as agent_main
    from .ops import adopt, deployments, discover, fleet, monitor, operators, provision

    parser = argparse.ArgumentParser(
        prog="himbeerecouch",
        description="Runs lab code from a CouchDB database on a fleet of Raspberry Pis.")
    parser.add_argument("--version", action="version", version="himbeerecouch " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # The device's side, then the operator's.
    agent_main.add_parser(sub)
    answer.add_parser(sub)
    provision.add_parser(sub)
    operators.add_parser(sub)
    discover.add_parser(sub)
    adopt.add_parser(sub)
    fleet.add_parsers(sub)
    monitor.add_parsers(sub)
    deployments.add_parsers(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "take_extras", None):
        # argparse fills a list of positionals before the options between
        # them (`adopt URL --timeout 5 MAC`): the command takes the rest.
        extras = args.take_extras(args, extras)
    if extras:
        # A command may say more (exec: where its program's own options go),
        # with its own usage line.
        (getattr(args, "parser", None) or parser).error(
            "unrecognized arguments: %s%s" % (" ".join(extras), getattr(args, "extras_hint", "")))
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
