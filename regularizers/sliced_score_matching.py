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
Rademacher is offered); no stability term (Song et al.'s objective has none; Srinivas & Fleuret's μ·h², which bounds
:mod:`score_matching` and its Hutchinson variant, is not part of it); λ = 1e-4 (see Sweep: without a stability term
score matching's 1e-3 collapses). vᵀ∇²f_y v is an exact Hessian-vector product by double backward (the same code as
the Hutchinson variant, :func:`gibench.api.hessian.hessian_quadratic_form`), so there is no noisy forward and no
BatchNorm choice. Train-mode BatchNorm: the native kernel has no third-order derivative, so the training forward
runs with BatchNorm computed from elementary ops (same statistics and running-stat update, equal up to rounding; see
:func:`gibench.api.hessian.higher_order_batch_norm`); with ``weight = 0`` the Hessian-vector product is
only evaluated (not differentiated) and the native kernel is kept, so the loss is exactly ``erm``'s. Autocast is
disabled. Needs a smooth activation (the Hessian term is exactly zero for a piecewise-linear network, leaving only
the projected gradient norm).

Cost per step: one forward, one backward with ``create_graph``, ``num_samples`` Hessian-vector products (one
backward of the backward graph each, with ``create_graph``), and the training backward through them: as the
Hutchinson variant.

Sweep: λ ∈ {1e-5, 3e-5, 1e-4, 3e-4, 1e-3} (log, half-decades), default 1e-4. The objective has the expectation of
score matching's, but without a stability term it has no lower bound on image data: a pixel that is 0 in every
training image (122 of the 784 in ``mnist_subset``) lets f_y curve down without limit at zero gradient (−a·Σ x_i² over
those pixels has ∇f_y = 0 and tr ∇²f_y = −2a·122 on every training image, for any a), and a finite training set
admits peaks as sharp as one likes. Training follows that direction once the cross-entropy is small: the Hessian term
falls geometrically, and λ only sets when (Adam normalizes its steps, so a small λ holds the penalty back only while
the cross-entropy's gradient dominates). Measured on the bundled MNIST subset, gibench_cnn softplus, 3 epochs adam
1e-3 (batch 64, seed 0; test accuracy, and mean tr ∇²f_y of 500 test images by 4 Rademacher probes; ``erm``: 0.968
and −22 on ``mnist_subset``, 0.892 and −5.3 on ``blockmnist``):

* λ = 1e-3 (score matching's, the former default): the logged penalty goes −40 (step 84), −3.4e3 (step 126), −2.7e6
  (step 189), the cross-entropy climbs back from 0.15 to 10.7, test accuracy 0.652 (``blockmnist`` 0.728, runaway
  from step ≈ 150): a collapse, clearly strong. ``score_matching_hutchinson`` at its defaults (the same Hessian term,
  with μ = 1e-4) keeps 0.963, its trace held near −1/(2μ) (−4.9e3); with μ = 0 and Gaussian probes (this objective
  with ``variance_reduction``) it runs away like this one (0.704).
* λ = 3e-4: 0.965, trace −679, the runaway starting in the last steps (penalty −61, −116, −326).
* λ = 1e-4: 0.968 and −49 (``blockmnist`` 0.891 and −9.0); seed 1: 0.964 and −45 against erm's 0.963 and −23
  (``blockmnist`` 0.914 and −19.7 against 0.916 and −15.8). The penalty moves the model (twice erm's curvature on
  ``mnist_subset``) at erm's accuracy. It does not stop the runaway, it delays it: trained 6 epochs, λ = 1e-4 runs
  away from step ≈ 330 (0.864 at the end), so a longer training needs a smaller λ.
* λ = 3e-5: 0.965 and −28; λ = 1e-5: 0.969 and −24, nearly ``erm``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.hessian import clean_pass, hessian_quadratic_form, projection, squared_norm
from gibench.api.passes import Passes, full_precision
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import NumSamples, Weight, plugin_config


@plugin_config
class SlicedScoreMatchingConfig:
    weight: Weight = 1e-4
    """λ, on the score_matching scale (its 1e-3 collapses here: no stability term)."""
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
    sweep = Sweep("weight", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3), "log",
                  "half-decades from nearly erm (1e-5) to the runaway of the unbounded Hessian term (1e-3, measured); "
                  "default 1e-4")

    def passes_per_step(self) -> Passes:
        """As ``score_matching_hutchinson``: one forward and its input gradient; per projection a Hessian-vector
        product (2 backwards, and 2 more in the training backward when the penalty is trained); the training
        backward through the forward's graph and the input gradient's."""
        n = self.config.num_samples
        return Passes(forward=1, backward=3 + (4 if self.config.weight > 0 else 2) * n)

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
