"""Deprecated: the per-image random draws moved to :mod:`gibench.api.draws`.

This module re-imports them for one release and warns on import; import ``from gibench.api.draws import ...`` instead.
"""

from __future__ import annotations

import warnings

from gibench.api.draws import image_seed, per_image_draws  # noqa: F401  (re-exported for old imports)

__all__ = ["image_seed", "per_image_draws"]

warnings.warn("gibench.evaluators._draws is deprecated; import from gibench.api.draws instead",
              DeprecationWarning, stacklevel=2)
