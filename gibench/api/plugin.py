"""The contracts between gibench's core and its plugins, in one namespace. Types only, no logic.

Pixel space: every image tensor that crosses a contract is a float batch in [0, 1] of shape (N, C, H, W). Models
normalize internally (their first layer), so noise levels, attack radii and fill values are in pixel units.

A plugin is a class with a nested ``Config`` dataclass (hyper-parameters with defaults; ``__post_init__`` raises
``ValueError`` naming a bad value) and a constructor taking that config. Plugins are registered by name through the
entry-point groups ``gibench.regularizers``, ``gibench.evaluators`` and ``gibench.datasets``.

One module per contract, all re-exported here: :mod:`~gibench.api.plugin_base` (:class:`Plugin`, the dataset
capabilities), :mod:`~gibench.api.regularizer`, :mod:`~gibench.api.dataset` (with :class:`DataSizes`),
:mod:`~gibench.api.evaluator` (with :class:`EvalContext`), :mod:`~gibench.api.cost` (what an evaluation costs, for
the estimate) and :mod:`~gibench.api.protocols` (the shapes of the job and the auxiliary-model store, which live
above the contracts).
"""

from __future__ import annotations

from gibench.api.cost import CostContext, EvaluationCost, ModelPass, PluginWork, TrainStep, WorkTimer
from gibench.api.dataset import Dataset, DatasetBundle, DataSizes, Split
from gibench.api.evaluator import AuxCache, Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.passes import Passes
from gibench.api.plugin_base import (
    ANALYTIC_SCORE,
    CAPABILITIES,
    DECOY_SHORTCUT,
    IRRELEVANT_MASK,
    SIGNAL_MASK,
    TRAINING_ANNOTATIONS,
    VALIDATION_SPLIT,
    EmptyConfig,
    Plugin,
)
from gibench.api.protocols import AuxiliaryModel, AuxiliaryStore, EvaluatedJob, set_default_aux_store
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss

__all__ = [
    "ANALYTIC_SCORE", "CAPABILITIES", "DECOY_SHORTCUT", "IRRELEVANT_MASK", "SIGNAL_MASK", "TRAINING_ANNOTATIONS",
    "AuxCache", "AuxiliaryModel", "AuxiliaryStore", "CostContext",
    "Curve", "DataSizes", "Dataset", "DatasetBundle", "EmptyConfig", "EvalContext", "EvalResult", "EvaluatedJob",
    "EvaluationCost", "Evaluator", "Metric", "ModelPass", "Passes", "Plugin", "PluginWork", "Regularizer", "Split",
    "Sweep", "TrainStep", "TrainingLoss", "VALIDATION_SPLIT", "WorkTimer", "set_default_aux_store",
]
