"""``fooled``: a sanity regularizer whose logit-gradients are meaningless while its accuracy survives.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), the observation that softmax is shift-invariant: adding any g(x) to every logit leaves the
probabilities, the cross-entropy and its gradients unchanged, yet moves every logit-gradient by ∇g(x). The paper shows
it with a hand-built f + g and has no code; gibench trains it in (docs/architecture.md, "Saliency"):

    total = mean_b CE(f(x_b), y_b) + λ·mean_b ‖∇x f_y(x_b) − T‖²

with T a fixed, meaningless target map: a smooth random field, the same for every image and every label. The network
can meet the penalty by adding a common term with gradient ≈ T to all logits (which costs no accuracy) while its
class-discriminative gradients shrink (which costs a little). Its saliency maps then show T instead of the digit; every
evaluator should rank it badly, and one that does not is broken.

Choices: the label logit f_y (the explained quantity, docs/architecture.md, "Saliency"); per-sample squared Euclidean
norm over C×H×W in pixel units, batch mean; T = ``target_scale`` · P, where P is Gaussian noise on a coarse grid
(``grid``×``grid`` per channel, from a ``torch.Generator`` seeded with ``seed``), bilinearly upsampled to the image size
and scaled to unit root-mean-square, so ‖T‖ = ``target_scale``·√(C·H·W). T depends on nothing but the seed and the input
shape (it is built once per shape, device and dtype, and cached). Defaults (MNIST scale): ``target_scale`` = 0.3 logit
per pixel unit, about three times the root-mean-square input-gradient of a plain gibench_cnn after 2–3 epochs on
mnist_subset (≈ 0.09), so T dominates the saliency; λ = 0.1 (penalty ≈ 0.09·784 ≈ 70 at initialization on 28×28 inputs).
Observed on mnist_subset, gibench_cnn (softplus), Adam 1e-3, batch 64, seed 0: after 2 epochs erm 95.1 % vs fooled 94.7
% test accuracy; mean per-image Pearson correlation of the saliency maps (first 500 test images) with erm's −0.07
(erm with another seed: 0.70), and with |T| 0.83; after 3 epochs 96.8 % vs 95.7 %, −0.07
(tests/test_regularizer_correctness.py checks the 2-epoch figures); a larger T costs accuracy: ``target_scale`` = 1 with
λ = 0.01 gave 93.8 % after 3 epochs.

Cost per step: one forward, one backward with ``create_graph`` for ∇x f_y, and a training backward through the
double-backward graph: the same as :mod:`gradient_norm`.

Sweep: none (``sweep = None``). ``fooled`` is a sanity control, not a method under comparison: it runs at the one
setting measured above to fool the gradients while keeping the accuracy, and an operating point chosen over a sweep
would move it away from what it checks.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.hessian import squared_norm
from gibench.api.passes import Passes
from gibench.api.regularizer import Regularizer, TrainingLoss
from gibench.api.saliency import logits_and_input_gradient
from gibench.core.config_types import NonNegativeFloat, PositiveInt, Seed, Weight, plugin_config


@plugin_config
class FooledConfig:
    weight: Weight = 0.1
    """λ on the distance to the target map."""
    target_scale: NonNegativeFloat = 0.3
    """Root-mean-square of the target map T per coordinate."""
    grid: PositiveInt = 4
    """Side of the coarse grid of the random field; smaller = smoother T."""
    seed: Seed = 0
    """Seed of the target map."""


def target_map(shape: tuple[int, ...], seed: int, grid: int, scale: float) -> Tensor:
    """T for images of ``shape`` (C, H, W), float64 on the CPU: a unit-RMS smooth random field times ``scale``."""
    channels, height, width = shape
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, channels, grid, grid, generator=generator, dtype=torch.float64)
    field = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    return scale * field / field.pow(2).mean().sqrt()


class Fooled(Regularizer):
    """CE + λ·mean_b ‖∇x f_y(x_b) − T‖² for a fixed random smooth target T."""

    Config = FooledConfig
    family = "control"
    history = {"1": "first version: CE + λ·‖∇x f_y − T‖² with T a fixed smooth random map (4×4 grid, seed 0, scale "
                   "0.3), λ 0.1: gradients show T while accuracy survives"}
    zero_strength: ClassVar[dict] = {"weight": 0.0}
    sweep = None  # a control at its one measured setting, not swept (module docstring)

    def __init__(self, config: FooledConfig | None = None) -> None:
        super().__init__(config)
        self._targets: dict[tuple, Tensor] = {}

    def target(self, x: Tensor) -> Tensor:
        """T shaped (C, H, W) like one image of ``x``, on its device and dtype (built once, then cached)."""
        key = (tuple(x.shape[1:]), x.device, x.dtype)
        if key not in self._targets:
            c = self.config
            self._targets[key] = target_map(key[0], c.seed, c.grid, c.target_scale).to(x.device, x.dtype)
        return self._targets[key]

    def passes_per_step(self) -> Passes:
        """As :mod:`gradient_norm`: one forward, the input gradient and the training backward through both graphs."""
        return Passes(forward=1, backward=3)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y)
        penalty = squared_norm(grad - self.target(x)).mean()
        total = ce + self.config.weight * penalty
        return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), "penalty": penalty.detach()})
