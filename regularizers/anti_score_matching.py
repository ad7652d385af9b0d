"""``anti_score_matching``: raise the Hessian trace of the label logit, up to a clamp (a deliberately bad model).

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), ``AntiScoreMatching`` in idiap/rethinking-saliency: the opposite of score matching, used to show that
gradient quality tracks generative-model quality. With the Taylor estimate of :mod:`score_matching`,

    h_b     = (2/σ²)·(f_y(x_b + v) − f_y(x_b)),   v ~ N(0, σ²I)   (averaged over ``num_samples`` draws)
    penalty = −mean_b min(h_b, τ)
    total   = mean_b CE(f(x_b), y_b) + λ·penalty

Minimizing raises h until a sample's estimate reaches τ, after which that sample gets no gradient. The sign flip lives
inside the penalty, so λ stays positive. There is no gradient-norm term and no stability term (as the reference).

Choices the paper leaves open, and defaults: the raw label logit f_y; per-sample sums over C×H×W in pixel units;
batch mean; σ = 0.001 (paper and code); τ = 1000 (paper; the code uses 1e4); one draw; λ = 1e-4 (paper; the scripts
use 1e-5). The clean f_y(x) comes from the training forward (no duplicated forward); the noisy pass runs with
``noisy_bn`` ("train" by default, as the reference: batch statistics of x + v, running statistics updated a second
time; see :mod:`gibench.api.passes`). Autocast is disabled: at σ = 0.001, 2/σ² = 2·10⁶, so even float32 rounding of
f_y (≈1e-7·|f_y|) reaches ≈0.2·|f_y| in h, as in the reference. Needs a smooth activation.

Cost per step: 1 + ``num_samples`` forwards and one backward through all of them (no double backward): about twice
a plain step.

Sweep: λ ∈ {1e-6, 1e-5, 1e-4, 1e-3, 1e-2} (log): decades around the paper's 1e-4, the public scripts' 1e-5 included.
The clamp bounds what the penalty can take off the loss to λ·τ (min(h, τ) ≤ τ = 1000): 1e-3 at λ = 1e-6 and 10 at λ =
1e-2; the paper's 1e-4 (λ·τ = 0.1) already costs 3.1 points of CIFAR-100 accuracy in the paper's submission version
(78.01 → 74.87 %) and drops the GAN-test score from 59.5 to 16.4 %. Measured on ``mnist_subset`` (``gibench_cnn`` with
softplus, 2 epochs, Adam 1e-3, batch 64, seed 0; test accuracy and mean ‖∇x f_y‖² of 500 test images; ``erm``: 0.951
and 6.92): λ = 1e-6 gives 0.951 and 6.83, ``erm`` within the noise; 1e-2 gives 0.863 and 3.75, clearly strong.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.hessian import taylor_trace
from gibench.api.passes import Passes, full_precision
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.api.saliency import label_logit
from gibench.core.config_types import BNMode, NumSamples, PositiveFloat, Sigma, Weight, plugin_config


@plugin_config
class AntiScoreMatchingConfig:
    weight: Weight = 1e-4
    """λ on the anti-score-matching penalty (paper; the public scripts use 1e-5)."""
    sigma: Sigma = 0.001
    """Std of the Taylor noise in pixel units; the estimate divides by σ²."""
    clamp: PositiveFloat = 1000.0
    """τ: h above it gets no gradient (paper; the code uses 1e4)."""
    num_samples: NumSamples = 1
    """Noise draws per step."""
    noisy_bn: BNMode = "train"
    """BatchNorm mode of the noisy pass (train: the reference's)."""


class AntiScoreMatching(Regularizer):
    """CE − λ·mean min(h, τ), h the Taylor estimate of tr ∇²ₓ f_y."""

    Config = AntiScoreMatchingConfig
    family = "control"
    history = {"1": "first version: CE − λ·mean min(Taylor Hessian-trace estimate, τ) of the label logit (λ 1e-4, σ "
                   "1e-3, τ 1000), a deliberately bad control"}
    needs_smooth_activation: ClassVar[bool] = True
    zero_strength: ClassVar[dict] = {"weight": 0.0}
    sweep = Sweep("weight", (1e-6, 1e-5, 1e-4, 1e-3, 1e-2), "log",
                  "decades around the paper's 1e-4 (the public scripts' 1e-5 included); λ·τ from 1e-3 to 10")

    def passes_per_step(self) -> Passes:
        """The clean forward and one noisy forward per draw, and the training backward through each."""
        return Passes(forward=1 + self.config.num_samples, backward=1 + self.config.num_samples)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        c = self.config
        with full_precision(x):
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            h = taylor_trace(model, x, y, label_logit(logits, y), c.sigma, c.num_samples, c.noisy_bn)
            penalty = -h.clamp(max=c.clamp).mean()
        total = ce + c.weight * penalty
        parts = {"cross_entropy": ce.detach(), "penalty": penalty.detach(), "hessian_trace": h.mean().detach()}
        return TrainingLoss(total=total, parts=parts)
