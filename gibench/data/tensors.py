"""Helpers shared by the dataset factories: build a validated :class:`DatasetBundle`, split and subsample
deterministically.

API (stable; other dataset modules build on it):

* :func:`make_bundle` turns in-memory train/test arrays into a ``DatasetBundle``. It validates everything that
  crosses the pixel-space contract (shapes, dtypes, the [0, 1] range, label range, extras' lengths, declared
  capabilities) and raises :class:`gibench.core.errors.DataError` naming the dataset, the split and the problem. It
  computes the per-channel mean/std on the **train** split (population std, i.e. ``unbiased=False``, accumulated in
  float64; returned as Python floats).
* :func:`seeded_permutation` is a permutation of ``range(n)`` that depends only on ``(n, seed)``: identical across
  runs, platforms and NumPy versions (it sorts raw 64-bit outputs of NumPy's PCG64 bit generator, whose stream is
  frozen by NumPy's compatibility policy, unlike ``Generator`` methods such as ``permutation``).
* :func:`stratified_split` splits labels per class with that permutation.
"""

from __future__ import annotations

__all__ = [
    "ArrayLike", "channel_stats", "make_bundle", "seeded_permutation", "stratified_split",
]

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gibench.api.plugin import (
    ANALYTIC_SCORE,
    DECOY_SHORTCUT,
    IRRELEVANT_MASK,
    SIGNAL_MASK,
    VALIDATION_SPLIT,
    DatasetBundle,
    Split,
)
from gibench.core.errors import DataError

ArrayLike = Any  # torch.Tensor or numpy.ndarray


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` (int64) that depends only on ``n`` and ``seed``.

    Built from the raw PCG64 stream (stable across NumPy versions and platforms) by a stable argsort, so the result
    never changes between runs or machines.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    keys = np.random.PCG64(seed).random_raw(n) if n else np.zeros(0, dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def stratified_test_count(class_size: int, test_fraction: float) -> int:
    """How many of a class's ``class_size`` samples :func:`stratified_split` puts in test:
    ``round(n_c · test_fraction)``
    (Python's round, halves to even)."""
    return int(round(class_size * test_fraction))


def stratified_split(y: ArrayLike, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, test_idx)`` that put ``round(n_c · test_fraction)`` samples of each class c in test.

    Deterministic in ``(y, test_fraction, seed)`` (built from the raw PCG64 stream like :func:`seeded_permutation`).
    Both index arrays are int64 and in seeded random order, not sorted, so any prefix of a split is a near-uniform
    sample over classes (source data is often sorted by class). Because of per-class rounding the test size may
    differ from ``round(N · test_fraction)`` by at most half the number of classes.
    """
    labels = np.asarray(y.cpu() if isinstance(y, Tensor) else y).reshape(-1)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(labels)
    keys = np.random.PCG64(seed).random_raw(2 * n) if n else np.zeros(0, dtype=np.uint64)
    select = np.argsort(keys[:n], kind="stable")  # decides which samples go to test
    order = np.argsort(keys[n:], kind="stable")  # an independent order for the output (see below)
    is_test = np.zeros(n, dtype=bool)
    for c in np.unique(labels):
        members = select[labels[select] == c]  # class-c indices in permuted order
        is_test[members[: stratified_test_count(len(members), test_fraction)]] = True
    # ordering the output by ``select`` would put, at the start of train, the classes whose test quota filled first
    train_idx, test_idx = order[~is_test[order]].astype(np.int64), order[is_test[order]].astype(np.int64)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(
            f"stratified_split: test_fraction={test_fraction} on {len(labels)} samples leaves an empty "
            f"{'train' if len(train_idx) == 0 else 'test'} split; choose a test_fraction closer to 0.5."
        )
    return train_idx, test_idx


def make_bundle(
    name: str,
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    num_classes: int,
    class_names: tuple[str, ...] | list[str] = (),
    capabilities: frozenset[str] | set[str] = frozenset(),
    extras: Mapping[str, Any] | None = None,
    train_extras: Mapping[str, ArrayLike] | None = None,
    test_extras: Mapping[str, ArrayLike] | None = None,
) -> DatasetBundle:
    """A validated :class:`DatasetBundle` with train-split channel statistics.

    ``*_x``: floating (N, C, H, W) in [0, 1] (tensor or array; cast to float32); ``*_y``: integer (N,) labels in
    ``[0, num_classes)`` (cast to int64); train and test must share C, H, W. ``*_extras``: per-sample tensors whose
    first dimension is N (kept in their dtype). ``capabilities`` must be backed: ``SIGNAL_MASK`` needs
    ``test_extras["signal_mask"]`` of shape (N, 1, H, W) and dtype bool; ``IRRELEVANT_MASK`` needs
    ``extras["irrelevant_mask"]`` of that shape and dtype in both splits; ``DECOY_SHORTCUT`` needs
    ``test_extras["decoy_shortcut"]`` shaped like the test images, floating, in [0, 1]; ``ANALYTIC_SCORE`` needs a
    callable ``extras["score"]``. Raises :class:`DataError` on any violation.
    """
    if num_classes < 2:
        raise DataError(f"dataset {name!r}: num_classes must be >= 2, got {num_classes}.")
    train = _split(name, "train", train_x, train_y, num_classes, train_extras)
    test = _split(name, "test", test_x, test_y, num_classes, test_extras)
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"dataset {name!r}: train images are {tuple(train.x.shape[1:])} (C, H, W) but test images are "
            f"{tuple(test.x.shape[1:])}; both splits must share channels and size."
        )
    class_names = tuple(str(c) for c in class_names)
    if class_names and len(class_names) != num_classes:
        raise DataError(f"dataset {name!r}: {len(class_names)} class names for {num_classes} classes.")
    extras = dict(extras or {})
    capabilities = frozenset(capabilities)
    _check_capabilities(name, capabilities, extras, train, test)
    mean, std = channel_stats(train.x)
    for c, s in enumerate(std):
        if not s > 0:
            raise DataError(
                f"dataset {name!r}: channel {c} of the train split is constant ({mean[c]}), so it cannot be "
                "standardized; drop the channel or fix the data."
            )
    return DatasetBundle(
        name=name, train=train, test=test, num_classes=int(num_classes), mean=mean, std=std,
        class_names=class_names, capabilities=capabilities, extras=extras,
    )


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of (N, C, H, W) images, accumulated in float64."""
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    mean = per_channel.mean(dim=1)
    std = (per_channel - mean[:, None]).pow(2).mean(dim=1).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _as_tensor(value: ArrayLike) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    return torch.as_tensor(np.asarray(value))


def _split(
    name: str, split: str, x: ArrayLike, y: ArrayLike, num_classes: int, extras: Mapping[str, ArrayLike] | None
) -> Split:
    where = f"dataset {name!r}, {split} split"
    x, y = _as_tensor(x), _as_tensor(y)
    if x.dim() != 4:
        raise DataError(f"{where}: images must be 4-D (N, C, H, W), got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise DataError(f"{where}: images must be floating point in [0, 1], got dtype {x.dtype} (divide by 255?).")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{where}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}.")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}.")
    if x.shape[0] == 0:
        raise DataError(f"{where}: the split is empty.")
    x = x.to(torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{where}: images contain NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{where}: pixel values must lie in [0, 1], found range [{lo:g}, {hi:g}].")
    y = y.to(torch.int64).contiguous()
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(
            f"{where}: labels must lie in [0, {num_classes}), found range [{int(y.min())}, {int(y.max())}]."
        )
    checked = {}
    for key, value in (extras or {}).items():
        value = _as_tensor(value)
        if value.dim() == 0 or value.shape[0] != x.shape[0]:
            raise DataError(
                f"{where}: extra {key!r} must have first dimension {x.shape[0]} (one entry per sample), got shape "
                f"{tuple(value.shape)}."
            )
        checked[key] = value
    return Split(x=x, y=y, extras=checked)


def _check_capabilities(name: str, capabilities: frozenset[str], extras: Mapping[str, Any], train: Split,
                        test: Split) -> None:
    if SIGNAL_MASK in capabilities:
        _check_mask(name, SIGNAL_MASK, "test", test)
    if IRRELEVANT_MASK in capabilities:
        _check_mask(name, IRRELEVANT_MASK, "train", train)
        _check_mask(name, IRRELEVANT_MASK, "test", test)
    if DECOY_SHORTCUT in capabilities:
        images = test.extras.get(DECOY_SHORTCUT)
        if images is None or not images.is_floating_point() or images.shape != test.x.shape:
            got = "missing" if images is None else f"{images.dtype} {tuple(images.shape)}"
            raise DataError(f"dataset {name!r} declares {DECOY_SHORTCUT!r} but test_extras[{DECOY_SHORTCUT!r}] is "
                            f"{got}; expected floating images shaped like the test images, {tuple(test.x.shape)}.")
        if float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise DataError(f"dataset {name!r}: test_extras[{DECOY_SHORTCUT!r}] must lie in [0, 1] like the images.")
    if ANALYTIC_SCORE in capabilities and not callable(extras.get("score")):
        raise DataError(f"dataset {name!r} declares {ANALYTIC_SCORE!r} but extras['score'] is not a callable.")
    if VALIDATION_SPLIT in capabilities:
        raise DataError(f"dataset {name!r} declares {VALIDATION_SPLIT!r}, which no dataset declares: the runner holds "
                        "a validation split out of the training split for the jobs of a suite that selects "
                        "(gibench.data.validation); remove it from the dataset's capabilities.")


def _check_mask(name: str, capability: str, split_name: str, split: Split) -> None:
    """``split.extras[capability]`` is a (N, 1, H, W) bool mask of the split's images."""
    mask = split.extras.get(capability)
    expected = (split.x.shape[0], 1, *split.x.shape[2:])
    if mask is None or mask.dtype != torch.bool or tuple(mask.shape) != expected:
        got = "missing" if mask is None else f"{mask.dtype} {tuple(mask.shape)}"
        raise DataError(f"dataset {name!r} declares {capability!r} but {split_name}_extras[{capability!r}] is {got}; "
                        f"expected torch.bool {expected}.")
