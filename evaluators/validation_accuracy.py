"""``validation_accuracy``: top-1 accuracy on the validation split a suite that selects holds out of the training
split (:mod:`gibench.data.validation`).

The one number selection reads (:mod:`gibench.running.selection`): a regularizer's strength is chosen by it, never by
the test split, following the protocol of "In Search of Lost Domain Generalization" (Gulrajani & Lopez-Paz, ICLR 2021;
facebookresearch/DomainBed, ``domainbed/model_selection.py``, training-domain validation). It requires the
``validation_split`` capability, which only the runner gives (to the jobs of a suite with ``select`` or
``validation``); on any other job it is recorded as skipped with that reason. Like ``accuracy`` it measures the
operating point, not the gradients (``judges_saliency = False``).
"""

from __future__ import annotations

import torch

from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import VALIDATION_SPLIT, EmptyConfig, EvalContext, EvalResult, Evaluator, Metric


class ValidationAccuracy(Evaluator):
    """Top-1 accuracy on the whole held-out validation split (no options: selection must see all of it)."""

    Config = EmptyConfig
    version = "1"
    history = {"1": "first version: top-1 accuracy on the whole held-out validation split"}
    judges_saliency = False
    requires = frozenset({VALIDATION_SPLIT})
    metrics = (Metric("validation_accuracy", True, "top-1 accuracy on the held-out validation split (selection "
                      "reads it)", headline=True, bounds=(0.0, 1.0)),)

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """One forward per validation image."""
        return EvaluationCost(work((ctx.forward(), ctx.data.n_validation)))

    @torch.no_grad()
    def evaluate(self, ctx: EvalContext) -> EvalResult:
        split = ctx.data.validation
        correct = 0
        for start in range(0, len(split), ctx.batch_size):
            xb = split.x[start : start + ctx.batch_size].to(ctx.device)
            yb = split.y[start : start + ctx.batch_size].to(ctx.device)
            correct += int((ctx.model(xb).argmax(1) == yb).sum())
        return EvalResult(scalars={"validation_accuracy": correct / max(len(split), 1)})
