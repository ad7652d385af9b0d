"""``score_matching``: train the label logit as an unnormalized class-conditional log-density by score matching.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), ``ScoreMatching`` in idiap/rethinking-saliency. Reading log p(x | y) = f_y(x) − log Z_y, Hyvärinen's
score-matching objective is E[tr ∇²ₓ f_y + ½‖∇x f_y‖²]; the paper estimates the trace with a second-order Taylor
expansion and adds a stability term:

    h_b     = (2/σ²)·(f_y(x_b + v) − f_y(x_b)),   v ~ N(0, σ²I)   (averaged over ``num_samples`` draws)
    penalty = mean_b h_b + 0.5·mean_b ‖∇x f_y(x_b)‖² + μ·mean_b h_b²
    total   = mean_b CE(f(x_b), y_b) + λ·penalty

Choices the paper leaves open, and defaults:

* Which output: the raw **label logit** f_y (the reference feeds raw logits to its regularizer), not log-softmax.
* Reductions: norms and h are per sample over all C×H×W coordinates in pixel units ([0, 1] images); means over the
  batch; h is averaged over draws first and then squared in the stability term (as the reference).
* σ = 0.01 (paper and code). μ = 1e-4 (the published camera-ready poster; the submission version and the public code
  use 1e-3). One draw (paper and code). λ = 1e-3 (paper; the public scripts use 1e-5).
* One forward pass serves the cross-entropy, ∇x f_y and f_y(x) of the finite difference (no duplicated forward);
  the noisy pass is a fresh forward on x + v.
* BatchNorm mode of the noisy pass: ``noisy_bn = "train"`` by default, as the reference (everything runs in train
  mode): the noisy batch is normalized with its own statistics, and the running statistics are updated a second time
  per step with the statistics of x + v. At σ = 0.01 that second update shifts per-channel means by O(σ/√(N·H·W))
  and variances by O(σ²), so we keep the reference behaviour by default; ``"batch"`` gives the same loss without the
  second running-stat update, ``"eval"`` uses the running statistics (only sensible with frozen BatchNorm: the
  clean pass uses batch statistics and the mismatch is amplified by 2/σ²). See :mod:`gibench.api.passes`.
* Precision: autocast is disabled inside the loss (a finite difference amplified by 2/σ² = 2·10⁴ is meaningless in
  half precision). Even in float32 the rounding of f_y (≈1e-7·|f_y|) is amplified to ≈2e-3·|f_y| in h.
* Needs a smooth activation (the paper uses softplus with β = 10): the input Hessian of a piecewise-linear network is
  zero almost everywhere, so h would only measure the first-order noise term.

Cost per step: 1 + ``num_samples`` forwards, one backward with ``create_graph`` for ∇x f_y, and a training backward
through the double-backward graph (about the gradient-norm penalty plus one forward and one backward per draw).

Sweep: λ ∈ {1e-5, 1e-4, 1e-3, 1e-2, 1e-1} (log): decades from the public scripts' 1e-5 through the paper's 1e-3 (which
costs 5.8 points of CIFAR-100 accuracy in the paper's submission version, 78.01 → 72.20 %, with μ = 1e-3) to 1e-1.
Measured on ``mnist_subset`` (``gibench_cnn`` with softplus, 2 epochs, Adam 1e-3, batch 64, seed 0; test accuracy and
mean ‖∇x f_y‖² of 500 test images; ``erm``: 0.951 and 6.92): λ = 1e-5 gives 0.952 and 6.88, nearly ``erm``; 1e-3 gives
0.936 and 5.57; 1e-2 gives 0.904 and 3.35; 1e-1 gives 0.329 and 1.09, a collapse: clearly strong. The other
score-matching variants sweep the same λ (their objectives have the expectation of this one, so λ is on the same
scale); ``gradient_norm``, whose penalty is the ½‖∇x f_y‖² term alone, costs no accuracy up to λ = 10 there and sweeps
higher.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from gibench.api.hessian import TaylorScoreMatchingConfig, taylor_score_matching_loss, taylor_trace
from gibench.api.passes import Passes
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import plugin_config


@plugin_config
class ScoreMatchingConfig(TaylorScoreMatchingConfig):
    """λ, σ, μ, draws and the noisy pass's BatchNorm mode: the fields, ranges, defaults and help of
    :class:`gibench.api.hessian.TaylorScoreMatchingConfig` (shared with ``score_matching_antithetic``)."""


class ScoreMatching(Regularizer):
    """CE + λ·(mean h + 0.5·mean ‖∇x f_y‖² + μ·mean h²), h the Taylor estimate of tr ∇²ₓ f_y."""

    Config = ScoreMatchingConfig
    family = "score matching"
    history = {"1": "first version: CE + λ·(Taylor Hessian trace + ½‖∇x f_y‖² + μ·trace²), λ 1e-3, σ 0.01, μ 1e-4 "
                   "(Srinivas & Fleuret)"}
    needs_smooth_activation: ClassVar[bool] = True
    zero_strength: ClassVar[dict] = {"weight": 0.0}
    sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log",
                  "decades from the public scripts' 1e-5 to 1e-1 (a collapse, measured); default 1e-3 (the paper)")

    def passes_per_step(self) -> Passes:
        """The clean forward, one noisy forward per draw; backwards: the input gradient (``create_graph``), then the
        training backward through every forward's graph and the input gradient's."""
        n = self.config.num_samples
        return Passes(forward=1 + n, backward=3 + n)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        return taylor_score_matching_loss(model, x, y, self.config, taylor_trace)
