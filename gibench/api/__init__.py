"""The plugin contracts and the helpers plugins may use (docs/architecture.md, "Layers").

The contracts themselves (:class:`Regularizer`, :class:`Evaluator`, :class:`Dataset`, :class:`EvalContext`,
:class:`Metric`, the cost types, ...) are defined one per module (:mod:`~gibench.api.plugin_base`,
:mod:`~gibench.api.regularizer`, :mod:`~gibench.api.dataset`, :mod:`~gibench.api.evaluator`,
:mod:`~gibench.api.cost`, :mod:`~gibench.api.protocols`), gathered in :mod:`gibench.api.plugin` and re-exported here,
so ``from gibench.api import Evaluator`` reads as before. Beside them: :mod:`~gibench.api.registry` (entry-point
discovery), :mod:`~gibench.api.saliency` (the explained quantity and the shared saliency options),
:mod:`~gibench.api.artifacts` (batching and the artifact writer), :mod:`~gibench.api.draws` (per-image random draws),
:mod:`~gibench.api.ranks` (ranks, Spearman, rank positions), :mod:`~gibench.api.passes` (extra forward passes and
precision for regularizers), :mod:`~gibench.api.hessian` (Hessian-trace estimators and the score-matching
objective), :mod:`~gibench.api.masking` (ranked pixel removal and the area under its curve) and
:mod:`~gibench.api.denoiser` (the learned-score denoiser and its recipe).
"""

from gibench.api.plugin import *  # noqa: F401,F403  (the contracts: see gibench.api.plugin.__all__)
from gibench.api.plugin import __all__  # noqa: F401
