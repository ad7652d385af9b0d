"""``density_ratio``: how much implicit class-conditional density a model gives to noisy copies of test images.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), the density-ratio test (paper only; not in idiap/rethinking-saliency). Reading the logits as an
unnormalized class-conditional log-density, log p(x | y) = f_y(x) + const(y), the ratio
p(x + η | y) / p(x | y) = exp(f_y(x + η) − f_y(x)) needs no normalizing constant. The paper averages it over the test
set for η ~ N(0, s² I) at several noise levels s and plots it against s; a model whose implicit density is good gives
noisy (off-manifold) points lower density, so lower is better.

gibench reports, per noise level, both the paper's **mean ratio** E[exp(Δ)] and the **mean log-ratio** E[Δ] with
Δ = f_y(x + η) − f_y(x). The headline is the mean log-ratio at ``reference_sigma`` (lower is better): the ratio
itself saturates towards 0 and explodes upwards (a prototype on the bundled MNIST subset gave a mean ratio of 0.000
for score matching and about 2·10⁶ for anti-score-matching at s = 0.2), so its mean is dominated by a few images.

Choices the paper leaves open:

* **Noise levels** (``sigmas``, pixel units): 0.01, 0.02, 0.05, 0.1, 0.2, 0.5 by default (the paper's grid is not
  given in the text); **reference** s = 0.1 (the middle of the grid, clearly visible noise on MNIST that is still
  far from the s = 0.5 regime where every model sees pure noise).
* **Label**: the true test label y (the paper's p(x | y)), not the prediction.
* **Draws**: ``num_draws`` noise draws per image (default 1: over 1,000 test images the mean is already an average of
  1,000 independent draws). The same standard-normal draw z is scaled to every s (η = s·z, common random numbers), so
  the curve over s is smooth; each point is still an unbiased estimate.
* **Clamping**: x + η is **not** clamped to [0, 1] by default (``clamp``): clamping would make the noise non-Gaussian
  and biased towards the interior, and the ratio is defined for Gaussian η. With ``clamp: true`` it is clamped.
* **Randomness**: z is drawn on the CPU from ``torch.Generator().manual_seed(ctx.seed)`` as one float32 tensor of shape
  (N, num_draws, C, H, W) for the N evaluated images, so the numbers depend on the seed only, not on the device or
  batch size.
* **Mean ratio**: computed in float64 as exp(logsumexp(Δ) − log n), so it overflows only when the mean ratio itself
  exceeds ~1e308 (then it is reported as inf).
* **Cost**: one clean forward per image and one forward per image, noise level and draw (6 by default).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gibench.api.artifacts import batches, eval_subset, save_curves, save_grid
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import label_logit
from gibench.core.config_types import IncreasingSigmas, Limit, NumSamples, PositiveFloat, plugin_config
from gibench.core.params import check


@plugin_config
class DensityRatioConfig:
    sigmas: IncreasingSigmas = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    """The grid of noise stds s in pixel units."""
    reference_sigma: PositiveFloat = 0.1
    """The s of the headline; must be one of sigmas."""
    num_draws: NumSamples = 1
    """Noise draws per image."""
    clamp: bool = False
    """Clamp x + η to [0, 1]."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""

    def __post_init__(self) -> None:
        check(any(math.isclose(self.reference_sigma, v) for v in self.sigmas),
              f"reference_sigma must be one of sigmas {tuple(self.sigmas)}, got {self.reference_sigma}")


def standard_noise(n: int, num_draws: int, shape: tuple[int, ...], seed: int) -> Tensor:
    """The standard-normal draws z, (n, num_draws, *shape) float32 on the CPU, from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn((n, num_draws, *shape), generator=generator, dtype=torch.float32)


def log_ratios(ctx: EvalContext, x: Tensor, y: Tensor, z: Tensor, sigmas: tuple[float, ...], clamp: bool) -> Tensor:
    """Δ = f_y(x + s·z) − f_y(x) for every noise level, image and draw: (len(sigmas), n, num_draws), float64, CPU."""
    n, draws = z.shape[0], z.shape[1]
    out = torch.empty(len(sigmas), n, draws, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for sl in batches(n, ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            zb = z[sl].to(device=ctx.device, dtype=xb.dtype)
            clean = label_logit(ctx.model(xb), yb).double()
            for d in range(draws):
                for i, s in enumerate(sigmas):
                    noisy = xb + s * zb[:, d]
                    if clamp:
                        noisy = noisy.clamp(0.0, 1.0)
                    out[i, sl, d] = label_logit(ctx.model(noisy), yb).double() - clean
    return out.cpu()


def mean_ratio(delta: Tensor) -> float:
    """E[exp(Δ)] over all entries, computed as exp(logsumexp(Δ) − log n) in float64."""
    flat = delta.double().flatten()
    return float(torch.exp(torch.logsumexp(flat, 0) - math.log(flat.numel())))


class DensityRatio(Evaluator):
    """Mean log-ratio and mean ratio of f_y(x+η) vs f_y(x) over noise levels; headline at the reference level."""

    Config = DensityRatioConfig
    version = "1"
    history = {"1": "first version: mean log-ratio f_y(x + s·z) − f_y(x) at s = 0.1 (headline) and mean ratio at s in"
                   " 0.01–0.5; true label, 1 draw, noise not clamped"}
    metrics = (
        Metric("mean_log_ratio_at_ref", False,
               "mean of f_y(x+η) − f_y(x), η ~ N(0, s²I) at the reference noise level (implicit log-density ratio)",
               headline=True),
        Metric("mean_ratio_at_ref", False,
               "mean of exp(f_y(x+η) − f_y(x)) at the reference noise level (the paper's density ratio)",
               bounds=(0.0, math.inf)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: the clean forward and ``num_draws`` noisy forwards at every σ."""
        cfg = self.config
        n = ctx.images(cfg.max_images)
        return EvaluationCost(work((ctx.forward(), n * (1 + len(cfg.sigmas) * cfg.num_draws))))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        sigmas = tuple(float(s) for s in cfg.sigmas)
        x, y, _ = eval_subset(ctx, cfg.max_images)
        z = standard_noise(len(y), cfg.num_draws, tuple(x.shape[1:]), ctx.seed)
        delta = log_ratios(ctx, x, y, z, sigmas, cfg.clamp)
        log_curve = tuple(float(delta[i].mean()) for i in range(len(sigmas)))
        ratio_curve = tuple(mean_ratio(delta[i]) for i in range(len(sigmas)))
        ref = min(range(len(sigmas)), key=lambda i: abs(sigmas[i] - cfg.reference_sigma))
        curves = {
            "mean_log_ratio": Curve(sigmas, log_curve, "noise std s", "mean f_y(x+η) − f_y(x)"),
            "mean_ratio": Curve(sigmas, ratio_curve, "noise std s", "mean exp(f_y(x+η) − f_y(x))"),
        }
        artifacts = {"curves": save_curves(ctx, "density_ratio_curves.json", curves)}
        artifacts["noise_grid"] = self._grid(ctx, x, z, sigmas)
        return EvalResult(
            scalars={"mean_log_ratio_at_ref": log_curve[ref], "mean_ratio_at_ref": ratio_curve[ref]},
            curves=curves,
            artifacts=artifacts,
        )

    def _grid(self, ctx: EvalContext, x: Tensor, z: Tensor, sigmas: tuple[float, ...]) -> str:
        """A few test images (top row) and their first noisy copy at every noise level (one row per s)."""
        xs = x[:8]
        rows = [xs] + [(xs + s * z[:8, 0].to(xs.dtype)).clamp(0, 1) for s in sigmas]
        return save_grid(ctx, "density_ratio_noise.png", rows)
