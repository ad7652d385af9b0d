"""An example gibench plugin distribution: one regularizer and one evaluator, using only ``gibench``'s public API.

``gradient_l1`` (regularizer): an L1 (sparsity) penalty on the saliency map,

    total = mean_b CE(f(x_b), y_b) + weight · mean_b ‖∇x f_{y_b}(x_b)‖₁

(one forward pass, one double backward). ``weight = 0`` is plain ``erm``, which the conformance checks verify. Its
strength knob is ``weight``, swept over the decades 1e-5 … 1e-1 around the default 1e-3: the L1 norm of a plain
MNIST model's input-gradient is of order 50 (784 pixels, about 0.07 each), so weight · penalty runs from ≈ 5e-4,
nearly ``erm``, to ≈ 5, far above the cross-entropy.

``top_pixel_share`` (evaluator): how concentrated the saliency map is: per test image, the share of the pixel
saliency mass Σ_c |∂f_y/∂x_c| that falls in its ``top_fraction`` most salient pixels (ties broken by pixel index),
averaged over the first ``max_images`` test images. An all-zero map counts as spread evenly (share = the fraction).

It exists to show the plugin contract end to end; see the README's plugin guide. Its tests (``tests/``) run the same
conformance checks gibench runs on its built-ins.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gibench import (
    CostContext,
    EvalResult,
    EvaluationCost,
    Evaluator,
    FractionOrAll,
    Limit,
    Metric,
    Passes,
    Regularizer,
    Sweep,
    TrainingLoss,
    Weight,
    batches,
    eval_subset,
    logits_and_input_gradient,
    pixel_scores,
    plugin_config,
    save_saliency_grid,
)


@plugin_config
class GradientL1Config:
    weight: Weight = 1e-3
    """λ, the weight of the L1 penalty on the input-gradient."""


class GradientL1(Regularizer):
    """CE + weight · mean_b ‖∇x f_y(x_b)‖₁ (one forward, one double backward)."""

    Config = GradientL1Config     # zero_strength defaults to {"weight": 0.0}
    sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log", "decades around the default")

    def passes_per_step(self) -> Passes:
        """One forward; backwards: the input gradient, then the training backward through both graphs."""
        return Passes(forward=1, backward=3)

    def training_loss(self, model, x, y) -> TrainingLoss:
        logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y)
        penalty = grad.abs().flatten(1).sum(1).mean()
        return TrainingLoss(ce + self.config.weight * penalty,
                            {"cross_entropy": ce.detach(), "gradient_l1": penalty.detach()})


@plugin_config
class TopPixelShareConfig:
    top_fraction: FractionOrAll = 0.1
    """The share of each image's pixels counted as its most salient ones."""
    max_images: Limit = 500
    """Evaluate on the first N test images; 0 = all."""


class TopPixelShare(Evaluator):
    """Share of the saliency mass in each image's most salient pixels (higher: a more concentrated map)."""

    Config = TopPixelShareConfig
    version = "1"
    metrics = (
        Metric("top_pixel_share", True, "share of the saliency mass in the top pixels", headline=True),
        Metric("top_pixel_share_std", False, "standard deviation of that share over the images"),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """One saliency pass per evaluated image: what `gibench run --estimate` prices (the sort is not counted)."""
        return EvaluationCost({ctx.saliency(): ctx.images(self.config.max_images)})

    def evaluate(self, ctx) -> EvalResult:
        x, y, _ = eval_subset(ctx, self.config.max_images)
        k = max(1, math.ceil(self.config.top_fraction * x.shape[2] * x.shape[3]))
        shares, first_scores = [], None
        for sl in batches(len(y), ctx.batch_size):
            scores = pixel_scores(ctx.saliency(ctx.model, x[sl].to(ctx.device), y[sl].to(ctx.device)).detach())
            flat = scores.flatten(1).double()
            top = torch.sort(flat, dim=1, descending=True, stable=True).values[:, :k].sum(1)
            total = flat.sum(1)
            even = torch.full_like(total, k / flat.shape[1])  # an all-zero map counts as spread evenly
            shares.append(torch.where(total > 0, top / total.clamp_min(1e-300), even))
            first_scores = scores if first_scores is None else first_scores
        share = torch.cat(shares)
        grid = save_saliency_grid(ctx, "top_pixel_share.png", x[: len(first_scores)], first_scores.cpu())
        return EvalResult(scalars={"top_pixel_share": float(share.mean()),
                                   "top_pixel_share_std": float(share.std(unbiased=False))},
                          artifacts={"saliency_grid": grid})
