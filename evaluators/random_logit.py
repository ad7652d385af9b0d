"""``random_logit``: does the saliency map depend on the class it explains?

Sixt, Granz & Landgraf, "When Explanations Lie: Why Many Modified BP Attributions Fail" (ICML 2020), §6 ("random
logit test"): explain the true label y and a randomly chosen other class y', and compare the two maps. A map that
is the same whatever class it explains does not explain the class. This is exactly how gibench's ``fooled`` control
fails: it adds one g(x) to every logit, so ∇f_y ≈ ∇f_{y'} ≈ ∇g for every pair of classes (the pilot in
``research/explanation-metric-families.md`` §7: signed cosine 0.95 for ``fooled`` against −0.15 for ``erm``).

Metrics, per image, averaged over the evaluated images (lower is better for both):

* ``cosine`` (headline): the signed cosine similarity of the two saliency maps, flattened over C×H×W. A map that
  ignores the class scores 1; class-specific gradients of a trained classifier are near 0 or negative.
* ``spearman``: the Spearman rank correlation of the two pixel-score maps (``pixel_reduction``, Σ_c |g_c| by
  default), every tie group given its average rank; scores within the relative tolerance of gibench's tie rule
  (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single linkage; :func:`gibench.api.ranks.tie_groups`, docs/architecture.md,
  "Ranking pixels: ties") are tied, so float noise of the saliency method does not change it. It ignores signs, so
  it is typically much higher than the cosine (the digit's edges carry large |g| for every class; pilot: erm 0.80,
  fooled 0.87), and a weaker separator.

Choices the paper leaves open (it uses SSIM on images; Quantus's ``RandomLogit`` applies SSIM to maps flattened to
1-D, which is not an image SSIM):

* **The other class**: y' = (y + r) mod K with r uniform on {1, …, K−1}, so y' is uniform over the K−1 other
  classes; K is the dataset's ``num_classes``. The offsets r are drawn once for the evaluated images, in order, from
  a generator seeded with the evaluation seed (so they do not depend on the batch size; Quantus reseeds per batch,
  which repeats the same offsets in every batch).
* **The saliency** of both classes is ``ctx.saliency`` (the input-gradient of that class's logit by default), taken
  in one call on the batch stacked with itself.
* **Degenerate maps**: two identical maps (for example both zero; identical means every coordinate of one is tied
  with the other's by the tie rule, :func:`gibench.api.ranks.tied`, so float noise does not make them differ) score
  1 on both metrics; otherwise a map of zero norm (cosine) or of constant pixel scores (one tie group, Spearman)
  scores 0: it carries no direction or ranking to share.
* **Images**: the first ``max_images`` test images.

Cost: one forward and one backward per image and class, i.e. two per image.
"""

from __future__ import annotations

__all__ = ["RandomLogit", "RandomLogitConfig", "map_cosine", "other_classes", "spearman"]

import torch
from torch import Tensor

from gibench.api import ranks
from gibench.api.artifacts import batches, eval_subset, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import SaliencyOptions, pixel_scores
from gibench.core.config_types import ChannelReduction, Limit, plugin_config
from gibench.core.errors import ConfigError


@plugin_config
class RandomLogitConfig(SaliencyOptions):
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel (for the Spearman correlation)."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


def other_classes(y: Tensor, num_classes: int, seed: int) -> Tensor:
    """A uniformly random class other than ``y[i]`` for every i: (y + r) mod K, r ~ U{1, …, K−1}, seeded."""
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y + offsets) % num_classes


def _identical(a: Tensor, b: Tensor) -> Tensor:
    """Per row of (N, P) maps: is every coordinate of ``a`` tied with ``b``'s (:func:`gibench.api.ranks.tied`)?"""
    return ranks.tied(a, b).all(dim=1)


def map_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-row cosine of (N, ...) maps flattened, float64; 1 for identical rows (every coordinate tied), else 0 where
    either has zero norm."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = (a * b).sum(1) / norms.clamp_min(torch.finfo(torch.float64).tiny)
    cos = torch.where(norms > 0, cos.clamp(-1.0, 1.0), 0.0)
    return torch.where(_identical(a, b), 1.0, cos)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-row Spearman correlation of (N, ...) maps, float64; 1 for identical rows (every coordinate tied), 0 if one
    row is one tie group.

    :func:`gibench.api.ranks.spearman`, clamped to [−1, 1], with one policy of this test on top: a map compared with an
    identical map scores 1 even when it is constant (Sixt et al.: a map that does not change with the class fails
    the test, whatever it looks like; :func:`gibench.api.ranks.spearman` alone would score a constant pair 0).
    """
    a, b = a.flatten(1).double(), b.flatten(1).double()
    rho = ranks.spearman(a, b).clamp(-1.0, 1.0)
    return torch.where(_identical(a, b), 1.0, rho)


class RandomLogit(Evaluator):
    """Similarity of the saliency of the label and of a random other class (Sixt et al. 2020); lower is better."""

    Config = RandomLogitConfig
    version = "2"
    history = {"1": "first version: signed cosine (headline) and Spearman of the maps for the true and a uniformly "
                   "drawn other class",
               "2": "Spearman: pixel scores within a relative 1e-4 of each other are tied (single linkage, average "
                    "rank); maps equal within that tolerance everywhere count as identical (score 1)"}
    metrics = (
        Metric("cosine", False, "signed cosine between the saliency of the label and that of a random other class "
               "(1: the map ignores the class)", headline=True, bounds=(-1.0, 1.0)),
        Metric("spearman", False, "Spearman correlation of the pixel scores of the label's and a random other "
               "class's saliency", bounds=(-1.0, 1.0)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Two saliency maps per evaluated image: the label's and a random other class's."""
        n = ctx.images(self.config.max_images)
        return EvaluationCost(work((ctx.saliency(), 2 * n * self.config.input_gradients_per_map)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        num_classes = ctx.data.num_classes
        if num_classes < 2:
            raise ConfigError(f"random_logit needs a dataset with at least 2 classes; {ctx.data.name!r} has "
                              f"{num_classes}. Leave random_logit out of the suite for this dataset.")
        x, y, _ = eval_subset(ctx, cfg.max_images)
        others = other_classes(y, num_classes, ctx.seed)
        cosines, rhos, grid = [], [], []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb, ob = x[sl].to(ctx.device), y[sl].to(ctx.device), others[sl].to(ctx.device)
            maps = ctx.saliency(ctx.model, torch.cat([xb, xb]), torch.cat([yb, ob])).detach()
            own, other = maps[: len(yb)], maps[len(yb):]
            cosines.append(map_cosine(own, other).cpu())
            rhos.append(spearman(pixel_scores(own, cfg.pixel_reduction),
                                 pixel_scores(other, cfg.pixel_reduction)).cpu())
            if not grid:
                grid = [xb[:8].cpu(), to_unit(own[:8].sum(1, keepdim=True), signed=True).cpu(),
                        to_unit(other[:8].sum(1, keepdim=True), signed=True).cpu()]
        scalars = {"cosine": float(torch.cat(cosines).mean()), "spearman": float(torch.cat(rhos).mean())}
        artifacts = {"saliency_grid": save_grid(ctx, "random_logit_grid.png", grid)} if grid else {}
        return EvalResult(scalars=scalars, artifacts=artifacts)
