"""``sliced_score_matching``: sliced score matching on the label logit as energy.

Song, Garg, Shi & Ermon, "Sliced Score Matching: A Scalable Approach to Density and Score Estimation" (UAI 2019),
applied to Srinivas & Fleuret's reading of the label logit as an unnormalized log-density, log p(x | y) = f_y(x) −
log Z_y, whose score is s(x) = ∇x f_y(x). Sliced score matching replaces the Fisher divergence by its projections
on random directions v (E[vvᵀ] = I):

    penalty = mean_b mean_s [ v_sᵀ ∇²ₓ f_y(x_b) v_s + 0.5·(v_sᵀ ∇x f_y(x_b))² ]
    total   = mean CE + λ·penalty

With ``variance_reduction=True`` the second term is replaced by its expectation over v, 0.5·‖∇x f_y‖² (the paper's
SSM-VR); the objective then equals :mod:`score_matching_hutchinson` with μ = 0. Both have the expectation of the
score-matching objective E[tr ∇²f_y + ½‖∇f_y‖²], so λ is on the same scale as :mod:`score_matching`.

Choices the papers leave open here: the label logit (not log-softmax); per-sample sums over C×H×W in pixel units;
means over draws and over the batch; Gaussian projections by default (the paper allows any law with E[vvᵀ] = I;
Rademacher is offered); no stability term (it belongs to the Taylor estimator, not to this objective); λ = 1e-3 as
score matching. vᵀ∇²f_y v is an exact Hessian-vector product by double backward (the same code as the Hutchinson
variant, :func:`gibench.api.hessian.hessian_quadratic_form`), so there is no noisy forward and no
BatchNorm choice. Train-mode BatchNorm: the native kernel has no third-order derivative, so the training forward
runs with BatchNorm computed from elementary ops (same statistics and running-stat update, equal up to rounding; see
:func:`gibench.api.hessian.higher_order_batch_norm`); with ``weight = 0`` the Hessian-vector product is
only evaluated (not differentiated) and the native kernel is kept, so the loss is exactly ``erm``'s. Autocast is
disabled. Needs a smooth activation (the Hessian term is exactly zero for a piecewise-linear network, leaving only
the projected gradient norm).

Cost per step: one forward, one backward with ``create_graph``, ``num_samples`` Hessian-vector products (one
backward of the backward graph each, with ``create_graph``), and the training backward through them: as the
Hutchinson variant.

Sweep: λ ∈ {1e-5, 1e-4, 1e-3, 1e-2, 1e-1} (log), as :mod:`score_matching`, whose objective this one has the
expectation of (so λ is on the same scale): from the public scripts' 1e-5 through the paper's 1e-3 to 1e-1, which runs
score matching from nearly ``erm`` to a collapse; the sources and the measurements are in its docstring (the ends of
this variant were not measured separately).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.hessian import clean_pass, hessian_quadratic_form, projection, squared_norm
from gibench.api.passes import full_precision
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import NumSamples, Weight, plugin_config


@plugin_config
class SlicedScoreMatchingConfig:
    weight: Weight = 1e-3
    """λ, on the score_matching scale."""
    num_samples: NumSamples = 1
    """Projections per sample and step."""
    projection: Literal["gaussian", "rademacher"] = "gaussian"
    """Law of the projection directions v."""
    variance_reduction: bool = False
    """SSM-VR: 0.5‖∇f_y‖² instead of 0.5(vᵀ∇f_y)²."""


class SlicedScoreMatching(Regularizer):
    """CE + λ·mean [vᵀ∇²f_y v + 0.5·(vᵀ∇f_y)²] (Song et al., 2019), exact Hessian-vector products."""

    Config = SlicedScoreMatchingConfig
    family = "score matching"
    history = {"1": "first version: CE + λ·sliced score matching of ∇x f_y (Gaussian projections, 1 draw, no variance"
                   " reduction), λ 1e-3"}
    needs_smooth_activation: ClassVar[bool] = True
    zero_strength: ClassVar[dict] = {"weight": 0.0}
    sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log",
                  "score_matching's decades, from the public scripts' 1e-5 to 1e-1; default 1e-3 (the paper)")

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        c = self.config
        higher = c.weight > 0  # third-order graph only when the penalty is trained (weight 0 = erm, exactly)
        with full_precision(x), torch.enable_grad():
            leaf, logits, grad = clean_pass(model, x, y, higher_order=higher)
            ce = F.cross_entropy(logits, y)
            trace = torch.zeros_like(ce)
            norm = torch.zeros_like(ce)
            for _ in range(c.num_samples):
                v = projection(x, c.projection)
                trace = trace + hessian_quadratic_form(leaf, grad, v, higher).mean()
                if not c.variance_reduction:
                    norm = norm + 0.5 * (grad * v).flatten(1).sum(1).pow(2).mean()
            trace = trace / c.num_samples
            norm = 0.5 * squared_norm(grad).mean() if c.variance_reduction else norm / c.num_samples
            penalty = trace + norm
        total = ce + c.weight * penalty
        parts = {"cross_entropy": ce.detach(), "penalty": penalty.detach(), "hessian_trace": trace.detach(),
                 "gradient_norm": norm.detach()}
        return TrainingLoss(total=total, parts=parts)
