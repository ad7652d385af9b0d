"""An example gibench plugin: ``gradient_l1``, an L1 (sparsity) penalty on the saliency map.

    total = mean_b CE(f(x_b), y_b) + weight · mean_b ‖∇x f_{y_b}(x_b)‖₁

It exists to show the plugin contract end to end (a ``Config`` dataclass with validation, ``training_loss`` returning
the total and its logged parts); see the README's plugin guide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from gibench import Regularizer, TrainingLoss
from gibench.params import check
from gibench.saliency import logits_and_input_gradient


@dataclass(frozen=True)
class GradientL1Config:
    weight: float = 1e-3

    def __post_init__(self) -> None:
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")


class GradientL1(Regularizer):
    """CE + weight · mean_b ‖∇x f_y(x_b)‖₁ (one forward, one double backward)."""

    Config = GradientL1Config

    def training_loss(self, model, x, y) -> TrainingLoss:
        logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y)
        penalty = grad.abs().flatten(1).sum(1).mean()
        return TrainingLoss(ce + self.config.weight * penalty,
                            {"cross_entropy": ce.detach(), "gradient_l1": penalty.detach()})
