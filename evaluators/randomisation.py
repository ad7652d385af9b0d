"""``randomisation``: does the saliency map depend on the trained parameters? eMPRT, with plain MPRT as a diagnostic.

Efficient MPRT (eMPRT): Hedström, Weber, Lapuschkin & Höhne, "Sanity Checks Revisited: An Exploration to Repair the
Model Parameter Randomisation Test" (XAI in Action workshop, NeurIPS 2023) and "A Fresh Look at Sanity Checks for
Saliency Maps" (xAI 2024, arXiv 2405.02383); Quantus 0.6.0 ``EfficientMPRT``. The model is re-initialized completely,
bottom-up, and the score is the relative rise of the explanation's complexity,

    eMPRT(x) = (H(e_random(x)) − H(e(x))) / H(e(x)),

where H is the discrete (histogram) entropy of the map's values. A map that reflects what the model learned turns
into noise when the learned parameters are gone, so its entropy rises (higher is better). gibench's ``fooled``
control stores a smooth, meaningless map in its weights: its own map already has a high entropy, and eMPRT falls.

Plain MPRT (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018) is reported as two **diagnostic**
metrics (``Metric.diagnostic``: shown, never ranked, never gated): the Spearman rank correlation between the map of
the trained model and that of the model with its top layer re-initialized (``mprt_spearman_top``) and with every layer
re-initialized (``mprt_spearman_full``), lower meaning "more sensitive to the parameters". It ranks ``fooled`` above
``erm`` by construction: the fooled map lives in the weights, so any re-initialization destroys it (research note
explanation-metric-families §1.1, pilot §7: full 0.11 vs 0.57). The optional cascade curve (``cascade: true``) is
Adebayo's top-down cascading randomization, one point per layer.

Choices the papers leave open, as gibench makes them:

* **Map**: the explained quantity ``ctx.saliency(model, x, y)`` (by default ∇x f_y(x), docs/architecture.md, "Saliency")
  of the *true* label, for the trained and for the re-initialized model alike, reduced to one score per pixel with
  ``pixel_reduction`` (Σ_c |g_c| by default, as every gibench evaluator). Quantus' default uses the signed C×H×W map.
* **Which modules are re-initialized**: every module that has ``reset_parameters()`` (Conv, Linear, BatchNorm,
  LayerNorm, GroupNorm, …), in ``named_modules()`` order (the forward order for the built-in backbones: bottom-up).
  Parameters owned by a module without ``reset_parameters`` (a ViT's position embedding) keep their trained values;
  the input normalization layer has buffers only and is left as it is. The trained model ``ctx.model`` is never
  touched: a deep copy is re-initialized on the CPU and moved to the device.
* **BatchNorm**: ``reset_parameters()`` is applied like on any other layer: running mean 0, running variance 1,
  γ = 1, β = 0, so in eval mode the layer is the identity (up to 1/√(1 + eps)). Keeping the trained running statistics
  would keep numbers computed from the trained layers below (meaningless once those are random, and able to rescale
  activations by orders of magnitude); re-estimating them would make the random model depend on the evaluated
  images. Reset statistics are what ``reset_parameters`` gives and what Quantus does.
* **Seed**: the CPU generator is seeded once with ``ctx.seed + SEED_OFFSET`` and the layers are re-initialized in
  order from that one stream (Quantus re-seeds with the same seed before every layer, which gives layers of equal
  shape equal weights). The offset matters: the trainer seeds with the job's seed before building the model, so
  re-initializing with ``ctx.seed`` itself would recreate the job's own initial weights. The top-layer and cascade
  models use the same rule (the cascade's k-th model shares its top k − 1 layers with the (k−1)-th).
* **Binning**: a fixed number of equal-width bins (``bins``, 100 as Quantus' default) spanning each map's own
  [min, max] (numpy's ``histogram`` rule: the last bin is closed), so a map's entropy depends on that map alone, not on
  the other images of the call (Quantus' bin *rules* fit the bin count on the whole call). Natural logarithm, so
  0 ≤ H ≤ ln(bins). A constant map has H = 0 and its eMPRT is undefined: such images are left out of the mean (the
  mean is NaN when every image is constant). The entropy ranks nothing, so the tie rule does not apply to it; its
  bins are a fixed grid, and a score within float noise of a bin edge can change bins.
* **Spearman**: over the H·W pixel scores, every tie group given its average rank; scores within the relative
  tolerance of gibench's tie rule (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single linkage;
  :func:`gibench.api.ranks.tie_groups`, docs/architecture.md, "Ranking pixels: ties") are tied, so float noise of the
  saliency method does not change it; 0 where either map is one tie group (constant).
* **What it can and cannot tell apart**: full re-initialization replaces every parameter and buffer that training
  set, so for one architecture and seed the random model, and with it H(e_random(x)), is the same for every
  regularizer. Across the rows of one dataset and backbone, eMPRT is therefore a decreasing function of the trained
  map's histogram entropy alone (a complexity measure with an architecture-specific reference); this follows from
  the definition, in Quantus as here. ``entropy_original`` and ``entropy_randomised`` are reported so that this is
  visible.
* **Cost**: 3 forward + backward passes per image (trained, fully random, top-layer random), plus L more with
  ``cascade`` (L = modules re-initialized), and one deep copy of the model per random model.
"""

from __future__ import annotations

__all__ = ["Randomisation", "RandomisationConfig", "SEED_OFFSET", "emprt", "histogram_entropy", "map_spearman",
           "randomised_copy", "resettable_modules"]

import copy
import functools
import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from gibench import PluginSpec, build_model, make_bundle
from gibench.api.artifacts import batches, eval_subset, save_curves, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.ranks import spearman
from gibench.api.saliency import SaliencyOptions, pixel_scores
from gibench.core.config_types import ChannelReduction, Limit, plugin_config
from gibench.core.errors import GibenchError

#: Added to ``ctx.seed`` for the re-initialization, so that the random model is not the job's own initialization.
SEED_OFFSET = 7919


@plugin_config
class RandomisationConfig(SaliencyOptions):
    bins: Annotated[int, Field(ge=2)] = 100
    """Equal-width histogram bins over each map's [min, max] for the entropy, ≥ 2 (Quantus' default 100)."""
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel."""
    cascade: bool = False
    """Also report Adebayo's top-down cascading MPRT curve (one more saliency pass per layer)."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


def resettable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules with ``reset_parameters()``, in ``named_modules()`` order (bottom-up for sequential backbones)."""
    return [(name, m) for name, m in model.named_modules() if callable(getattr(m, "reset_parameters", None))]


@functools.lru_cache(maxsize=64)
def _resettable_count(backbone: PluginSpec, shape: tuple[int, int, int], num_classes: int) -> int:
    """The cascade's steps for a backbone and input shape: the re-initializable modules of the built model (built
    once per backbone and shape, on the CPU, on random images)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, *shape, generator=gen), torch.arange(2) % num_classes
    bundle = make_bundle("shape", x, y, x, y, num_classes=num_classes)
    return len(resettable_modules(build_model(backbone.name, backbone.config, bundle)))


def randomised_copy(model: nn.Module, seed: int, top: int | None = None) -> nn.Module:
    """A deep copy of ``model`` (same device, eval mode) with modules re-initialized by ``reset_parameters()``.

    ``top=None`` re-initializes every resettable module, bottom-up; ``top=k`` only the last k (top-down cascading
    randomization after k steps). The CPU generator is seeded once with ``seed`` inside a forked RNG state, so the
    global random state is left as it was and the result does not depend on the device.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    clone = copy.deepcopy(model).cpu()
    modules = resettable_modules(clone)
    if not modules:
        raise GibenchError(f"randomisation: {type(model).__name__} has no module with reset_parameters(), so "
                           "nothing can be re-initialized; build the model from torch.nn layers (Conv, Linear, "
                           "norms) or give its custom layers a reset_parameters() method.")
    chosen = modules if top is None else modules[len(modules) - top:]
    order = chosen if top is None else chosen[::-1]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for _, module in order:
            module.reset_parameters()
    return clone.to(device).eval()


def histogram_entropy(maps: Tensor, bins: int = 100) -> Tensor:
    """Per-map Shannon entropy (nats) of a ``bins``-bin equal-width histogram over each map's own [min, max], (N,).

    numpy's rule (``np.histogram(a, bins)``): bin i holds lo + i·w ≤ v < lo + (i+1)·w, the last bin also holds v = hi.
    A constant map has entropy 0 (numpy widens its range to ±0.5: one bin holds everything).
    """
    flat = maps.flatten(1).double()
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    width = (hi - lo).clamp_min(torch.finfo(torch.float64).tiny)
    index = ((flat - lo) * (bins / width)).floor().long().clamp_(0, bins - 1)
    counts = torch.zeros(flat.shape[0], bins, dtype=torch.float64, device=flat.device)
    counts.scatter_add_(1, index, torch.ones_like(flat))
    p = counts / flat.shape[1]
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)


def map_spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Spearman correlation of two (N, H, W) pixel maps over their H·W scores, (N,) float64, scores tied by
    the tie rule; 0 where either map is one tie group (MPRT, Adebayo et al. 2018:
    :func:`gibench.api.ranks.spearman`)."""
    return spearman(a.flatten(1), b.flatten(1))


def emprt(entropy_original: Tensor, entropy_random: Tensor) -> Tensor:
    """(H_random − H_original) / H_original per image; NaN where the original map is constant (H_original = 0)."""
    return torch.where(entropy_original > 0, (entropy_random - entropy_original) / entropy_original,
                       torch.full_like(entropy_original, math.nan))


class Randomisation(Evaluator):
    """eMPRT (headline): the map's relative entropy rise under full re-initialization; MPRT Spearmans diagnostic."""

    Config = RandomisationConfig
    version = "2"
    history = {"1": "first version: eMPRT, relative rise of the 100-bin entropy after full bottom-up re-"
                   "initialisation (headline); plain MPRT as diagnostics",
               "2": "MPRT Spearmans: pixel scores within a relative 1e-4 of each other are tied (single linkage, "
                    "average rank); eMPRT and the entropies unchanged"}
    metrics = (
        Metric("emprt", True, "relative rise of the map's histogram entropy when every layer is re-initialized "
               "(Hedström et al. 2024)", headline=True, bounds=(-1.0, math.inf)),
        Metric("entropy_original", False, "histogram entropy (nats) of the trained model's map",
               bounds=(0.0, math.inf)),
        Metric("entropy_randomised", True, "histogram entropy (nats) of the fully re-initialized model's map",
               bounds=(0.0, math.inf)),
        Metric("mprt_spearman_full", False, "MPRT: Spearman of the pixel maps of the trained and the fully "
               "re-initialized model (ranks fooled above erm by design)", bounds=(-1.0, 1.0), diagnostic=True),
        Metric("mprt_spearman_top", False, "MPRT: Spearman of the pixel maps of the trained model and the model "
               "with its top layer re-initialized (ranks fooled above erm by design)", bounds=(-1.0, 1.0),
               diagnostic=True),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: maps of the trained model and of its fully and top-layer re-initialized copies (the same
        backbone, so the same unit), plus one per re-initializable module with ``cascade``."""
        cfg = self.config
        maps = 3 + (_resettable_count(ctx.job.backbone, ctx.data.shape, ctx.data.num_classes) if cfg.cascade else 0)
        return EvaluationCost(work((ctx.saliency(), ctx.images(cfg.max_images) * maps * cfg.input_gradients_per_map)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, _ = eval_subset(ctx, cfg.max_images)
        random_model = randomised_copy(ctx.model, ctx.seed + SEED_OFFSET)
        top_model = randomised_copy(ctx.model, ctx.seed + SEED_OFFSET, top=1)
        parts: dict[str, list[Tensor]] = {k: [] for k in ("maps", "emprt", "h0", "h1", "full", "top")}
        preview: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            maps = self._maps(ctx, ctx.model, xb, yb)
            random_maps = self._maps(ctx, random_model, xb, yb)
            h0, h1 = histogram_entropy(maps, cfg.bins), histogram_entropy(random_maps, cfg.bins)
            parts["maps"].append(maps.cpu())
            parts["emprt"].append(emprt(h0, h1).cpu())
            parts["h0"].append(h0.cpu())
            parts["h1"].append(h1.cpu())
            parts["full"].append(map_spearman(maps, random_maps).cpu())
            parts["top"].append(map_spearman(maps, self._maps(ctx, top_model, xb, yb)).cpu())
            if not preview:
                preview = [t[:8].cpu() for t in (xb, to_unit(maps.unsqueeze(1)), to_unit(random_maps.unsqueeze(1)))]
        joined = {k: torch.cat(v) for k, v in parts.items()}
        cascade = self._cascade(ctx, x, y, joined["maps"]) if cfg.cascade else []
        return self._result(ctx, joined, cascade, preview)

    def _cascade(self, ctx: EvalContext, x: Tensor, y: Tensor, maps: Tensor) -> list[float]:
        """Mean Spearman with the trained map after re-initializing the top k layers, k = 1 … L (one model alive)."""
        means = []
        for k in range(1, len(resettable_modules(ctx.model)) + 1):
            model = randomised_copy(ctx.model, ctx.seed + SEED_OFFSET, top=k)
            total = 0.0
            for sl in batches(len(y), ctx.batch_size):
                xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
                total += float(map_spearman(maps[sl].to(ctx.device), self._maps(ctx, model, xb, yb)).sum())
            means.append(total / max(len(y), 1))
            del model
        return means

    def _maps(self, ctx: EvalContext, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return pixel_scores(ctx.saliency(model, x, y).detach(), self.config.pixel_reduction)

    def _result(self, ctx: EvalContext, parts: dict[str, Tensor], cascade: list[float],
                preview: list[Tensor]) -> EvalResult:
        defined = parts["emprt"][~parts["emprt"].isnan()]
        scalars = {
            "emprt": float(defined.mean()) if len(defined) else math.nan,
            "entropy_original": float(parts["h0"].mean()),
            "entropy_randomised": float(parts["h1"].mean()),
            "mprt_spearman_full": float(parts["full"].mean()),
            "mprt_spearman_top": float(parts["top"].mean()),
        }
        curves: dict[str, Curve] = {}
        artifacts: dict[str, str] = {}
        if cascade:
            xs = tuple(float(k) for k in range(1, len(cascade) + 1))
            curves["mprt_cascade"] = Curve(xs, tuple(cascade), "top layers re-initialized",
                                           "Spearman with the trained model's map")
            artifacts["curves"] = save_curves(ctx, "randomisation_curves.json", curves)
        if preview:
            artifacts["saliency_grid"] = save_grid(ctx, "randomisation_grid.png", preview)
        return EvalResult(scalars=scalars, curves=curves, artifacts=artifacts)
