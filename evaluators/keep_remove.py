"""``keep_remove``: Hesse et al.'s Keep and Remove curves for Positive, Negative and Absolute attributions.

Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks" (NeurIPS 2021), §4 and
``imagenet/attribution_metrics.py`` of visinf/fast-axiomatic-attribution, after the Keep/Remove benchmark of Lundberg
et al. (Nature Machine Intelligence 2020). For every test image the attribution (``ctx.saliency``) is reduced to one
signed score per pixel, a share of the pixels is kept and every other pixel is replaced by a blurred copy of the
image, and the model's output on the masked image is averaged over the images. Six curves:

* **Score** (``positive``, ``negative``, ``absolute``): the channel mean of the signed attribution; negated for
  Negative, |·| for Absolute; then clipped at 0, so a pixel whose score is ≤ 0 is never kept.
* **Keep** at fraction p: the k = min(round(p·H·W), #pixels with score > 0) highest-scoring pixels stay, all others
  are blurred. **Remove** at p: the k *lowest*-scoring pixels among those with score > 0 stay; the most important
  pixels and all pixels with score ≤ 0 are blurred. The x-axis of both is the fraction kept, and at p = 1 the two
  coincide (every pixel with a positive score kept).
* **Output**: the mean label logit f_y for Positive and Negative, the accuracy for Absolute (as the reference).
* **Direction**: Keep-Positive and Keep-Absolute are higher-is-better (the pixels the attribution calls important
  preserve the output), Keep-Negative is lower-is-better (the pixels it calls harmful lower the logit), and every
  Remove curve has the opposite direction of its Keep curve, because Remove keeps the *least* attributed of the same
  pixels. The logit areas depend on the model's logit scale; the headline is therefore the Keep-Absolute area
  (accuracy, comparable across models), and the logit areas are best compared between models of one training.
* **Area**: ``np.trapz`` over the linear fraction axis, as the reference (not divided by the axis width, so an
  accuracy area lies in [0, 1 − p_min] ⊂ [0, 1]).

Choices the paper leaves open or gibench makes differently:

* **Fractions**: the reference's 16 fractions ``np.geomspace(0.01, 1, 16)`` by default.
* **Pixel count**: round(p·H·W) (floor(p·P + 0.5), as ``pixel_perturbation``); the reference truncates (``int``),
  which differs by at most one pixel per fraction.
* **Ties**: scores within the relative tolerance of gibench's tie rule (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single
  linkage; :func:`gibench.api.ranks.tie_groups`, docs/architecture.md, "Ranking pixels: ties") are one group, kept
  in increasing flat pixel index in both modes, so float noise of the attribution does not reorder them;
  ``torch.topk`` in the reference leaves ties unspecified. A clipped score of 0 is linked only to 0, so which pixels
  count as positive is decided by the sign alone, as before.
* **Fill**: the ``blur`` fill of ``pixel_perturbation`` (Gaussian, σ = ``blur_sigma`` × the shorter side, the
  reference's σ 41 at 224 px; kernel 51/41·σ; reflect padding as the reference). The reference's kernel formula
  exp(−((t − μ)/(2σ))²) has standard deviation σ√2; both are nearly flat over the kernel, which caps the blur. It
  is applied in pixel space; the blur is linear with weights summing to 1, so blurring before or after the
  per-channel normalization (the reference blurs normalized images) gives the same masked image.
* **Label**: the true test label, for the attribution and for the output.
* **Masking**: :mod:`gibench.api.ranks` and :mod:`gibench.api.masking`, shared with ``pixel_perturbation`` (same
  tie groups, counts, blur and masked-batch construction), extended there with a per-image count.
* **Attribution** (``saliency``): ``ctx.saliency``, the map this option names (the runner resolves it through
  :func:`gibench.api.saliency.saliency_for`). The paper evaluates X-Gradient and Integrated Gradients (and gradient,
  input × gradient, expected gradients as baselines); ``input_gradient`` is the default only for uniformity with
  every other gibench evaluator (the same default everywhere, so a suite reads alike), not because the paper uses
  it: set ``saliency: x_gradient`` (or ``integrated_gradients``) for the paper's setting. The signed gradient is
  taken with respect to raw pixels, the paper's with respect to normalized ones; per channel the two differ by the
  factor std_c, which only matters for multi-channel channel means.
* **Cost**: one saliency pass per image, then 6 × len(fractions) forwards per image (96 by default), batched: the
  ranks are computed once per batch and score, and each masked batch is one comparison ``rank < k``.
"""

from __future__ import annotations

__all__ = ["CURVES", "DEFAULT_FRACTIONS", "KeepRemove", "KeepRemoveConfig", "clipped_scores", "kept_ranks"]

import math

import numpy as np
import torch
from torch import Tensor, nn

from gibench.api.artifacts import batches, eval_subset, save_curves, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.masking import fill_images, replace_ranked, trapezoid
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.ranks import fraction_count, group_positions, tie_groups
from gibench.api.saliency import SaliencyOptions, label_logit
from gibench.core.config_types import IncreasingFractions, Limit, PositiveFloat, plugin_config

SIGNS = ("positive", "negative", "absolute")
MODES = ("keep", "remove")
#: (mode, sign) of the six curves, in the order of the reference's ``itertools.product`` (sign outer).
CURVES = tuple((mode, sign) for sign in SIGNS for mode in MODES)
DEFAULT_FRACTIONS = tuple(float(f) for f in np.geomspace(0.01, 1.0, 16))
HIGHER_IS_BETTER = {("keep", "positive"): True, ("keep", "negative"): False, ("keep", "absolute"): True,
                    ("remove", "positive"): False, ("remove", "negative"): True, ("remove", "absolute"): False}


@plugin_config
class KeepRemoveConfig(SaliencyOptions):
    fractions: IncreasingFractions = DEFAULT_FRACTIONS
    """Fractions of pixels kept (paper: 16 geometrically spaced from 0.01 to 1)."""
    blur_sigma: PositiveFloat = 41 / 224
    """Gaussian σ of the blurred image that replaces masked pixels, as a fraction of the shorter side (paper: 41 at
    224 px)."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


def clipped_scores(attribution: Tensor, sign: str) -> Tensor:
    """Per-pixel scores (N, H, W): channel mean of the attribution, sign rule (``positive``, ``negative``: negated,
    ``absolute``: |·|), clipped at 0."""
    mean = attribution.mean(dim=1)
    signed = -mean if sign == "negative" else mean.abs() if sign == "absolute" else mean
    return signed.clamp_min(0)


def kept_ranks(scores: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """``(ranks, positives)``: the order in which pixels are kept (a pixel is kept at k iff rank < min(k, positives))
    and the number of pixels with score > 0 per image (N,). ``keep`` ranks the highest tie groups first; ``remove``
    the lowest positive groups first (scores ≤ 0 last, as one group); a group's pixels in increasing flat index."""
    positive = scores.flatten(1) > 0
    groups = tie_groups(scores)
    if mode == "keep":
        ranks = group_positions(groups, descending=True)
    else:
        ranks = group_positions(torch.where(positive, groups, groups.shape[1]), descending=False)
    return ranks, positive.sum(1)


class KeepRemove(Evaluator):
    """Keep/Remove × Positive/Negative/Absolute curves and their areas; headline: the Keep-Absolute area."""

    Config = KeepRemoveConfig
    version = "2"
    history = {"1": "first version: Hesse et al.'s Keep/Remove areas over 16 geometric fractions (0.01–1) with blur "
                   "fill; headline the Keep-Absolute accuracy area",
               "2": "pixel scores within a relative 1e-4 of each other are tied (single linkage) and kept in pixel "
                    "index order, so float noise of the attribution no longer reorders them"}
    metrics = tuple(
        Metric(f"{mode}_{sign}_auc", HIGHER_IS_BETTER[mode, sign],
               f"area under {'accuracy' if sign == 'absolute' else 'mean label logit'} vs fraction of pixels kept, "
               f"{mode} {sign} attribution (others blurred)",
               headline=(mode, sign) == ("keep", "absolute"),
               bounds=(0.0, 1.0) if sign == "absolute" else (-math.inf, math.inf))
        for mode, sign in CURVES
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: one saliency map and one forward per curve (mode × sign) and fraction."""
        cfg = self.config
        n = ctx.images(cfg.max_images)
        return EvaluationCost(work((ctx.saliency(), n * cfg.input_gradients_per_map),
                                   (ctx.forward(), n * len(CURVES) * len(cfg.fractions))))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, _ = eval_subset(ctx, cfg.max_images)
        ks = [fraction_count(f, x.shape[2] * x.shape[3]) for f in cfg.fractions]
        sums = torch.zeros(len(CURVES), len(ks), dtype=torch.float64, device=ctx.device)
        preview: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            attribution = ctx.saliency(ctx.model, xb, yb).detach()
            blurred = fill_images(xb, "blur", ctx.data.mean, blur_sigma=cfg.blur_sigma)
            for c, (mode, sign) in enumerate(CURVES):
                ranks, positives = kept_ranks(clipped_scores(attribution, sign), mode)
                with torch.no_grad():
                    for i, k in enumerate(ks):
                        kept = replace_ranked(xb, blurred, ranks, positives.clamp_max(k), inside=False)
                        sums[c, i] += _output(ctx.model, kept, yb, sign)
            if not preview:
                preview = _preview(xb, attribution, blurred, ks[len(ks) // 2])
        return self._result(ctx, sums.cpu(), len(y), preview)

    def _result(self, ctx: EvalContext, sums: Tensor, n: int, preview: list[Tensor]) -> EvalResult:
        fractions = tuple(self.config.fractions)
        scalars: dict[str, float] = {}
        curves: dict[str, Curve] = {}
        for c, (mode, sign) in enumerate(CURVES):
            values = tuple(v / max(n, 1) for v in sums[c].tolist())
            output = "accuracy" if sign == "absolute" else "mean label logit"
            curves[f"{mode}_{sign}"] = Curve(fractions, values, "fraction of pixels kept", output)
            scalars[f"{mode}_{sign}_auc"] = trapezoid(fractions, values)
        artifacts = {"curves": save_curves(ctx, "keep_remove_curves.json", curves)}
        if preview:
            artifacts["saliency_grid"] = save_grid(ctx, "keep_remove_grid.png", preview)
        return EvalResult(scalars=scalars, curves=curves, artifacts=artifacts)


def _output(model: nn.Module, x: Tensor, y: Tensor, sign: str) -> Tensor:
    """The summed label logit (positive, negative) or number correct (absolute) of a masked batch, float64."""
    logits = model(x)
    if sign == "absolute":
        return (logits.argmax(1) == y).sum().double()
    return label_logit(logits, y).double().sum()


def _preview(x: Tensor, attribution: Tensor, blurred: Tensor, k: int) -> list[Tensor]:
    """Grid rows: inputs, signed attribution (grey = 0), Keep-Absolute and Remove-Absolute at ``k`` pixels kept."""
    n = min(8, x.shape[0])
    rows = [x[:n], to_unit(attribution[:n].mean(1, keepdim=True), signed=True)]
    for mode in MODES:
        ranks, positives = kept_ranks(clipped_scores(attribution[:n], "absolute"), mode)
        rows.append(replace_ranked(x[:n], blurred[:n], ranks, positives.clamp_max(k), inside=False))
    return [r.detach().cpu() for r in rows]
