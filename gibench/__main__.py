"""``python -m gibench`` is the ``gibench`` command."""

import sys

from gibench.cli import main

sys.exit(main())
