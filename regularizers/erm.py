"""``erm``: plain empirical risk minimization, the baseline every other regularizer is compared against."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.regularizer import Regularizer, TrainingLoss


class ERM(Regularizer):
    """Mean cross-entropy on the clean batch and nothing else (one forward, one backward per step)."""

    family = "baseline"
    history = {"1": "first version: plain cross-entropy"}
    zero_strength = {}
    amp_safe = True  # bfloat16 autocast keeps loss and gradients within 2 % (tests/test_precision.py)
    sweep = None  # no strength knob: erm is the point every sweep starts next to

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        ce = F.cross_entropy(model(x), y)
        return TrainingLoss(total=ce, parts={"cross_entropy": ce.detach()})
