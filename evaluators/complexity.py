"""``complexity``: how concentrated a saliency map is: Gini sparseness and entropy of the pixel scores.

* ``gini`` (headline, higher is better, in [0, 1]): Chalasani, Chen, Chowdhury, Wu & Jha, "Concise Explanations of
  Neural Networks using Adversarial Training" (ICML 2020), the Gini index of the per-pixel scores s_1 ≤ … ≤ s_n
  (sorted ascending): G = Σ_i (2i − n − 1)·s_i / (n·Σ_i s_i). 0 for a uniform map, (n − 1)/n when all mass is on one
  pixel. Adversarial training is reported to raise it (Chalasani et al.; the gibench pilot agrees).
* ``entropy`` (lower is better, in [0, log n]): Bhatt, Weller & Moura, "Evaluating and Aggregating Feature-based
  Model Explanations" (IJCAI 2020), the Shannon entropy (natural log) of p_i = s_i / Σ_j s_j, with 0·log 0 = 0.
  log n for a uniform map (6.66 for 784 MNIST pixels), 0 for a single pixel.

Both are scale-invariant and computed per image, then averaged over the evaluated images (Quantus normalises by the
maximum over the whole batch by default, which these two metrics do not notice, but which makes other metrics
depend on the batch; gibench never normalises across images).

Choices: the map is ``ctx.saliency`` (the input-gradient of the label logit by default) aggregated per pixel by
``pixel_reduction`` (Σ_c |g_c| by default, the map the other gibench evaluators rank), so n = H·W; an all-zero map
counts as uniform (Gini 0, entropy log n), where Quantus adds 1e-7 to every entry; the first ``max_images`` test
images. Quantus 0.6.0's ``Sparseness`` and ``Complexity`` compute the same two numbers (tests compare them).

Cost: one forward and one backward per image (the saliency); the metrics themselves are a sort and a sum.
"""

from __future__ import annotations

__all__ = ["Complexity", "ComplexityConfig", "entropy", "gini"]

import torch
from torch import Tensor

from gibench.api.artifacts import batches, eval_subset
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import SaliencyOptions, pixel_scores
from gibench.core.config_types import ChannelReduction, Limit, plugin_config


@plugin_config
class ComplexityConfig(SaliencyOptions):
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


def gini(scores: Tensor) -> Tensor:
    """Per-image Gini index of non-negative (N, ...) scores, float64, (N,); 0 for an all-zero map."""
    s = torch.sort(scores.flatten(1).double(), dim=1).values
    n = s.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=s.device) - n - 1
    total = s.sum(1)
    value = (s * weights).sum(1) / (n * total.clamp_min(torch.finfo(torch.float64).tiny))
    return torch.where(total > 0, value, 0.0)


def entropy(scores: Tensor) -> Tensor:
    """Per-image Shannon entropy (nats) of non-negative (N, ...) scores normalised to sum 1, float64, (N,);
    log n for an all-zero map."""
    s = scores.flatten(1).double()
    total = s.sum(1, keepdim=True)
    p = torch.where(total > 0, s / total.clamp_min(torch.finfo(torch.float64).tiny), 1.0 / s.shape[1])
    return -torch.special.xlogy(p, p).sum(1)


class Complexity(Evaluator):
    """Gini sparseness (headline, higher is better) and entropy (lower is better) of the per-pixel saliency."""

    Config = ComplexityConfig
    version = "1"
    history = {"1": "first version: per-image Gini (headline) and entropy of the abs_sum pixel scores, averaged; an "
                   "all-zero map counts as uniform; no normalisation across images"}
    metrics = (
        Metric("gini", True, "Gini index of the pixel scores (sparseness, Chalasani et al. 2020)", headline=True,
               bounds=(0.0, 1.0)),
        Metric("entropy", False, "Shannon entropy (nats) of the normalised pixel scores (Bhatt et al. 2020)",
               bounds=(0.0, float("inf"))),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """One saliency map per evaluated image."""
        n = ctx.images(self.config.max_images)
        return EvaluationCost(work((ctx.saliency(), n * self.config.input_gradients_per_map)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, _ = eval_subset(ctx, cfg.max_images)
        ginis, entropies = [], []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            scores = pixel_scores(ctx.saliency(ctx.model, xb, yb).detach(), cfg.pixel_reduction)
            ginis.append(gini(scores).cpu())
            entropies.append(entropy(scores).cpu())
        return EvalResult(scalars={"gini": float(torch.cat(ginis).mean()),
                                   "entropy": float(torch.cat(entropies).mean())})
