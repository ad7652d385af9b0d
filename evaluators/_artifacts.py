"""Deprecated: the evaluator artifact writer moved to :mod:`gibench.api.artifacts` (also re-exported by :mod:`gibench`).

This module re-imports it for one release and warns on import; import ``from gibench.api.artifacts import ...`` (or
``from gibench import ...``) instead.
"""

from __future__ import annotations

import warnings

from gibench.api.artifacts import (  # noqa: F401  (re-exported for old imports)
    GRID_IMAGES,
    GRID_MIN_SIDE,
    batches,
    eval_subset,
    save_curves,
    save_grid,
    save_saliency_grid,
    to_unit,
)
from gibench.core.fsio import atomic_write_with as _atomic_write  # noqa: F401  (the old private alias)

__all__ = [
    "GRID_IMAGES", "GRID_MIN_SIDE", "batches", "eval_subset", "save_curves", "save_grid", "save_saliency_grid",
    "to_unit",
]

warnings.warn("gibench.evaluators._artifacts is deprecated; import from gibench.api.artifacts (or gibench) instead",
              DeprecationWarning, stacklevel=2)
