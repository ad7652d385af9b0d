"""``score_matching_hutchinson``: score matching with Hutchinson's exact, unbiased Hessian-trace estimate.

Same objective as :mod:`score_matching` (Srinivas & Fleuret, ICLR 2021),

    penalty = mean_b h_b + 0.5·mean_b ‖∇x f_y(x_b)‖² + μ·mean_b h_b²,   total = mean CE + λ·penalty,

but h_b = mean_s v_sᵀ ∇²ₓ f_y(x_b) v_s with E[vvᵀ] = I (Hutchinson, 1989): each quadratic form comes from an exact
Hessian-vector product by double backward through ∇x f_y, so E[h] = tr ∇²ₓ f_y with no O(σ²) bias, no σ, and no
noisy forward pass (hence no BatchNorm choice: every quantity comes from the one training forward). This variant is
gibench's own (docs/architecture.md, "Saliency"), not in the paper.

Choices: label logit; per-sample sums over C×H×W in pixel units; batch means; h averaged over draws then squared.
Projections are Rademacher (±1) by default, the minimum-variance choice for Hutchinson's estimator (Var = 2·Σ_{i≠j}
H_ij²); ``"gaussian"`` is offered. μ = 1e-4 and λ = 1e-3 as :mod:`score_matching`. Under train-mode BatchNorm the
Hessian includes the (1/N) coupling of samples through the batch statistics, as ∇x f_y does. Train-mode BatchNorm:
the native kernel has no third-order derivative, so the training forward runs with BatchNorm computed from
elementary ops (same statistics and running-stat update, equal up to rounding; see
:func:`gibench.api.hessian.higher_order_batch_norm`); with ``weight = 0`` the Hessian-vector product is
only evaluated (not differentiated) and the native kernel is kept, so the loss is exactly ``erm``'s. Autocast is
disabled for consistency with the Taylor variants. Needs a smooth activation (the double backward of a piecewise-
linear network is exactly zero).

Cost per step: one forward, one backward with ``create_graph`` for ∇x f_y, ``num_samples`` Hessian-vector products
(each one backward of the backward graph, with ``create_graph``), and a training backward through that triple-order
graph: about 2.5 times the gradient-norm penalty (measured on the CPU, docs/benchmarks.md).

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

from gibench.api.hessian import clean_pass, hessian_quadratic_form, projection, score_matching_penalty
from gibench.api.passes import Passes, full_precision
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import NumSamples, Weight, plugin_config


@plugin_config
class HutchinsonScoreMatchingConfig:
    weight: Weight = 1e-3
    """λ, as score_matching."""
    mu: Weight = 1e-4
    """Stability weight on mean h², as score_matching."""
    num_samples: NumSamples = 1
    """Probe vectors per step."""
    projection: Literal["rademacher", "gaussian"] = "rademacher"
    """Law of the probe vectors v (both have E[vvᵀ] = I)."""


class HutchinsonScoreMatching(Regularizer):
    """CE + λ·(mean h + 0.5·mean ‖∇x f_y‖² + μ·mean h²), h = Hutchinson's vᵀ∇²f_y v (double backward)."""

    Config = HutchinsonScoreMatchingConfig
    family = "score matching"
    history = {"1": "first version: score_matching's objective with Hutchinson's unbiased Hessian-trace estimate "
                   "(Rademacher, 1 draw), λ 1e-3, μ 1e-4"}
    needs_smooth_activation: ClassVar[bool] = True
    zero_strength: ClassVar[dict] = {"weight": 0.0}
    sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log",
                  "score_matching's decades, from the public scripts' 1e-5 to 1e-1; default 1e-3 (the paper)")

    def passes_per_step(self) -> Passes:
        """One forward and its input gradient (``create_graph``). Each probe's Hessian-vector product passes the
        gradient's graph and the forward's (2 backwards) and, with the penalty trained (weight > 0), builds two
        graphs that the training backward passes again (2 more). The training backward passes the forward's graph
        and the input gradient's (2)."""
        n = self.config.num_samples
        return Passes(forward=1, backward=3 + (4 if self.config.weight > 0 else 2) * n)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        c = self.config
        higher = c.weight > 0  # third-order graph only when the penalty is trained (weight 0 = erm, exactly)
        with full_precision(x), torch.enable_grad():
            leaf, logits, grad = clean_pass(model, x, y, higher_order=higher)
            ce = F.cross_entropy(logits, y)
            h = hessian_quadratic_form(leaf, grad, projection(x, c.projection), higher)
            for _ in range(c.num_samples - 1):
                h = h + hessian_quadratic_form(leaf, grad, projection(x, c.projection), higher)
            h = h / c.num_samples
            penalty, parts = score_matching_penalty(h, grad, c.mu)
        total = ce + c.weight * penalty
        return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), "penalty": penalty.detach(), **parts})
