"""Deprecated: the forward-pass helpers moved to :mod:`gibench.api.passes`.

This module re-imports them for one release and warns on import; import ``from gibench.api.passes import ...`` instead.
"""

from __future__ import annotations

import warnings

from gibench.api.passes import (  # noqa: F401  (re-exported for old imports)
    BN_MODES,
    batch_view,
    extra_pass_bn,
    full_precision,
    module_modes,
    per_sample_norm,
    tf32_off,
)

__all__ = ["BN_MODES", "batch_view", "extra_pass_bn", "full_precision", "module_modes", "per_sample_norm", "tf32_off"]

warnings.warn("gibench.regularizers._passes is deprecated; import from gibench.api.passes instead",
              DeprecationWarning, stacklevel=2)
