"""gibench: a benchmark suite and leaderboard for gradient-interpretability regularizers.

The public Python API, used by plugin authors, notebooks and the tests. Heavy modules are imported on first use so
that ``import gibench`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gibench.api import (
    ANALYTIC_SCORE,
    SIGNAL_MASK,
    Curve,
    Dataset,
    DatasetBundle,
    EvalContext,
    EvalResult,
    Evaluator,
    Metric,
    Regularizer,
    Split,
    TrainingLoss,
)
from gibench.errors import ConfigError, GibenchError
from gibench.saliency import input_gradient

if TYPE_CHECKING:
    import pandas
    from torch import nn

    from gibench.config import Suite

__version__ = "0.1.0"

__all__ = [
    "ANALYTIC_SCORE", "SIGNAL_MASK", "ConfigError", "Curve", "Dataset", "DatasetBundle", "EvalContext", "EvalResult",
    "Evaluator", "GibenchError", "Metric", "Regularizer", "Split", "TrainingLoss", "__version__", "collect_results",
    "create_backbone", "create_evaluator", "create_regularizer", "input_gradient", "list_datasets", "list_evaluators",
    "list_regularizers", "load_dataset", "load_suite", "run_suite",
]


def list_regularizers() -> list[str]:
    from gibench import registry
    return registry.regularizers.names()


def create_regularizer(name: str, **params: Any) -> Regularizer:
    from gibench import registry
    return registry.regularizers.create(name, **params)


def list_evaluators() -> list[str]:
    from gibench import registry
    return registry.evaluators.names()


def create_evaluator(name: str, **params: Any) -> Evaluator:
    from gibench import registry
    return registry.evaluators.create(name, **params)


def list_datasets() -> list[str]:
    from gibench import registry
    return registry.datasets.names()


def load_dataset(name: str, data_root: str | Path | None = None, download: bool = False, **options: Any) -> DatasetBundle:
    """Load dataset ``name`` (no network unless ``download``); ``data_root`` defaults to the user cache folder."""
    from gibench import registry
    from gibench.data import default_data_root
    dataset = registry.datasets.create(name, **options)
    return dataset.load(Path(data_root) if data_root else default_data_root(), download=download)


def create_backbone(name: str, num_classes: int, in_chans: int, **options: Any) -> nn.Module:
    from gibench.models import create_backbone as _create
    return _create(name, num_classes=num_classes, in_chans=in_chans, **options)


def load_suite(name_or_path: str | Path) -> Suite:
    from gibench.config import load_suite as _load
    return _load(name_or_path)


def run_suite(suite: Suite, runs_dir: str | Path, **options: Any) -> Any:
    from gibench.runner import run_suite as _run
    return _run(suite, Path(runs_dir), **options)


def collect_results(runs_dir: str | Path) -> pandas.DataFrame:
    from gibench.results import collect_results as _collect
    return _collect(Path(runs_dir))
