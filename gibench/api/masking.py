"""Pixel masking for perturbation evaluators: pixels ranked in both directions, fill images, masked copies and the
area under a curve.

One implementation serves ``pixel_perturbation`` (Srinivas & Fleuret, "Rethinking the Role of Gradient-based
Attribution Methods for Model Interpretability", ICLR 2021: remove the least or the most salient pixels) and
``keep_remove`` (Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks", NeurIPS 2021, after the
Keep/Remove benchmark of Lundberg et al., "From local explanations to global understanding with explainable AI for
trees", Nature Machine Intelligence 2020: keep the most or the least attributed pixels). Both rank pixels by a score
with the same deterministic tie rule, count pixels with the same rounding, replace pixels by the same fill images (the
blurred copy included) and build every masked batch with one comparison ``rank < k``, so the two evaluators mask
pixels the same way. The tie groups, rank positions and the pixel count floor(f·P + 0.5) are
:func:`gibench.api.ranks.tie_groups`, :func:`gibench.api.ranks.group_positions` and
:func:`gibench.api.ranks.fraction_count`, shared with ``road``, ``diffroar`` and ``blockmnist``. Images are in pixel
space (docs/architecture.md, "Pixel space").

* :func:`removal_ranks`: the rank positions of per-pixel scores (N, H, W) in ascending and in descending order of
  their tie groups (scores within the tie rule's relative tolerance are one group, docs/architecture.md, "Ranking
  pixels: ties"), the pixels of a group in increasing flat index in both orders.
* :func:`replace_ranked`: a batch with the pixels of rank < k (all channels) replaced by a fill, or with every other
  pixel replaced (``inside=False``: the pixels of rank < k are kept); ``k`` is one count or a count per image
  (``keep_remove`` never keeps a pixel whose clipped score is 0, so its count is capped per image).
* :func:`fill_images`: the replacement value of every pixel: the image's per-channel mean (``image_mean``, Srinivas &
  Fleuret's "mean pixel value of the image"), a constant (0.5 in their code), the train split's per-channel mean
  (``dataset_mean``) or :func:`blur`.
* :func:`blur`: a Gaussian-blurred copy, Hesse et al.'s kernel (51 px, σ 41 at 224 px) scaled to the image.
* :func:`trapezoid`: the trapezoid rule over the points, as ``np.trapz`` (``keep_remove``'s areas, as Hesse et al.'s
  code).
* :func:`area`: the trapezoid area over a log10 or linear fraction axis divided by the axis width, so a constant a
  gives a (``pixel_perturbation``'s areas; Srinivas & Fleuret's code computes no area).

``pixel_perturbation``'s numbers were the same as before these helpers were shared (``tests/test_keep_remove.py`` pins
them); the tie rule changed them where scores lie within its tolerance (``pixel_perturbation`` version 2).
"""

from __future__ import annotations

__all__ = [
    "FILLS", "area", "blur", "fill_images", "removal_ranks", "replace_ranked", "trapezoid",
]

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gibench.api.ranks import group_positions, tie_groups

#: The fill modes of :func:`fill_images`.
FILLS = ("image_mean", "constant", "dataset_mean", "blur")


def removal_ranks(scores: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`gibench.api.ranks.rank_positions` of ``scores`` (N, H, W) in both directions: ``(ascending, descending)``,
    each (N, P) with P = H·W; the tie groups are computed once, a group's pixels go in increasing flat index."""
    groups = tie_groups(scores)
    return group_positions(groups, descending=False), group_positions(groups, descending=True)


def replace_ranked(x: Tensor, fill: Tensor, ranks: Tensor, k: int | Tensor, inside: bool = True) -> Tensor:
    """``x`` (N, C, H, W) with pixels replaced by ``fill`` (same shape) in all channels.

    ``inside=True`` replaces the pixels of rank < k (removal); ``inside=False`` replaces every other pixel, i.e. keeps
    the pixels of rank < k. ``k`` is one count for the batch or a per-image tensor (N,).
    """
    bound = k if isinstance(k, int) else k.view(-1, 1)
    selected = ranks < bound
    mask = (selected if inside else ~selected).view(x.shape[0], 1, *x.shape[2:])
    return torch.where(mask, fill, x)


def blur(x: Tensor, sigma_fraction: float) -> Tensor:
    """A Gaussian-blurred copy of ``x`` (N, C, H, W), channel by channel, reflect padding (torchvision).

    Hesse et al.'s kernel (51 px, σ 41 at 224 px) scaled to the image: σ = ``sigma_fraction`` × the shorter side,
    kernel ≈ 51/41·σ rounded down to an odd size, at least 3 and at most 2·side − 1 (what reflect padding allows).
    """
    from torchvision.transforms.functional import gaussian_blur

    side = min(x.shape[-2:])
    sigma = sigma_fraction * side
    kernel = 2 * int(51 / 41 * sigma / 2) + 1
    kernel = max(3, min(kernel, 2 * side - 1))
    return gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def fill_images(
    x: Tensor, fill: str, dataset_mean: Sequence[float], fill_value: float = 0.5, blur_sigma: float = 41 / 224,
) -> Tensor:
    """The replacement value of every pixel of ``x`` (N, C, H, W), same shape, contiguous (``torch.where`` is much
    slower with a broadcast operand).

    ``image_mean``: each image's per-channel mean; ``constant``: ``fill_value``; ``dataset_mean``: the per-channel
    train-split mean; ``blur``: :func:`blur` with ``blur_sigma``.
    """
    if fill == "image_mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if fill == "constant":
        return torch.full_like(x, fill_value)
    if fill == "dataset_mean":
        mean = torch.tensor(tuple(dataset_mean), dtype=x.dtype, device=x.device)
        return mean.view(1, -1, 1, 1).expand_as(x).contiguous()
    if fill == "blur":
        return blur(x, blur_sigma).contiguous()
    raise ValueError(f"unknown fill {fill!r}; use one of {FILLS}")


def trapezoid(x: Sequence[float], y: Sequence[float]) -> float:
    """The trapezoid rule ∫ y dx over the points (``np.trapz(y, x)``); one point gives 0."""
    u, v = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.sum((v[1:] + v[:-1]) * np.diff(u)) / 2.0)


def area(fractions: Sequence[float], values: Sequence[float], axis: str = "log") -> float:
    """Trapezoid area under ``values`` over the fraction axis (log10 or linear), divided by the axis width, so a
    constant a gives a; one point gives its value."""
    u = np.log10(np.asarray(fractions, dtype=np.float64)) if axis == "log" else np.asarray(fractions, np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(u) == 1:
        return float(v[0])
    return float(np.sum((v[1:] + v[:-1]) * np.diff(u)) / 2.0 / (u[-1] - u[0]))
