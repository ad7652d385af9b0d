"""``blockmnist``: how much of a model's saliency leaks out of the block that carries the label.

Shah, Jain & Netrapalli, "Do Input Gradients Highlight Discriminative Features?" (NeurIPS 2021), §5: on BlockMNIST
(a digit block and a label-free null block, the digit on top or bottom at random) standard models' input-gradients
also highlight the null block ("feature leakage"), robust models' do not; on the BlockMNIST-Top control both are
fine. The paper shows this qualitatively; its quantitative metric could not be confirmed, so gibench defines two
explicit metrics on any dataset with the ``SIGNAL_MASK`` capability (``gibench.data.blockmnist``):

* ``signal_mass_share`` (headline, higher is better): per image, the share of the total pixel-score mass that lies
  in the signal block, Σ_signal s / Σ_all s, averaged over images. It has no free parameter. An all-zero saliency map
  gets the signal block's share of the pixels (0.5 on BlockMNIST), the value of a uniform map.
* ``null_topk_share`` (lower is better): per image, the share of the k most salient pixels that fall outside the
  signal block, averaged over images, as in follow-up work on feature leakage; k = floor(``top_k_fraction``·H·W +
  0.5), by default 10% of the image (157 of 1,568 pixels, about the ink area of one MNIST digit). Scores within the
  relative tolerance of gibench's tie rule (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single linkage;
  :func:`gibench.api.ranks.tie_groups`, docs/architecture.md, "Ranking pixels: ties") are one group, taken in
  increasing flat pixel index, so float noise of the saliency method does not change which pixels are the top k.

Choices: the saliency is ``ctx.saliency`` (the input-gradient of the true label's logit) aggregated per pixel by
``pixel_reduction`` (Σ_c |g_c| by default); the first ``max_images`` test images are used. Cost: one forward and one
backward per image; everything else is batched tensor arithmetic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gibench.api.artifacts import batches, eval_subset, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import SIGNAL_MASK, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.ranks import rank_positions
from gibench.api.saliency import SaliencyOptions, mask_mass_share, pixel_scores
from gibench.core.config_types import ChannelReduction, FractionOrAll, Limit, plugin_config


@plugin_config
class BlockMNISTLeakageConfig(SaliencyOptions):
    top_k_fraction: FractionOrAll = 0.1
    """k of the top-k metric, as a fraction of the image's pixels."""
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


def null_topk_share(scores: Tensor, mask: Tensor, k: int) -> Tensor:
    """Per image, the share of the k highest-ranked pixels outside the mask, (N,): the pixels of rank < k in
    :func:`gibench.api.ranks.rank_positions` (tie groups by score, a group's pixels by lower flat index)."""
    top = rank_positions(scores, descending=True) < k
    return (top & ~mask.flatten(1)).sum(1).double() / k


class BlockMNISTLeakage(Evaluator):
    """Share of saliency in the signal block (headline) and share of the top-k pixels in the null block."""

    Config = BlockMNISTLeakageConfig
    version = "2"
    history = {"1": "first version: per-image share of the abs_sum saliency mass inside the signal block (headline) "
                   "and share of the top 10% pixels outside it, first max_images test images",
               "2": "top-k share: pixel scores within a relative 1e-4 of each other are tied (single linkage) and "
                    "taken in pixel index order; the mass share unchanged"}
    requires = frozenset({SIGNAL_MASK})
    metrics = (
        Metric("signal_mass_share", True, "share of the pixel-saliency mass inside the signal block", headline=True,
               bounds=(0.0, 1.0)),
        Metric("null_topk_share", False, "share of the top-k salient pixels that lie outside the signal block",
               bounds=(0.0, 1.0)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """One saliency map per evaluated image (nothing on a dataset without a signal mask: skipped)."""
        if SIGNAL_MASK not in ctx.data.capabilities:
            return EvaluationCost()
        n = ctx.images(self.config.max_images)
        return EvaluationCost(work((ctx.saliency(), n * self.config.input_gradients_per_map)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, extras = eval_subset(ctx, cfg.max_images)
        masks = extras["signal_mask"]
        k = max(1, int(math.floor(cfg.top_k_fraction * x.shape[2] * x.shape[3] + 0.5)))
        mass, topk = [], []
        grid: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            mb = masks[sl].to(ctx.device)[:, 0]
            scores = pixel_scores(ctx.saliency(ctx.model, xb, yb).detach(), cfg.pixel_reduction)
            mass.append(mask_mass_share(scores, mb))
            topk.append(null_topk_share(scores, mb, k))
            if not grid:
                grid = [xb[:8].cpu(), to_unit(scores[:8].unsqueeze(1)).cpu(), mb[:8].unsqueeze(1).float().cpu()]
        scalars = {
            "signal_mass_share": float(torch.cat(mass).mean()),
            "null_topk_share": float(torch.cat(topk).mean()),
        }
        artifacts = {"saliency_grid": save_grid(ctx, "blockmnist_saliency.png", grid)} if grid else {}
        return EvalResult(scalars=scalars, artifacts=artifacts)
