"""``python -m gibench.cli`` is the ``gibench`` command, as ``python -m gibench`` is."""

import sys

from gibench.cli import main

__all__: list[str] = []

sys.exit(main())
