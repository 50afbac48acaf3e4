"""Entry point: ``python -I -u -m himbeerecouch.runner --startup-fd N --status-fd M``."""
import sys

from himbeerecouch.runner.worker import run

sys.exit(run(sys.argv[1:]))
