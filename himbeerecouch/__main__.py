"""``python -m himbeerecouch`` is the ``himbeerecouch`` command."""
import sys

from .cli import main

sys.exit(main())
