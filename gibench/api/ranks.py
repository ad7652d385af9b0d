"""Ranks for saliency evaluators: the tie rule, tie-averaged ranks, Spearman's correlation, rank positions, and counts
at a fraction.

Public core module, one implementation for every evaluator (built-in or plugin), so that two evaluators never rank
the same map differently:

* :func:`tied` and :func:`tie_groups`: **the tie rule** (docs/architecture.md, "Ranking pixels: ties"), used by
  everything below.
* :func:`rankdata_average` and :func:`spearman`: Spearman's rank correlation (Spearman 1904) is the Pearson
  correlation of the ranks, every tie group given the average of its ranks (with ``rtol=0``, exactly
  ``scipy.stats.rankdata(method="average")`` and ``scipy.stats.spearmanr``). The map-agreement metrics use it:
  ``score_alignment`` (saliency against the data score), ``random_logit`` (Sixt et al., ICML 2020) and
  ``randomisation`` (MPRT, Adebayo et al., NeurIPS 2018).
* :func:`rank_positions`, :func:`group_positions` and :func:`fraction_count`: the removal, retraining and top-k
  evaluators (``pixel_perturbation``, Srinivas & Fleuret, ICLR 2021; ``keep_remove``, Hesse et al., NeurIPS 2021;
  ``road``, Rong et al., ICML 2022; ``diffroar``, Shah et al., NeurIPS 2021; ``blockmnist``'s top-k share) remove or
  keep the top-k fraction of pixels. Each pixel gets its position in the order of its tie group, inside a group by
  flat index (a permutation of 0..P−1), so the pixels at fraction f are one comparison
  ``position < fraction_count(f, P)`` for the whole batch, with no loop over images.

**The tie rule.** Two scores a and b of one map are *linked* when |a − b| ≤ ``rtol`` · max(|a|, |b|) (equal scores
always are); a tie group is a maximal run of the map's sorted scores in which each score is linked to the next
(single linkage). Groups are numbered 0, 1, … in increasing score. Removal orders take the groups in order of score
and, inside a group, the pixels in increasing flat index (row-major), the same for every saliency method; rank
correlations give every pixel of a group the group's average rank. Everything is batched torch on the scores' device
(two sorts and a cumulative sum per row, no loop over pixels), and every operation is exact or correctly rounded, so
the CPU and a GPU group alike.

**The tolerance**, :data:`TIE_RTOL` = 1e-4, relative to the two scores themselves. Measured on ``gibench_cnn`` with
``bias: false`` (an X-DNN) trained one epoch on 2,000 ``mnist_subset`` images, over 200 test maps, X-Gradient against
Integrated Gradients (32 steps), the same attribution on an X-DNN:

* *Relative to each pair, not to the map's largest score*: the float noise is relative to each score (a median 7e-8
  and a 99.9th percentile 3.4e-7 *of that score*). A tolerance of 1e-5 × the map's largest score instead chains the
  many small scores of an X-Gradient map into one group (up to 268 of 784 pixels) and reorders 44 % of the pixels
  against their exact order; the pair-relative rule at 1e-4 reorders 0.9 % (groups of two or three nearly equal
  scores, spanning at most 6e-5 of the map's largest score). It is scale-free (a map times any positive constant
  groups alike); 0 is linked only to 0, and scores of opposite sign never.
* *1e-4*: two tied scores stay linked as long as each moves by less than half of it, 5e-5 of itself. Of the
  146,659 non-zero scores, 99.93 % moved by less than 1e-6 of themselves, 0.055 % by more than 1e-5 and 0.03 % by
  more than 5e-5 (mostly small scores; in absolute terms up to 6e-6 of the map's largest score, the size of the
  "4e-6" reported between the two methods), so 1e-4 keeps all but those few ties where 1e-5 would lose twice as
  many; and it stays small against the order that matters (the 0.9 % above). Scores that move past a neighbour more
  than the tolerance apart, and maps where the two methods truly differ (3 of the 200, by up to 6e-3 of the largest
  score), are not ties: no tolerance that keeps the ranking absorbs them. On that model (1,000 test images)
  ``pixel_perturbation``'s headline was the same for both methods with and without the rule.

**Why robust, and the residual case.** A perturbation of relative size δ (δ ≈ 1e-7 for float noise) moves each gap
between neighbouring sorted scores by at most about 2δ of the scores, so a link appears or disappears only when a
gap lies within about 2δ·|score| of the tolerance ``rtol``·|score|; then (and only then) two groups merge or split
and the order of their pixels may change. Measured on the maps above, about 0.03 gaps per 784-pixel map lie in that
window for δ = 1e-7. A fixed quantization grid (rounding scores to multiples of a step) would not be robust: a score
within δ of a grid edge changes its bin, and so its order, however the step is chosen. Averaging a removal curve over
the orders of each group would be robust too, but needs one curve per order; the order by pixel index is one
deterministic representative, and for rank correlations the group's average rank is that average.
"""

from __future__ import annotations

__all__ = [
    "TIE_RTOL", "fraction_count", "group_positions", "rank_positions", "rankdata_average", "spearman", "tie_groups",
    "tied",
]

import math

import torch
from torch import Tensor

#: The relative tolerance of the tie rule: scores a and b are linked when |a − b| ≤ TIE_RTOL · max(|a|, |b|) (module
#: docstring: why relative to the pair, why 1e-4, the residual case).
TIE_RTOL = 1e-4


def tied(a: Tensor, b: Tensor, rtol: float = TIE_RTOL) -> Tensor:
    """Elementwise: are ``a`` and ``b`` linked by the tie rule, |a − b| ≤ ``rtol`` · max(|a|, |b|)? Bool, broadcast.

    In float64 (a float32 score converts exactly; the difference and the product are correctly rounded on every
    device). Equal values are always linked, infinite ones included; a finite value is never linked to an infinite
    one, 0 only to 0, and values of opposite sign never.
    """
    a, b = a.double(), b.double()
    gap = (a - b).abs()
    return (a == b) | (gap.isfinite() & (gap <= rtol * torch.maximum(a.abs(), b.abs())))


def _group_starts(ordered: Tensor, rtol: float) -> Tensor:
    """(N, P) bool: True where a sorted row's score starts a new tie group (is not :func:`tied` to the one before)."""
    starts = torch.ones(ordered.shape, dtype=torch.bool, device=ordered.device)
    starts[:, 1:] = ~tied(ordered[:, 1:], ordered[:, :-1], rtol)
    return starts


def tie_groups(scores: Tensor, rtol: float = TIE_RTOL) -> Tensor:
    """The tie group of every unit of ``scores`` (N, ...), flattened per row: (N, P) int64, numbered 0, 1, … in
    increasing score.

    The tie rule of the module docstring: single linkage of the sorted scores, two neighbours linked when
    |a − b| ≤ ``rtol`` · max(|a|, |b|). ``rtol=0`` groups exactly equal scores only. The numbering does not depend
    on the order of the scores inside a group, so a perturbation that keeps the links keeps every group number.
    """
    flat = scores.flatten(1)
    ordered, order = torch.sort(flat, dim=1, stable=True)
    numbered = _group_starts(ordered, rtol).long().cumsum(1) - 1
    return torch.empty_like(numbered).scatter_(1, order, numbered)


def group_positions(groups: Tensor, descending: bool) -> Tensor:
    """The position of every unit in the order of its group (N, P): (N, P) int64, a permutation of 0..P−1 per row.

    Groups in increasing (or, ``descending``, decreasing) number; inside a group the units in increasing flat index, in
    both directions. ``groups`` is any (N, P) integer labelling with values in [0, P] (:func:`tie_groups`, or such
    groups with some units moved to a last group P, as ``keep_remove`` does with the scores ≤ 0).
    """
    p = groups.shape[1]
    index = torch.arange(p, device=groups.device)
    rank = groups.amax(1, keepdim=True) - groups if descending else groups
    order = torch.sort(rank * p + index, dim=1).indices  # distinct keys: the order is unique
    return torch.empty_like(order).scatter_(1, order, index.expand_as(order))


def rank_positions(scores: Tensor, descending: bool, rtol: float = TIE_RTOL) -> Tensor:
    """The position of every unit in the order of ``scores`` (N, ...), flattened per image: (N, P) int64.

    Ascending or descending by :func:`tie_groups`; the units of one group in increasing flat index in both directions
    (:func:`group_positions`), so every row is a permutation of 0..P−1 that depends neither on the device, nor on the
    batch, nor on float noise inside a group. ``position < k`` selects the k units ranked first: the pixels removed (or
    kept) at a fraction with k = :func:`fraction_count`. ``rtol=0`` ranks exact ties by index only (a stable sort).
    """
    return group_positions(tie_groups(scores, rtol), descending)


def _average_ranks_rows(values: Tensor, rtol: float) -> Tensor:
    """Ranks 1..P of every row of a (N, P) tensor, every tie group given its average rank, float64 (see
    :func:`rankdata_average`).

    A stable sort puts each group's units next to each other; a group's rank is the mean of its positions. The mean
    of consecutive integers is an integer or a half-integer, so every rank is exact in float64 on every device.
    """
    n, p = values.shape
    ordered, order = torch.sort(values, dim=1, stable=True)
    group = _group_starts(ordered, rtol).long().cumsum(1) - 1
    positions = torch.arange(1, p + 1, dtype=torch.float64, device=values.device).expand(n, -1)
    mean_pos = torch.zeros_like(positions).scatter_reduce(1, group, positions, reduce="mean", include_self=False)
    return torch.empty_like(positions).scatter_(1, order, mean_pos.gather(1, group))


def rankdata_average(x: Tensor, dim: int = -1, rtol: float = TIE_RTOL) -> Tensor:
    """Ranks 1..P of ``x`` along ``dim``, every tie group (:func:`tie_groups` with ``rtol``) given the average of its
    ranks; float64, same shape as ``x``.

    With ``rtol=0`` the torch counterpart of ``scipy.stats.rankdata(x, method="average", axis=dim)``. Computed on
    ``x``'s device, batched over every other dimension. An all-tied row ranks (P + 1)/2 everywhere.
    """
    moved = x.movedim(dim, -1)
    ranks = _average_ranks_rows(moved.reshape(-1, moved.shape[-1]), rtol)
    return ranks.view(moved.shape).movedim(-1, dim)


def spearman(a: Tensor, b: Tensor, dim: int = -1, rtol: float = TIE_RTOL) -> Tensor:
    """Spearman's rank correlation of ``a`` and ``b`` along ``dim`` (float64; ``dim`` reduced away).

    The Pearson correlation of :func:`rankdata_average` ranks (tie groups of each input by the tie rule with
    ``rtol``; with ``rtol=0``, as ``scipy.stats.spearmanr``); 0 where either input is one tie group along ``dim``
    (scipy returns NaN for a constant input: a constant map carries no ranking, so it agrees with nothing). Not
    clamped to [−1, 1], so rounding may exceed 1 by an ulp for identical rankings.
    """
    ra, rb = rankdata_average(a.double(), dim, rtol), rankdata_average(b.double(), dim, rtol)
    ra, rb = ra - ra.mean(dim, keepdim=True), rb - rb.mean(dim, keepdim=True)
    norms = ra.norm(dim=dim) * rb.norm(dim=dim)
    return torch.where(norms > 0, (ra * rb).sum(dim) / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


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
