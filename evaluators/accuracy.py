"""``accuracy``: clean test accuracy. Every leaderboard row shows it next to the interpretability numbers."""

from __future__ import annotations

import torch

from gibench.api.artifacts import save_curves
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.core.config_types import Limit, plugin_config


@plugin_config
class AccuracyConfig:
    max_images: Limit = 0
    """Evaluate on the first N test images; 0 = the whole test split."""


class Accuracy(Evaluator):
    """Top-1 accuracy of the model on the (clean) test split; the per-class accuracy is saved as curve data."""

    Config = AccuracyConfig
    version = "1"
    history = {"1": "first version: top-1 accuracy on the clean test split (all of it unless max_images)"}
    judges_saliency = False
    metrics = (Metric("accuracy", True, "top-1 accuracy on the clean test split", headline=True,
                      bounds=(0.0, 1.0)),)

    @torch.no_grad()
    def cost(self, ctx: CostContext) -> EvaluationCost:
        """One forward per evaluated test image."""
        return EvaluationCost(work((ctx.forward(), ctx.images(self.config.max_images))))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        x, y = ctx.data.test.x, ctx.data.test.y
        if self.config.max_images:
            x, y = x[: self.config.max_images], y[: self.config.max_images]
        num_classes = ctx.data.num_classes
        correct = torch.zeros(num_classes, dtype=torch.long, device=ctx.device)
        for start in range(0, len(y), ctx.batch_size):
            xb = x[start : start + ctx.batch_size].to(ctx.device)
            yb = y[start : start + ctx.batch_size].to(ctx.device)
            hits = (ctx.model(xb).argmax(1) == yb).long()
            correct.index_add_(0, yb, hits)
        counts = torch.bincount(y, minlength=num_classes).clamp_min(1)
        per_class = (correct.cpu().double() / counts.double()).tolist()
        curve = Curve(tuple(float(c) for c in range(num_classes)), tuple(per_class), "class", "accuracy")
        artifact = save_curves(ctx, "per_class_accuracy.json", {"per_class_accuracy": curve})
        return EvalResult(scalars={"accuracy": correct.sum().item() / max(len(y), 1)},
                          curves={"per_class_accuracy": curve}, artifacts={"per_class_accuracy": artifact})
