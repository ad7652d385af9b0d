"""``pixel_perturbation``: accuracy as the least (or most) salient pixels are removed.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), §5 and ``utils/pixel_perturb.py`` of idiap/rethinking-saliency. The saliency of every test image is
computed once (``ctx.saliency``: the input-gradient of the label logit), aggregated into one score per pixel, and
pixels are removed in increasing order of saliency ("least salient first", the paper's test: a faithful saliency map
lets the model keep its accuracy while unimportant pixels disappear) and, as a second curve, in decreasing order
("most salient first": a faithful map makes accuracy collapse quickly). The curves are the accuracy on the evaluated
test images at every fraction removed.

Choices, paper vs public code:

* **Fractions**: the paper's and code's 25 fractions ``np.logspace(-2, 0, 25)`` (0.01 … 1) by default.
* **Pixels removed**: exactly ``floor(f·H·W + 0.5)`` pixels at fraction f. The reference keeps the pixels ≥ the k-th
  smallest score, which removes k − 1 pixels (an off-by-one); gibench removes k.
* **Ties**: scores within the relative tolerance of gibench's tie rule (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single
  linkage; :func:`gibench.api.ranks.tie_groups`, docs/architecture.md, "Ranking pixels: ties") are one group, and
  the pixels of a group are removed in increasing flat pixel index, in both orders, so float noise of the saliency
  method (X-Gradient and Integrated Gradients on an X-DNN) does not reorder them. The reference adds noise of std
  1e-20, which is a no-op in float32 and leaves exact ties to the sort.
* **Pixel score** (``pixel_reduction``): Σ_c |g_c| by default (docs/architecture.md, "Saliency"); ``channel_std`` is the
  reference's rule for RGB (the std of the signed gradient across channels; |g| for one channel).
* **Fill** (``fill``): ``image_mean`` (default: the paper's "mean pixel value of the image", taken per channel);
  ``constant`` (``fill_value``, 0.5 as in the reference code); ``dataset_mean`` (the per-channel train-split mean);
  ``blur`` (a Gaussian-blurred copy of the image, as Hesse et al.'s X-DNN metrics; their kernel 51, σ 41 at 224 px is
  scaled to the image: σ = ``blur_sigma`` × the shorter side, kernel ≈ 51/41·σ, odd).
* **Label**: the true test label y, both for the saliency and for correctness (the reference counts the images still
  correctly classified).
* **Area**: the trapezoid rule over the curve, divided by the width of the axis, so a constant accuracy a gives area
  a. The axis is log10(fraction) by default (``area_axis``): the grid is log-spaced, so every measured fraction gets
  about equal weight; over the linear axis the 12 fractions below 0.1 would carry less than 10% of the weight. The
  reference computes no area (it writes the curve only).
* **Normalized area**: the area divided by the model's clean accuracy on the same images, i.e. the share of its
  accuracy the model retains. Regularizers move clean accuracy, and the raw area mixes the two effects. It is NaN
  when the clean accuracy is 0. The headline is the normalized least-salient-first area (higher is better); the
  most-salient-first areas are lower-is-better.
* **Masking**: the ranks and counts are :mod:`gibench.api.ranks`, the fills and area :mod:`gibench.api.masking`,
  shared with ``keep_remove`` (Hesse et al.'s Keep/Remove curves), so both evaluators mask pixels the same way.
* **Cost**: one saliency pass (forward + backward) and one clean forward per image, then one forward per image,
  fraction and order (2 × 25 by default). Batched: the ranks are computed once per batch and each fraction's masked
  batch is built by one comparison ``rank < k``, with no Python loop over images.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from gibench.api.artifacts import batches, eval_subset, save_curves, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.masking import area, removal_ranks, replace_ranked
from gibench.api.masking import fill_images as shared_fill_images
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.ranks import fraction_count
from gibench.api.saliency import SaliencyOptions, pixel_scores
from gibench.core.config_types import (
    ChannelReduction,
    IncreasingFractions,
    Limit,
    PixelValue,
    PositiveFloat,
    plugin_config,
)

ORDERS = ("least_salient_first", "most_salient_first")
DEFAULT_FRACTIONS = tuple(float(f) for f in np.logspace(-2, 0, 25))


@plugin_config
class PixelPerturbationConfig(SaliencyOptions):
    fractions: IncreasingFractions = DEFAULT_FRACTIONS
    """Fractions of pixels removed (paper: 25 log-spaced from 0.01 to 1)."""
    fill: Literal["image_mean", "constant", "dataset_mean", "blur"] = "image_mean"
    """What removed pixels become: image_mean (paper), constant (the code's, 0.5), dataset_mean, blur."""
    fill_value: PixelValue = 0.5
    """The value of fill='constant'."""
    blur_sigma: PositiveFloat = 41 / 224
    """fill='blur': Gaussian σ as a fraction of the shorter image side."""
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel."""
    area_axis: Literal["log", "linear"] = "log"
    """log: trapezoid over log10(fraction); linear: over the fraction."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


#: floor(f·P + 0.5) pixels removed at fraction f; the masking helpers are shared with ``keep_remove``.
pixels_removed = fraction_count


def fill_images(x: Tensor, config: PixelPerturbationConfig, dataset_mean: tuple[float, ...]) -> Tensor:
    """The replacement value of every pixel of ``x`` (N, C, H, W) under ``config``'s fill (see
    :func:`gibench.api.masking.fill_images`)."""
    return shared_fill_images(x, config.fill, dataset_mean, config.fill_value, config.blur_sigma)


def perturbed(x: Tensor, fill: Tensor, ranks: Tensor, k: int) -> Tensor:
    """``x`` with the pixels of rank < k (all channels) replaced by ``fill``."""
    return replace_ranked(x, fill, ranks, k)


class PixelPerturbation(Evaluator):
    """Accuracy vs fraction of least/most salient pixels removed; headline: least-first area / clean accuracy."""

    Config = PixelPerturbationConfig
    version = "2"
    history = {"1": "first version: accuracy with least/most salient pixels removed at 25 log-spaced fractions, "
                   "image-mean fill; headline least-first area over log10 fraction / clean accuracy",
               "2": "pixel scores within a relative 1e-4 of each other are tied (single linkage) and removed in pixel "
                    "index order, so float noise of the saliency method no longer reorders them"}
    metrics = (
        Metric("area_least_salient_normalized", True,
               "area under accuracy vs fraction of least-salient pixels removed, divided by clean accuracy",
               headline=True, bounds=(0.0, float("inf"))),
        Metric("area_least_salient", True, "area under accuracy vs fraction of least-salient pixels removed",
               bounds=(0.0, 1.0)),
        Metric("area_most_salient", False, "area under accuracy vs fraction of most-salient pixels removed",
               bounds=(0.0, 1.0)),
        Metric("area_most_salient_normalized", False,
               "area under accuracy vs fraction of most-salient pixels removed, divided by clean accuracy",
               bounds=(0.0, float("inf"))),
        Metric("clean_accuracy", True, "accuracy on the evaluated test images before any removal",
               bounds=(0.0, 1.0)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: one saliency map, the clean forward and one forward per fraction and removal order."""
        cfg = self.config
        n = ctx.images(cfg.max_images)
        return EvaluationCost(work((ctx.saliency(), n * cfg.input_gradients_per_map),
                                   (ctx.forward(), n * (1 + len(ORDERS) * len(cfg.fractions)))))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, _ = eval_subset(ctx, cfg.max_images)
        model = ctx.model
        num_pixels = x.shape[2] * x.shape[3]
        ks = [pixels_removed(f, num_pixels) for f in cfg.fractions]
        correct = torch.zeros(len(ORDERS), len(ks), dtype=torch.long, device=ctx.device)
        clean = torch.zeros((), dtype=torch.long, device=ctx.device)
        preview: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            scores = pixel_scores(ctx.saliency(model, xb, yb).detach(), cfg.pixel_reduction)
            ranks = removal_ranks(scores)
            fill = fill_images(xb, cfg, ctx.data.mean)
            with torch.no_grad():
                clean += _num_correct(model, xb, yb)
                for o, order_ranks in enumerate(ranks):
                    for i, k in enumerate(ks):
                        correct[o, i] += _num_correct(model, perturbed(xb, fill, order_ranks, k), yb)
            if not preview:
                preview = _preview(xb, scores, fill, ranks, num_pixels)
        return self._result(ctx, correct.cpu(), int(clean.item()), len(y), preview)

    def _result(self, ctx: EvalContext, correct: Tensor, clean: int, n: int, preview: list[Tensor]) -> EvalResult:
        cfg = self.config
        fractions = tuple(cfg.fractions)
        clean_acc = clean / max(n, 1)
        scalars: dict[str, float] = {"clean_accuracy": clean_acc}
        curves: dict[str, Curve] = {}
        for o, order in enumerate(ORDERS):
            acc = [c / max(n, 1) for c in correct[o].tolist()]
            curves[order] = Curve(fractions, tuple(acc), "fraction of pixels removed", "accuracy")
            key = "area_least_salient" if o == 0 else "area_most_salient"
            scalars[key] = area(fractions, acc, cfg.area_axis)
            scalars[f"{key}_normalized"] = scalars[key] / clean_acc if clean_acc > 0 else float("nan")
        artifacts = {"curves": save_curves(ctx, "pixel_perturbation_curves.json", curves)}
        if preview:
            artifacts["saliency_grid"] = save_grid(ctx, "pixel_perturbation_grid.png", preview)
        return EvalResult(scalars=scalars, curves=curves, artifacts=artifacts)


def _num_correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x).argmax(1) == y).sum()


def _preview(x: Tensor, scores: Tensor, fill: Tensor, ranks: tuple[Tensor, Tensor], num_pixels: int) -> list[Tensor]:
    """Grid rows: inputs, saliency, half the pixels removed least-salient-first, then most-salient-first."""
    n, half = min(8, x.shape[0]), num_pixels // 2
    rows = [x[:n], to_unit(scores[:n].unsqueeze(1))]
    rows += [perturbed(x[:n], fill[:n], r[:n], half) for r in ranks]
    return [r.detach().cpu() for r in rows]
