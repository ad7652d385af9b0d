"""``blockmnist`` and ``blockmnist_top``: MNIST digits stacked with a label-free "null" block.

Shah, Jain & Netrapalli, "Do Input Gradients Highlight Discriminative Features?" (NeurIPS 2021), §5 (BlockMNIST).
The paper's code and data were never released (harshays/inputgradients issue #3), so gibench rebuilds the dataset
from the paper's description; every detail below is gibench's definition:

* An image is 56×28 (one channel): two 28×28 blocks stacked vertically. The **signal block** is an MNIST digit (the
  label's only source); the **null block** carries a fixed pattern, identical in every image: a centred square
  outline, rows and columns 8..19 of the block, 2 pixels thick (the 8×8 interior, rows/columns 10..17, is empty),
  with value 1.0 on a 0.0 background.
* ``blockmnist``: the digit is on top or at the bottom, each with probability 1/2, independently per image, drawn
  from the raw PCG64 stream of ``placement_seed`` (stable across NumPy versions): bit 0 of the i-th raw 64-bit
  output decides image i (train images first, then test). ``blockmnist_top`` (the paper's control) always puts the
  digit on top.
* Digits come from the bundled MNIST subset by default (``source: mnist_subset``, 4,000 train / 1,000 test, no data
  root needed) or from full MNIST in the data root (``source: mnist``), keeping each source's own train/test split and
  order. ``classes`` restricts to some digits (labels become their positions in ``classes``); default: all 10. The
  paper reportedly used digits 0 vs 1 (unverified).
* Capability ``SIGNAL_MASK``: ``extras["signal_mask"]`` (N, 1, 56, 28) bool, True on the digit's block, in both
  splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from gibench.api.plugin import SIGNAL_MASK, DatasetBundle, DataSizes
from gibench.core.config_types import Distinct, Rule, Seed, plugin_config
from gibench.core.errors import DataError
from gibench.data.digits import BuiltFromDigits, DigitSource
from gibench.data.tensors import make_bundle

BLOCK = 28
Digit = Annotated[int, Field(ge=0, le=9)]
NotOneDigit = Rule("empty (all 10) or at least two digits", lambda classes: len(classes) != 1)
DigitSelection = Annotated[tuple[Digit, ...], Distinct, NotOneDigit]
"""Digits 0..9, none repeated: none (all ten classes) or at least two (one class is no classification task)."""


def null_pattern() -> Tensor:
    """The null block: (1, 28, 28) float32, a centred 12×12 square outline of stroke 2 (value 1) on 0."""
    block = torch.zeros(1, BLOCK, BLOCK)
    block[:, 8:20, 8:20] = 1.0
    block[:, 10:18, 10:18] = 0.0
    return block


def placements(n: int, seed: int) -> Tensor:
    """(n,) bool, True where the digit goes on top: bit 0 of the raw PCG64 stream of ``seed``."""
    raw = np.random.PCG64(seed).random_raw(n) if n else np.zeros(0, dtype=np.uint64)
    return torch.from_numpy((raw & np.uint64(1)).astype(bool))


def compose(digits: Tensor, on_top: Tensor) -> tuple[Tensor, Tensor]:
    """Stack (N, 1, 28, 28) digits with the null block: images (N, 1, 56, 28) and the signal mask (same shape, bool)."""
    n = digits.shape[0]
    top = on_top.view(n, 1, 1, 1)
    null = null_pattern().to(digits.dtype).expand(n, 1, BLOCK, BLOCK)
    images = torch.cat([torch.where(top, digits, null), torch.where(top, null, digits)], dim=2)
    ones = torch.ones(n, 1, BLOCK, BLOCK, dtype=torch.bool)
    mask = torch.cat([ones & top, ones & ~top], dim=2)
    return images.contiguous(), mask.contiguous()


@plugin_config
class BlockMNISTConfig:
    source: DigitSource = "mnist_subset"
    """mnist_subset: the bundled digits (default); mnist: full MNIST from the data root."""
    classes: DigitSelection = ()
    """Digits to keep, e.g. (0, 1); empty = all 10."""
    placement_seed: Seed = 0
    """Seed of the top/bottom placement (ignored by blockmnist_top)."""


class BlockMNIST(BuiltFromDigits):
    """56×28 images: an MNIST digit block and a fixed null block, the digit on top or bottom at random."""

    name: ClassVar[str] = "blockmnist"
    Config = BlockMNISTConfig
    version = "1"
    always_top: ClassVar[bool] = False

    def load(self, data_root: Path | None = None, download: bool = False) -> DatasetBundle:
        cfg = self.config
        base = self.source_bundle(data_root, download)
        classes = tuple(cfg.classes) or tuple(range(10))
        (train_x, train_y), (test_x, test_y) = (
            _select(split.x, split.y, classes) for split in (base.train, base.test)
        )
        n_train, n_test = len(train_y), len(test_y)
        if self.always_top:
            on_top = torch.ones(n_train + n_test, dtype=torch.bool)
        else:
            on_top = placements(n_train + n_test, cfg.placement_seed)
        train_img, train_mask = compose(train_x, on_top[:n_train])
        test_img, test_mask = compose(test_x, on_top[n_train:])
        names = base.class_names or tuple(str(d) for d in range(10))
        return make_bundle(
            self.name or ("blockmnist_top" if self.always_top else "blockmnist"),
            train_img, train_y, test_img, test_y,
            num_classes=len(classes),
            class_names=tuple(names[c] for c in classes),
            capabilities={SIGNAL_MASK},
            train_extras={"signal_mask": train_mask},
            test_extras={"signal_mask": test_mask},
        )

    def sizes(self) -> DataSizes:
        """From the source's images per digit (the bundled subset's split, or full MNIST's files), without loading."""
        counts = self.source_digit_counts()
        classes = tuple(self.config.classes) or tuple(range(10))
        return DataSizes((1, 2 * BLOCK, BLOCK), len(classes), sum(counts["train"][d] for d in classes),
                         sum(counts["test"][d] for d in classes), frozenset({SIGNAL_MASK}))


class BlockMNISTTop(BlockMNIST):
    """The control: like ``blockmnist`` but the digit is always the top block."""

    name: ClassVar[str] = "blockmnist_top"
    always_top: ClassVar[bool] = True


def _select(x: Tensor, y: Tensor, classes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Keep the images of ``classes`` (in their original order); relabel each to its position in ``classes``."""
    if x.shape[1:] != (1, BLOCK, BLOCK):
        raise DataError(f"blockmnist needs 1×28×28 digits, the source gives {tuple(x.shape[1:])}.")
    lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.long)
    for new, old in enumerate(classes):
        if old < len(lookup):
            lookup[old] = new
    new_y = lookup[y]
    keep = new_y >= 0
    return x[keep], new_y[keep]
