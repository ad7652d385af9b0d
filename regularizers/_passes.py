"""Shared machinery for regularizers that run extra forward passes (noisy copies, attacks).

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
* :func:`full_precision` disables autocast: finite differences such as (2/σ²)·(f(x+v) − f(x)) amplify rounding by
  2/σ² (2·10⁴ at σ = 0.01), which is meaningless in float16/bfloat16.
* :func:`per_sample_norm` and :func:`check_bn_mode` are small shared utilities.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from gibench.config_types import BNMode
from gibench.params import check

BN_MODES: tuple[str, ...] = typing.get_args(BNMode)


def check_bn_mode(value: str, field: str = "noisy_bn") -> None:
    """Config validation for a BatchNorm mode field."""
    check(value in BN_MODES, f"{field} must be one of {', '.join(map(repr, BN_MODES))}, got {value!r}")


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


def full_precision(x: Tensor):
    """A context that turns autocast off for the device of ``x`` (a no-op when autocast is not active)."""
    if _autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return nullcontext()


def per_sample_norm(t: Tensor, norm: str = "l2") -> Tensor:
    """‖t_b‖ over all non-batch dimensions, shape (N,); ``norm`` is ``"l2"`` or ``"linf"``."""
    flat = t.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def batch_view(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector (N,) to broadcast against ``like`` (N, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))
