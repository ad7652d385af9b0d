"""Counting the model passes a computation really runs, with hooks: the check of
:meth:`gibench.Regularizer.passes_per_step` (and of any other pass count, such as an evaluator's cost).

:func:`count_passes` puts a forward pre-hook on the top module of the model. Each call of the model counts its
images (the first argument's batch size) as forwards, with or without gradient, in any mode. Under gradient mode the
hook also routes the input through a counting identity, an autograd function tied to a leaf tensor that requires a
gradient, so that every backward of the call's graph reaches it, whether or not the input itself requires a
gradient:

* a gradient that flows back through the call's graph (``loss.backward()``, an input gradient, an attack step)
  passes the identity once per backward call (autograd runs each node once, after summing what reaches it) and counts
  the images it carries as backwards;
* when that backward builds a graph itself (``create_graph=True``), the gradient it returns passes through a second
  counting identity, so a later backward through *that* graph (the training backward of a gradient penalty, a
  Hessian-vector product) counts its images once more, and so on for every order.

So a backward counts once per graph it passes, a forward's or a backward's, as the rule of
:class:`gibench.api.passes.Passes` says. Not seen: a gradient taken with respect to parameters only
(``torch.autograd.grad(loss, model.parameters())``), which never needs the input's node, and calls of submodules
from outside the model.
"""

from __future__ import annotations

__all__ = ["PassCount", "count_passes"]

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gibench.api.passes import Passes


@dataclass
class PassCount:
    """Images counted by :func:`count_passes`: through the model (``forward_images``) and back through one of its
    graphs (``backward_images``)."""

    forward_images: int = 0
    backward_images: int = 0

    def per_image(self, batch_size: int) -> Passes:
        """The counts as :class:`~gibench.api.passes.Passes` per image of a batch of ``batch_size``."""
        return Passes(self.forward_images / batch_size, self.backward_images / batch_size)


class _Counted(torch.autograd.Function):
    """Identity tied to ``anchor`` (a leaf that requires a gradient), so that every backward of the graph runs it;
    counts the images of each backward that passes. Put on the model's input, and on every gradient a
    ``create_graph`` backward returns, so that a backward through that gradient's graph counts too."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, anchor: Tensor, count: PassCount) -> Tensor:
        ctx.anchor, ctx.count = anchor, count
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        return _passed(ctx, grad), None, None


def _passed(ctx: Any, grad: Tensor) -> Tensor | None:
    ctx.count.backward_images += grad.shape[0]
    if not ctx.needs_input_grad[0]:
        return None
    if torch.is_grad_enabled():  # create_graph: a backward through this gradient's graph counts too
        return _Counted.apply(grad, ctx.anchor, ctx.count)
    return grad


@contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCount]:
    """Count the images that go through ``model`` and back while the context is open (see the module docstring).

    Args:
        model: the model whose top-level calls are counted.

    Returns:
        A context manager yielding the :class:`PassCount`, updated as passes run (backwards after the context closes
        are not counted); the hook is removed on exit.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from gibench.testing import tiny_model
        >>> model, x, y = tiny_model(), torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
        >>> with count_passes(model) as count:
        ...     F.cross_entropy(model(x), y).backward()
        >>> count.per_image(4)
        Passes(forward=1.0, backward=1.0)
    """
    count = PassCount()
    anchor = torch.zeros((), requires_grad=True)

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]
        count.forward_images += x.shape[0]
        if not torch.is_grad_enabled():
            return None
        return (_Counted.apply(x, anchor, count), *args[1:])

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
