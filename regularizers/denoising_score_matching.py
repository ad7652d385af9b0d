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
over C×H×W in pixel units; means over draws and over the batch; σ = 0.01 (the score_matching σ, so that the smoothed
density is close to the data density; larger σ lowers the variance of the s·ε/σ term); λ = 1e-3 as score matching.
The noisy forward runs with ``noisy_bn`` ("train" by default, like the reference's noisy passes; see
:mod:`gibench.api.passes`). Autocast is disabled. Unlike the other score-matching variants this one does not need a
smooth activation: the objective involves only first derivatives of f_y, and stays informative for a piecewise-linear
network (it pulls s(x̃) toward the denoising direction (x − x̃)/σ²).

Cost per step: 1 + ``num_samples`` forwards, one backward with ``create_graph`` per draw for ∇f_y(x̃), and the
training backward through those double-backward graphs (about the gradient-norm penalty plus one forward).

Sweep: λ ∈ {1e-5, 1e-4, 1e-3, 1e-2, 1e-1} (log), as :mod:`score_matching`, whose objective this one has the
expectation of (so λ is on the same scale): from the public scripts' 1e-5 through the paper's 1e-3 to 1e-1, which runs
score matching from nearly ``erm`` to a collapse; the sources and the measurements are in its docstring (the ends of
this variant were not measured separately).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.hessian import squared_norm
from gibench.api.passes import extra_pass_bn, full_precision
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.api.saliency import logits_and_input_gradient
from gibench.core.config_types import BNMode, NumSamples, Sigma, Weight, plugin_config


@plugin_config
class DenoisingScoreMatchingConfig:
    weight: Weight = 1e-3
    """λ, on the score_matching scale."""
    sigma: Sigma = 0.01
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
    sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log",
                  "score_matching's decades, from the public scripts' 1e-5 to 1e-1; default 1e-3 (the paper)")

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
