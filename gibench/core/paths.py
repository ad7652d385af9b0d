"""The one user cache folder gibench keeps files in when no option names another: datasets
(:func:`gibench.data.default_data_root`) and the estimate's calibrations
(:func:`gibench.running.calibration.default_cache_path`).

The folder is platformdirs' user cache folder for ``gibench``: ``$XDG_CACHE_HOME/gibench`` (``~/.cache/gibench`` when
the variable is unset) on Linux, ``~/Library/Caches/gibench`` on macOS, ``%LOCALAPPDATA%\\gibench\\Cache`` on Windows.
It is read at every call, so a changed ``XDG_CACHE_HOME`` (as tests set it) takes effect at once.
"""

from __future__ import annotations

__all__ = ["user_cache_root"]

from pathlib import Path

import platformdirs


def user_cache_root() -> Path:
    """gibench's user cache folder (not created here)."""
    return platformdirs.user_cache_path("gibench", appauthor=False)
