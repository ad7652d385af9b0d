"""``pgd``: adversarial training with projected gradient descent (L2 or L∞ threat model).

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks"
(ICLR 2018); the robust models of Shah, Jain & Netrapalli (NeurIPS 2021) and Srinivas, Bordt & Lakkaraju
(NeurIPS 2023) are trained this way. Each step maximizes the cross-entropy inside a per-sample ε-ball, then trains on
the result:

    x_adv = PGD_k(x, y; ε, α, norm),   total = mean_b CE(f(x_adv_b), y_b)

Attack (per sample throughout: norms, steps and projections are per image, never over the whole batch as the PAGs
code does):

* start: x + δ₀ with δ₀ uniform in the ε-ball (``random_start``; L∞: uniform in [−ε, ε]^D; L2: uniform direction
  and radius ε·U^{1/D}), or δ₀ = 0;
* k = ``steps`` ascent steps on the summed cross-entropy: L∞ δ ← δ + α·sign(∇δ); L2 δ ← δ + α·∇δ/‖∇δ‖₂;
* after each step, projection onto the ε-ball (L∞ clamp; L2 rescale to norm ε when outside) and onto the pixel range
  (x + δ clamped to [0, 1], which can only shrink |δ| coordinate-wise, so the ball constraint still holds);
* α = ``step_size``, default 2.5·ε/k (Madry et al.'s rule) when 0 or unset.

The attack differentiates with ``torch.autograd.grad`` with respect to δ only, so it leaves no ``.grad`` on the
parameters (the PAGs code accumulates attack gradients into the update; we do not). It runs in ``attack_mode``:
``"eval"`` by default (BatchNorm running statistics and no dropout, so the attack sees the function the model computes
at test time and the running statistics see no adversarial batches; as TRADES does) or ``"train"`` (as Madry et al.'s
``robustness`` library and PAGs, which then also update the BatchNorm running statistics once per attack step). The
model's own train/eval flags (every submodule's) are restored afterwards. The training forward on x_adv runs in the
mode the model arrived in. There is no clean cross-entropy term and no λ: the strength is ε, and ε = 0 is exactly
``erm``.

Defaults (MNIST scale): L2, ε = 1.0, 7 steps, α = 2.5·ε/7, random start. For reference: Madry et al. use L∞
ε = 0.3, 40 steps of 0.01 on MNIST and L∞ 8/255, 7 steps of 2/255 on CIFAR-10; Shah et al.'s CIFAR-10 models are L2
ε ∈ {0.25, 0.5, 1.0} and L∞ 8/255; PAGs sweeps ε ∈ logspace(−5, 4) with 10 steps and batch-wide norms (so its ε are
not comparable). ``parts``: the cross-entropy on x_adv and the mean per-sample perturbation norm.

Cost per step: k forwards and k input-only backwards for the attack (no weight gradients), then one forward and one
backward: at most k + 1 plain steps (5.4× erm on resnet18 and 6.7× on gibench_cnn with k = 7 on the CPU; see
docs/benchmarks.md).

Sweep: ε ∈ {0.1, 0.25, 0.5, 1, 2, 4} (log; L2 radii in pixel units, for the default L2 threat model). It holds Shah et
al.'s CIFAR-10 radii {0.25, 0.5, 1.0}, the smallest ImageNet radius of Salman et al.'s models listed by PAGs that
costs about a point of accuracy (0.1: 68.77 against 69.90 % at 0.01), and the largest radius of PAGs' MNIST distractor
models (4, from {1, 4, 8}). Measured on ``mnist_subset`` (``gibench_cnn`` with softplus, 2 epochs, Adam 1e-3, batch
64, seed 0; test accuracy and mean ‖∇x f_y‖² of 500 test images; ``erm``: 0.951 and 6.92): ε = 0.1 (about 1 % of the
L2 norm of an MNIST digit, ≈ 9) gives 0.954 and 6.29, nearly ``erm``; ε = 4 gives 0.771 and 0.104: clearly strong (on
CIFAR-10, ε = 1 already costs 13.5 points, 95.2 → 81.7 %). The step size follows ε (2.5·ε/steps) unless ``step_size``
is set. An L∞ suite needs its own radii (Madry et al.'s 0.3 on MNIST, 8/255 on CIFAR-10).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.passes import Passes, ball_ascent_step, batch_view, module_modes, per_sample_norm, project_to_ball
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import NonNegativeFloat, PositiveInt, plugin_config


@plugin_config
class PGDConfig:
    epsilon: NonNegativeFloat = 1.0
    """Radius of the per-sample ball in pixel units; 0 trains on the clean batch (erm)."""
    steps: PositiveInt = 7
    """Attack steps k."""
    step_size: NonNegativeFloat | None = None
    """α; None or 0 = 2.5·ε/steps."""
    norm: Literal["l2", "linf"] = "l2"
    """Threat model."""
    random_start: bool = True
    """Start from a uniform point of the ball."""
    attack_mode: Literal["eval", "train"] = "eval"
    """Module mode during the attack."""

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.step_size if self.step_size else 2.5 * self.epsilon / self.steps


def _random_start(x: Tensor, epsilon: float, norm: str) -> Tensor:
    if norm == "linf":
        return (torch.rand_like(x) * 2 - 1) * epsilon
    direction = torch.randn_like(x)
    direction = direction / batch_view(per_sample_norm(direction).clamp_min(1e-12), x)
    radius = epsilon * torch.rand(x.shape[0], dtype=x.dtype, device=x.device) ** (1.0 / x[0].numel())
    return direction * batch_view(radius, x)


def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, config: PGDConfig) -> Tensor:
    """Adversarial examples within each sample's ε-ball (detached, in [0, 1]); no parameter gradients."""
    x = x.detach()
    if config.epsilon == 0:
        return x
    eps, norm = config.epsilon, config.norm
    delta = project_to_ball(x, _random_start(x, eps, norm), eps, norm) if config.random_start else torch.zeros_like(x)
    with module_modes(model, train=config.attack_mode == "train"), torch.enable_grad():
        for _ in range(config.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            delta = project_to_ball(x, ball_ascent_step(delta.detach(), grad, config.alpha, norm), eps, norm)
    return (x + delta).clamp(0.0, 1.0).detach()


class PGD(Regularizer):
    """Cross-entropy on PGD adversarial examples (per-sample L2 or L∞ balls)."""

    Config = PGDConfig
    family = "adversarial"
    history = {"1": "first version: PGD adversarial training, L2 ε 1.0, 7 steps, random start, attack in eval mode"}
    zero_strength: ClassVar[dict] = {"epsilon": 0.0}
    sweep = Sweep("epsilon", (0.1, 0.25, 0.5, 1.0, 2.0, 4.0), "log",
                  "L2 radii: Shah et al.'s 0.25, 0.5, 1.0, Salman et al.'s 0.1, PAGs' MNIST 4; step size 2.5·ε/steps")

    def passes_per_step(self) -> Passes:
        """A forward and an input gradient per attack step, then the training forward and backward (ε = 0: no
        attack)."""
        attack = self.config.steps if self.config.epsilon > 0 else 0
        return Passes(forward=attack + 1, backward=attack + 1)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        x_adv = pgd_attack(model, x, y, self.config)
        ce = F.cross_entropy(model(x_adv), y)
        size = per_sample_norm(x_adv - x.detach(), self.config.norm).mean()
        return TrainingLoss(total=ce, parts={"cross_entropy": ce.detach(), "perturbation_norm": size.detach()})
