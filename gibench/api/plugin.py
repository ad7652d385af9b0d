"""The contracts between gibench's core and its plugins. Types only, no logic.

Pixel space: every image tensor that crosses a contract is a float batch in [0, 1] of shape (N, C, H, W). Models
normalize internally (their first layer), so noise levels, attack radii and fill values are in pixel units.

A plugin is a class with a nested ``Config`` dataclass (hyper-parameters with defaults; ``__post_init__`` raises
``ValueError`` naming a bad value) and a constructor taking that config. Plugins are registered by name through the
entry-point groups ``gibench.regularizers``, ``gibench.evaluators`` and ``gibench.datasets``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "ANALYTIC_SCORE", "CAPABILITIES", "SIGNAL_MASK", "AuxCache", "AuxiliaryModel", "AuxiliaryStore", "Curve",
    "Dataset", "DatasetBundle", "EmptyConfig", "EvalContext", "EvalResult", "EvaluatedJob", "Evaluator", "Metric",
    "Plugin", "Regularizer", "Split", "TrainingLoss", "set_default_aux_store",
]

# Dataset capabilities an evaluator may require (DatasetBundle.capabilities).
SIGNAL_MASK = "signal_mask"  # test split extras["signal_mask"]: (N, 1, H, W) bool, True where the label signal lives
ANALYTIC_SCORE = "analytic_score"  # bundle.extras["score"]: callable (x, y | None) -> grad_x log p(x | y) or log p(x)
#: Every capability a dataset can offer; an evaluator's ``requires`` may name only these (checked when it loads).
CAPABILITIES: frozenset[str] = frozenset({SIGNAL_MASK, ANALYTIC_SCORE})


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


# ----------------------------------------------------------------------------------------------------------------------
# Regularizers


@dataclass(frozen=True)
class TrainingLoss:
    """The full training loss of one batch.

    ``total`` is the scalar to back-propagate. ``parts`` are detached 0-dim tensors to log (cross-entropy, penalty
    terms, estimator values); they stay on the device so that a training step never synchronizes with the host; the
    training loop reads them every few steps.
    """

    total: Tensor
    parts: Mapping[str, Tensor] = field(default_factory=dict)


class Regularizer(Plugin):
    """A training objective: cross-entropy plus (optionally) a penalty, possibly with its own forward passes.

    Subclasses implement :meth:`training_loss`. The model arrives in train mode and must be left in train mode.
    """

    #: True when the penalty is zero almost everywhere for piecewise-linear networks (it involves input Hessians);
    #: the trainer then warns if the backbone has no smooth activation.
    needs_smooth_activation: ClassVar[bool] = False

    #: Hyper-parameters that turn this regularizer into plain ``erm`` (same loss value on the same batch). The
    #: conformance tests use it; a regularizer without a ``weight`` (noise augmentation, PGD) overrides it, and one
    #: that has no such setting declares ``None`` (the zero-strength conformance test then skips it).
    zero_strength: ClassVar[Mapping[str, Any]] = {"weight": 0.0}

    #: True promises that reduced precision keeps this loss's numbers: under bfloat16 autocast (and with TF32
    #: convolutions and matmuls) the loss and the parameter gradients stay within 2 % (relative) of true float32
    #: on the same batch and weights, as tests/test_precision.py checks for the built-ins that set it. The trainer
    #: uses autocast (on CUDA, with ``train.amp``) only for such regularizers and runs every other one in true
    #: float32 with TF32 off. False (the default) is always safe; it only costs speed.
    amp_safe: ClassVar[bool] = False

    #: The kind of method, for grouping and filtering on the leaderboard: ``baseline``, ``gradient penalty``,
    #: ``score matching``, ``noise``, ``adversarial``, ``control`` (sanity controls), or any other short label.
    family: ClassVar[str] = "other"

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        """The full training loss of one batch: cross-entropy plus this regularizer's penalty.

        Args:
            model: the classifier, in train mode, on the batch's device. It may be called as often as the method
                needs (noisy copies, attack steps); every module's train/eval flag must be as it arrived on return.
            x: the images, float (N, C, H, W) in [0, 1] pixel units.
            y: the labels, int64 (N,).

        Returns:
            A :class:`TrainingLoss`: ``total`` is a finite 0-dim tensor whose graph reaches the model's parameters
            (the trainer calls ``total.backward()``); ``parts`` are detached 0-dim tensors to log, left on the device
            (never ``.item()`` inside a step: it synchronizes with the host and stalls a GPU).

        Example:
            >>> import torch.nn.functional as F
            >>> from gibench import Regularizer, TrainingLoss, logits_and_input_gradient
            >>> class GradientL1(Regularizer):
            ...     def training_loss(self, model, x, y):
            ...         logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
            ...         ce = F.cross_entropy(logits, y)
            ...         penalty = grad.abs().flatten(1).sum(1).mean()
            ...         return TrainingLoss(ce + self.config.weight * penalty,
            ...                             {"cross_entropy": ce.detach(), "gradient_l1": penalty.detach()})
        """
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class Split:
    """One split of a dataset, held in memory.

    ``x``: float32 (N, C, H, W) in [0, 1]; ``y``: int64 (N,); ``extras``: per-sample tensors with first dimension N
    (for example ``signal_mask``).
    """

    x: Tensor
    y: Tensor
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset ready for training and evaluation.

    ``mean``/``std`` are per-channel statistics of the train split, used by the model's normalization layer.
    ``capabilities`` names what evaluators may rely on (see the module constants); ``extras`` holds dataset-level
    objects that back them (for example the analytic score of a synthetic mixture).
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def in_chans(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])


class Dataset(Plugin):
    """A dataset factory. ``load`` must not touch the network unless ``download`` is True."""

    def load(self, data_root: Path, download: bool = False) -> DatasetBundle:
        """Load (or generate) the dataset.

        Args:
            data_root: the folder holding datasets on disk (``--data-root``; the user cache folder by default).
                Generated datasets may ignore it.
            download: whether the network may be used to fetch missing files. Without it a missing dataset is a
                :class:`gibench.core.errors.DataError` that says where the files are expected and how to get them.

        Returns:
            A :class:`DatasetBundle` with both splits in memory (build it with :func:`gibench.make_bundle`, which
            checks shapes, ranges and that every declared capability is backed).

        Example:
            >>> import torch
            >>> from gibench import Dataset, make_bundle
            >>> class Noise(Dataset):
            ...     def load(self, data_root, download=False):
            ...         g = torch.Generator().manual_seed(0)
            ...         x, y = torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 2
            ...         return make_bundle("noise", x[:30], y[:30], x[30:], y[30:], num_classes=2)
            >>> Noise().load(data_root=None).num_classes
            2
        """
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------------
# Evaluators


@dataclass(frozen=True)
class Metric:
    """One number an evaluator produces. Exactly one metric of an evaluator is its ``headline``.

    ``bounds`` is the closed interval every value must lie in (``gibench validate`` rejects a submission with a value
    outside it): ``(0.0, 1.0)`` for an accuracy or a share, ``(-1.0, 1.0)`` for a cosine or a rank correlation,
    ``(-math.inf, math.inf)`` (the default) where no range is known. ``diagnostic`` marks a metric that is reported
    but must never rank regularizers (for example plain MPRT, which ranks the ``fooled`` control above ``erm`` by
    design): the sanity gate and the site's ranks leave it out.

    ``read_beside`` names, as ``"evaluator.metric"`` (e.g. ``"infidelity.relative_infidelity_gaussian"``), the
    metric a reader must see next to this one because this one alone can be won without explaining anything: Yeh et
    al. (2019) pair sensitivity with infidelity, since a constant map has sensitivity 0. The site places such a
    column immediately after its companion's column and shows it only while that column is shown (a table without
    the companion leaves it out and says so). ``caveat`` is the sentence readers are shown with the column (a
    footnote under the table and in its header's tooltip), e.g. ``"a constant map scores 0 here: read it beside
    infidelity"``; it is required when ``read_beside`` is set. Both are checked when the plugin loads
    (:func:`gibench.api.registry.declaration_problems`); the conformance check (:func:`gibench.testing.check_evaluator`)
    also checks that the companion is the headline of a registered evaluator and reads beside nothing itself.
    """

    name: str
    higher_is_better: bool
    description: str
    headline: bool = False
    bounds: tuple[float, float] = (-math.inf, math.inf)
    diagnostic: bool = False
    read_beside: str = ""
    caveat: str = ""


@dataclass(frozen=True)
class Curve:
    """An (x, y) series, for example accuracy against the fraction of pixels removed."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    x_label: str = "x"
    y_label: str = "y"


@dataclass(frozen=True)
class EvalResult:
    """What an evaluator returns. ``artifacts`` maps a name to a file name inside ``EvalContext.artifact_dir``."""

    scalars: Mapping[str, float]
    curves: Mapping[str, Curve] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)


class AuxCache:
    """A cache for auxiliary models (judge classifiers, denoisers) shared across jobs of one run."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get_or_create(self, key: str, factory: Callable[[], Any]) -> Any:
        """The object cached under ``key``, made by ``factory()`` on first use.

        Args:
            key: names the object; include everything that determines it (dataset, options).
            factory: builds the object; called at most once per key and cache.

        Returns:
            The cached object.

        Example:
            >>> cache = AuxCache()
            >>> cache.get_or_create("table", lambda: [1, 2]) is cache.get_or_create("table", lambda: [3])
            True
        """
        if key not in self._items:
            self._items[key] = factory()
        return self._items[key]


@runtime_checkable
class AuxiliaryModel(Protocol):
    """A trained auxiliary model as the store hands it out (:class:`gibench.store.auxiliary.AuxModel`): what it is, the
    model (eval mode, on the store's device) and its quality figures."""

    @property
    def kind(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def model(self) -> nn.Module: ...
    @property
    def quality(self) -> Mapping[str, float]: ...


@runtime_checkable
class AuxiliaryStore(Protocol):
    """What an evaluator may ask of ``EvalContext.aux`` (:class:`gibench.store.auxiliary.AuxiliaryModels` implements
    it).

    A protocol rather than the class, because the contracts import nothing of gibench above them: the store trains
    its classifiers with gibench's training loop, which itself builds on these contracts.
    """

    #: The device the store's models live on (and are trained on).
    device: torch.device
    #: The hashes of the models this store trained (rather than loaded), in order.
    trained: list[str]

    def get_or_train(self, kind: str, identity: Mapping[str, Any], build: Callable[[], nn.Module],
                     train: Callable[[], tuple[nn.Module, Mapping[str, float]]]) -> AuxiliaryModel:
        """The model of ``kind`` named by ``identity``: loaded when stored, else ``train()``-ed and stored."""
        ...


@runtime_checkable
class EvaluatedJob(Protocol):
    """What an evaluator may read of ``EvalContext.job`` (:class:`gibench.suites.jobs.Job` implements it; a protocol for
    the same reason as :class:`AuxiliaryStore`). ``dataset``, ``backbone`` and ``regularizer`` are
    :class:`gibench.suites.suite.PluginSpec`; ``train`` is a :class:`gibench.suites.suite.TrainConfig`."""

    @property
    def hash(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def dataset(self) -> Any: ...
    @property
    def backbone(self) -> Any: ...
    @property
    def regularizer(self) -> Any: ...
    @property
    def train(self) -> Any: ...
    @property
    def label(self) -> str: ...

    def training_spec(self) -> dict[str, Any]:
        """Everything that determines the job's trained weights, as plain JSON (what its hash covers)."""
        ...


_default_aux_store: Callable[[torch.device], AuxiliaryStore] | None = None


def set_default_aux_store(factory: Callable[[torch.device], AuxiliaryStore]) -> None:
    """Set how an :class:`EvalContext` built without ``aux`` gets its in-memory store (``factory(device)``).

    :mod:`gibench.store.auxiliary` registers ``AuxiliaryModels(None, device)`` when it is imported. A hook instead of an
    import, because the contracts must not import the store: it sits above them (see :class:`AuxiliaryStore`).
    """
    global _default_aux_store
    _default_aux_store = factory


@dataclass
class EvalContext:
    """Everything an evaluator may use.

    ``model`` is in eval mode on ``device``; ``saliency(model, x, y)`` returns the explained quantity (by default the
    input-gradient of the label logit, same shape as ``x``); ``fit(bundle)`` trains a fresh model of the same job spec
    on other data (None where the runner offers no retraining); ``artifact_dir`` exists and is private to this
    (job, evaluator) pair; ``cache`` holds in-memory objects shared by the jobs of one run.

    ``aux`` is the get-or-train store of auxiliary models (judges, denoisers, retrained models; see
    :mod:`gibench.store.auxiliary`): stored under the runs directory, trained once across evaluations, jobs, suites and
    reruns. ``job`` is the job being evaluated (its dataset, backbone, regularizer, seed, train config and hash), or
    None when an evaluator runs outside a suite; evaluators that retrain "the job's backbone with the job's train
    config" read it from here.

    The runner builds the context; tests and notebooks use :func:`gibench.testing.make_eval_context`. Evaluators
    read the evaluated images with :func:`gibench.eval_subset`, chunk them with :func:`gibench.batches` (the
    results must not depend on ``batch_size``) and write artifacts with :func:`gibench.save_grid` /
    :func:`gibench.save_curves`, which take the context and write atomically into ``artifact_dir``.

    Example:
        >>> import tempfile
        >>> from gibench import batches, eval_subset
        >>> from gibench.testing import make_eval_context, tiny_bundle, tiny_model
        >>> bundle = tiny_bundle()
        >>> ctx = make_eval_context(tiny_model(bundle), bundle, tempfile.mkdtemp(), batch_size=16)
        >>> x, y, extras = eval_subset(ctx, max_images=40)
        >>> [len(y[sl]) for sl in batches(len(y), ctx.batch_size)], sorted(extras)
        ([16, 16, 8], ['signal_mask'])
    """

    model: nn.Module
    data: DatasetBundle
    saliency: Callable[[nn.Module, Tensor, Tensor], Tensor]
    device: torch.device
    seed: int
    artifact_dir: Path
    fit: Callable[[DatasetBundle], nn.Module] | None = None
    cache: AuxCache = field(default_factory=AuxCache)
    batch_size: int = 256
    aux: AuxiliaryStore = None  # type: ignore[assignment]  # filled in __post_init__ when not given
    job: EvaluatedJob | None = None

    def __post_init__(self) -> None:
        """Without ``aux``, an in-memory store whose models live as long as this context, made by the factory
        :mod:`gibench.store.auxiliary` registers (:func:`set_default_aux_store`) so that this module need not import
        it."""
        if self.aux is None:
            if _default_aux_store is None:
                raise TypeError("EvalContext was built without aux= before gibench.store.auxiliary was imported; "
                                "import it (it registers the in-memory default) or pass "
                                "aux=AuxiliaryModels(None, device).")
            self.aux = _default_aux_store(self.device)


class Evaluator(Plugin):
    """Scores one trained model.

    Class attributes: ``version`` (see Plugin), ``metrics`` (what ``evaluate`` returns in ``scalars``), ``requires``
    (dataset capabilities; a job whose dataset lacks one is skipped with a recorded reason).
    """

    metrics: ClassVar[tuple[Metric, ...]] = ()
    requires: ClassVar[frozenset[str]] = frozenset()
    #: False for evaluators that do not judge explanations (clean accuracy); the sanity view skips those.
    judges_saliency: ClassVar[bool] = True

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Score ``ctx.model``.

        Args:
            ctx: the :class:`EvalContext`: the model (eval mode, on ``ctx.device``), the dataset bundle (it has every
                capability in ``requires``), the saliency function to explain with, a seed for any randomness, the
                artifact folder, the evaluation batch size and the auxiliary-model store.

        Returns:
            An :class:`EvalResult` whose ``scalars`` hold exactly the declared ``metrics`` (plain floats),
            ``curves`` any (x, y) series, and ``artifacts`` file names written inside ``ctx.artifact_dir``
            (:func:`gibench.save_grid`, :func:`gibench.save_curves` write them atomically).

        Example:
            >>> import torch
            >>> from gibench import EvalResult, Evaluator, Metric, batches, eval_subset, pixel_scores
            >>> class MaxSaliency(Evaluator):
            ...     metrics = (Metric("peak_share", False, "share of saliency in the top pixel", headline=True),)
            ...     def evaluate(self, ctx):
            ...         x, y, _ = eval_subset(ctx, max_images=100)
            ...         shares = []
            ...         for sl in batches(len(y), ctx.batch_size):
            ...             s = pixel_scores(ctx.saliency(ctx.model, x[sl].to(ctx.device), y[sl].to(ctx.device)))
            ...             shares.append(s.flatten(1).amax(1) / s.flatten(1).sum(1).clamp_min(1e-12))
            ...         return EvalResult({"peak_share": float(torch.cat(shares).mean())})
        """
        raise NotImplementedError

    @classmethod
    def headline(cls) -> Metric:
        """The one metric declared with ``headline=True`` (the registry refuses a plugin without exactly one)."""
        return next(m for m in cls.metrics if m.headline)
