"""``road``: ROAD, Remove And Debias: accuracy as pixels are removed and filled by noisy linear imputation.

Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient Evaluation Strategy for Attribution Methods"
(ICML 2022), reference code ``tleemann/road_evaluation`` (``road/imputations.py``: ``NoisyLinearImputer``). Removing
pixels by a constant fill leaks the class through the *shape* of the mask; ROAD fills every removed pixel with the
weighted mean of its 8 neighbours instead (solved jointly for all removed pixels, a sparse linear system), plus a
little Gaussian noise, so the mask's outline carries almost no information. The model is not retrained (the
retraining-free counterpart of DiffROAR).

Three removal orders, on one axis (the fraction of pixels removed), at each fraction of ``fractions``:

* **MoRF** (most relevant first): removing the most salient pixels should destroy the accuracy quickly (low is good);
* **LeRF** (least relevant first): removing the least salient pixels should keep it (high is good);
* **random order**: a control. MoRF accuracy alone also measures how robust the model is to imputed pixels; the
  random order measures that robustness without the explanation.

Headline: ``gap_lerf_morf`` = mean LeRF accuracy − mean MoRF accuracy over the fractions (higher is better; 0 for a
map that orders pixels no better than its reverse), as the research note recommends (explanation-metric-families
§7.2: every ROAD view catches the ``fooled`` control, erm 0.69 vs fooled −0.05 in the pilot). ``gap_random_morf``
(mean random-order − mean MoRF accuracy) is the second gap, and ``random_accuracy`` is reported as a diagnostic
(it does not depend on the explanation, so it must never rank).

Choices the paper leaves open, as gibench makes them:

* **Imputation** (the reference's ``NoisyLinearImputer``): each removed pixel i satisfies
  Σ_j w_ij · (v_i − v_j) = 0 over its in-image 8-neighbours j, with w = 1/6 for the 4 edge neighbours and 1/12 for
  the 4 diagonal ones; known neighbours move to the right-hand side, so v_i is the weighted mean of its neighbours
  (the weights renormalized at the image border). All channels of a removed pixel are imputed, each channel with the
  same system. The system is symmetric and, as long as at least one pixel is kept (every fraction < 1), positive
  definite; it is solved exactly (a direct solve, in float64) by banded Cholesky (``scipy.linalg.solveh_banded``):
  numbered image by image in raster order, a removed pixel's removed neighbours are at most W + 1 unknowns away, so
  one LAPACK call solves the whole batch in time linear in the number of removed pixels (the reference and Quantus
  call SuperLU's ``spsolve`` once per image; see ``benchmarks/randomisation_road_cost.py``).
  Then N(0, ``noise``²) is added to every imputed value (paper and code: 0.01) and the result is clipped to [0, 1]
  (the data range of every gibench image; the reference does not clip).
* **Mask**: per pixel, ranked by the pixel score (``pixel_reduction``: Σ_c |g_c| of ``ctx.saliency`` by default,
  the input-gradient of the label logit). At fraction f exactly floor(f·H·W + 0.5) pixels are removed. Scores
  within the relative tolerance of gibench's tie rule (|a − b| ≤ 10⁻⁴ · max(|a|, |b|), single linkage;
  :func:`gibench.api.ranks.tie_groups`, docs/architecture.md, "Ranking pixels: ties") are one group, removed in
  increasing flat pixel index in both orders, so float noise of the saliency method does not reorder them; the
  reference adds 1e-4·N(0, 1) to the attribution, which breaks ties at random.
* **LeRF axis**: the fraction *removed*, as for MoRF (the reference's LeRF percentage keeps the top p instead, so its
  two x-axes mean different things).
* **Randomness**: the random order and the noise of image i come from ``numpy.random.default_rng([ctx.seed, i])``
  (i = the image's index among the evaluated test images), so they do not depend on the batch size.
* **Score**: accuracy on the true label, as the paper's plots (the reference's "probability" is that of class 0
  because ``run_road`` passes no prediction). Mean over the fractions, which are equally spaced by default (0.1 …
  0.9, the paper's no-retraining CIFAR-10 percentages).
* **Cost**: one saliency pass and one clean forward per image, then 3 forward passes and 3 sparse solves per image and
  fraction (27 of each with the default 9 fractions).
"""

from __future__ import annotations

__all__ = ["OFFSETS", "ORDERS", "Road", "RoadConfig", "impute", "noisy_linear_imputation", "removal_ranks"]

from typing import Annotated

import numpy as np
import torch
from scipy.linalg import solveh_banded
from torch import Tensor

from gibench.api.artifacts import batches, eval_subset, save_curves, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.ranks import fraction_count, group_positions, tie_groups
from gibench.api.saliency import SaliencyOptions, pixel_scores
from gibench.core.config_types import (
    ChannelReduction,
    Fraction,
    Increasing,
    Limit,
    NoiseStd,
    NonEmpty,
    plugin_config,
)

ORDERS = ("morf", "lerf", "random")
#: (dy, dx, weight) of the 8 neighbours: 1/6 for edge neighbours, 1/12 for diagonal ones (the reference's weights).
OFFSETS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
           (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 10) for i in range(1, 10))

ProperFractions = Annotated[tuple[Fraction, ...], NonEmpty, Increasing]


@plugin_config
class RoadConfig(SaliencyOptions):
    fractions: ProperFractions = DEFAULT_FRACTIONS
    """Fractions of pixels removed, each in (0, 1), increasing (default 0.1 … 0.9)."""
    noise: NoiseStd = 0.01
    """Std of the Gaussian noise added to every imputed value, pixel units (paper: 0.01)."""
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel."""
    max_images: Limit = 1000
    """The first N test images; 0 = all."""


def impute(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Linear imputation (no noise) of the ``removed`` pixels of images ``x``, float64.

    Args:
        x: (B, C, H, W) images.
        removed: (B, H, W) bool, the pixels to impute (in every channel).

    Returns:
        A copy of ``x`` whose removed pixels are the solution of the neighbour system (module docstring); every kept
        pixel is unchanged. All images are solved in one block-diagonal system.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    rm = np.asarray(removed, dtype=bool)
    n = int(rm.sum())
    if n == 0:
        return out
    var = np.full(rm.shape, -1, dtype=np.int64)  # unknowns numbered image by image, in raster order
    var[rm] = np.arange(n)
    inside = np.ones(rm.shape[1:], dtype=bool)
    diag, rhs = np.zeros(rm.shape[1:]), np.zeros(out.shape)
    rows, cols, vals = [], [], []
    for dy, dx, weight in OFFSETS:
        diag += weight * _shifted(inside, dy, dx, False)
        rhs += weight * _shifted(out, dy, dx, 0.0) * _shifted(~rm, dy, dx, False)[:, None]
        if (dy, dx) < (0, 1):  # neighbour earlier in raster order: one entry of the lower triangle
            neighbour = _shifted(var, dy, dx, -1)
            both = rm & (neighbour >= 0)
            rows.append(var[both])
            cols.append(neighbour[both])
            vals.append(np.full(len(rows[-1]), -weight))
    diag_of_unknowns = np.broadcast_to(diag, rm.shape)[rm]
    channels_last = out.transpose(0, 2, 3, 1)  # a view: writing into it writes into ``out``
    solution = _solve_banded(diag_of_unknowns, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                             rhs.transpose(0, 2, 3, 1)[rm])
    channels_last[rm] = solution.reshape(n, out.shape[1])
    return out


def _shifted(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``s[..., i, j] = a[..., i + dy, j + dx]`` where that lies inside the image, ``fill`` elsewhere."""
    s = np.full_like(a, fill)
    h, w = a.shape[-2:]
    s[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        a[..., max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return s


def _solve_banded(diag: np.ndarray, rows: np.ndarray, cols: np.ndarray, off: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve the symmetric positive definite system (diag on the diagonal, ``off`` at (rows, cols) and its mirror,
    rows > cols) by banded Cholesky.

    The unknowns are numbered image by image in raster order, so an unknown's neighbours are at most W + 1 positions
    away: the matrix is banded (and block-diagonal over images), and LAPACK's banded Cholesky solves every image of the
    batch in one call, in time linear in the number of unknowns.
    """
    band = int((rows - cols).max(initial=0))
    ab = np.zeros((band + 1, len(diag)))
    ab[0] = diag
    ab[rows - cols, cols] = off
    return solveh_banded(ab, rhs, lower=True, check_finite=False)


def noisy_linear_imputation(x: Tensor, removed: Tensor, noise: Tensor | None = None) -> Tensor:
    """ROAD's fill: :func:`impute`, plus ``noise`` (same shape as ``x``) on the removed pixels, clipped to [0, 1].

    ``x`` (B, C, H, W) and ``removed`` (B, H, W) may live on any device; the result is on ``x``'s device and dtype.
    """
    filled = torch.from_numpy(impute(x.detach().cpu().double().numpy(), removed.cpu().numpy()))
    if noise is not None:
        mask = removed.cpu().unsqueeze(1).expand_as(filled)
        filled = torch.where(mask, (filled + noise.cpu().double()).clamp(0, 1), filled)
    return filled.to(device=x.device, dtype=x.dtype)


def removal_ranks(scores: Tensor, random_order: Tensor) -> Tensor:
    """(3, N, P) removal position of every pixel for MoRF, LeRF and the random order (removed iff rank < k).

    ``scores`` (N, H, W); ``random_order`` (N, P) a permutation of 0..P−1 per image. Tie groups
    (:func:`gibench.api.ranks.tie_groups`, computed once) in order of score, a group's pixels by lower index first.
    """
    groups = tie_groups(scores)
    morf, lerf = group_positions(groups, descending=True), group_positions(groups, descending=False)
    return torch.stack([morf, lerf, random_order.to(morf.device)])


class Road(Evaluator):
    """ROAD: accuracy under MoRF / LeRF / random removal with noisy linear imputation; headline: LeRF − MoRF."""

    Config = RoadConfig
    version = "2"
    history = {"1": "first version: mean accuracy LeRF − MoRF (headline) and random − MoRF at fractions 0.1–0.9, "
                   "removed pixels filled by noisy linear imputation (noise 0.01)",
               "2": "pixel scores within a relative 1e-4 of each other are tied (single linkage) and removed in pixel "
                    "index order, so float noise of the saliency method no longer reorders them"}
    metrics = (
        Metric("gap_lerf_morf", True, "mean accuracy removing least-relevant first minus most-relevant first "
               "(noisy linear imputation)", headline=True, bounds=(-1.0, 1.0)),
        Metric("gap_random_morf", True, "mean accuracy removing in random order minus most-relevant first",
               bounds=(-1.0, 1.0)),
        Metric("morf_accuracy", False, "mean accuracy over the fractions, most relevant pixels removed first",
               bounds=(0.0, 1.0)),
        Metric("lerf_accuracy", True, "mean accuracy over the fractions, least relevant pixels removed first",
               bounds=(0.0, 1.0)),
        Metric("random_accuracy", True, "mean accuracy over the fractions, pixels removed in random order (the "
               "model's robustness to imputation; does not depend on the explanation)", bounds=(0.0, 1.0),
               diagnostic=True),
        Metric("clean_accuracy", True, "accuracy on the evaluated test images before any removal", bounds=(0.0, 1.0)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per image: one saliency map, the clean prediction, then one forward per order and fraction (the CPU
        linear solve of the imputations is not counted)."""
        cfg = self.config
        n = ctx.images(cfg.max_images)
        return EvaluationCost(work((ctx.saliency(), n * cfg.input_gradients_per_map),
                                   (ctx.forward(), n * (1 + len(ORDERS) * len(cfg.fractions)))))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, _ = eval_subset(ctx, cfg.max_images)
        _, c, h, w = x.shape
        ks = [fraction_count(f, h, w) for f in cfg.fractions]
        correct = torch.zeros(len(ORDERS), len(ks), dtype=torch.long)
        clean = 0
        preview: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            scores = pixel_scores(ctx.saliency(ctx.model, xb, yb).detach(), cfg.pixel_reduction)
            permutations, noise = self._draws(ctx.seed, range(sl.start, sl.stop), (c, h, w), len(ks))
            ranks = removal_ranks(scores, permutations)  # (3, B, P)
            with torch.no_grad():
                clean += int((ctx.model(xb).argmax(1) == yb).sum())
            for i, k in enumerate(ks):
                removed = (ranks < k).view(len(ORDERS) * len(yb), h, w)
                step_noise = noise[:, :, i].transpose(0, 1).reshape(-1, c, h, w)  # (3·B, C, H, W), order-major
                filled = noisy_linear_imputation(xb.repeat(len(ORDERS), 1, 1, 1), removed, step_noise)
                with torch.no_grad():
                    hits = ctx.model(filled).argmax(1) == yb.repeat(len(ORDERS))
                correct[:, i] += hits.view(len(ORDERS), -1).sum(1).cpu()
                if not preview and i == len(ks) // 2:
                    preview = self._preview(xb, scores, filled)
        return self._result(ctx, correct, clean, len(y), preview)

    def _draws(self, seed: int, indices: range, shape: tuple[int, int, int], steps: int) -> tuple[Tensor, Tensor]:
        """Per image (independent of the batch): a random pixel order (B, P) and noise (B, 3, steps, C, H, W)."""
        perms, noises = [], []
        for i in indices:
            rng = np.random.default_rng([seed, i])
            perms.append(rng.permutation(shape[1] * shape[2]))
            draw = rng.standard_normal((len(ORDERS), steps, *shape), dtype=np.float32)
            noises.append(draw * np.float32(self.config.noise))
        return torch.from_numpy(np.stack(perms)), torch.from_numpy(np.stack(noises))

    def _preview(self, x: Tensor, scores: Tensor, filled: Tensor) -> list[Tensor]:
        """Grid rows: inputs, saliency, then the middle fraction imputed under MoRF, LeRF and random order."""
        n, b = min(8, x.shape[0]), x.shape[0]
        rows = [x[:n], to_unit(scores[:n].unsqueeze(1))] + [filled[o * b:o * b + n] for o in range(len(ORDERS))]
        return [r.detach().cpu() for r in rows]

    def _result(self, ctx: EvalContext, correct: Tensor, clean: int, n: int, preview: list[Tensor]) -> EvalResult:
        fractions = tuple(self.config.fractions)
        accuracy = correct.double() / max(n, 1)
        curves = {order: Curve(fractions, tuple(accuracy[o].tolist()), "fraction of pixels removed", "accuracy")
                  for o, order in enumerate(ORDERS)}
        means = {order: float(accuracy[o].mean()) for o, order in enumerate(ORDERS)}
        scalars = {
            "gap_lerf_morf": means["lerf"] - means["morf"],
            "gap_random_morf": means["random"] - means["morf"],
            "morf_accuracy": means["morf"], "lerf_accuracy": means["lerf"], "random_accuracy": means["random"],
            "clean_accuracy": clean / max(n, 1),
        }
        artifacts = {"curves": save_curves(ctx, "road_curves.json", curves)}
        if preview:
            artifacts["saliency_grid"] = save_grid(ctx, "road_grid.png", preview)
        return EvalResult(scalars=scalars, curves=curves, artifacts=artifacts)
