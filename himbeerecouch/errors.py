"""What a user did wrong, as one line and an exit status: shared by both sides.

Every command raises :class:`UserError` for a mistake a user can make (a
wrong option, an unreachable server, a missing file); :func:`run_command`
prints it as one line and returns its status, never a traceback.
"""
import sys

EXIT_USAGE = 2


class UserError(Exception):
    """An error to show as one line, with an exit status."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def run_command(func, args):
    """Call ``func(args)`` (a command); its exit status, errors as one line."""
    try:
        return func(args) or 0
    except UserError as e:
        print("himbeerecouch: %s" % e, file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
