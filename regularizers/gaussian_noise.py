"""``gaussian_noise``: Gaussian data augmentation, the training loss of randomized smoothing.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing" (ICML 2019), as used by
Srinivas, Bordt & Lakkaraju, "Which Models have Perceptually-Aligned Gradients? An Explanation via Off-Manifold
Robustness" (NeurIPS 2023; ``RandomizedSmoothingLoss`` in tml-tuebingen/pags):

    total = mean_b CE(f(x_b + δ_b), y_b),   δ ~ N(0, σ²I)

Choices: there is **no clean cross-entropy term** (as the PAGs code: the model only ever sees noisy inputs in
training); one noise draw per sample and step (``num_samples`` > 1 averages the loss over several independent noisy
copies, one forward each); σ in pixel units of [0, 1] images; the noisy image is **not clipped** to [0, 1] by default
(``clip=False``), since the smoothed classifier of Cohen et al. is defined with unclipped Gaussian noise and PAGs does
not clip either. The forward pass is the training forward (train mode, BatchNorm batch statistics of the noisy
batch). σ = 0.25 by default (the middle of Cohen et al.'s CIFAR-10 grid {0.12, 0.25, 0.5, 1.0}; PAGs sweeps
σ ∈ logspace(−3, 2)). There is no λ: the strength is σ, and σ = 0 is exactly ``erm``. ``parts["cross_entropy"]`` is
the cross-entropy on the noisy batch (the trained quantity).

Cost per step: ``num_samples`` forwards and one backward, the same as a plain step for one draw.

Sweep: σ ∈ {0.03, 0.06, 0.12, 0.25, 0.5, 1.0} (log, pixel units): Cohen et al.'s CIFAR-10 grid {0.12, 0.25, 0.5, 1.0}
and two halvings below it. PAGs' logspace(−3, 2) spans more (σ = 100 is noise alone), at 30 values. Measured on
``mnist_subset`` (``gibench_cnn`` with softplus, 2 epochs, Adam 1e-3, batch 64, seed 0; test accuracy and mean ‖∇x
f_y‖² of 500 test images; ``erm``: 0.951 and 6.92): σ = 0.03 (about 8/255) gives 0.953 and 6.91, nearly ``erm``; σ =
1.0, noise as large as the whole pixel range and Cohen et al.'s strongest, gives 0.901 and 1.56: clearly strong.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.passes import Passes
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import NoiseStd, NumSamples, plugin_config


@plugin_config
class GaussianNoiseConfig:
    sigma: NoiseStd = 0.25
    """Noise std in pixel units; 0 trains on the clean batch (erm)."""
    num_samples: NumSamples = 1
    """Noisy copies per step (their losses averaged)."""
    clip: bool = False
    """Clip x + δ to [0, 1]."""


class GaussianNoise(Regularizer):
    """Cross-entropy on x + δ, δ ~ N(0, σ²I), with no clean term."""

    Config = GaussianNoiseConfig
    family = "noise"
    history = {"1": "first version: cross-entropy on x + N(0, σ²), σ = 0.25, one draw, inputs not clipped"}
    zero_strength: ClassVar[dict] = {"sigma": 0.0}
    amp_safe = True  # bfloat16 autocast keeps loss and gradients within 2 % (tests/test_precision.py)
    sweep = Sweep("sigma", (0.03, 0.06, 0.12, 0.25, 0.5, 1.0), "log",
                  "Cohen et al.'s CIFAR-10 grid 0.12, 0.25, 0.5, 1.0 and two halvings below it")

    def passes_per_step(self) -> Passes:
        """One forward per noisy copy, and the training backward through each."""
        return Passes(forward=self.config.num_samples, backward=self.config.num_samples)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        c = self.config
        ce = torch.zeros((), dtype=x.dtype, device=x.device)
        for _ in range(c.num_samples):
            noisy = x + c.sigma * torch.randn_like(x)
            if c.clip:
                noisy = noisy.clamp(0.0, 1.0)
            ce = ce + F.cross_entropy(model(noisy), y)
        ce = ce / c.num_samples
        return TrainingLoss(total=ce, parts={"cross_entropy": ce.detach()})
