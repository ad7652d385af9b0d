"""The explained quantity and how pixel scores are aggregated from it.

DESIGN §4: the explained quantity is the input-gradient of the **label logit** f_y(x) (not log-softmax, not the
loss), per sample: sum f_{y_b}(x_b) over the batch, then take one gradient (samples do not interact unless the
model mixes them, e.g. BatchNorm in train mode; at explanation time models are in eval mode).
"""

from __future__ import annotations

__all__ = [
    "PixelReduction", "input_gradient", "label_logit", "leaf_logits_and_input_gradient",
    "logits_and_input_gradient", "pixel_scores",
]

from typing import Literal

import torch
from torch import Tensor, nn

PixelReduction = Literal["abs_sum", "channel_std", "abs"]


def label_logit(logits: Tensor, y: Tensor) -> Tensor:
    """f_y(x) for every sample: ``logits[b, y[b]]``, shape (N,)."""
    return logits.gather(1, y.view(-1, 1)).squeeze(1)


def leaf_logits_and_input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass and the gradient of the label logits with respect to the input.

    Returns ``(leaf, logits, grad)``: ``leaf`` is the detached copy of ``x`` the gradient was taken against (a
    Hessian-vector product must differentiate ``grad`` against it again), ``grad`` has the shape of ``x``. With
    ``create_graph=True`` the gradient is itself differentiable (double backward), as gradient penalties need, and
    ``logits`` can be reused for the cross-entropy so that no second forward pass is needed.
    """
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(leaf)
        (grad,) = torch.autograd.grad(label_logit(logits, y).sum(), leaf, create_graph=create_graph)
    return leaf, logits, grad


def logits_and_input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """``(logits, ∇x f_y(x))`` from one forward pass; see :func:`leaf_logits_and_input_gradient`."""
    _, logits, grad = leaf_logits_and_input_gradient(model, x, y, create_graph=create_graph)
    return logits, grad


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
    """∇x f_y(x), per sample, same shape as ``x``. The model's train/eval mode is left as it is."""
    _, grad = logits_and_input_gradient(model, x, y, create_graph=create_graph)
    return grad if create_graph else grad.detach()


def pixel_scores(grad: Tensor, reduction: PixelReduction = "abs_sum") -> Tensor:
    """Aggregate a (N, C, H, W) gradient into per-pixel scores.

    ``abs_sum`` (default): Σ_c |g_c|, shape (N, H, W). ``channel_std``: the standard deviation of the signed gradient
    across channels, as Srinivas & Fleuret's code does on RGB (zero for one channel, so it falls back to |g| there),
    shape (N, H, W). ``abs``: per-coordinate |g|, shape (N, C, H, W), as DiffROAR ranks coordinates.
    """
    if reduction == "abs_sum":
        return grad.abs().sum(dim=1)
    if reduction == "channel_std":
        if grad.shape[1] == 1:
            return grad.abs()[:, 0]
        return grad.std(dim=1, unbiased=False)
    if reduction == "abs":
        return grad.abs()
    raise ValueError(f"unknown pixel reduction {reduction!r}; use 'abs_sum', 'channel_std' or 'abs'")
