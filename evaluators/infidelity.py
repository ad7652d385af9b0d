"""``infidelity``: does the saliency map predict how the model's output changes under random perturbations?

Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of Explanations" (NeurIPS 2019), §2:

    INFD(a, F, x) = E_I[(Iᵀ(β·a) − (F(x) − F(x − I)))²],   β = E[Iᵀa · ΔF] / E[(Iᵀa)²]

with a random perturbation I, the explanation a rescaled by the optimal β (Yeh's code, captum's
``infidelity(normalize=True)``), so the score does not depend on the map's scale. With u = Iᵀa and v = ΔF it equals
E[v²]·(1 − E[uv]²/(E[u²]E[v²])): the part of the output change that no multiple of the map's linear prediction
explains. Per image, from S draws, then averaged over the images; lower is better.

Metrics, for each of the two perturbation kinds below:

* ``relative_infidelity_<kind>`` = INFD / E[ΔF²] in [0, 1]: 0 when the output change is exactly proportional to
  Iᵀa, 1 when Iᵀa is uncorrelated with it. It compares models whose outputs move by different amounts, where the
  absolute INFD mostly measures how large ΔF is. ``relative_infidelity_gaussian`` is the headline.
* ``infidelity_<kind>`` = INFD itself (output units squared), the number captum and Yeh's code report.

**Output F** (``output``). gibench's saliency is the input-gradient of the label logit f_y (docs/architecture.md,
"Saliency"); F is what the perturbation is measured on:

* ``centred_logit`` (default): F = f_y − (1/K)·Σ_k f_k. Adding one g(x) to every logit changes neither the
  probabilities nor F. The ``fooled`` control is exactly such a g: its ∇f_y ≈ ∇g, and ∇g predicts how f_y moves
  but not how F moves, so its maps are penalised (pilot: 0.83 against erm's 0.12).
* ``log_softmax``: F = log p_y(x), also shift-invariant.
* ``logit``: F = f_y, Yeh's and captum's usual choice. **It does not penalise ``fooled``**: the fooled logit really
  does move along ∇g, so ∇g is a faithful explanation of f_y, just not of anything the classifier decides (pilot:
  fooled 0.14 vs erm 0.10, inside the seed spread 0.10–0.18). Use it only to compare with published numbers.

**Perturbations** (both computed in one evaluation; each image gets its own seeded draws, so the scores do not
depend on the batch):

* ``gaussian``: x − I = clip(x + ε, 0, 1), ε ~ N(0, σ²) per coordinate, σ = ``gaussian_sigma`` (0.1 pixel units,
  as the pilot); I is the perturbation actually applied after clipping to the data range [0, 1].
* ``noisy_baseline``: x − I = clip(x₀ + ε, 0, 1), ε ~ N(0, σ_b²), σ_b = ``baseline_sigma``: Yeh et al.'s "noisy
  baseline" and their code's MNIST setting (x₀ = 0, σ_b = 0.2; ``baseline``: ``zero`` or the per-channel
  ``dataset_mean``). I is then large: it removes most of the image.

Other choices: S = ``num_samples`` = 64 draws per image (Yeh's code: 10,000 on MNIST; captum: 10); where E[u²] = 0
β is 0 (captum's safe division), and where E[v²] = 0 the relative infidelity is 0 (nothing to explain); the first
``max_images`` test images; ``ctx.saliency`` is the map under test. Quantus 0.6.0's ``Infidelity`` is a different
measure (cumulative patch removal, no β), so it is not compared.

Cost per image: one forward and backward (the saliency), 1 + 2S forward passes (S per perturbation kind); the S
perturbed copies of ⌊batch_size / S⌋ images (at least one) go through the model in one call.
"""

from __future__ import annotations

__all__ = ["INFIDELITY_OUTPUTS", "Infidelity", "InfidelityConfig", "InfidelityTerms", "explained_output",
           "gaussian_perturbation", "infidelity_terms", "noisy_baseline_perturbation"]

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.artifacts import batches, eval_subset
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.draws import per_image_draws
from gibench.api.plugin import EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import SaliencyOptions, label_logit
from gibench.core.config_types import Limit, NumSamples, Sigma, plugin_config

INFIDELITY_OUTPUTS = ("centred_logit", "log_softmax", "logit")
KINDS = ("gaussian", "noisy_baseline")
STREAMS = {"gaussian": 2, "noisy_baseline": 3}  # draw streams (gibench.api.draws)


@plugin_config
class InfidelityConfig(SaliencyOptions):
    output: Literal["centred_logit", "log_softmax", "logit"] = "centred_logit"
    """The output F whose change is predicted: centred_logit (shift-invariant), log_softmax, or logit."""
    num_samples: NumSamples = 64
    """Perturbations per image and kind."""
    gaussian_sigma: Sigma = 0.1
    """Std of the Gaussian perturbation (pixel units)."""
    baseline_sigma: Sigma = 0.2
    """Std of the noise around the baseline of the noisy-baseline perturbation (pixel units; Yeh's MNIST 0.2)."""
    baseline: Literal["zero", "dataset_mean"] = "zero"
    """x₀ of the noisy-baseline perturbation: zero (Yeh's code) or the per-channel train mean."""
    max_images: Limit = 500
    """The first N test images; 0 = all."""


def explained_output(logits: Tensor, y: Tensor, output: str) -> Tensor:
    """F(x) per sample (N,) from (N, K) logits: the centred logit, the log-softmax or the logit of class y."""
    if output == "centred_logit":
        return label_logit(logits, y) - logits.mean(1)
    if output == "log_softmax":
        return label_logit(F.log_softmax(logits, dim=1), y)
    return label_logit(logits, y)


def gaussian_perturbation(x: Tensor, unit_normal: Tensor, sigma: float) -> Tensor:
    """I with x − I = clip(x + σ·ε, 0, 1): (N, S, C, H, W) from x (N, C, H, W) and N(0, 1) draws ε."""
    return x.unsqueeze(1) - (x.unsqueeze(1) + sigma * unit_normal).clamp(0.0, 1.0)


def noisy_baseline_perturbation(x: Tensor, unit_normal: Tensor, sigma: float, baseline: Tensor) -> Tensor:
    """I with x − I = clip(x₀ + σ·ε, 0, 1); ``baseline`` x₀ broadcasts against (N, S, C, H, W)."""
    return x.unsqueeze(1) - (baseline + sigma * unit_normal).clamp(0.0, 1.0)


class InfidelityTerms(NamedTuple):
    """Per image (N,): the β-scaled infidelity and the relative infidelity (INFD / E[ΔF²])."""

    infidelity: Tensor
    relative: Tensor


def infidelity_terms(model: nn.Module, x: Tensor, y: Tensor, saliency: Tensor, perturbation: Tensor,
                     output: str) -> InfidelityTerms:
    """Yeh's β-scaled infidelity of ``saliency`` (N, C, H, W) at x under the (N, S, C, H, W) perturbations I.

    u_s = I_sᵀa, v_s = F(x) − F(x − I_s); β = mean(uv)/mean(u²); INFD = mean((βu − v)²); all S·N perturbed inputs in
    one forward call.
    """
    n, s = perturbation.shape[:2]
    with torch.no_grad():
        clean = explained_output(model(x), y, output).double()
        moved = explained_output(model((x.unsqueeze(1) - perturbation).flatten(0, 1)), y.repeat_interleave(s),
                                 output).double().view(n, s)
    v = clean.unsqueeze(1) - moved
    u = (perturbation.double() * saliency.double().unsqueeze(1)).flatten(2).sum(2)
    uu, uv, vv = (u * u).mean(1), (u * v).mean(1), (v * v).mean(1)
    beta = torch.where(uu > 0, uv / uu.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    infid = ((beta.unsqueeze(1) * u - v) ** 2).mean(1)
    relative = torch.where(vv > 0, (infid / vv.clamp_min(torch.finfo(torch.float64).tiny)).clamp(0.0, 1.0), 0.0)
    return InfidelityTerms(infid, relative)


class Infidelity(Evaluator):
    """Yeh et al.'s β-scaled infidelity on a shift-invariant output, Gaussian and noisy-baseline perturbations;
    headline: relative infidelity under Gaussian perturbations (lower is better)."""

    Config = InfidelityConfig
    version = "1"
    history = {"1": "first version: relative infidelity (optimal β) of the centred logit under Gaussian σ = 0.1 "
                   "(headline) and noisy-baseline σ_b = 0.2 perturbations, 64 draws per image"}
    metrics = (
        Metric("relative_infidelity_gaussian", False, "β-scaled infidelity / E[ΔF²] under Gaussian perturbations "
               "(Yeh et al. 2019), F the centred logit by default", headline=True, bounds=(0.0, 1.0)),
        Metric("infidelity_gaussian", False, "β-scaled infidelity under Gaussian perturbations",
               bounds=(0.0, float("inf"))),
        Metric("relative_infidelity_noisy_baseline", False,
               "β-scaled infidelity / E[ΔF²] under noisy-baseline perturbations", bounds=(0.0, 1.0)),
        Metric("infidelity_noisy_baseline", False, "β-scaled infidelity under noisy-baseline perturbations",
               bounds=(0.0, float("inf"))),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: one saliency map; for each perturbation kind, F(x) and ``num_samples`` perturbed forwards."""
        cfg = self.config
        n = ctx.images(cfg.max_images)
        return EvaluationCost(work((ctx.saliency(), n * cfg.input_gradients_per_map),
                                   (ctx.forward(), n * len(KINDS) * (1 + cfg.num_samples))))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, _ = eval_subset(ctx, cfg.max_images)
        baseline = self._baseline(ctx)
        per_call = max(1, ctx.batch_size // cfg.num_samples)
        parts: dict[str, list[Tensor]] = {m.name: [] for m in self.metrics}
        for sl in batches(len(y), per_call):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            maps = ctx.saliency(ctx.model, xb, yb).detach()
            for kind in KINDS:
                noise = per_image_draws(ctx.seed, STREAMS[kind], sl.start, len(yb), cfg.num_samples,
                                        tuple(xb.shape[1:]), ctx.device, "normal")
                if kind == "gaussian":
                    perturbation = gaussian_perturbation(xb, noise, cfg.gaussian_sigma)
                else:
                    perturbation = noisy_baseline_perturbation(xb, noise, cfg.baseline_sigma, baseline)
                terms = infidelity_terms(ctx.model, xb, yb, maps, perturbation, cfg.output)
                parts[f"infidelity_{kind}"].append(terms.infidelity.cpu())
                parts[f"relative_infidelity_{kind}"].append(terms.relative.cpu())
        return EvalResult(scalars={name: float(torch.cat(values).mean()) for name, values in parts.items()})

    def _baseline(self, ctx: EvalContext) -> Tensor:
        if self.config.baseline == "zero":
            return torch.zeros((), device=ctx.device)
        return torch.tensor(ctx.data.mean, dtype=torch.float32, device=ctx.device).view(1, 1, -1, 1, 1)
