"""Dataset factories, registered under the ``gibench.datasets`` entry-point group."""

from __future__ import annotations

__all__ = [
    "default_data_root",
]

import os
from pathlib import Path


def default_data_root() -> Path:
    """Where datasets are looked for unless ``--data-root`` says otherwise: ``$XDG_CACHE_HOME/gibench/data``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gibench" / "data"
