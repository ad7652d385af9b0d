"""``denoising_score_matching``: denoising score matching with the label logit as the energy.

Vincent, "A Connection Between Score Matching and Denoising Autoencoders" (Neural Computation, 2011), applied to
Srinivas & Fleuret's reading of the label logit as an unnormalized log-density (log p(x | y) = f_y(x) − log Z_y, score
s(x) = ∇x f_y(x)). With x̃ = x + σε, ε ~ N(0, I), the denoising objective ½‖s(x̃) − (x − x̃)/σ²‖² expands to

    ½‖s(x̃)‖² + s(x̃)·ε/σ + ½‖ε‖²/σ².

The last term does not depend on the parameters; we drop it (its value, ≈ C·H·W/(2σ²), would dwarf everything in
the logs and in float32). By Stein's identity E[s(x̃)·ε]/σ = E[tr ∇s(x̃)], so what remains has the expectation of the
score-matching objective E[tr ∇²f_y + ½‖∇f_y‖²] at the noisy point, and λ is on the same scale as
:mod:`score_matching`:

    penalty = mean_b mean_s [ 0.5·‖∇f_y(x̃_b)‖² + ∇f_y(x̃_b)·ε_b/σ ]   (= DSM − ½‖ε‖²/σ²)
    total   = mean_b CE(f(x_b), y_b) + λ·penalty

Choices: the cross-entropy is on the clean batch; the energy is the label logit of the clean label; per-sample sums
over C×H×W in pixel units; means over draws and over the batch; σ = 0.1 in pixel units and λ = 1e-4 (see Sweep:
score matching's σ = 0.01 and λ = 1e-3 collapse here; a larger σ also lowers the variance of the s·ε/σ term).
The noisy forward runs with ``noisy_bn`` ("train" by default, like the reference's noisy passes; see
:mod:`gibench.api.passes`). Autocast is disabled. Unlike the other score-matching variants this one does not need a
smooth activation: the objective involves only first derivatives of f_y, and stays informative for a piecewise-linear
network (it pulls s(x̃) toward the denoising direction (x − x̃)/σ²).

Cost per step: 1 + ``num_samples`` forwards, one backward with ``create_graph`` per draw for ∇f_y(x̃), and the
training backward through those double-backward graphs (about the gradient-norm penalty plus one forward).

Sweep: λ ∈ {1e-5, 3e-5, 1e-4, 3e-4, 1e-3} (log, half-decades) at σ = 0.1, default 1e-4. The penalty is bounded
below by the dropped constant, −½‖ε‖²/σ² per image, ≈ −d/(2σ²) with d = C·H·W, and training drives it toward that
floor: the optimum s(x̃) = (x − x̃)/σ² has norm ≈ √d/σ, and f_y(x̃) falls by ≈ ‖ε‖²/2 ≈ d/2 within σ√d of each
training image, whatever σ. So λ·d/(2σ²) says how far the penalty can outweigh the cross-entropy (≈ 2.3 at the
start): 3,920 on 28×28 (7,840 on BlockMNIST's 56×28) at score matching's λ = 1e-3 and σ = 0.01, the former defaults,
against 3.9 (7.8) at λ = 1e-4 and σ = 0.1. Measured on the bundled MNIST subset, gibench_cnn softplus, 3 epochs adam
1e-3 (batch 64, seed 0; test accuracy, and mean tr ∇²f_y of 500 test images by 4 Rademacher probes; ``erm``: 0.968
and −22 on ``mnist_subset``, 0.892 and −5.3 on ``blockmnist``):

* The former defaults (λ = 1e-3, σ = 0.01): the logged penalty goes −68 (step 21), −6.1e4 (step 63), −1.66e6 (step
  189, against the floor's −3.9e6), the cross-entropy climbs back to 8.0 and ends at 1.8, test ‖∇f_y‖² ≈ 2.2e5:
  accuracy 0.717 (``blockmnist`` 0.269), a collapse. At σ = 0.01 no λ keeps room on both sides: 1e-4 runs toward the
  floor in the last epoch (0.924, penalty −1.7e4 and falling fast), 1e-5 is nearly ``erm`` (0.967 and −27).
* σ = 0.1, λ = 1e-3: 0.875 and −1.1e4, the penalty half way to its floor (−2.0e4 of −3.9e4) (``blockmnist`` 0.715, 2
  points above its collapse floor 0.694): clearly strong.
* σ = 0.1, λ = 3e-4: 0.968 and −339.
* σ = 0.1, λ = 1e-4: 0.969 and −58 (``blockmnist`` 0.888 and −9.0); seed 1: 0.963 and −56 against erm's 0.963 and −23
  (``blockmnist`` 0.916 and −19.8 against 0.916 and −15.8). The penalty moves the model (2.7 times erm's curvature on
  ``mnist_subset``) at erm's accuracy, and stays bounded: trained 6 epochs, 0.973 and −721, the penalty still falling
  smoothly (−48 after 3 epochs, −472 after 6).
* σ = 0.1, λ = 3e-5: 0.969 and −30; λ = 1e-5: 0.966 and −24, nearly ``erm``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.hessian import squared_norm
from gibench.api.passes import Passes, extra_pass_bn, full_precision
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.api.saliency import logits_and_input_gradient
from gibench.core.config_types import BNMode, NumSamples, Sigma, Weight, plugin_config


@plugin_config
class DenoisingScoreMatchingConfig:
    weight: Weight = 1e-4
    """λ, on the score_matching scale (the penalty's floor is −λ·C·H·W/(2σ²))."""
    sigma: Sigma = 0.1
    """Std of the denoising noise in pixel units; the target divides by σ."""
    num_samples: NumSamples = 1
    """Noise draws per step."""
    noisy_bn: BNMode = "train"
    """BatchNorm mode of the noisy pass (train: the reference's)."""


class DenoisingScoreMatching(Regularizer):
    """CE + λ·mean [0.5‖∇f_y(x̃)‖² + ∇f_y(x̃)·ε/σ], x̃ = x + σε: denoising score matching up to a constant."""

    Config = DenoisingScoreMatchingConfig
    family = "score matching"
    history = {"1": "first version: CE + λ·denoising score matching of ∇x f_y at σ = 0.01 (λ 1e-3, one noise draw per"
                   " image)"}
    zero_strength: ClassVar[dict] = {"weight": 0.0}
    sweep = Sweep("weight", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3), "log",
                  "half-decades at sigma 0.1, from nearly erm (1e-5) to clearly strong (1e-3, measured); default 1e-4")

    def passes_per_step(self) -> Passes:
        """The clean forward and, per draw, a noisy forward with its input gradient (``create_graph``); the training
        backward through the clean graph and through each noisy forward's graph and its gradient's."""
        n = self.config.num_samples
        return Passes(forward=1 + n, backward=1 + 3 * n)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        c = self.config
        with full_precision(x):
            ce = F.cross_entropy(model(x), y)
            norm = torch.zeros_like(ce)
            cross = torch.zeros_like(ce)
            with extra_pass_bn(model, c.noisy_bn):
                for _ in range(c.num_samples):
                    eps = torch.randn_like(x)
                    _, score = logits_and_input_gradient(model, x + c.sigma * eps, y, create_graph=True)
                    norm = norm + 0.5 * squared_norm(score).mean()
                    cross = cross + (score * eps).flatten(1).sum(1).mean() / c.sigma
            norm, cross = norm / c.num_samples, cross / c.num_samples
            penalty = norm + cross
        total = ce + c.weight * penalty
        parts = {"cross_entropy": ce.detach(), "penalty": penalty.detach(), "gradient_norm": norm.detach(),
                 "stein_trace": cross.detach()}
        return TrainingLoss(total=total, parts=parts)
