"""``score_alignment``: how well a model's input-gradients align with the data's score ∇x log p(x | y).

Srinivas, Bordt & Lakkaraju, "Which Models have Perceptually-Aligned Gradients? An Explanation via Off-Manifold
Robustness" (NeurIPS 2023): a model is Bayes-aligned, and its gradients perceptually aligned, when its input-gradients
match the score of the data distribution. The paper's code (``tml-tuebingen/pags``) takes the score from a pretrained
EDM diffusion model run on the clean image at one noise level, s(x) = (D(x; σ) − x)/σ² with x in [−1, 1] and σ = 0.5
for CIFAR-10 (1.2 for ImageNet-64), divides score and gradient by their per-image max-abs value, and reports
1 − LPIPS (AlexNet) between the two maps, averaged over 2,000 CIFAR-10 test images.

Where the score comes from (option ``score``):

* ``analytic``: the exact score of the data (capability ``ANALYTIC_SCORE``, e.g. the ``gaussian_mixture`` dataset):
  ``ctx.data.extras["score"](x, y)`` is ∇x log p(x | y) and ``ctx.data.extras["score"](x, None)`` is ∇x log p(x).
  Without the capability the runner records the evaluation as skipped (the instance's ``requires`` then names
  ``ANALYTIC_SCORE``); called directly, it raises a GibenchError.
* ``learned``: the score of a denoiser that gibench trains by denoising score matching on the train split, once per
  dataset and σ, and caches as an auxiliary model of kind ``denoiser`` (``ctx.aux``; see
  :mod:`gibench.api.denoiser` for the U-Net, its EDM preconditioning and its training).
  s(x | y) = (D(x; σ, y) − x)/σ², evaluated on the clean test image as the paper does, is the score of the σ-smoothed
  density p_σ(x | y) (Tweedie; Vincent 2011); the unconditional score uses the denoiser's null class. ``sigma`` is
  in pixel units: the default 0.25 is the paper's σ = 0.5 in its [−1, 1] coordinates. The denoiser's held-out
  quality (test-split denoising MSE beside that of the identity and mean-image denoisers) is recorded with every
  result; an evaluation fails with a clear reason when ``gain_over_trivial`` (1 − its MSE / the best trivial MSE)
  is below ``min_denoiser_gain``.
* ``auto`` (default): ``analytic`` where the dataset has the capability, ``learned`` otherwise.

The denoiser's identity (what its content hash covers): the dataset (``ctx.job.training_spec()["dataset"]``: name,
version and resolved options; outside a suite run the bundle's name and a SHA-256 of its train split), σ, the U-Net
config and diffusers' version, every ``denoiser_*`` option, and the denoiser code version.

Metrics, each the mean over the first ``max_images`` test images of a per-image similarity computed over all
C·H·W coordinates of the signed maps (no normalization, no absolute value):

* ``cosine_conditional`` (headline, higher is better): cosine similarity between the explained quantity
  ``ctx.saliency(model, x, y)`` (the input-gradient of the true label's logit, ∇x f_y(x)) and ∇x log p(x | y).
* ``spearman_conditional``: Spearman's rank correlation of the same pair (Pearson correlation of the ranks, every
  tie group given its average rank; values within the relative tolerance of gibench's tie rule,
  |a − b| ≤ 10⁻⁴ · max(|a|, |b|) with single linkage, are tied: :func:`gibench.api.ranks.tie_groups`,
  docs/architecture.md, "Ranking pixels: ties", so float noise of the saliency method does not change it).
* ``cosine_unconditional``, ``spearman_unconditional``: the same against the unconditional score ∇x log p(x), with the
  model side ∇x logsumexp_k f_k(x): reading the logits as an energy model, log p(x) = logsumexp_k f_k(x) − log Z, so
  this is the model's implicit unconditional score. (The paper's released CIFAR-10 script uses the gradient of the
  sum of the logits instead; gibench uses the quantity whose target is exactly ∇x log p(x).)
* ``lpips_conditional``, ``lpips_unconditional`` (only with ``lpips_weights``): the paper's 1 − LPIPS between the
  max-abs-normalized maps (see :class:`LPIPSAlex`). gibench never downloads weights: ``lpips_weights`` names a local
  folder holding ``alex.pth`` (the LPIPS v0.1 linear heads shipped inside the ``lpips`` package, at
  ``lpips/weights/v0.1/alex.pth``) and ``alexnet-owt-7be5be79.pth`` (torchvision's ImageNet AlexNet weights, the
  file torchvision caches). A missing file is a configuration error naming it.

Choices: a similarity of a zero map is 0 (cosine and Spearman are undefined there); the true test label is used.
Cosine and Spearman are gibench's own, parameter-free choices (the paper computes neither). For LPIPS, one-channel
maps are repeated to three channels and maps whose shorter side is below 32 pixels are resized bilinearly so that it
is 32 (AlexNet's pooling needs that; the paper's CIFAR-10 maps are 32×32), and the maps are compared in [−1, 1]
(lpips' ``normalize=False``), as the paper does.

Cost: two forward + backward passes of the model per image (label logit and logsumexp) plus the score. The analytic
score is a closed form; the learned score is two denoiser forward passes per image (conditional and null class) on
top of the denoiser's one-off training, which is shared by every job, suite and rerun on the same dataset and σ
(``benchmarks/denoiser_cost.py`` measures both). LPIPS adds two AlexNet forward passes per image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gibench import require_quality, tensors_sha256
from gibench.api import denoiser
from gibench.api.artifacts import GRID_IMAGES, batches, eval_subset, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, Passes, PluginWork, WorkTimer, work
from gibench.api.denoiser import DenoiserOptions
from gibench.api.plugin import ANALYTIC_SCORE, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.ranks import spearman
from gibench.api.saliency import SaliencyOptions
from gibench.core.config_types import Limit, plugin_config
from gibench.core.errors import GibenchError
from gibench.core.params import check

LPIPS_FILES = ("alex.pth", "alexnet-owt-7be5be79.pth")  # LPIPS v0.1 linear heads; torchvision's ImageNet AlexNet

ScoreFn = Callable[[Tensor, "Tensor | None"], Tensor]


@plugin_config
class ScoreAlignmentConfig(DenoiserOptions, SaliencyOptions):
    """``saliency`` and ``ig_steps`` come from :class:`~gibench.api.saliency.SaliencyOptions`; ``sigma`` and the
    ``denoiser_*`` options are the learned score's recipe (:class:`~gibench.api.denoiser.DenoiserOptions`, read back
    by ``denoiser_training()``)."""

    max_images: Limit = 1000
    """The first N test images; 0 = all."""
    score: Literal["auto", "analytic", "learned"] = "auto"
    """auto: the analytic score where the dataset has ANALYTIC_SCORE, the learned one otherwise."""
    min_denoiser_gain: Annotated[float, Field(lt=1)] = 0.2
    """Floor on the denoiser's gain_over_trivial (1 would be a perfect denoiser)."""
    lpips_weights: str = ""
    """A local folder holding LPIPS_FILES; empty: no LPIPS metrics."""

    def __post_init__(self) -> None:
        if self.lpips_weights:
            folder = Path(self.lpips_weights).expanduser()
            missing = [name for name in LPIPS_FILES if not (folder / name).is_file()]
            check(not missing, f"lpips_weights={self.lpips_weights!r} lacks {missing}: put the LPIPS v0.1 linear "
                               f"heads (alex.pth, shipped in the lpips package under lpips/weights/v0.1/) and "
                               f"torchvision's AlexNet weights (alexnet-owt-7be5be79.pth) in that folder; gibench "
                               f"never downloads them")


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-image cosine similarity of two (N, ...) maps over all coordinates, (N,); 0 where either map is zero."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1) / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def logsumexp_gradient(model: nn.Module, x: Tensor) -> Tensor:
    """∇x logsumexp_k f_k(x), per sample: the model's implicit unconditional score."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(torch.logsumexp(model(x), dim=1).sum(), x)
    return grad.detach()


def max_abs_normalized(maps: Tensor) -> Tensor:
    """Each map divided by its max-abs value (the paper's normalization, into [−1, 1]); zero maps stay zero."""
    scale = maps.flatten(1).abs().amax(1).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / scale.view(-1, *([1] * (maps.dim() - 1)))


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk (Zhang et al., CVPR 2018), as ``lpips.LPIPS(net="alex")`` computes it.

    Inputs in [−1, 1] are shifted and scaled per channel (lpips' ScalingLayer), passed through AlexNet's features up to
    relu1..relu5, unit-normalized along channels (eps 1e-10), squared-differenced, weighted by the 1×1 linear heads,
    averaged over space and summed over the five layers. Weights load from local files only (``weights_only=True``).
    """

    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)
    CHANNELS = (64, 192, 384, 256, 256)
    SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # AlexNet features ending at relu1..relu5

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        from torchvision.models import alexnet

        folder = Path(folder).expanduser()
        features = alexnet(weights=None).features
        trunk = torch.load(folder / LPIPS_FILES[1], map_location="cpu", weights_only=True)
        features.load_state_dict({k.removeprefix("features."): v for k, v in trunk.items()
                                  if k.startswith("features.")})
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in self.SLICES)
        heads = torch.load(folder / LPIPS_FILES[0], map_location="cpu", weights_only=True)
        self.heads = nn.ParameterList(nn.Parameter(heads[f"lin{i}.model.1.weight"], requires_grad=False)
                                      for i in range(len(self.CHANNELS)))
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS distance per image pair, (N,)."""
        ha, hb = (a - self.shift) / self.scale, (b - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=a.device, dtype=a.dtype)
        for layer, head in zip(self.slices, self.heads):
            ha, hb = layer(ha), layer(hb)
            na = ha / (ha.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = hb / (hb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((na - nb).pow(2), head).mean(dim=(1, 2, 3))
        return total


def lpips_similarity(lpips: LPIPSAlex, a: Tensor, b: Tensor) -> Tensor:
    """1 − LPIPS between max-abs-normalized maps (N,): three channels, shorter side at least 32 pixels."""
    a, b = max_abs_normalized(a.float()), max_abs_normalized(b.float())
    if a.shape[1] == 1:
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    short = min(a.shape[-2:])
    if short < 32:
        size = tuple(round(s * 32 / short) for s in a.shape[-2:])
        a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        return 1.0 - lpips(a, b).double()


def data_identity(ctx: EvalContext) -> dict:
    """The dataset part of a denoiser's identity: the job's dataset spec, else the bundle's name and train hash."""
    if ctx.job is not None:
        return ctx.job.training_spec()["dataset"]
    return {"name": ctx.data.name, "train_sha256": tensors_sha256([ctx.data.train.x, ctx.data.train.y])}


CORE_METRICS = (
    Metric("cosine_conditional", True, "cosine similarity of ∇x f_y(x) and the score ∇x log p(x|y)", headline=True,
           bounds=(-1.0, 1.0)),
    Metric("spearman_conditional", True, "Spearman rank correlation of ∇x f_y(x) and ∇x log p(x|y)",
           bounds=(-1.0, 1.0)),
    Metric("cosine_unconditional", True, "cosine similarity of ∇x logsumexp f(x) and the score ∇x log p(x)",
           bounds=(-1.0, 1.0)),
    Metric("spearman_unconditional", True, "Spearman rank correlation of ∇x logsumexp f(x) and ∇x log p(x)",
           bounds=(-1.0, 1.0)),
)
LPIPS_METRICS = (
    Metric("lpips_conditional", True, "1 − LPIPS (AlexNet) of max-abs-normalized ∇x f_y(x) and ∇x log p(x|y)",
           bounds=(-float("inf"), 1.0)),
    Metric("lpips_unconditional", True, "1 − LPIPS (AlexNet) of max-abs-normalized ∇x logsumexp f and ∇x log p(x)",
           bounds=(-float("inf"), 1.0)),
)


class ScoreAlignment(Evaluator):
    """Cosine similarity (headline) and Spearman correlation of input-gradients with the analytic or learned score.

    ``requires`` and ``metrics`` are class-level for the default config; an instance narrows ``requires`` to
    ``ANALYTIC_SCORE`` under ``score: analytic`` (so the runner records a skip) and adds the LPIPS metrics when
    ``lpips_weights`` is set.
    """

    Config = ScoreAlignmentConfig
    version = "2"
    history = {"1": "first version: cosine (headline) and Spearman of input-gradients with the data score (analytic, "
                   "or a learned denoiser at σ = 0.25), 1000 test images",
               "2": "Spearmans: values within a relative 1e-4 of each other are tied (single linkage, average rank); "
                    "the cosines unchanged"}
    requires = frozenset()
    metrics = CORE_METRICS

    def __init__(self, config: ScoreAlignmentConfig | None = None) -> None:
        super().__init__(config)
        if self.config.score == "analytic":
            self.requires = frozenset({ANALYTIC_SCORE})
        if self.config.lpips_weights:
            self.metrics = CORE_METRICS + LPIPS_METRICS

    def score_function(self, ctx: EvalContext) -> ScoreFn:
        """The score to compare with: analytic (the dataset's) or learned (a cached denoiser's), per ``score``."""
        has_analytic = ANALYTIC_SCORE in ctx.data.capabilities
        if self.config.score == "analytic" and not has_analytic:
            raise GibenchError(f"score_alignment with score: analytic needs a dataset with an analytic score "
                               f"(capability {ANALYTIC_SCORE!r}); {ctx.data.name!r} has none. Use score: learned "
                               f"(or auto) to compare against a trained denoiser's score instead")
        if self.config.score == "analytic" or (self.config.score == "auto" and has_analytic):
            return ctx.data.extras["score"]
        cfg = self.config.denoiser_training()
        aux = ctx.aux.get_or_train(
            "denoiser", denoiser.identity(data_identity(ctx), ctx.data, cfg),
            build=lambda: denoiser.build(ctx.data, cfg),
            train=lambda: denoiser.train(ctx.data, cfg, ctx.aux.device))
        require_quality(aux, "gain_over_trivial", self.config.min_denoiser_gain, "score_alignment's learned score")
        trained, device = aux.model, ctx.aux.device

        def learned(x: Tensor, y: Tensor | None) -> Tensor:
            labels = None if y is None else y.to(device)
            return trained.score(x.to(device).float(), labels).to(device=x.device, dtype=x.dtype)

        return learned

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Two saliency maps per image (the label logit's and the logsumexp's). With the learned score also two
        denoiser forwards per image, and once per dataset and denoiser recipe its training
        (``denoiser_epochs × ⌈N / denoiser_batch_size⌉`` steps) and its quality check (2 × the test split in denoiser
        forwards). Nothing where the evaluation is skipped (``score: analytic`` on a dataset without one)."""
        cfg = self.config
        analytic = ANALYTIC_SCORE in ctx.data.capabilities
        if cfg.score == "analytic" and not analytic:
            return EvaluationCost()
        n = ctx.images(cfg.max_images)
        maps = (ctx.saliency(), 2 * n * cfg.input_gradients_per_map)
        if cfg.score == "analytic" or (cfg.score == "auto" and analytic):
            return EvaluationCost(work(maps))
        training = cfg.denoiser_training()
        options = dataclasses.asdict(training)
        step = ctx.plugin_work(self.name, "denoiser_step", options, batch_size=training.batch_size, per="step",
                               passes=Passes(forward=1, backward=1))  # the denoiser's loss: one forward, backward
        forward = ctx.plugin_work(self.name, "denoiser_forward", options, passes=Passes(forward=1))
        n_train = min(training.max_train, ctx.data.n_train) if training.max_train > 0 else ctx.data.n_train
        shared = work((step, ctx.training_steps(training, n_train)), (forward, 2 * ctx.data.n_test))
        key = ctx.shared_key({"denoiser": options})
        return EvaluationCost(work(maps, (forward, 2 * n)),
                              {key: (f"score_alignment denoiser (σ = {training.sigma:g})", shared)})

    @classmethod
    def time_work(cls, unit: PluginWork, timer: WorkTimer) -> float:
        """Seconds per denoiser training step (the operations of :func:`gibench.api.denoiser.train`'s loop: loss,
        backward, Adam step) or per image of a denoiser forward."""
        cfg = denoiser.DenoiserTraining(**unit.options())
        bundle = timer.random_bundle(unit.shape, unit.num_classes, unit.batch_size)
        model = denoiser.build(bundle, cfg).to(timer.device)
        x, y = bundle.train.x.to(timer.device), bundle.train.y.to(timer.device)
        if unit.kind == "denoiser_forward":
            model.eval()

            def forward() -> None:
                with torch.no_grad():
                    model(x, y)
            return timer.seconds_per_call(forward) / unit.batch_size
        optimizer = torch.optim.Adam(model.train().parameters(), lr=cfg.lr)

        def step() -> None:
            loss = model.loss(x, y, torch.randn_like(x))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return timer.seconds_per_call(step)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        x, y, _ = eval_subset(ctx, self.config.max_images)
        score = self.score_function(ctx)
        lpips = LPIPSAlex(self.config.lpips_weights).to(ctx.device) if self.config.lpips_weights else None
        parts: dict[str, list[Tensor]] = {m.name: [] for m in self.metrics}
        grid: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            grad = ctx.saliency(ctx.model, xb, yb).detach()
            target = score(xb, yb)
            grad_u, target_u = logsumexp_gradient(ctx.model, xb), score(xb, None)
            parts["cosine_conditional"].append(cosine(grad, target))
            parts["spearman_conditional"].append(spearman(grad.flatten(1), target.flatten(1)))
            parts["cosine_unconditional"].append(cosine(grad_u, target_u))
            parts["spearman_unconditional"].append(spearman(grad_u.flatten(1), target_u.flatten(1)))
            if lpips is not None:
                parts["lpips_conditional"].append(lpips_similarity(lpips, grad, target))
                parts["lpips_unconditional"].append(lpips_similarity(lpips, grad_u, target_u))
            if not grid:
                n = GRID_IMAGES
                grid = [xb[:n].cpu(), to_unit(grad[:n], signed=True).cpu(), to_unit(target[:n], signed=True).cpu()]
        scalars = {name: float(torch.cat(values).mean()) for name, values in parts.items()}
        artifacts = {"saliency_grid": save_grid(ctx, "score_alignment_grid.png", grid)} if grid else {}
        return EvalResult(scalars=scalars, artifacts=artifacts)
