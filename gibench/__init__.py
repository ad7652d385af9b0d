"""gibench: a benchmark suite and leaderboard for gradient-interpretability regularizers.

``gibench.__all__`` is the public Python API: these names are stable, and everything a plugin needs is among them.
Modules not named here are implementation; those that are public (:mod:`gibench.testing`, :mod:`gibench.core.params`,
:mod:`gibench.core.config_types`, :mod:`gibench.api`) declare their own ``__all__``. Heavy modules (the runner, timm)
are imported on first use, so ``import gibench`` stays cheap.

Contracts (:mod:`gibench.api`)
    ``Regularizer``, ``TrainingLoss``; ``Evaluator``, ``Metric``, ``EvalContext``, ``EvalResult``, ``Curve``;
    ``Dataset``, ``DatasetBundle``, ``Split``; the dataset capabilities ``SIGNAL_MASK``, ``ANALYTIC_SCORE`` and the set
    of all of them, ``CAPABILITIES``.
Saliency (:mod:`gibench.api.saliency`)
    ``input_gradient``, ``logits_and_input_gradient``, ``leaf_logits_and_input_gradient``, ``label_logit``,
    ``pixel_scores``; ``x_gradient`` and its ``attribution_baseline`` (Hesse et al.'s X-Gradient),
    ``integrated_gradients``, and ``saliency_function`` (a saliency method's name → ``ctx.saliency``).
Evaluator helpers: batching and artifacts (:mod:`gibench.api.artifacts`)
    ``eval_subset``, ``batches``, ``save_grid``, ``save_saliency_grid``, ``save_curves``, ``to_unit``,
    ``GRID_IMAGES``.
Evaluator helpers: ranks (:mod:`gibench.api.ranks`)
    ``rankdata_average`` (tie-averaged ranks, as ``scipy.stats.rankdata``) and ``spearman`` (Spearman's rank
    correlation, 0 for a constant map); the module also holds the rank positions and pixel counts of the removal
    evaluators. Per-image random draws: :mod:`gibench.api.draws`; extra forward passes and precision:
    :mod:`gibench.api.passes`.
Dataset helper (:mod:`gibench.data.tensors`)
    ``make_bundle``.
Plugin configs (:mod:`gibench.core.config_types`, :mod:`gibench.core.params`)
    ``plugin_config``; the shared field types ``Weight``, ``Sigma``, ``NoiseStd``, ``NumSamples``, ``BNMode``,
    ``ChannelReduction``, ``Fraction``, ``FractionOrAll``, ``IncreasingFractions``, ``IncreasingSigmas``,
    ``DistinctFractions``, ``Probability``, ``PixelValue``, ``PositiveInt``, ``NonNegativeInt``, ``PositiveFloat``,
    ``NonNegativeFloat``, ``Limit``, ``Seed``, ``Seeds``, ``NonEmptyStr``, ``SaliencyMethod``, ``IGSteps``; the
    constraints ``Rule``, ``Increasing``, ``Distinct``, ``NonEmpty``; ``check`` and ``did_you_mean`` for
    ``__post_init__`` rules and messages.
Errors (:mod:`gibench.core.errors`)
    ``GibenchError`` and its subclasses ``ConfigError``, ``UnknownPluginError``, ``PluginLoadError``, ``DataError``,
    ``SubmissionError``, ``TrainingError``, ``PreflightError``.
Plugins by name
    ``list_regularizers``, ``create_regularizer``, ``list_evaluators``, ``create_evaluator``, ``list_datasets``,
    ``load_dataset``, ``create_backbone``.
Auxiliary models, for evaluators that train their own (:mod:`gibench.store.auxiliary`)
    ``auxiliary_classifier`` (get or train a classifier with gibench's training loop, stored once per runs
    directory), its ``AuxModel``, ``require_quality`` (refuse numbers from a model below a quality floor) and
    ``tensors_sha256`` (names data outside a suite); the specs it takes, ``PluginSpec`` and ``TrainConfig``
    (:mod:`gibench.training.specs`); ``build_model`` (a backbone with the dataset's normalization in front, as jobs
    are built).
Running
    ``load_suite`` (a ``Suite``), ``run_suite`` (a ``RunSummary``, events to a ``RunObserver``),
    ``collect_results``; ``__version__``.

Testing plugins: :mod:`gibench.testing` (``check_regularizer``, ``check_evaluator``, ``tiny_model``, ``tiny_bundle``,
``make_eval_context``, ``registered``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gibench import _moved
from gibench.api import (
    ANALYTIC_SCORE,
    CAPABILITIES,
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
from gibench.api.artifacts import (
    GRID_IMAGES,
    batches,
    eval_subset,
    save_curves,
    save_grid,
    save_saliency_grid,
    to_unit,
)
from gibench.api.ranks import rankdata_average, spearman
from gibench.api.saliency import (
    attribution_baseline,
    input_gradient,
    integrated_gradients,
    label_logit,
    leaf_logits_and_input_gradient,
    logits_and_input_gradient,
    pixel_scores,
    saliency_function,
    x_gradient,
)
from gibench.core.config_types import (
    BNMode,
    ChannelReduction,
    Distinct,
    DistinctFractions,
    Fraction,
    FractionOrAll,
    IGSteps,
    Increasing,
    IncreasingFractions,
    IncreasingSigmas,
    Limit,
    NoiseStd,
    NonEmpty,
    NonEmptyStr,
    NonNegativeFloat,
    NonNegativeInt,
    NumSamples,
    PixelValue,
    PositiveFloat,
    PositiveInt,
    Probability,
    Rule,
    SaliencyMethod,
    Seed,
    Seeds,
    Sigma,
    Weight,
    plugin_config,
)
from gibench.core.errors import (
    ConfigError,
    DataError,
    GibenchError,
    PluginLoadError,
    SubmissionError,
    TrainingError,
    UnknownPluginError,
)
from gibench.core.params import check, did_you_mean
from gibench.data.tensors import make_bundle
from gibench.store import auxiliary as _auxiliary  # noqa: F401  (registers EvalContext's in-memory auxiliary store)
from gibench.store.auxiliary import AuxModel, require_quality, tensors_sha256
from gibench.store.auxiliary import classifier as auxiliary_classifier
from gibench.training.specs import PluginSpec, TrainConfig
from gibench.version import __version__

_moved.install()  # old module names (gibench.runner, ...) keep importing for one release

if TYPE_CHECKING:
    import pandas
    from torch import nn

    from gibench.running.preflight import PreflightError
    from gibench.running.runner import RunObserver, RunSummary
    from gibench.suites.suite import Suite

__all__ = [
    "ANALYTIC_SCORE", "AuxModel", "BNMode", "CAPABILITIES", "ChannelReduction", "ConfigError", "Curve", "DataError",
    "Dataset", "DatasetBundle", "Distinct", "DistinctFractions", "EvalContext", "EvalResult", "Evaluator", "Fraction",
    "FractionOrAll", "GRID_IMAGES", "GibenchError", "IGSteps", "Increasing", "IncreasingFractions",
    "IncreasingSigmas", "Limit", "Metric", "NoiseStd", "NonEmpty", "NonEmptyStr", "NonNegativeFloat",
    "NonNegativeInt", "NumSamples", "PixelValue", "PluginLoadError", "PluginSpec", "PositiveFloat", "PositiveInt",
    "PreflightError", "Probability", "Regularizer", "Rule", "RunObserver", "RunSummary", "SIGNAL_MASK",
    "SaliencyMethod", "Seed", "Seeds", "Sigma", "Split", "SubmissionError", "Suite", "TrainConfig", "TrainingError",
    "TrainingLoss", "UnknownPluginError", "Weight", "__version__", "attribution_baseline", "auxiliary_classifier",
    "batches", "build_model", "check", "collect_results", "create_backbone", "create_evaluator", "create_regularizer",
    "did_you_mean", "eval_subset", "input_gradient", "integrated_gradients", "label_logit",
    "leaf_logits_and_input_gradient", "list_datasets", "list_evaluators", "list_regularizers", "load_dataset",
    "load_suite", "logits_and_input_gradient", "make_bundle", "pixel_scores", "plugin_config", "rankdata_average",
    "require_quality", "run_suite", "saliency_function", "save_curves", "save_grid", "save_saliency_grid", "spearman",
    "tensors_sha256", "to_unit", "x_gradient",
]

#: Public names whose modules are heavy (timm, the runner): imported on first access.
_LAZY = {
    "PreflightError": "gibench.running.preflight",
    "RunObserver": "gibench.running.runner",
    "RunSummary": "gibench.running.runner",
    "Suite": "gibench.suites.suite",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gibench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def list_regularizers() -> list[str]:
    """The names of every registered regularizer (built-in and installed plugins), sorted.

    Example:
        >>> "erm" in list_regularizers()
        True
    """
    from gibench.api import registry
    return registry.regularizers.names()


def create_regularizer(name: str, **params: Any) -> Regularizer:
    """The regularizer registered as ``name``, with validated hyper-parameters.

    Args:
        name: the registered name (``gibench list regularizers``).
        **params: hyper-parameters of its ``Config``; strings from YAML are coerced to the declared types.

    Returns:
        The instance; ``.config`` holds every hyper-parameter, defaults included.

    Raises:
        UnknownPluginError: no such name (with a did-you-mean). ConfigError: a bad hyper-parameter, named with its
        allowed values. PluginLoadError: the plugin failed to import or is declared wrongly.

    Example:
        >>> create_regularizer("gradient_norm", weight="1e-2").config.weight
        0.01
    """
    from gibench.api import registry
    return registry.regularizers.create(name, **params)


def list_evaluators() -> list[str]:
    """The names of every registered evaluator, sorted.

    Example:
        >>> "accuracy" in list_evaluators()
        True
    """
    from gibench.api import registry
    return registry.evaluators.names()


def create_evaluator(name: str, **params: Any) -> Evaluator:
    """The evaluator registered as ``name``, with validated hyper-parameters (errors as :func:`create_regularizer`).

    Example:
        >>> create_evaluator("accuracy", max_images=100).config.max_images
        100
    """
    from gibench.api import registry
    return registry.evaluators.create(name, **params)


def list_datasets() -> list[str]:
    """The names of every registered dataset, sorted.

    Example:
        >>> "mnist_subset" in list_datasets()
        True
    """
    from gibench.api import registry
    return registry.datasets.names()


def load_dataset(name: str, data_root: str | Path | None = None, download: bool = False,
                 **options: Any) -> DatasetBundle:
    """Load dataset ``name`` with its options.

    Args:
        name: the registered name (``gibench list datasets``).
        data_root: where datasets live on disk; default: the user cache folder.
        download: allow the network for missing files (never used otherwise).
        **options: options of the dataset's ``Config``.

    Returns:
        The :class:`DatasetBundle`.

    Example:
        >>> load_dataset("mnist_subset").num_classes
        10
    """
    from gibench.api import registry
    from gibench.data import default_data_root
    dataset = registry.datasets.create(name, **options)
    return dataset.load(Path(data_root) if data_root else default_data_root(), download=download)


def create_backbone(name: str, num_classes: int, in_chans: int, **options: Any) -> nn.Module:
    """A classifier backbone through ``timm.create_model`` (gibench's small nets included), randomly initialized.

    Args:
        name: a timm model name or ``gibench_linear`` / ``gibench_mlp`` / ``gibench_cnn``.
        num_classes, in_chans: the output classes and input channels.
        **options: timm / backbone options (``act: softplus``, ``drop_rate``, ...).

    Returns:
        The ``torch.nn.Module``; it takes images in [0, 1] (see :func:`gibench.training.models.build_model` for the
        normalization layer the runner adds).

    Example:
        >>> create_backbone("gibench_linear", num_classes=10, in_chans=1).__class__.__name__
        'GibenchLinear'
    """
    from gibench.training.models import create_backbone as _create
    return _create(name, num_classes=num_classes, in_chans=in_chans, **options)


def build_model(backbone: str, options: Mapping[str, Any], bundle: DatasetBundle) -> nn.Sequential:
    """The backbone ``backbone`` with ``options`` for ``bundle``'s images, behind a layer that normalizes them with
    the dataset's channel statistics: the model a job of that dataset trains (:func:`gibench.training.models.
    build_model`; imported on first use, with timm).

    Args:
        backbone: a timm model name or one of gibench's small nets.
        options: the backbone's options.
        bundle: the dataset whose class count, channels, image size and statistics the model takes.

    Returns:
        ``Sequential(normalize=..., backbone=...)``, randomly initialized.

    Example:
        >>> from gibench.testing import tiny_bundle
        >>> build_model("gibench_linear", {}, tiny_bundle()).backbone.__class__.__name__
        'GibenchLinear'
    """
    from gibench.training.models import build_model as _build
    return _build(backbone, options, bundle)


def load_suite(name_or_path: str | Path) -> Suite:
    """A validated suite: a shipped suite's name (``smoke``, ``standard``, ``full``) or a YAML file's path.

    Raises:
        ConfigError: naming file, key and the valid keys or values.

    Example:
        >>> load_suite("smoke").name
        'smoke'
    """
    from gibench.suites.suite import load_suite as _load
    return _load(name_or_path)


def run_suite(
    suite: Suite | str | Path,
    runs_dir: str | Path,
    *,
    device: str | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    retry_failed: bool = False,
    eval_batch_size: int = 256,
    preflight: bool = True,
    claim_timeout_s: float = 120.0,
    heartbeat_s: float | None = None,
    claim_poll_s: float = 2.0,
    executor: Literal["local", "ray"] = "local",
    executor_options: Mapping[str, Any] | None = None,
    observer: RunObserver | None = None,
    dry_run: bool = False,
) -> RunSummary:
    """Preflight, then train and evaluate every job of ``suite`` into ``runs_dir`` (what ``gibench run`` does).

    Finished jobs and evaluations in ``runs_dir`` are reused, so a rerun resumes; any number of processes may share
    one runs directory (each job is claimed before it trains).

    Args:
        suite: a :class:`Suite` from :func:`load_suite`, or a shipped suite's name or a YAML path.
        runs_dir: the run store (created if missing).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or None/``"auto"`` (CUDA when available).
        data_root: where datasets live on disk; default: the user cache folder.
        download: allow downloading missing datasets.
        retry_failed: train again jobs whose training failed before (otherwise their failure is kept).
        eval_batch_size: images per evaluation batch (reduced step by step when an evaluation runs out of memory).
        preflight: check data, backbones, plugins, device and runs directory before anything trains.
        claim_timeout_s: a job claimed by a worker on another host without a heartbeat for this long is taken over.
        heartbeat_s: how often a worker refreshes its claim (must be shorter than ``claim_timeout_s``; default
            ``min(10, claim_timeout_s / 4)``).
        claim_poll_s: how often the local executor looks again at jobs that other workers hold.
        executor: ``"local"`` (this process, in the suite's order) or ``"ray"`` (one task per job).
        executor_options: options of the Ray executor (``address``, ``gpus_per_job``); local takes none.
        observer: receives progress events (:class:`RunObserver`); default: none.
        dry_run: run the preflight and report each job's state (planned, cached, failed, invalid) writing nothing.

    Returns:
        The :class:`RunSummary`: one ``gibench.running.runner.JobReport`` per job (state, reason, evaluations), the
        warnings, and ``ok`` / ``failures()``.

    Raises:
        PreflightError: listing every problem the preflight found; nothing was trained. ConfigError: a bad option.

    Example:
        >>> summary = run_suite("smoke", "runs", device="cpu")  # doctest: +SKIP
        >>> summary.ok, summary.count("trained")  # doctest: +SKIP
        (True, 3)
    """
    from gibench.running.runner import RunOptions
    from gibench.running.runner import run_suite as _run

    if not hasattr(suite, "datasets"):
        suite = load_suite(suite)
    options = RunOptions(data_root=Path(data_root) if data_root is not None else None, download=download,
                         device=device, retry_failed=retry_failed, eval_batch_size=eval_batch_size,
                         claim_timeout_s=claim_timeout_s, heartbeat_s=heartbeat_s, claim_poll_s=claim_poll_s,
                         preflight=preflight)
    return _run(suite, Path(runs_dir), options, observer=observer, executor=executor,
                executor_options=executor_options, dry_run=dry_run)


def collect_results(runs_dir: str | Path) -> pandas.DataFrame:
    """The long results table of a runs directory: one row per job × evaluator × metric, with provenance columns.

    Example:
        >>> collect_results("runs").groupby(["regularizer", "metric"])["value"].mean()  # doctest: +SKIP
    """
    from gibench.results.tables import collect_results as _collect
    return _collect(Path(runs_dir))
