"""What every ``gibench`` command shares: the two consoles it prints to and its warning line. The
commands read the consoles as ``_shared.stdout`` and ``_shared.stderr`` when they print, never bind them at import time,
so that replacing ``gibench.cli.stdout`` (the package forwards the assignment here, see ``gibench/cli/__init__``)
redirects every command's output.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

__all__ = ["stderr", "stdout", "warn"]

# Outside a terminal (pipes, CI logs) rich would wrap at 80 columns and cut paths in two; use wide lines there.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

