"""``attribution_prior``: cross-entropy plus a prior on the model's attributions, trained through the attribution.

Erion, Janizek, Sturmfels, Lundberg & Lee, "Improving performance of deep learning models with axiomatic
attribution priors and expected gradients" (Nature Machine Intelligence 2021, code ``suinleelab/attributionpriors``),
and Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks" (NeurIPS 2021, code
``visinf/fast-axiomatic-attribution``), who train the same priors on the one-pass X-Gradient of an X-DNN:

    total = mean_b CE(f(x_b), y_b) + λ · Ω(A(x, y))

with the attribution A differentiated through (``create_graph=True``), so one step costs what a gradient-norm
penalty costs (one forward, one backward for A, one double backward) for ``x_gradient`` and ``input_gradient``.

Attributions (``attribution``), all of the **label logit** f_y (as both codes; docs/architecture.md, "Saliency"):

* ``x_gradient`` (default, Hesse et al.): (x − b) ⊙ ∇x f_y(x), b = :func:`gibench.api.saliency.attribution_baseline`
  (zero in normalized space, the dataset's mean colour). On an X-DNN (``bias: false`` backbones) it equals
  Integrated Gradients from b, so the prior acts on an axiomatic attribution at the cost of one backward pass; on
  a network with biases it is the plain input × gradient about b. The default because it is the paper's method.
* ``input_gradient``: ∇x f_y(x) (FAA's ``ginigrad``).
* ``expected_gradients`` (Erion et al.): (1/k) Σ_j (x − r_j) ⊙ ∇f_y(r_j + α_j (x − r_j)), α_j ~ U(0, 1) per image
  and reference, k = ``references`` (default 1, Erion et al.'s training default and their MNIST setting). The
  references come **from the training batch**: reference j of image b is image (b − s_j) mod N with shift
  s_j = 1 + (j − 1) mod (N − 1), i.e. the batch rolled by 1, 2, …, as Erion et al.'s MNIST code rolls the batch by
  one for k = 1; an image is never its own reference (for N ≥ 2), and with k ≥ N the shifts repeat. Their PyTorch
  explainer draws the references from a shuffled loader over the training set instead; the batch is a random
  sample of it, and taking it from there needs no second data stream. The k interpolated copies go through the
  model in one forward pass of N·k images, with BatchNorm on batch statistics and its running statistics untouched
  (``extra_pass_bn(model, "batch")``, so they only ever see clean batches); the cross-entropy uses the clean pass.

Priors (``prior``):

* ``gini`` (both codes' sparsity experiments): Ω = −Gini(ā), ā_j = mean_b |A_bj| over the batch for every input
  coordinate j (all C·H·W), Gini(v) = ½ · mean_{i,j} |v_i − v_j| / mean(v) (i = j included), computed in
  O(D log D) from the sorted values, Gini(v) = Σ_i (2i − D − 1) v_(i) / (D · Σ v) (i = 1..D ascending). The
  denominator is clamped at the smallest positive float, so an all-zero attribution gives Gini 0, not NaN.
  Minimizing Ω raises the Gini coefficient: the mean attribution concentrates on few coordinates.
* ``total_variation`` (Erion et al.'s image prior, ``mnist_train.py``): Ω = mean_b TV(z_b), z_b the attribution map
  of image b standardized as ``tf.image.per_image_standardization`` does (minus its mean over all C·H·W values,
  divided by max(std, 1/√(C·H·W)), population std), and TV the sum of the absolute differences of vertical and
  horizontal neighbours over all channels (``tf.image.total_variation``). Minimizing Ω smooths the attribution map.

λ (``weight``): Erion et al.'s MNIST λ = 5e-11 belongs to a scheme that alternates two Adam optimizers, one on
(1 − λ)·CE and one on λ·TV; Adam's update does not depend on the scale of its loss, so there λ acts almost only
through Adam's ε, and the number means nothing for a joint loss. The defaults here are joint-loss weights:

* ``gini``: λ = 1, FAA's chosen λ for X-Gradient and expected gradients in their joint-loss sparsity runs
  (BCE + λ·(−Gini), chosen from {0.01, 0.1, 1, 10, 100} by validation AUC). −Gini lies in [−1, 0], on the scale
  of a cross-entropy.
* ``total_variation``: λ = 1e-3, Erion et al.'s TF2 example, which is a joint loss (CE + λ·TV of the standardized
  expected gradients on MNIST). TV of a standardized 28×28 map is of order 10³, so λ·Ω is of order 1.

Both were checked to move the attributions within smoke-sized training (the bundled MNIST subset, 3 epochs, Adam
1e-3, batch 64, seed 0, the X ``gibench_cnn`` with ``bias: false``), measured on the X-Gradient of 500 test images
against ``erm`` (accuracy 0.965, Gini 0.635, TV 492):

=====================  ========  =====  =====
run                    accuracy  Gini   TV
=====================  ========  =====  =====
gini λ = 0.1           0.962     0.655  485
gini λ = 1 (default)   0.954     0.778  398
gini λ = 10            0.930     0.903  256
TV λ = 1e-4            0.964     0.647  464
TV λ = 1e-3 (default)  0.939     0.634  230
TV λ = 1e-2            0.871     0.587  74
=====================  ========  =====  =====

Each default is the smallest of the decades tried that moves its own statistic clearly (Gini +0.14, TV −53 %) at an
accuracy cost of a few points; a decade below barely moves it, a decade above costs 3 to 9 points.

Sweep: λ ∈ {0.01, 0.1, 1, 10, 100} (log), FAA's grid for the default Gini prior (they chose λ = 1 from it by
validation AUC). The table above places it: λ = 0.1 barely moves the Gini coefficient (+0.02 on ``erm``), 10 costs
3.5 points of accuracy and 100 lies beyond; 0.01 is nearly ``erm``. The sweep is of the default configuration: with
``prior: total_variation``, whose default λ is 1e-3, a suite scales it by 1e-3 (the table's 1e-4 to 1e-2 are then
its middle).

``weight`` unset means the prior's default above, filled into the config on construction, so the stored config and
the job hash show the λ in effect and writing the default explicitly is the same job; 0 is ``erm`` exactly.

Cost (benchmarks/regularizer_step_cost.py, ``gibench_cnn`` 1×28×28, batch 64, one CPU thread): 2.45× ``erm`` per
step with the Gini prior on X-Gradient and 2.38× with total variation, against 2.39× for ``gradient_norm``, at the
same peak memory (3.1× erm's); expected gradients with k = 1 cost 3.72× (4.0× memory: the interpolated batch's own
forward and double backward).

Precision: not ``amp_safe``. Both priors are built from differences of attributions (neighbour differences, the
sorted Gini sum over thousands of coordinates), which bfloat16's 8-bit mantissa resolves poorly; the trainer runs
this loss in true float32.
"""

from __future__ import annotations

__all__ = ["ATTRIBUTIONS", "PRIORS", "AttributionPrior", "AttributionPriorConfig", "gini", "total_variation"]

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.passes import Passes, batch_view, extra_pass_bn
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.api.saliency import attribution_baseline, label_logit, logits_and_input_gradient
from gibench.core.config_types import PositiveInt, Weight, plugin_config

PRIORS = ("gini", "total_variation")
ATTRIBUTIONS = ("x_gradient", "input_gradient", "expected_gradients")
DEFAULT_WEIGHTS = {"gini": 1.0, "total_variation": 1e-3}


@plugin_config
class AttributionPriorConfig:
    prior: Literal["gini", "total_variation"] = "gini"
    """The prior on the attributions: gini (−Gini of the batch-mean |attribution|) or total_variation (mean TV of
    the per-image standardized map)."""
    attribution: Literal["x_gradient", "input_gradient", "expected_gradients"] = "x_gradient"
    """What is attributed to the input: x_gradient (Hesse et al.), input_gradient, expected_gradients (Erion et al.)."""
    references: PositiveInt = 1
    """expected_gradients: references per image, drawn from the training batch (Erion et al.: 1)."""
    weight: Weight | None = None
    """λ; unset: the prior's default (gini 1, total_variation 1e-3), filled in on construction; 0 is erm."""

    def __post_init__(self) -> None:
        if self.weight is None:  # resolved here, so that an explicit default and an omitted one hash alike
            object.__setattr__(self, "weight", DEFAULT_WEIGHTS[self.prior])


def gini(attribution: Tensor) -> Tensor:
    """Gini(ā), ā the batch mean of |attribution| per input coordinate (see the module docstring), a 0-dim tensor."""
    v = attribution.abs().mean(0).flatten()
    d = v.numel()
    sorted_v = torch.sort(v).values
    coefficients = 2 * torch.arange(1, d + 1, device=v.device, dtype=v.dtype) - d - 1
    return (coefficients * sorted_v).sum() / (d * v.sum()).clamp_min(torch.finfo(v.dtype).tiny)


def total_variation(attribution: Tensor) -> Tensor:
    """mean_b TV(standardized attribution map of image b), a 0-dim tensor (see the module docstring)."""
    flat = attribution.flatten(1)
    std_floor = 1.0 / math.sqrt(flat.shape[1])
    scale = flat.std(dim=1, unbiased=False).clamp_min(std_floor)
    z = (attribution - batch_view(flat.mean(dim=1), attribution)) / batch_view(scale, attribution)
    vertical = (z[:, :, 1:, :] - z[:, :, :-1, :]).abs().flatten(1).sum(1)
    horizontal = (z[:, :, :, 1:] - z[:, :, :, :-1]).abs().flatten(1).sum(1)
    return (vertical + horizontal).mean()


def reference_shifts(batch_size: int, references: int) -> list[int]:
    """The roll of the batch that gives each reference: 1, 2, …, N − 1, 1, … (never 0 for N ≥ 2)."""
    cycle = max(batch_size - 1, 1)
    return [1 + (j % cycle) for j in range(references)]


def expected_gradients(model: nn.Module, x: Tensor, y: Tensor, references: int) -> Tensor:
    """Erion et al.'s expected gradients with ``references`` in-batch references per image, differentiable."""
    refs = torch.cat([torch.roll(x, shifts=s, dims=0) for s in reference_shifts(x.shape[0], references)])
    xs = x.repeat(references, *([1] * (x.dim() - 1)))
    alpha = batch_view(torch.rand(xs.shape[0], device=x.device, dtype=x.dtype), xs)
    points = (refs + alpha * (xs - refs)).detach().requires_grad_(True)
    with extra_pass_bn(model, "batch"):
        logits = model(points)
    (grad,) = torch.autograd.grad(label_logit(logits, y.repeat(references)).sum(), points, create_graph=True)
    return ((xs - refs) * grad).view(references, *x.shape).mean(0)


class AttributionPrior(Regularizer):
    """CE + λ·Ω(attribution): Gini sparsity or total-variation smoothness of X-Gradient, gradient or EG."""

    Config = AttributionPriorConfig
    family = "attribution prior"
    history = {"1": "first version: CE + λ·prior on the attribution (default −Gini of the batch-mean |X-Gradient|, λ "
                   "1; total_variation λ 1e-3), trained through the attribution"}
    sweep = Sweep("weight", (0.01, 0.1, 1.0, 10.0, 100.0), "log",
                  "FAA's grid for the default Gini prior; a suite sweeps total_variation (default λ 1e-3) at 1e-3 "
                  "times these, under sweep.values")

    def passes_per_step(self) -> Passes:
        """X-Gradient or gradient: one forward, the input gradient (``create_graph``) and the training backward
        through both graphs. Expected gradients with k references: the clean forward, a forward of the k·N
        interpolated images, their input gradient, and the training backward through the three graphs."""
        if self.config.attribution == "expected_gradients":
            k = self.config.references
            return Passes(forward=1 + k, backward=1 + 3 * k)
        return Passes(forward=1, backward=3)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        cfg = self.config
        if cfg.attribution == "expected_gradients":
            logits = model(x)
            attribution = expected_gradients(model, x, y, cfg.references)
        else:
            logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
            attribution = grad if cfg.attribution == "input_gradient" else (x - attribution_baseline(model, x)) * grad
        ce = F.cross_entropy(logits, y)
        if cfg.prior == "gini":
            value = gini(attribution)
            penalty, part = -value, {"gini": value.detach()}
        else:
            penalty = total_variation(attribution)
            part = {"total_variation": penalty.detach()}
        total = ce + cfg.weight * penalty
        return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), **part})
