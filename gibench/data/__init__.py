"""Dataset factories, registered under the ``gibench.datasets`` entry-point group."""

from __future__ import annotations

__all__ = [
    "default_data_root",
]

from pathlib import Path

from gibench.core.paths import user_cache_root


def default_data_root() -> Path:
    """Where datasets are looked for unless ``--data-root`` says otherwise: ``data/`` in gibench's user cache folder
    (:func:`gibench.core.paths.user_cache_root`; ``$XDG_CACHE_HOME/gibench/data`` on Linux)."""
    return user_cache_root() / "data"
