"""The plugin contracts and the helpers plugins may use (docs/architecture.md, "Layers").

The contracts themselves (:class:`Regularizer`, :class:`Evaluator`, :class:`Dataset`, :class:`EvalContext`,
:class:`Metric`, ...) are defined in :mod:`gibench.api.plugin` and re-exported here, so ``from gibench.api import
Evaluator`` reads as before. Beside them: :mod:`~gibench.api.registry` (entry-point discovery),
:mod:`~gibench.api.saliency` (the explained quantity), :mod:`~gibench.api.artifacts` (batching and the artifact
writer), :mod:`~gibench.api.draws` (per-image random draws), :mod:`~gibench.api.ranks` (ranks, Spearman, rank
positions) and :mod:`~gibench.api.passes` (extra forward passes and precision for regularizers).
"""

from gibench.api.plugin import *  # noqa: F401,F403  (the contracts: see gibench.api.plugin.__all__)
from gibench.api.plugin import __all__  # noqa: F401
