"""The old tool's entry point: ``himbeerecouch.prog.run("/etc/rspby/server")``.

Deployed devices and notes start the agent with::

    python3 -c 'import himbeerecouch.prog as p; p.run("/etc/rspby/server")'

:func:`run` blocks while the agent runs, exactly like
``himbeerecouch run --server-file PATH``, and returns its exit status.
Keyword arguments set any other option of ``himbeerecouch run`` by its long
name (``run(path, macid=..., serial=..., state_dir=...)``); they never reach
a command line, so a serial given here stays out of ``ps``.
"""
from .agent import main as agent_main
from .errors import run_command


def _arguments(server_file, overrides):
    """The ``himbeerecouch run`` arguments for ``overrides`` (option dest -> value)."""
    parser = _run_parser()
    # argparse has no public list of its options; _actions is stable since 2.7.
    actions = [a for a in parser._actions if a.option_strings]
    options = {a.dest: a for a in actions}
    # A switch by the value it sets: --answer-discovery (True), --no-spare (False).
    switches = {(a.dest, a.const): a for a in actions if a.nargs == 0 and a.const is not None}
    del options["help"], options["server_file"]     # server_file is run()'s first argument
    unknown = set(overrides) - set(options)
    if unknown:
        raise TypeError("run() got unknown option(s): %s" % ", ".join(sorted(unknown)))
    argv = ["run", "--server-file", str(server_file)]
    for key, value in sorted(overrides.items()):
        if value is None:
            continue
        action = options[key]
        if action.nargs == 0:       # a switch such as --answer-discovery
            switch = switches.get((key, value)) if isinstance(value, bool) else None
            if switch is None and value is not False:
                switch = action
            if switch is not None:
                argv.append(switch.option_strings[-1])
        else:
            argv += [action.option_strings[-1], str(value)]
    return argv


def run(server_file="/etc/rspby/server", **overrides):
    """Run the agent with the server URL stored in ``server_file``; blocks.

    Returns the exit status (0 after SIGINT or SIGTERM).  Raises SystemExit
    on a bad option, as the command line does.
    """
    args = _run_parser().parse_args(_arguments(server_file, overrides)[1:])
    return run_command(args.func, args)


def _run_parser():
    """The parser of ``himbeerecouch run`` alone."""
    import argparse

    class OneCommand:      # stands in for argparse's sub-parsers
        def add_parser(self, name, **kwargs):
            return argparse.ArgumentParser(prog="himbeerecouch " + name)

    return agent_main.add_parser(OneCommand())
