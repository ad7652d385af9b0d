"""``accuracy``: clean test accuracy. Every leaderboard row shows it next to the interpretability numbers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibench.api import EvalContext, EvalResult, Evaluator, Metric
from gibench.params import check


@dataclass(frozen=True)
class AccuracyConfig:
    max_images: int = 0  # evaluate on the first N test images; 0 = the whole test split

    def __post_init__(self) -> None:
        check(self.max_images >= 0, f"max_images must be >= 0, got {self.max_images}")


class Accuracy(Evaluator):
    """Top-1 accuracy of the model on the (clean) test split."""

    Config = AccuracyConfig
    version = "1"
    judges_saliency = False
    metrics = (Metric("accuracy", True, "top-1 accuracy on the clean test split", headline=True),)

    @torch.no_grad()
    def evaluate(self, ctx: EvalContext) -> EvalResult:
        x, y = ctx.data.test.x, ctx.data.test.y
        if self.config.max_images:
            x, y = x[: self.config.max_images], y[: self.config.max_images]
        correct = torch.zeros((), dtype=torch.long, device=ctx.device)
        for start in range(0, len(y), ctx.batch_size):
            xb = x[start : start + ctx.batch_size].to(ctx.device)
            yb = y[start : start + ctx.batch_size].to(ctx.device)
            correct += (ctx.model(xb).argmax(1) == yb).sum()
        return EvalResult(scalars={"accuracy": correct.item() / max(len(y), 1)})
