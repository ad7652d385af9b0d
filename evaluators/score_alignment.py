"""``score_alignment``: how well a model's input-gradients align with the data's score ∇x log p(x | y).

Srinivas, Bordt & Lakkaraju, "Which Models have Perceptually-Aligned Gradients? An Explanation via Off-Manifold
Robustness" (NeurIPS 2023): a model is Bayes-aligned, and its gradients perceptually aligned, when its input-gradients
match the score of the data distribution. This evaluator needs the exact score (capability ``ANALYTIC_SCORE``, e.g.
the ``gaussian_mixture`` dataset): ``ctx.data.extras["score"](x, y)`` is ∇x log p(x | y) and
``ctx.data.extras["score"](x, None)`` is ∇x log p(x). A job whose dataset lacks the capability is skipped by the
runner with a recorded reason.

Metrics, each the mean over the first ``max_images`` test images of a per-image similarity computed over all
C·H·W coordinates of the signed maps (no normalization, no absolute value):

* ``cosine_conditional`` (headline, higher is better): cosine similarity between the explained quantity
  ``ctx.saliency(model, x, y)`` (the input-gradient of the true label's logit, ∇x f_y(x)) and ∇x log p(x | y).
* ``spearman_conditional``: Spearman's rank correlation of the same pair (Pearson correlation of the ranks, ties
  given their average rank).
* ``cosine_unconditional``, ``spearman_unconditional``: the same against the unconditional score ∇x log p(x), with the
  model side ∇x logsumexp_k f_k(x): reading the logits as an energy model, log p(x) = logsumexp_k f_k(x) − log Z, so
  this is the model's implicit unconditional score. (The paper's released CIFAR-10 script uses the gradient of the
  sum of the logits instead; gibench uses the quantity whose target is exactly ∇x log p(x).)

Choices: a similarity of a zero map is 0 (cosine and Spearman are undefined there); the true test label is used.
The paper measures 1 − LPIPS (AlexNet) between max-abs-normalized maps against an EDM diffusion model's score; cosine
and Spearman are gibench's own, parameter-free choices. LPIPS needs network weights that gibench does not download;
it may be offered later only when the weights are present locally. Scores from a trained denoiser (for datasets
without an analytic score) are likewise not part of this evaluator. Cost: two forward + backward passes per image
(label logit and logsumexp) plus the analytic score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gibench.api import ANALYTIC_SCORE, EvalContext, EvalResult, Evaluator, Metric
from gibench.evaluators._artifacts import GRID_IMAGES, batches, eval_subset, save_grid, to_unit
from gibench.params import check


@dataclass(frozen=True)
class ScoreAlignmentConfig:
    max_images: int = 1000  # the first N test images; 0 = all

    def __post_init__(self) -> None:
        check(self.max_images >= 0, f"max_images must be >= 0, got {self.max_images}")


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-image cosine similarity of two (N, ...) maps over all coordinates, (N,); 0 where either map is zero."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1) / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def average_ranks(v: Tensor) -> Tensor:
    """Per-row ranks 0..D−1 of a (N, D) tensor, ties given the average of their ranks (as scipy's 'average')."""
    values, order = torch.sort(v, dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.long().cumsum(1) - 1
    positions = torch.arange(v.shape[1], dtype=torch.float64, device=v.device).expand(v.shape[0], -1)
    mean_pos = torch.zeros_like(positions).scatter_reduce(1, group, positions, reduce="mean", include_self=False)
    return torch.empty_like(positions).scatter_(1, order, mean_pos.gather(1, group))


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Spearman rank correlation over all coordinates, (N,); 0 where either map is constant."""
    ra, rb = average_ranks(a.flatten(1).double()), average_ranks(b.flatten(1).double())
    return cosine(ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True))


def logsumexp_gradient(model: nn.Module, x: Tensor) -> Tensor:
    """∇x logsumexp_k f_k(x), per sample: the model's implicit unconditional score."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(torch.logsumexp(model(x), dim=1).sum(), x)
    return grad.detach()


class ScoreAlignment(Evaluator):
    """Cosine similarity (headline) and Spearman correlation of input-gradients with the analytic score."""

    Config = ScoreAlignmentConfig
    version = "1"
    requires = frozenset({ANALYTIC_SCORE})
    metrics = (
        Metric("cosine_conditional", True, "cosine similarity of ∇x f_y(x) and the score ∇x log p(x|y)", headline=True),
        Metric("spearman_conditional", True, "Spearman rank correlation of ∇x f_y(x) and ∇x log p(x|y)"),
        Metric("cosine_unconditional", True, "cosine similarity of ∇x logsumexp f(x) and the score ∇x log p(x)"),
        Metric("spearman_unconditional", True, "Spearman rank correlation of ∇x logsumexp f(x) and ∇x log p(x)"),
    )

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        x, y, _ = eval_subset(ctx, self.config.max_images)
        score = ctx.data.extras["score"]
        parts: dict[str, list[Tensor]] = {m.name: [] for m in self.metrics}
        grid: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            grad = ctx.saliency(ctx.model, xb, yb).detach()
            target = score(xb, yb)
            grad_u, target_u = logsumexp_gradient(ctx.model, xb), score(xb, None)
            parts["cosine_conditional"].append(cosine(grad, target))
            parts["spearman_conditional"].append(spearman(grad, target))
            parts["cosine_unconditional"].append(cosine(grad_u, target_u))
            parts["spearman_unconditional"].append(spearman(grad_u, target_u))
            if not grid:
                n = GRID_IMAGES
                grid = [xb[:n].cpu(), to_unit(grad[:n], signed=True).cpu(), to_unit(target[:n], signed=True).cpu()]
        scalars = {name: float(torch.cat(values).mean()) for name, values in parts.items()}
        artifacts = {"saliency_grid": save_grid(ctx, "score_alignment_grid.png", grid)} if grid else {}
        return EvalResult(scalars=scalars, artifacts=artifacts)
