"""``rrr``: Right for the Right Reasons, cross-entropy plus the squared input gradient inside annotated regions.

Ross, Hughes & Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by Constraining their
Explanations" (IJCAI 2017), Eq. 1; ``MultilayerPerceptron.fit`` in ``rrr/multilayer_perceptron.py`` of dtak/rrr:

    total = mean_b CE(f(x_b), y_b) + λ · mean_b Σ_d (A_bd · ∂/∂x_d Σ_k log p̂_k(x_b))²,   p̂ = softmax ∘ f

A is the annotation mask, True on the inputs the explanation must not use (a decoy swatch): the dataset's
``IRRELEVANT_MASK``, which the trainer hands over batch by batch (``requires``); a suite that trains ``rrr`` on a
dataset without it is a preflight error that names the datasets that have it (``decoy_mnist``).

Choices, and where they differ from the reference code:

* The gradient is of Σ_k log p̂_k(x), the sum of the log-probabilities over all K classes (the paper and the code's
  default ``input_gradients(scale='log', y='sum')``): it does not depend on the label, so the penalty also constrains
  what the model would use for the other classes. ``gradient_of: label_logit`` takes ∂f_y/∂x instead, the label logit's
  gradient that gibench's evaluators explain with (``gibench.api.saliency.input_gradient``).
* Units: the reference sums the cross-entropy and the penalty over a batch of 256 and trains on pixels in 0..255
  (``decoy_mnist.py`` keeps MNIST's bytes), with λ₁ = 1000 on DecoyMNIST (``experiments/Decoy MNIST.ipynb``:
  ``MultilayerPerceptron(l2_grads=1000)``). gibench averages over the batch (the reference's objective divided by the
  batch size, which keeps the ratio of its two terms) and its pixels are in [0, 1], so a gradient is 255 times the
  reference's and its square 255² times: λ = 1000 / 255² ≈ 0.0154; the default is 0.015.
* A one-channel mask (N, 1, H, W) covers every channel of its pixel (the reference's inputs are flat gray pixels).
* The reference's third term λ₂‖θ‖² (λ₂ = 1e-4 on the summed objective: about 4e-7 per sample) is weight decay: it is
  the suite's ``train.weight_decay``, the same for every regularizer of a comparison, and not part of this loss.
* One forward pass serves the cross-entropy and the gradient (the reference evaluates its network twice on the same
  batch, which is the same without BatchNorm or dropout). Cost: one forward, one backward with ``create_graph`` and one
  double backward, as ``gradient_norm``.

Sweep: λ from 1.5e-4 to 1.5 in decades (log), the paper's λ₁ = 1000 (0.015 here) in the middle. The paper uses one
λ₁ on DecoyMNIST and does not sweep it there. Measured on the bundled digits (``benchmarks/suites/decoy_rrr.yaml``:
``gibench_mlp``, 3 epochs, Adam 1e-3, batch 64, seeds 0-2; test accuracy with random swatches, the share of the
input gradient's mass on the swatch (its area is 0.020), and the shortcut gap; ``erm`` on the same digits without
swatches: 0.933):

    erm:           0.639, 0.087, 0.328
    λ = 0.0015:    0.891, 0.025, 0.054
    λ = 0.015:     0.925, 0.006, 0.007   (the paper's λ₁)
    λ = 0.15:      0.927, 0.002, 0.002

A tenth of the paper's λ already removes most of the reliance; the paper's λ removes it and recovers the accuracy of
a model that never saw a swatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.passes import Passes
from gibench.api.plugin_base import IRRELEVANT_MASK
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.api.saliency import label_logit
from gibench.core.config_types import Weight, plugin_config


@plugin_config
class RRRConfig:
    weight: Weight = 0.015
    """λ, the weight of the right-reasons penalty (Ross et al.'s λ₁ = 1000 in 0..255 pixels and summed loss)."""
    gradient_of: Literal["sum_log_probs", "label_logit"] = "sum_log_probs"
    """sum_log_probs: ∂/∂x Σ_k log p̂_k (the paper); label_logit: ∂f_y/∂x (gibench's saliency)."""


class RRR(Regularizer):
    """CE + λ·mean_b ‖A_b ⊙ ∇x Σ_k log p̂_k(x_b)‖² (double backward), A the irrelevant-region annotation."""

    Config = RRRConfig
    family = "gradient penalty"
    requires = frozenset({IRRELEVANT_MASK})
    history = {"1": "first version: Ross et al.'s right-reasons penalty, λ 0.015 (their 1000 in byte units)"}
    sweep = Sweep("weight", (1.5e-4, 1.5e-3, 1.5e-2, 1.5e-1, 1.5), "log",
                  "decades around Ross et al.'s λ₁ = 1000 (0.015 in [0, 1] pixels and a mean loss)")

    def passes_per_step(self) -> Passes:
        """As ``gradient_norm``: one forward, the input gradient and the training backward through both graphs."""
        return Passes(forward=1, backward=3)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor, *,
                      annotations: Mapping[str, Tensor]) -> TrainingLoss:
        mask = annotations[IRRELEVANT_MASK]
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(leaf)
            explained = (F.log_softmax(logits, dim=1).sum() if self.config.gradient_of == "sum_log_probs"
                         else label_logit(logits, y).sum())
            (grad,) = torch.autograd.grad(explained, leaf, create_graph=True)
        ce = F.cross_entropy(logits, y)
        penalty = (grad * mask.to(grad.dtype)).pow(2).flatten(1).sum(1).mean()
        total = ce + self.config.weight * penalty
        return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), "right_reasons": penalty.detach()})
