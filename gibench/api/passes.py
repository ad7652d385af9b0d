"""Forward/backward-pass machinery: precision control for the trainer, and helpers for regularizers that run extra
forward passes (noisy copies, attacks).

Public core module: the trainer uses :func:`tf32_off`, the built-in regularizers (and plugins) the rest.

* :func:`extra_pass_bn` sets the BatchNorm mode of an extra forward pass (``noisy_bn`` in the configs):

  - ``"train"``: leave the modules as they are (the model arrives in train mode), so BatchNorm normalizes the extra
    batch with its own statistics and updates the running statistics a second time in the step. This is what the
    reference code of Srinivas & Fleuret (idiap/rethinking-saliency) and of PAGs (tml-tuebingen/pags) does, because
    everything there runs under ``model.train()``.
  - ``"batch"``: batch statistics as in ``"train"``, but the running statistics (and ``num_batches_tracked``) are
    left untouched, so they only ever see clean batches. Same numbers for the loss as ``"train"``.
  - ``"eval"``: BatchNorm uses its running statistics. The clean pass still uses batch statistics, so the mismatch
    between the two normalizations enters any finite difference f(x+v) − f(x); use it only with models whose
    BatchNorm is frozen or absent.

  Only BatchNorm layers are touched; dropout keeps its mode. (Dropout draws a fresh mask in every pass, which would
  swamp a finite difference: the score-matching backbones have none.)
* :func:`module_modes` switches a whole model to train or eval mode and restores every submodule's own flag after.
* :func:`full_precision` runs its body in true float32: autocast off, and TF32 off (:func:`tf32_off`). Finite
  differences such as (2/σ²)·(f(x+v) − f(x)) amplify rounding by 2/σ² (2·10⁴ at σ = 0.01): meaningless in
  float16/bfloat16, and TF32 (10 mantissa bits, which cuDNN convolutions use by default on Ampere and newer GPUs)
  gives errors of order 10² in h for logits of order 10. The context covers the forward passes that the loss runs;
  the trainer runs the backward of such regularizers (those not ``amp_safe``) with TF32 off too.
* :func:`per_sample_norm` and :func:`batch_view` are small shared utilities.
* :class:`Passes` counts model passes per image (forwards, backwards), the device-independent unit of work that
  :meth:`gibench.api.regularizer.Regularizer.passes_per_step` declares and ``gibench run --estimate`` adds up.
"""

from __future__ import annotations

__all__ = ["BACKWARD_IN_FORWARDS", "BN_MODES", "Passes", "ball_ascent_step", "batch_view", "extra_pass_bn",
           "full_precision", "module_modes", "per_sample_norm", "project_to_ball", "tf32_off"]

import typing
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from gibench.core.config_types import BNMode

#: The work of one backward in forwards: a backward computes the gradients with respect to a layer's input and its
#: weights, each about one forward's arithmetic (the convention of Kaplan et al., "Scaling Laws for Neural Language
#: Models", 2020: training costs 3 forwards per example). :attr:`Passes.forward_equivalents` uses it.
BACKWARD_IN_FORWARDS = 2


@dataclass(frozen=True)
class Passes:
    """Model passes per image: ``forward`` images through the model, ``backward`` gradients back through it.

    The device-independent unit of gibench's work (``gibench run --estimate``). The counting rules are those of
    :meth:`gibench.api.regularizer.Regularizer.passes_per_step`: every forward call counts its images (with or
    without gradient, in train or eval mode); every passage of a gradient back through one graph of the model counts
    one backward per image, whether that graph is a forward's (a training backward, an input gradient, an attack
    step) or a backward's (the training backward through a ``create_graph`` input gradient: a double backward
    counts as **one** backward). ``forward_equivalents`` weighs a backward as :data:`BACKWARD_IN_FORWARDS` forwards.

    Example:
        >>> step = Passes(forward=1, backward=3)  # gradient_norm: forward, input gradient, double backward
        >>> step.forward_equivalents, (2 * step).forward_equivalents, (step + Passes(1, 1)).backward
        (7, 14, 4)
    """

    forward: float = 0
    backward: float = 0

    @property
    def forward_equivalents(self) -> float:
        """``forward + BACKWARD_IN_FORWARDS × backward``: the work in forwards."""
        return self.forward + BACKWARD_IN_FORWARDS * self.backward

    def __add__(self, other: Passes) -> Passes:
        if not isinstance(other, Passes):
            return NotImplemented
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, count: float) -> Passes:
        if isinstance(count, Passes):
            return NotImplemented
        return Passes(self.forward * count, self.backward * count)

    __rmul__ = __mul__


BN_MODES: tuple[str, ...] = typing.get_args(BNMode)


def _batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def extra_pass_bn(model: nn.Module, mode: str) -> Iterator[None]:
    """Run the body with the BatchNorm layers of ``model`` in ``mode`` (see the module docstring); restore after."""
    if mode == "train":
        yield
        return
    bns = _batchnorms(model)
    if mode == "batch":
        saved = [m.track_running_stats for m in bns]
        for m in bns:
            m.track_running_stats = False  # train mode + no tracking: batch statistics, no running-stat update
        try:
            yield
        finally:
            for m, flag in zip(bns, saved):
                m.track_running_stats = flag
        return
    if mode == "eval":
        saved = [m.training for m in bns]
        for m in bns:
            m.train(False)
        try:
            yield
        finally:
            for m, flag in zip(bns, saved):
                m.train(flag)
        return
    raise ValueError(f"unknown BatchNorm mode {mode!r}; use one of {BN_MODES}")


@contextmanager
def module_modes(model: nn.Module, train: bool) -> Iterator[None]:
    """Put every submodule of ``model`` in train (``True``) or eval mode; restore each submodule's own flag after."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


@contextmanager
def full_precision(x: Tensor) -> Iterator[None]:
    """True float32 for the body: autocast off for the device of ``x``, and TF32 off (see :func:`tf32_off`)."""
    autocast_off = (torch.autocast(device_type=x.device.type, enabled=False) if _autocast_enabled(x.device.type)
                    else nullcontext())
    with tf32_off(), autocast_off:
        yield


def _precision_nodes() -> list[object]:
    """The objects of PyTorch's per-backend ``fp32_precision`` API (torch >= 2.9), parents before children."""
    b = torch.backends
    cudnn, mkldnn = b.cudnn, getattr(b, "mkldnn", None)
    nodes = [b, b.cuda.matmul, cudnn, getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None), mkldnn,
             *(getattr(mkldnn, part, None) for part in ("matmul", "conv", "rnn"))]
    return [node for node in nodes if node is not None and hasattr(node, "fp32_precision")]


def _legacy_flags() -> tuple[bool, bool, str] | None:
    """(matmul allow_tf32, cuDNN allow_tf32, float32 matmul precision), or None where torch refuses to read them.

    torch >= 2.9 raises when the legacy flags are read after a mix of legacy and per-backend settings.
    """
    try:
        return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision())
    except RuntimeError:
        return None


def _set_legacy_flags(matmul_tf32: bool, cudnn_tf32: bool, matmul_precision: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.set_float32_matmul_precision(matmul_precision)


@contextmanager
def tf32_off() -> Iterator[None]:
    """TF32 off for the body; every precision flag restored after, even on an exception.

    Inside, ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` are False and
    ``torch.get_float32_matmul_precision()`` is ``"highest"`` (which also makes oneDNN matmuls IEEE float32). The
    flags are process-wide, so this works the same on every device (on a CPU machine it changes nothing that runs).
    They are set through the legacy API, which keeps torch >= 2.9's per-backend ``fp32_precision`` values consistent
    with it; where a per-backend setting of the user's survives that (a ``"tf32"`` or ``"bf16"`` that the legacy
    setters do not override), every per-backend value is set to ``"ieee"`` as well. On the way out the legacy
    values are restored first (when they were readable), then every per-backend value that differs from the saved
    one, parents first (setting a parent rewrites the children that inherit from it), so a user's mix of legacy and
    new settings comes back exactly.
    """
    nodes = _precision_nodes()
    saved_nodes = [node.fp32_precision for node in nodes]
    saved_legacy = _legacy_flags()
    try:
        _set_legacy_flags(False, False, "highest")
        if any(node.fp32_precision not in ("none", "ieee") for node in nodes):  # a per-backend setting won
            for node in nodes:
                node.fp32_precision = "ieee"
        yield
    finally:
        if saved_legacy is not None:
            _set_legacy_flags(*saved_legacy)
        for node, value in zip(nodes, saved_nodes):
            if node.fp32_precision != value:
                node.fp32_precision = value


def per_sample_norm(t: Tensor, norm: str = "l2") -> Tensor:
    """‖t_b‖ over all non-batch dimensions, shape (N,); ``norm`` is ``"l2"`` or ``"linf"``."""
    flat = t.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def batch_view(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector (N,) to broadcast against ``like`` (N, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def ball_ascent_step(delta: Tensor, grad: Tensor, alpha: float, norm: str) -> Tensor:
    """One ascent step of an attack in each sample's ball: ``alpha``·sign(grad) for ``"linf"``, ``alpha`` along
    grad / ‖grad_b‖₂ for ``"l2"`` (a zero gradient does not move its sample). Shared by ``pgd`` and ``trades``."""
    if norm == "linf":
        return delta + alpha * grad.sign()
    return delta + alpha * grad / batch_view(per_sample_norm(grad).clamp_min(1e-12), grad)


def project_to_ball(x: Tensor, delta: Tensor, epsilon: float, norm: str) -> Tensor:
    """δ projected onto each sample's ε-ball (``"linf"``: clamped; ``"l2"``: rescaled when longer than ε), then onto
    the pixel range: returns the new δ, with x + δ in [0, 1]."""
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        scale = (epsilon / per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * batch_view(scale, delta)
    return (x + delta).clamp(0.0, 1.0) - x
