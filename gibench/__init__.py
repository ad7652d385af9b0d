"""gibench: a benchmark suite and leaderboard for gradient-interpretability regularizers.

``gibench.__all__`` is the public Python API: these names are stable, and everything a plugin needs is among them.
Modules not named here are implementation; those that are public (:mod:`gibench.testing`, :mod:`gibench.core.params`,
:mod:`gibench.core.config_types`, :mod:`gibench.api`) declare their own ``__all__``. Heavy modules (the runner, timm)
are imported on first use, so ``import gibench`` stays cheap.

Contracts (:mod:`gibench.api`)
    ``Regularizer``, ``TrainingLoss``, ``Sweep`` (a regularizer's strength knob and the settings to compare it at);
    ``Evaluator``, ``Metric``, ``EvalContext``, ``EvalResult``, ``Curve``;
    ``Dataset``, ``DatasetBundle``, ``Split``, ``DataSizes`` (what ``Dataset.sizes`` says without loading); the dataset
    capabilities ``SIGNAL_MASK``, ``ANALYTIC_SCORE``, ``IRRELEVANT_MASK``, ``DECOY_SHORTCUT`` and the set of all of
    them, ``CAPABILITIES``; ``TRAINING_ANNOTATIONS``, those a regularizer may require.
Cost, for ``gibench run --estimate`` (:mod:`gibench.api.cost`)
    ``CostContext`` (what ``Evaluator.cost`` is given) and ``EvaluationCost`` (what it returns: work units counted);
    ``Passes``, model passes per image (what ``Regularizer.passes_per_step`` returns).
Saliency (:mod:`gibench.api.saliency`)
    ``input_gradient``, ``logits_and_input_gradient``, ``leaf_logits_and_input_gradient``, ``label_logit``,
    ``pixel_scores``; ``x_gradient`` and its ``attribution_baseline`` (Hesse et al.'s X-Gradient),
    ``integrated_gradients``, and ``saliency_function`` (a saliency method's name → ``ctx.saliency``);
    ``SaliencyOptions``, the one declaration of an evaluator's ``saliency`` and ``ig_steps`` options (its Config
    inherits it).
Evaluator helpers: batching and artifacts (:mod:`gibench.api.artifacts`)
    ``eval_subset``, ``batches``, ``save_grid``, ``save_saliency_grid``, ``save_curves``, ``to_unit``,
    ``GRID_IMAGES``.
Evaluator helpers: ranks (:mod:`gibench.api.ranks`)
    ``rankdata_average`` (ranks with every tie group given its average rank: scores within a relative 1e-4 are tied;
    with ``rtol=0`` exactly ``scipy.stats.rankdata``) and ``spearman`` (Spearman's rank correlation, 0 for a constant
    map); the module also holds the tie rule, the rank positions and pixel counts of the removal evaluators.
    Per-image random draws: :mod:`gibench.api.draws`; extra forward passes and precision:
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
Trained models (:mod:`gibench.submissions.model_load`)
    ``load_model``: one trained model by name (dataset, backbone, regularizer, seed or job hash), from a runs
    directory, an exported folder (``gibench export``), a submission or a URL, every file checked against its SHA-256.

Testing plugins: :mod:`gibench.testing` (``check_regularizer``, ``check_evaluator``, ``tiny_model``, ``tiny_bundle``,
``make_eval_context``, ``registered``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gibench import _moved
from gibench._lazy import collect_results, lazy_attributes, run_suite
from gibench.api import (
    ANALYTIC_SCORE,
    CAPABILITIES,
    DECOY_SHORTCUT,
    IRRELEVANT_MASK,
    SIGNAL_MASK,
    TRAINING_ANNOTATIONS,
    CostContext,
    Curve,
    Dataset,
    DatasetBundle,
    DataSizes,
    EvalContext,
    EvalResult,
    EvaluationCost,
    Evaluator,
    Metric,
    Passes,
    Regularizer,
    Split,
    Sweep,
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
    SaliencyOptions,
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
    from torch import nn

    from gibench.running.preflight import PreflightError
    from gibench.running.runner import RunObserver, RunSummary
    from gibench.suites.suite import Suite

__all__ = [
    "ANALYTIC_SCORE", "AuxModel", "BNMode", "CAPABILITIES", "ChannelReduction", "ConfigError", "CostContext", "Curve",
    "DECOY_SHORTCUT", "DataError", "DataSizes", "Dataset", "DatasetBundle", "Distinct", "DistinctFractions",
    "EvalContext", "EvalResult", "EvaluationCost", "Evaluator", "Fraction", "FractionOrAll", "GRID_IMAGES",
    "GibenchError", "IGSteps", "IRRELEVANT_MASK", "Increasing", "IncreasingFractions", "IncreasingSigmas", "Limit",
    "Metric", "NoiseStd", "NonEmpty", "NonEmptyStr", "NonNegativeFloat", "NonNegativeInt", "NumSamples", "Passes",
    "PixelValue", "PluginLoadError", "PluginSpec", "PositiveFloat", "PositiveInt", "PreflightError", "Probability",
    "Regularizer", "Rule", "RunObserver", "RunSummary", "SIGNAL_MASK", "SaliencyMethod", "SaliencyOptions", "Seed",
    "Seeds", "Sigma", "Split", "SubmissionError", "Suite", "Sweep", "TRAINING_ANNOTATIONS", "TrainConfig",
    "TrainingError", "TrainingLoss", "UnknownPluginError", "Weight", "__version__", "attribution_baseline",
    "auxiliary_classifier", "batches", "build_model", "check", "collect_results", "create_backbone", "create_evaluator",
    "create_regularizer", "did_you_mean", "eval_subset", "input_gradient", "integrated_gradients", "label_logit",
    "leaf_logits_and_input_gradient", "list_datasets", "list_evaluators", "list_regularizers", "load_dataset",
    "load_model", "load_suite", "logits_and_input_gradient", "make_bundle", "pixel_scores", "plugin_config",
    "rankdata_average", "require_quality", "run_suite", "saliency_function", "save_curves", "save_grid",
    "save_saliency_grid", "spearman", "tensors_sha256", "to_unit", "x_gradient",
]

#: Public names whose modules are heavy (timm, the runner): imported on first access.
_LAZY = {
    "PreflightError": "gibench.running.preflight",
    "RunObserver": "gibench.running.runner",
    "RunSummary": "gibench.running.runner",
    "Suite": "gibench.suites.suite",
}

__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)


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


def load_model(source: str | Path, *, dataset: str | None = None, backbone: str | None = None,
               regularizer: str | None = None, seed: int | None = None, job: str | None = None,
               train: str | None = None, sha256: str | None = None, download: bool = False,
               device: str = "cpu", cache_dir: str | Path | None = None,
               data_root: str | Path | None = None) -> nn.Module:
    """One trained model, by name: in eval mode, with its normalization layer, the network the evaluators scored
    (:mod:`gibench.submissions.model_load`; docs/models.md has the rules).

    Args:
        source: a runs directory, a folder written by ``gibench export`` (its ``models.json``), a submission folder
            that lists its models, a ``.safetensors`` file, or a URL (``https://``, ``http://``, ``file://``) of a
            weights file or of a ``models.json``.
        dataset: the dataset's name (any options) or label (``"blockmnist"``, ``"gaussian_mixture(dim=8)"``).
        backbone: the backbone's name (any options) or label with options in any order
            (``"gibench_cnn(act=softplus)"``).
        regularizer: the regularizer's name (any options) or its label (``"gradient_norm(weight=1e-3)"``; numbers
            compare by value).
        seed: the training seed.
        job: the job hash, or a prefix of it of at least 4 hex digits.
        train: the training config's label as ``gibench report`` prints it, or its train hash.
        sha256: for a URL, the SHA-256 of the file it names (required); for a local file or index, checked when
            given.
        download: allow fetching a URL that is not in the cache yet (nothing is downloaded otherwise); downloads
            land in ``models/`` of the user cache folder and are checked before they are read.
        device: where the model is put (``"cpu"``, ``"cuda"``, ...).
        cache_dir: the download cache (default: ``models/`` in gibench's user cache folder).
        data_root: where datasets live, for a runs directory whose dataset states no sizes and must be loaded to
            know the image shape.

    Returns:
        ``Sequential(normalize=..., backbone=...)`` with the trained weights, in eval mode; it takes images in
        [0, 1] and returns logits.

    Raises:
        ModelSelectionError: no model or several match (the message lists the candidates).
        ModelFileError: a file is missing, differs from its SHA-256 or size, or is not safetensors (an HTML page, a
        pickle, a truncated file), naming the file and the expected hash; a URL not in the cache without
        ``download=True``. Both are :class:`GibenchError`.

    Example:
        >>> model = load_model("models", dataset="blockmnist", backbone="gibench_cnn(act=softplus)",
        ...                    regularizer="score_matching", seed=1)  # doctest: +SKIP
        >>> model(torch.rand(8, 1, 28, 28)).shape  # doctest: +SKIP
        torch.Size([8, 10])
    """
    from gibench.submissions.model_load import load_model as _load
    return _load(source, dataset=dataset, backbone=backbone, regularizer=regularizer, seed=seed, job=job,
                 train=train, sha256=sha256, download=download, device=device, cache_dir=cache_dir,
                 data_root=data_root)


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
