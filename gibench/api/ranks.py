"""Ranks for saliency evaluators: tie-averaged ranks, Spearman's correlation, rank positions, and counts at a fraction.

Public core module, one implementation for every evaluator (built-in or plugin), so that two evaluators never rank
the same map differently:

* :func:`rankdata_average` and :func:`spearman`: Spearman's rank correlation (Spearman 1904) is the Pearson
  correlation of the ranks, tied values given the average of their ranks (``scipy.stats.rankdata(method="average")``,
  ``scipy.stats.spearmanr``). The map-agreement metrics use it: ``score_alignment`` (saliency against the data score),
  ``random_logit`` (Sixt et al., ICML 2020) and ``randomisation`` (MPRT, Adebayo et al., NeurIPS 2018).
* :func:`rank_positions` and :func:`fraction_count`: the removal and retraining evaluators (``pixel_perturbation``,
  Srinivas & Fleuret, ICLR 2021; ``keep_remove``, Hesse et al., NeurIPS 2021; ``road``, Rong et al., ICML 2022;
  ``diffroar``, Shah et al., NeurIPS 2021) remove or keep the top-k fraction of pixels. Each pixel gets its
  position in the order of its score (a permutation of 0..P−1, ties to the lower flat index), so the pixels at
  fraction f are one comparison ``position < fraction_count(f, P)`` for the whole batch, with no loop over images.
"""

from __future__ import annotations

__all__ = ["fraction_count", "rank_positions", "rankdata_average", "spearman"]

import math

import torch
from torch import Tensor


def _average_ranks_rows(values: Tensor) -> Tensor:
    """Ranks 1..P of every row of a (N, P) tensor, ties averaged, float64 (see :func:`rankdata_average`).

    A stable sort groups equal values; each group's rank is the mean of its positions. The mean of consecutive
    integers is an integer or a half-integer, so every rank is exact in float64 on every device.
    """
    n, p = values.shape
    ordered, order = torch.sort(values, dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(1) - 1
    positions = torch.arange(1, p + 1, dtype=torch.float64, device=values.device).expand(n, -1)
    mean_pos = torch.zeros_like(positions).scatter_reduce(1, group, positions, reduce="mean", include_self=False)
    return torch.empty_like(positions).scatter_(1, order, mean_pos.gather(1, group))


def rankdata_average(x: Tensor, dim: int = -1) -> Tensor:
    """Ranks 1..P of ``x`` along ``dim``, tied values given the average of their ranks; float64, same shape as ``x``.

    The torch counterpart of ``scipy.stats.rankdata(x, method="average", axis=dim)``: computed on ``x``'s device,
    batched over every other dimension. An all-tied row ranks (P + 1)/2 everywhere.
    """
    moved = x.movedim(dim, -1)
    ranks = _average_ranks_rows(moved.reshape(-1, moved.shape[-1]))
    return ranks.view(moved.shape).movedim(-1, dim)


def spearman(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Spearman's rank correlation of ``a`` and ``b`` along ``dim`` (float64; ``dim`` reduced away).

    The Pearson correlation of :func:`rankdata_average` ranks, as ``scipy.stats.spearmanr``; 0 where either input is
    constant along ``dim`` (scipy returns NaN there: a constant map carries no ranking, so it agrees with nothing).
    Not clamped to [−1, 1], so rounding may exceed 1 by an ulp for identical rankings.
    """
    ra, rb = rankdata_average(a.double(), dim), rankdata_average(b.double(), dim)
    ra, rb = ra - ra.mean(dim, keepdim=True), rb - rb.mean(dim, keepdim=True)
    norms = ra.norm(dim=dim) * rb.norm(dim=dim)
    return torch.where(norms > 0, (ra * rb).sum(dim) / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def rank_positions(scores: Tensor, descending: bool) -> Tensor:
    """The position of every unit in the order of ``scores`` (N, ...), flattened per image: (N, P) int64.

    Ascending or descending; ties go to the lower flat index first in both directions (a stable sort), so every row is
    a permutation of 0..P−1 that does not depend on the device or the batch. ``position < k`` selects the k units
    ranked first: the pixels removed (or kept) at a fraction with k = :func:`fraction_count`.
    """
    flat = scores.flatten(1)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    order = torch.sort(flat, dim=1, descending=descending, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, positions)


def fraction_count(fraction: float, size: int, *more: int) -> int:
    """floor(f·P + 0.5): how many of P = ``size`` · ∏ ``more`` units make up ``fraction`` f (nearest, halves up).

    Why not ``round``: Python rounds halves to even, so f·P = 2.5 would remove 2 pixels and 3.5 remove 4. The product
    is taken left to right in floating point (``fraction_count(f, h, w)`` is (f·h)·w, ``fraction_count(f, h * w)``
    is f·(h·w)); the two can differ in the last bit and so, right at a half, by one unit. Each evaluator keeps the
    form it has always used, so its stored numbers stay the same.
    """
    product = fraction * size
    for factor in more:
        product = product * factor
    return int(math.floor(product + 0.5))
