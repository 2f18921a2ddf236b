"""``python -m gsu.cli``: the same as the ``gsu`` command."""

import sys

from gsu.cli import main

sys.exit(main())
