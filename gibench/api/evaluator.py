"""The evaluator contract: an :class:`Evaluator` scores one trained model through an :class:`EvalContext` and
returns an :class:`EvalResult` of declared :class:`Metric` values; it may declare its cost (:meth:`Evaluator.cost`,
:mod:`gibench.api.cost`). Part of the contracts (:mod:`gibench.api.plugin`)."""

from __future__ import annotations

__all__ = ["AuxCache", "Curve", "EvalContext", "EvalResult", "Evaluator", "Metric"]

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gibench.api.cost import CostContext, EvaluationCost, PluginWork, WorkTimer
from gibench.api.dataset import DatasetBundle
from gibench.api.plugin_base import Plugin
from gibench.api.protocols import AuxiliaryStore, EvaluatedJob, default_aux_store


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
    """Deprecated: an in-memory cache of objects by key. :class:`EvalContext` no longer carries one; evaluators keep
    auxiliary models in ``EvalContext.aux`` (stored, trained once per runs directory). Kept importable for one
    release."""

    def __init__(self) -> None:
        warnings.warn("gibench.AuxCache is deprecated: EvalContext no longer carries a cache; keep auxiliary models "
                      "in EvalContext.aux", DeprecationWarning, stacklevel=2)
        self._items: dict[str, Any] = {}

    def get_or_create(self, key: str, factory: Callable[[], Any]) -> Any:
        """The object cached under ``key``, made by ``factory()`` on first use.

        Args:
            key: names the object; include everything that determines it (dataset, options).
            factory: builds the object; called at most once per key and cache.

        Returns:
            The cached object.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", DeprecationWarning)
            ...     cache = AuxCache()
            >>> cache.get_or_create("table", lambda: [1, 2]) is cache.get_or_create("table", lambda: [3])
            True
        """
        if key not in self._items:
            self._items[key] = factory()
        return self._items[key]


@dataclass
class EvalContext:
    """Everything an evaluator may use.

    ``model`` is in eval mode on ``device``; ``saliency(model, x, y)`` returns the explained quantity (by default the
    input-gradient of the label logit, same shape as ``x``); ``artifact_dir`` exists and is private to this
    (job, evaluator) pair.

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
        ([16, 16, 8], ['decoy_shortcut', 'irrelevant_mask', 'signal_mask'])
    """

    model: nn.Module
    data: DatasetBundle
    saliency: Callable[[nn.Module, Tensor, Tensor], Tensor]
    device: torch.device
    seed: int
    artifact_dir: Path
    batch_size: int = 256
    aux: AuxiliaryStore = None  # type: ignore[assignment]  # filled in __post_init__ when not given
    job: EvaluatedJob | None = None

    def __post_init__(self) -> None:
        """Without ``aux``, an in-memory store whose models live as long as this context, made by the factory
        :mod:`gibench.store.auxiliary` registers (:func:`set_default_aux_store`) so that this module need not import
        it."""
        if self.aux is None:
            self.aux = default_aux_store(self.device)


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

    def cost(self, ctx: CostContext) -> EvaluationCost | None:
        """The work of one evaluation of ``ctx.job``, for ``gibench run --estimate`` (:mod:`gibench.api.cost`).

        Optional: the default None lists the evaluator by name as "not estimated". Count what :meth:`evaluate` runs
        with this config: images through the model (:meth:`CostContext.forward`, :meth:`CostContext.saliency`, one
        count per image), training steps of any model it trains (:meth:`CostContext.train_step`), and work of its
        own (:meth:`CostContext.plugin_work`, timed by :meth:`time_work`). Work shared by the jobs of a dataset
        (an auxiliary model) goes into ``shared`` under :meth:`CostContext.shared_key`. Leave out work that is small
        next to those (host-side arithmetic, writing artifacts).

        Args:
            ctx: the :class:`~gibench.api.cost.CostContext`: the job (dataset, backbone, regularizer, train config),
                the dataset's sizes and the evaluation batch size.

        Returns:
            An :class:`~gibench.api.cost.EvaluationCost` (build its work with :func:`gibench.api.cost.work`), or
            None when the evaluator does not estimate itself.

        Example:
            >>> from gibench.api.cost import CostContext, EvaluationCost, work
            >>> from gibench.api.dataset import DataSizes
            >>> class MaxSaliency(Evaluator):
            ...     def cost(self, ctx):  # one saliency pass for each of at most 100 test images
            ...         return EvaluationCost(work((ctx.saliency(), ctx.images(100))))
            >>> class Job:
            ...     backbone = "gibench_linear"
            >>> ctx = CostContext(Job(), DataSizes((1, 28, 28), 10, 4000, 60), batch_size=64)
            >>> list(MaxSaliency().cost(ctx).per_job.values())
            [60.0]
        """
        return None

    @classmethod
    def time_work(cls, unit: PluginWork, timer: WorkTimer) -> float:
        """The seconds of one ``unit`` of the :class:`~gibench.api.cost.PluginWork` that :meth:`cost` declared.

        Only evaluators that declare plugin work implement it: build what the unit runs, on
        ``timer.random_bundle(...)``, and time one step with ``timer.seconds_per_call(...)``.

        Args:
            unit: the work unit (its ``kind``, its options as ``unit.options()``, shape, classes and batch size).
            timer: a :class:`~gibench.api.cost.WorkTimer` on the device of the estimate.

        Returns:
            Positive seconds per step (``unit.per == "step"``) or per image (divide a batch's time by its size).

        Example:
            >>> class SumsImages(Evaluator):
            ...     @classmethod
            ...     def time_work(cls, unit, timer):
            ...         x = timer.random_bundle(unit.shape, unit.num_classes, unit.batch_size).train.x
            ...         return timer.seconds_per_call(lambda: x.sum()) / unit.batch_size
        """
        raise NotImplementedError(f"evaluator {cls.name or cls.__name__} declares plugin work {unit.kind!r} but "
                                  "does not implement time_work")

    @classmethod
    def headline(cls) -> Metric:
        """The one metric declared with ``headline=True`` (the registry refuses a plugin without exactly one)."""
        return next(m for m in cls.metrics if m.headline)
