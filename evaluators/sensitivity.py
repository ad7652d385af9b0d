"""``sensitivity``: how much the saliency map changes under small random input changes (max- and avg-sensitivity).

Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of Explanations" (NeurIPS 2019), §3:
SENS_MAX(Φ, f, x, r) = max_{‖x' − x‖∞ ≤ r} ‖Φ(f, x') − Φ(f, x)‖, estimated by Monte-Carlo draws x' = x + U[−r, r]
per coordinate, as in the authors' code (``infid_sen_utils.get_exp_sens``), captum's ``sensitivity_max`` and
Quantus's ``MaxSensitivity``/``AvgSensitivity``. Per image and draw s the relative change is

    ρ_s = ‖a(x'_s) − a(x)‖_F / ‖a(x)‖_F

(the Frobenius norm over C×H×W of the signed map, the libraries' default), and

* ``max_sensitivity`` (headline, lower is better) = max_s ρ_s, averaged over the images;
* ``avg_sensitivity`` (lower is better) = mean_s ρ_s, averaged over the images;
* ``prediction_flip_share`` (diagnostic, in [0, 1]): the share of all draws whose predicted class differs from the
  clean image's. The draws that flip the prediction are kept in both sensitivities (Quantus can turn them into NaN,
  which then makes one flipped draw erase the whole image); this share says how many there were.

**A constant map wins this metric**: a saliency map that ignores the input (for example the same target map for
every image) has sensitivity 0. Stability is a virtue only of a map that is also faithful, so the site shows this
column only beside a faithfulness column (pixel perturbation, infidelity) and never ranks on it alone. Adversarial
training is reported to lower it (Yeh et al. 2019; Bhusal et al. 2026).

Choices the paper leaves open:

* **Radius in pixel units, per dataset** (``radius``, a mapping from the dataset name to r; ``default_radius`` for
  any other dataset). Defaults: r = 0.1 on the MNIST family (mnist, mnist_subset, fashion_mnist, blockmnist,
  blockmnist_top; the L∞ ε of the ``standard`` suite's PGD) and 8/255 ≈ 0.031 elsewhere (the usual L∞ budget of
  CIFAR-sized images). Yeh et al. used 0.2 on MNIST, captum defaults to 0.02, Quantus to 0.2.
* **Clipping**: x' is clipped to the data range [0, 1] (docs/architecture.md, "Pixel space": every image is in pixel
  units); neither Quantus nor captum clips. The draws are taken around x, so near the boundary a clipped draw moves less
  than r.
* **Draws** (``num_samples`` = 32): U[−r, r] per coordinate from a generator per image, seeded by the evaluation
  seed and the image's position (independent of the batch). Yeh's code used 50, Quantus 200, captum 10.
* **Explained class**: the true label y at x and at every x' (``ctx.saliency``), so the map of one fixed output is
  compared; a flipped prediction does not change which logit is explained.
* **Zero map**: where ‖a(x)‖ = 0 the change is taken as absolute (denominator 1), as captum does.
* **Batching**: the S perturbed copies of ⌊batch_size / S⌋ images (at least one) go through ``ctx.saliency`` in one
  call, so ``batch_size`` bounds the rows of a gradient call as it does for the other evaluators.

Cost per image: (S + 1) forward + backward passes (the saliency) and S + 1 forward passes (the predictions).
"""

from __future__ import annotations

__all__ = ["CAVEAT", "COMPANION", "DEFAULT_RADII", "Sensitivity", "SensitivityConfig", "SensitivityDraws",
           "perturbed_copies", "sensitivity_draws"]

from collections.abc import Callable
from dataclasses import field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from gibench.api.artifacts import batches, eval_subset
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.draws import per_image_draws
from gibench.api.plugin import EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import SaliencyOptions
from gibench.core.config_types import Limit, NumSamples, PositiveFloat, plugin_config

#: The default radius per dataset (pixel units); any other dataset uses ``default_radius``.
DEFAULT_RADII: dict[str, float] = {name: 0.1 for name in
                                   ("mnist", "mnist_subset", "fashion_mnist", "blockmnist", "blockmnist_top")}
STREAM = 1  # the draw stream of this evaluator (gibench.api.draws)
#: Yeh et al. (2019) pair sensitivity with infidelity: a map that ignores the input has sensitivity 0 and a poor
#: infidelity, so the site shows these metrics only beside the infidelity headline.
COMPANION = "infidelity.relative_infidelity_gaussian"
CAVEAT = "a constant map scores 0 here: read it beside infidelity"


@plugin_config
class SensitivityConfig(SaliencyOptions):
    radius: dict[str, PositiveFloat] = field(default_factory=lambda: dict(DEFAULT_RADII))
    """L∞ radius r (pixel units) by dataset name; datasets not listed use default_radius."""
    default_radius: PositiveFloat = 8 / 255
    """L∞ radius r (pixel units) for a dataset not in radius."""
    num_samples: NumSamples = 32
    """Uniform draws per image."""
    max_images: Limit = 500
    """The first N test images; 0 = all."""

    def radius_for(self, dataset: str) -> float:
        return float(self.radius.get(dataset, self.default_radius))


class SensitivityDraws(NamedTuple):
    """Per image and draw: the relative change of the map (N, S) and whether the prediction flipped (N, S)."""

    ratios: Tensor
    flips: Tensor


def perturbed_copies(x: Tensor, unit_noise: Tensor, radius: float) -> Tensor:
    """clip(x + r·u, 0, 1) for unit draws u in [−1, 1]: (N, S, C, H, W) from x (N, C, H, W)."""
    return (x.unsqueeze(1) + radius * unit_noise).clamp(0.0, 1.0)


def sensitivity_draws(model: nn.Module, saliency: Callable[[nn.Module, Tensor, Tensor], Tensor], x: Tensor,
                      y: Tensor, perturbed: Tensor) -> SensitivityDraws:
    """‖a(x') − a(x)‖_F / ‖a(x)‖_F for the (N, S, C, H, W) ``perturbed`` copies of x, explaining y, and the flips.

    All N·S copies go through ``saliency`` in one call.
    """
    n, s = perturbed.shape[:2]
    flat = perturbed.flatten(0, 1)
    clean = saliency(model, x, y).detach().flatten(1).double()
    moved = saliency(model, flat, y.repeat_interleave(s)).detach().flatten(1).double().view(n, s, -1)
    norm = clean.norm(dim=1)
    norm = torch.where(norm > 0, norm, 1.0)
    ratios = (moved - clean.unsqueeze(1)).norm(dim=2) / norm.unsqueeze(1)
    with torch.no_grad():
        flips = model(flat).argmax(1).view(n, s) != model(x).argmax(1).unsqueeze(1)
    return SensitivityDraws(ratios, flips)


class Sensitivity(Evaluator):
    """Max- and avg-sensitivity of the saliency under uniform L∞ input draws (Yeh et al. 2019); lower is better,
    but a constant map scores 0: read it only beside a faithfulness column."""

    Config = SensitivityConfig
    version = "1"
    history = {"1": "first version: max (headline) and mean relative change of the map over 32 uniform draws in an L∞"
                   " ball (8/255 unless the dataset has its own radius), 500 images"}
    metrics = (
        Metric("max_sensitivity", False, "largest relative change of the saliency map over uniform L∞ draws "
               "(Yeh et al. 2019); a constant map scores 0, so read it beside a faithfulness column",
               headline=True, bounds=(0.0, float("inf")), read_beside=COMPANION, caveat=CAVEAT),
        Metric("avg_sensitivity", False, "mean relative change of the saliency map over uniform L∞ draws",
               bounds=(0.0, float("inf")), read_beside=COMPANION, caveat=CAVEAT),
        Metric("prediction_flip_share", False, "share of the draws that change the predicted class",
               bounds=(0.0, 1.0), diagnostic=True),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: the clean map and ``num_samples`` maps of perturbed copies, and one prediction of each (the
        prediction-flip check)."""
        cfg = self.config
        maps = ctx.images(cfg.max_images) * (1 + cfg.num_samples)
        return EvaluationCost(work((ctx.saliency(), maps * cfg.input_gradients_per_map), (ctx.forward(), maps)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        radius = cfg.radius_for(ctx.data.name)
        x, y, _ = eval_subset(ctx, cfg.max_images)
        per_call = max(1, ctx.batch_size // cfg.num_samples)
        maxima, means, flips = [], [], []
        for sl in batches(len(y), per_call):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            noise = per_image_draws(ctx.seed, STREAM, sl.start, len(yb), cfg.num_samples,
                                    tuple(xb.shape[1:]), ctx.device, "uniform")
            draws = sensitivity_draws(ctx.model, ctx.saliency, xb, yb, perturbed_copies(xb, noise, radius))
            maxima.append(draws.ratios.amax(1).cpu())
            means.append(draws.ratios.mean(1).cpu())
            flips.append(draws.flips.sum().cpu())
        total_draws = len(y) * cfg.num_samples
        return EvalResult(scalars={
            "max_sensitivity": float(torch.cat(maxima).mean()),
            "avg_sensitivity": float(torch.cat(means).mean()),
            "prediction_flip_share": float(torch.stack(flips).sum()) / max(total_draws, 1),
        })
