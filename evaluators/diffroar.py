"""``diffroar``: do the coordinates a saliency map ranks highest carry the label for a freshly trained model?

Shah, Jain & Netrapalli, "Do Input Gradients Highlight Discriminative Features?" (NeurIPS 2021), DiffROAR, and
``harshays/inputgradients`` (the public code of the paper's first version; seed-papers §2.1, next-capabilities §2).
Rank the coordinates of every train and test image by |∇x f_y(x)| of the trained model, keep only the top-k or only
the bottom-k fraction (the rest filled with a constant), retrain a model from scratch on each masked train set and
test it on the masked test set of the same kind:

    DiffROAR(k) = acc(top-k kept) − acc(bottom-k kept)

> 0 means the highest-ranked coordinates are the more discriminative ones (the paper's assumption (A)), ≈ 0 means the
ranking is no better than random, < 0 is what the paper calls feature inversion (its claim: standard models are
negative for k ≲ 20 %, robust ones positive at every k). Headline: the mean of DiffROAR(k) over the levels (higher
is better); the curve k → DiffROAR(k) and both accuracy curves are kept as curve data.

What the public code does (and what is unverified): the attribution is the gradient of the gathered label logit
(``LogitGrad``; the paper's Appendix C uses loss gradients, and which one produced the plotted curves is unverified);
``argsort(|G|)`` over the flattened C·H·W coordinates (per coordinate, not per pixel), descending for "top";
``get_masked_data`` sets the first round(f·D) coordinates of that order to ``mask_val`` = ``X.mean()`` of the
*normalized* train set (≈ 0, i.e. about the per-channel train mean in pixel units; the paper's text says zeroing);
mask fractions f ∈ {0, .1, .3, .5, .7, .8, .9, .95}, i.e. kept levels k = 1 − f; 1–3 runs per setting (3 for the
CIFAR-10 standard models). Sign convention (notebook cell 15): the code computes ``btm − top`` where "top" means the
top-k *masked*; that is acc(keep top) − acc(keep bottom), the convention used here, averaged over all top × bottom run
pairs with the std across pairs. No retraining script was released; the matching trainer keeps the checkpoint with
the best accuracy on a validation loader (which loader served there, possibly the masked test set, is unverified) and
stops at 99 % train accuracy. Neither a retraining script nor BlockMNIST code or data was released.

gibench's choices:

* **Attribution**: ``ctx.saliency(ctx.model, x, y)`` with the true label y, on the train split (first
  ``max_train_images``, 0 = all) and the whole test split, in batches of ``ctx.batch_size``; the model is in eval
  mode. ``ctx.saliency`` is the input-gradient of the label logit in a suite; tests pass oracle or random maps.
* **Granularity** (``granularity``): ``coordinate`` (default, the code's): every one of the D = C·H·W coordinates is
  ranked by |g|; ``pixel``: a pixel's score is Σ_c |g_c| and all its channels are kept or filled together (D = H·W
  units). On one-channel data the two are identical.
* **Count and ties**: at level k exactly n = floor(k·D + 0.5) units are kept per image (the code masks round(f·D),
  which can differ by one at halves). Units are ordered by decreasing score; scores within the relative tolerance of
  gibench's tie rule (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single linkage; :func:`gibench.api.ranks.tie_groups`,
  docs/architecture.md, "Ranking pixels: ties") are one group, ordered by lower flat index (row-major C, H, W), so
  float noise of the saliency method does not reorder them; keep-top keeps ranks < n, keep-bottom keeps ranks
  ≥ D − n. One order serves both, so keep-top at n units and keep-bottom at D − n units are exact complements.
* **Fill** (``fill``): ``train_mean`` (default): the per-channel mean of the *unmasked* train split in pixel units
  [0, 1] (``ctx.data.mean``), the pixel-space value of the code's normalized-set mean; ``constant``: ``fill_value``.
* **Levels** (``levels``): kept fractions in (0, 1); default the paper's {0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05} (k = 1
  is left out: both masked sets equal the original there, so DiffROAR(1) = 0 by construction). The headline is the
  plain mean over the given levels, which the paper does not define (it shows the curve only).
* **Retraining**: plain training (``erm``) of the job's backbone with the job's train config by default. DiffROAR asks
  whether the *kept features* are discriminative for a fresh learner, and the paper's retrained models are standard
  models; retraining with the regularizer under test would mix what the ranking kept with how that regularizer
  learns (``retrain_with: job`` does exactly that, as an option). ``epochs`` overrides the retraining epochs (it wins
  over ``train["epochs"]``), ``train`` overrides fields of the train config, ``backbone``/``backbone_options`` the
  retraining architecture (fewer epochs or a smaller net make the CPU suites affordable; see the cost below). The
  retrained model's normalization layer uses the *original* dataset's train-split mean/std (the masked bundle is a
  ``dataclasses.replace`` of the original with masked splits), as in the code, which normalizes first and masks
  after: the two arms then differ only in which coordinates they keep, not in their input scaling. Accuracy is the
  final model's on the whole masked test split (no best-on-test checkpoint selection, which would be optimistic),
  as recorded in the retrained model's quality (``test_accuracy``) and shown next to the result.
* **Seeds** (``retrain_seeds``): default (0, 1, 2), the code's 3 runs (CIFAR-10 standard models): with one run a
  DiffROAR difference of a few points cannot be told from retraining noise. Per level the curve holds the mean over
  seeds of each arm, their difference (= the mean over all top × bottom seed pairs, as the code), and spreads: the
  population std (ddof 0) of each arm over seeds and the std of the difference over all seed pairs,
  sqrt(var_top + var_bottom).
* **Caching**: each retrained model is an auxiliary model (``gibench.store.auxiliary.classifier``, kind
  ``diffroar_retrain``), trained once per runs directory and reused by every later evaluation, rerun or suite that
  asks for the same masked data, backbone, train config, regularizer and seed (for example a config that adds levels
  or seeds reuses the ones already trained). The masked data's identity covers the ranked model (the job hash; outside
  a suite, the dataset name and content hashes of both splits and of the model's weights), the saliency function
  (module + qualname; local functions, lambdas and callable objects must carry a JSON-able ``gibench_identity``
  attribute, since what they capture cannot be identified), level, kept side, granularity, fill values,
  ``max_train_images`` and :data:`RETRAIN_CODE_VERSION`. Retrained models are per job: two jobs rank differently, so
  nothing is shared between jobs.
* **Known limitation** (shared with every ROAR-style test): a kept coordinate keeps its value *and* its position,
  and the fill makes the mask visible, so the pattern of kept positions can itself carry the label (a handful of
  top-ranked pixels of a digit outline its shape). DiffROAR measures what the ranking makes learnable, not only
  the kept values.
* **Without a job** (``ctx.job`` None, an evaluator used outside a suite): ``backbone`` and ``train`` must be given
  (and ``retrain_with: job`` is unavailable), or the evaluation raises a GibenchError saying so.

Cost: two saliency passes (train and test split) plus 2 × levels × seeds retrainings (each about one plain training
of the job, at ``epochs``) plus one forward pass over the test split per retrained model; with the defaults, 42
retrainings per job. ``benchmarks/diffroar_cost.py`` measures it; ``docs/benchmarks.md`` has the figures.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gibench import PluginSpec, TrainConfig, tensors_sha256
from gibench import auxiliary_classifier as classifier
from gibench.api.artifacts import GRID_IMAGES, batches, save_curves, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import Curve, DatasetBundle, EvalContext, EvalResult, Evaluator, Metric, Split
from gibench.api.ranks import fraction_count, rank_positions
from gibench.api.saliency import SaliencyOptions
from gibench.core.config_types import (
    DistinctFractions,
    Limit,
    NonNegativeInt,
    PixelValue,
    Seeds,
    plugin_config,
)
from gibench.core.errors import GibenchError
from gibench.core.params import build_config, check, jsonable

DEFAULT_LEVELS = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)
SIDES = ("top", "bottom")
AUX_KIND = "diffroar_retrain"
#: Bump when a change to the ranking, masking or retraining here changes the retrained weights for the same identity.
#: "2": scores within the tie rule's tolerance are one group, ordered by index (``DiffROAR.history``, version 2).
RETRAIN_CODE_VERSION = "2"


@plugin_config
class DiffROARConfig(SaliencyOptions):
    levels: DistinctFractions = DEFAULT_LEVELS
    """Kept fractions k (k = 1 keeps everything, so DiffROAR(1) = 0 is left out)."""
    granularity: Literal["coordinate", "pixel"] = "coordinate"
    """coordinate: rank the C·H·W coordinates (the code's); pixel: Σ_c |g_c|, channels kept together."""
    fill: Literal["train_mean", "constant"] = "train_mean"
    """train_mean: the per-channel mean of the unmasked train split; constant: fill_value."""
    fill_value: PixelValue = 0.0
    """The value of fill='constant'."""
    retrain_seeds: Seeds = (0, 1, 2)
    """One retraining per seed, level and side."""
    retrain_with: Literal["erm", "job"] = "erm"
    """erm: plain training (default); job: the job's own regularizer."""
    epochs: NonNegativeInt = 0
    """Retraining epochs; 0 = those of the job's (or `train`'s) train config."""
    backbone: str = ""
    """Retraining backbone; '' = the job's."""
    backbone_options: dict[str, Any] = field(default_factory=dict)
    """Options of `backbone`."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields replacing the job's."""
    max_train_images: Limit = 0
    """Rank, mask and retrain on the first N train images; 0 = all."""

    def __post_init__(self) -> None:
        check(bool(self.backbone) or not self.backbone_options,
              f"backbone_options {self.backbone_options} need a `backbone` to apply to; name it")
        build_config(TrainConfig, self.train, "diffroar: train")  # unknown or bad fields fail here, by name


# -- ranking and masking -------------------------------------------------------------------------------------------


def unit_scores(grad: Tensor, granularity: str) -> Tensor:
    """(N, D) ranking scores: |g| per coordinate (D = C·H·W), or Σ_c |g_c| per pixel (D = H·W)."""
    scores = grad.detach().abs()
    if granularity == "pixel":
        scores = scores.sum(dim=1)
    return scores.flatten(1).float()


def descending_ranks(scores: Tensor) -> Tensor:
    """Position of every unit in decreasing-score order, (N, D) int32; the units of one tie group
    (:func:`gibench.api.ranks.tie_groups`) go in increasing flat index."""
    return rank_positions(scores, descending=True).to(torch.int32)


def keep_mask(ranks: Tensor, level: float, side: str) -> Tensor:
    """(N, D) bool: the n = floor(k·D + 0.5) highest-ranked units (``top``) or the n lowest-ranked (``bottom``)."""
    units = ranks.shape[1]
    n = fraction_count(level, units)
    return ranks < n if side == "top" else ranks >= units - n


def masked_images(x: Tensor, ranks: Tensor, level: float, side: str, fill: tuple[float, ...]) -> Tensor:
    """``x`` (N, C, H, W) with every unit outside the kept ones set to the per-channel ``fill``.

    ``ranks`` is (N, C·H·W) for per-coordinate masks or (N, H·W) for per-pixel ones (all channels of a pixel alike).
    """
    n, c, h, w = x.shape
    keep = keep_mask(ranks, level, side)
    keep = keep.view(n, c, h, w) if keep.shape[1] == c * h * w else keep.view(n, 1, h, w).expand(n, c, h, w)
    values = torch.tensor(fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1).expand(n, c, h, w)
    return torch.where(keep, x, values)


def rank_split(ctx: EvalContext, x: Tensor, y: Tensor, granularity: str) -> Tensor:
    """Ranks (N, D) of every image of a split under ``ctx.saliency`` (true labels), batched, on the CPU."""
    parts = []
    for sl in batches(len(y), ctx.batch_size):
        grad = ctx.saliency(ctx.model, x[sl].to(ctx.device), y[sl].to(ctx.device))
        parts.append(descending_ranks(unit_scores(grad, granularity)).cpu())
    return torch.cat(parts)


def fill_values(config: DiffROARConfig, data: DatasetBundle) -> tuple[float, ...]:
    """Per-channel fill in pixel units: the unmasked train split's channel means, or ``fill_value``."""
    if config.fill == "train_mean":
        return tuple(float(m) for m in data.mean)
    return (float(config.fill_value),) * data.in_chans


def masked_bundle(data: DatasetBundle, train: Split, ranks: tuple[Tensor, Tensor], level: float, side: str,
                  fill: tuple[float, ...]) -> DatasetBundle:
    """The original bundle with masked train and test images; mean/std (the model's normalization) unchanged."""
    masked = [Split(x=masked_images(split.x, r, level, side, fill), y=split.y)
              for split, r in zip((train, data.test), ranks)]
    return dataclasses.replace(data, name=f"{data.name}:diffroar-{side}-{level:g}", train=masked[0], test=masked[1],
                               capabilities=frozenset(), extras={})


# -- identities ----------------------------------------------------------------------------------------------------


def saliency_identity(fn: Callable[..., Tensor]) -> dict[str, Any]:
    """What names a saliency function in the masked data's identity: module + qualname, or its ``gibench_identity``.

    Local functions, lambdas and callable objects may depend on what they capture, which cannot be identified, so
    they must carry a JSON-able ``gibench_identity`` attribute; otherwise a GibenchError says so.
    """
    explicit = getattr(fn, "gibench_identity", None)
    if explicit is not None:
        return {"gibench_identity": jsonable(explicit)}
    if isinstance(fn, functools.partial):
        return {"partial": saliency_identity(fn.func), "args": repr(fn.args),
                "keywords": repr(sorted(fn.keywords.items()))}
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None or "<locals>" in qualname or "<lambda>" in qualname or not callable(fn):
        raise GibenchError(
            f"diffroar caches retrained models by the identity of the saliency function, but {fn!r} is a local "
            "function, a lambda or a callable object whose behaviour may depend on values it captured. Define it at "
            "module level, or set `fn.gibench_identity = {...}` to a JSON-able value naming everything it depends on."
        )
    return {"module": getattr(fn, "__module__", None), "qualname": qualname}


def _sha256(tensors: list[Tensor]) -> str:
    return tensors_sha256(tensors)[:16]


def source_identity(ctx: EvalContext, train: Split) -> dict[str, Any]:
    """What names the ranked model and its data: the job hash, or (outside a suite) content hashes of both.

    The test split is part of it because a retrained model's recorded quality (its accuracy on the masked test
    split) is the number DiffROAR reports; with a job, the job hash already fixes the dataset and the ranked model.
    """
    if ctx.job is not None:
        return {"job": ctx.job.hash}
    state = ctx.model.state_dict()
    return {"dataset": ctx.data.name, "train_sha256": _sha256([train.x, train.y]),
            "test_sha256": _sha256([ctx.data.test.x, ctx.data.test.y]),
            "model_sha256": _sha256([state[k] for k in sorted(state)])}


# -- retraining ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retraining:
    """How every masked model is trained: architecture, train config, objective."""

    backbone: PluginSpec
    train: TrainConfig
    regularizer: PluginSpec | None  # None = erm


def retraining(config: DiffROARConfig, job: Any) -> Retraining:
    """The retraining spec from the config and the job (``EvalContext.job``); a GibenchError when the job is needed
    but absent (None)."""
    missing = [key for key, given in (("backbone", config.backbone), ("train", config.train)) if not given]
    if job is None and missing:
        raise GibenchError(
            f"diffroar retrains the job's backbone with the job's train config, but this evaluation has no job "
            f"(ctx.job is None: the evaluator runs outside a suite). Give {' and '.join(repr(m) for m in missing)} in "
            "the evaluator config, e.g. create_evaluator('diffroar', backbone='gibench_cnn', "
            "train={'epochs': 3, 'batch_size': 64, 'optimizer': 'adam', 'lr': 1e-3}), or run it in a suite."
        )
    if config.retrain_with == "job" and job is None:
        raise GibenchError("diffroar: retrain_with='job' retrains with the job's regularizer, but this evaluation "
                           "has no job (ctx.job is None); use retrain_with='erm' or run it in a suite.")
    backbone = (PluginSpec.of(config.backbone, config.backbone_options, config.backbone_options)
                if config.backbone else job.backbone)
    base = dataclasses.asdict(job.train) if job is not None else {}
    overrides = dict(config.train, **({"epochs": config.epochs} if config.epochs else {}))
    train = build_config(TrainConfig, {**base, **overrides}, "diffroar: train")
    return Retraining(backbone, train, job.regularizer if config.retrain_with == "job" else None)


# -- the evaluator -------------------------------------------------------------------------------------------------


class DiffROAR(Evaluator):
    """acc(top-k kept) − acc(bottom-k kept) after retraining on saliency-masked data; headline: mean over k."""

    Config = DiffROARConfig
    version = "2"
    history = {"1": "first version: mean over 7 kept levels (0.05–0.9) of acc(top-k kept) − acc(bottom-k kept), erm "
                   "retrained on masked data, per coordinate, train-mean fill, 3 retrain seeds",
               "2": "scores within a relative 1e-4 of each other are tied (single linkage) and ranked in index "
                    "order, so float noise of the saliency method no longer reorders them; models retrained anew"}
    metrics = (
        Metric("diffroar_mean", True, "mean over levels k of acc(top-k kept) − acc(bottom-k kept), retrained",
               headline=True, bounds=(-1.0, 1.0)),
        Metric("diffroar_min", True, "the lowest DiffROAR(k) over the levels (< 0: feature inversion at that k)",
               bounds=(-1.0, 1.0)),
        Metric("accuracy_top_kept_mean", True, "mean over levels of the retrained accuracy with the top-k kept",
               bounds=(0.0, 1.0)),
        Metric("accuracy_bottom_kept_mean", False, "mean over levels of the retrained accuracy with the bottom-k kept",
               bounds=(0.0, 1.0)),
        Metric("diffroar_std_mean", False, "mean over levels of the std of DiffROAR(k) over retrain-seed pairs",
               bounds=(0.0, 1.0)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Saliency maps of the train subset and the test split, then ``2 × levels × retrain seeds`` retrainings
        (each ``epochs × ⌈N_sub / batch⌉`` steps of the retraining backbone, regularizer and train config) and one
        test-split forward per retrained model."""
        cfg = self.config
        spec = retraining(cfg, ctx.job)
        n_sub = min(cfg.max_train_images, ctx.data.n_train) if cfg.max_train_images > 0 else ctx.data.n_train
        models = 2 * len(cfg.levels) * len(cfg.retrain_seeds)
        step = ctx.train_step(spec.backbone, spec.regularizer or PluginSpec.of("erm", {}, {}), spec.train)
        return EvaluationCost(work((ctx.saliency(), (n_sub + ctx.data.n_test) * cfg.input_gradients_per_map),
                                   (step, models * ctx.training_steps(spec.train, n_sub)),
                                   (ctx.forward(spec.backbone), models * ctx.data.n_test)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        spec = retraining(cfg, ctx.job)
        train = train_subset(ctx.data.train, cfg.max_train_images)
        fill = fill_values(cfg, ctx.data)
        base_identity = {"source": source_identity(ctx, train), "saliency": saliency_identity(ctx.saliency),
                         "granularity": cfg.granularity, "fill": list(fill), "max_train_images": cfg.max_train_images,
                         "retrain_code_version": RETRAIN_CODE_VERSION}
        ranks = (rank_split(ctx, train.x, train.y, cfg.granularity),
                 rank_split(ctx, ctx.data.test.x, ctx.data.test.y, cfg.granularity))
        levels = sorted(cfg.levels)
        accuracy = {side: np.zeros((len(levels), len(cfg.retrain_seeds))) for side in SIDES}
        for i, level in enumerate(levels):
            for side in SIDES:
                bundle = masked_bundle(ctx.data, train, ranks, level, side, fill)
                identity = {**base_identity, "level": level, "keep": side}
                for j, seed in enumerate(cfg.retrain_seeds):
                    retrained = classifier(ctx.aux, AUX_KIND, bundle, identity, spec.backbone, spec.train, seed,
                                           spec.regularizer)
                    accuracy[side][i, j] = retrained.quality["test_accuracy"]  # on bundle.test: the masked test set
        preview = _preview(ctx, ranks[1], levels, fill)
        return self._result(ctx, levels, accuracy, preview)

    def _result(self, ctx: EvalContext, levels: list[float], accuracy: dict[str, np.ndarray],
                preview: list[Tensor]) -> EvalResult:
        top, bottom = accuracy["top"], accuracy["bottom"]
        diff = top.mean(1) - bottom.mean(1)  # = the mean over all top × bottom seed pairs
        pair_std = np.sqrt(top.var(1) + bottom.var(1))  # = the std over all top × bottom seed pairs
        x = tuple(float(k) for k in levels)
        series = {"diffroar": diff, "diffroar_std": pair_std, "accuracy_top_kept": top.mean(1),
                  "accuracy_top_kept_std": top.std(1), "accuracy_bottom_kept": bottom.mean(1),
                  "accuracy_bottom_kept_std": bottom.std(1)}
        curves = {name: Curve(x, tuple(float(v) for v in values), "fraction of coordinates kept (k)",
                              name.replace("_", " ")) for name, values in series.items()}
        scalars = {"diffroar_mean": float(diff.mean()), "diffroar_min": float(diff.min()),
                   "accuracy_top_kept_mean": float(top.mean()), "accuracy_bottom_kept_mean": float(bottom.mean()),
                   "diffroar_std_mean": float(pair_std.mean())}
        artifacts = {"curves": save_curves(ctx, "diffroar_curves.json", curves)}
        if preview:
            artifacts["masking_grid"] = save_grid(ctx, "diffroar_masks.png", preview)
        return EvalResult(scalars=scalars, curves=curves, artifacts=artifacts)


def train_subset(train: Split, max_images: int) -> Split:
    """The first ``max_images`` train images (0 = all), without extras."""
    n = len(train) if max_images <= 0 else min(max_images, len(train))
    return Split(x=train.x[:n], y=train.y[:n])


def _preview(ctx: EvalContext, test_ranks: Tensor, levels: list[float], fill: tuple[float, ...]) -> list[Tensor]:
    """Grid rows: test inputs, their ranking (bright = ranked high), top-k kept and bottom-k kept at the middle k."""
    n = min(GRID_IMAGES, len(ctx.data.test))
    x, ranks = ctx.data.test.x[:n], test_ranks[:n]
    level = levels[len(levels) // 2]
    c, h, w = x.shape[1:]
    order = 1.0 - ranks.float() / max(ranks.shape[1] - 1, 1)
    order = order.view(n, c, h, w).amax(1, keepdim=True) if ranks.shape[1] == c * h * w else order.view(n, 1, h, w)
    return [x, to_unit(order)] + [masked_images(x, ranks, level, side, fill) for side in SIDES]
