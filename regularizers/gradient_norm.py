"""``gradient_norm``: penalize the squared norm of the label-logit input-gradient.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), the gradient-norm baseline (``GradNormRegularizer`` in idiap/rethinking-saliency):

    total = mean_b CE(f(x_b), y_b) + λ · 0.5 · mean_b ‖∇x f_{y_b}(x_b)‖²

Choices: the gradient is of the **label logit** f_y (as the reference code, which feeds raw logits to its
regularizer), not of the loss; the norm is the Euclidean norm over all C×H×W input coordinates in pixel units; the
reduction over the batch is the mean. λ defaults to 1e-3 (the paper; the public scripts use 1e-5). The clean logits
of the single forward pass serve both the cross-entropy and the gradient. Cost: one forward, one backward for the
gradient with ``create_graph=True``, and one double backward through it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.plugin import Regularizer, TrainingLoss
from gibench.api.saliency import logits_and_input_gradient
from gibench.core.config_types import Weight, plugin_config


@plugin_config
class GradientNormConfig:
    weight: Weight = 1e-3
    """λ, the weight of the penalty (paper: 1e-3)."""


class GradientNorm(Regularizer):
    """CE + λ·0.5·mean_b ‖∇x f_y(x_b)‖² (double backward)."""

    Config = GradientNormConfig
    family = "gradient penalty"
    history = {"1": "first version: CE + λ·½‖∇x f_y‖², λ 1e-3 (Srinivas & Fleuret's baseline)"}
    amp_safe = True  # bfloat16 autocast keeps loss and gradients within 2 % (tests/test_precision.py)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y)
        penalty = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
        total = ce + self.config.weight * penalty
        return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), "gradient_norm": penalty.detach()})
