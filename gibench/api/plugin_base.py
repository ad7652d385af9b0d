"""The base every plugin shares: :class:`Plugin` (a name, a ``Config`` dataclass, a version and its history) and the
dataset capabilities evaluators may require. Part of the contracts (:mod:`gibench.api.plugin`)."""

from __future__ import annotations

__all__ = ["ANALYTIC_SCORE", "CAPABILITIES", "DECOY_SHORTCUT", "IRRELEVANT_MASK", "SIGNAL_MASK", "TRAINING_ANNOTATIONS",
           "VALIDATION_SPLIT", "EmptyConfig", "Plugin"]

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

# Dataset capabilities an evaluator may require (DatasetBundle.capabilities).
SIGNAL_MASK = "signal_mask"  # test split extras["signal_mask"]: (N, 1, H, W) bool, True where the label signal lives
ANALYTIC_SCORE = "analytic_score"  # bundle.extras["score"]: callable (x, y | None) -> grad_x log p(x | y) or log p(x)
#: bundle.validation: a part of the training split held out for selection. No dataset declares it: the runner holds the
#: part out (gibench.data.validation) for the jobs of a suite that selects, and only those bundles have it.
VALIDATION_SPLIT = "validation_split"
#: extras["irrelevant_mask"] in both splits: (N, 1, H, W) bool, True on the pixels annotated as irrelevant to the label
#: (the annotation matrix A of Ross, Hughes & Doshi-Velez, "Right for the Right Reasons", IJCAI 2017): a decoy swatch.
IRRELEVANT_MASK = "irrelevant_mask"
#: test split extras["decoy_shortcut"]: (N, C, H, W) float in [0, 1], each test image with its decoy drawn by the
#: training split's rule from its own label, so the shortcut a model may have learned holds again (DecoyMNIST).
DECOY_SHORTCUT = "decoy_shortcut"
#: Every capability a dataset can offer; an evaluator's ``requires`` may name only these (checked when it loads).
CAPABILITIES: frozenset[str] = frozenset({SIGNAL_MASK, ANALYTIC_SCORE, VALIDATION_SPLIT, IRRELEVANT_MASK,
                                          DECOY_SHORTCUT})
#: The capabilities a regularizer may require (``Regularizer.requires``): per-sample annotations of the training
#: split, which the trainer hands to ``training_loss`` batch by batch.
TRAINING_ANNOTATIONS: frozenset[str] = frozenset({IRRELEVANT_MASK})


@dataclass(frozen=True)
class EmptyConfig:
    """The config of a plugin without hyper-parameters."""


class Plugin:
    """Common base of regularizers, evaluators and datasets.

    ``name`` is filled in by the registry from the entry-point name; ``Config`` is the plugin's hyper-parameter
    dataclass. Construct through :func:`gibench.create_regularizer` (and friends) to get validated, coerced
    parameters, or directly with ``MyPlugin(MyPlugin.Config(...))``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig
    #: Bump whenever the plugin's numbers change for the same config: stored models (regularizers, datasets) or
    #: results (evaluators) of another version are then recomputed rather than reused.
    version: ClassVar[str] = "1"
    #: Version -> one line saying what that version changed (enough for a researcher to judge whether the numbers of
    #: two versions compare), shown on the plugin's leaderboard page. Empty (the default) means "no history declared";
    #: a declared history must contain the current ``version`` (checked when the registry loads the plugin).
    history: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict[str, Any]:
        """The full config, defaults included, as plain JSON-able values."""
        return dataclasses.asdict(self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
