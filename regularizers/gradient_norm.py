"""``gradient_norm``: penalize the squared norm of the label-logit input-gradient.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), the gradient-norm baseline (``GradNormRegularizer`` in idiap/rethinking-saliency):

    total = mean_b CE(f(x_b), y_b) + λ · 0.5 · mean_b ‖∇x f_{y_b}(x_b)‖²

Choices: the gradient is of the **label logit** f_y (as the reference code, which feeds raw logits to its
regularizer), not of the loss; the norm is the Euclidean norm over all C×H×W input coordinates in pixel units; the
reduction over the batch is the mean. λ defaults to 1e-3 (the paper; the public scripts use 1e-5). The clean logits
of the single forward pass serve both the cross-entropy and the gradient. Cost: one forward, one backward for the
gradient with ``create_graph=True``, and one double backward through it.

Sweep: λ ∈ {1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100} (log). The paper reports one λ (1e-3, which costs 1.4 points of
CIFAR-100 accuracy in its submission version: 78.01 → 76.60 %) and its public scripts use 1e-5; "Which Models have
Perceptually-Aligned Gradients?" (Srinivas, Bordt & Lakkaraju, tml-tuebingen/pags) sweeps its gradient-norm penalty
over logspace(−5, 2), but on the gradient of the mean loss with a hidden ×1e5/B² factor, so its values do not
transfer. The decades were placed by training ``gibench_cnn`` (softplus) on ``mnist_subset`` (2 epochs, Adam 1e-3,
batch 64, seed 0; test accuracy, and mean ‖∇x f_y‖² over 500 test images):

======================  ========  =========
run                     accuracy  ‖∇x f_y‖²
======================  ========  =========
erm                     0.951     6.92
λ = 1e-5                0.952     6.91
λ = 1e-4                0.952     6.86
λ = 1e-3 (default)      0.952     6.42
λ = 1e-1                0.960     1.11
λ = 1                   0.962     0.26
λ = 10                  0.948     0.065
======================  ========  =========

1e-5 (the scripts' λ) is ``erm`` to the measurement, so the sweep starts at 1e-4, nearly ``erm`` (−1 % in ‖∇x f_y‖²);
at 10 the penalty dominates (‖∇x f_y‖² a hundredth of ``erm``'s, the first accuracy cost): clearly strong. The
score-matching regularizers, whose penalty contains this one plus terms that cost accuracy far sooner, sweep lower.
On the tuned suite's training (3 epochs, a tenth of the split held out, seed 0, validation accuracy; ``erm``: 0.965)
λ = 10 still gives 0.975, so a selection within 0.02 of ``erm`` kept the top of the grid; one decade more, λ = 100,
gives 0.9375 (test 0.919), beyond that budget, so the grid ends there and the selected point lies inside it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.passes import Passes
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
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
    sweep = Sweep("weight", (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0), "log",
                  "decades from nearly erm to past a 0.02 accuracy cost (100, measured); default 1e-3 (paper)")

    def passes_per_step(self) -> Passes:
        """One forward; backwards: the input gradient (``create_graph``), then the training backward through the
        forward's graph and through the input gradient's graph."""
        return Passes(forward=1, backward=3)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y)
        penalty = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
        total = ce + self.config.weight * penalty
        return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), "gradient_norm": penalty.detach()})
