"""``decoy_mnist``: MNIST digits with a gray corner swatch whose shade gives the label away in training only.

Ross, Hughes & Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by Constraining their
Explanations" (IJCAI 2017), the Decoy MNIST experiment; their public code is dtak/rrr, ``rrr/decoy_mnist.py`` (function
``augment``), evaluated in ``experiments/Decoy MNIST.ipynb``. gibench follows that construction:

* Every 28×28 digit gets a 4×4 **swatch** in one of the four corners: rows 0..3 or rows 24..27 (the last four), each
  with probability 1/2, and independently columns 0..3 or 24..27, each with probability 1/2, so each corner has
  probability 1/4. One draw per image, in both splits.
* The swatch's 16 pixels are **set** to the shade (not added to the digit): in 0..255 units the gray level
  255 − 25·k, i.e. (255 − 25·k)/255 in gibench's [0, 1] pixel units (1.0 for k = 0 down to 30/255 for k = 9).
* **Training split**: k is the image's label, so the shade alone predicts the label (the decoy).
* **Test split**: k is a digit r drawn uniformly from 0..9 per image, independently of the label (a random label's
  shade, as the code's ``augment(..., randomize=True)`` draws ``np.random.choice`` over the digits, not a uniformly
  random gray level); r equals the label for about one image in ten. The decoy is uninformative there.
* Capability ``IRRELEVANT_MASK``: ``extras["irrelevant_mask"]`` (N, 1, 28, 28) bool, True on the 16 swatch pixels,
  in both splits (the paper's annotation matrix A, the code's ``E``/``Et``).
* Capability ``DECOY_SHORTCUT``: test ``extras["decoy_shortcut"]``, the same test digits with the swatch in the same
  corner but shaded by the training rule from the image's own label (255 − 25·y), so a model that learned the
  shortcut is right again there. The difference of a model's accuracy on these and on the test images measures its
  reliance on the decoy (``evaluators/decoy_reliance.py``).

Randomness (gibench's choice, stable across NumPy versions): everything is drawn from the raw 64-bit output stream of
NumPy's PCG64 bit generator seeded with ``decoy_seed`` (``np.random.PCG64(decoy_seed).random_raw``; the bit generator's
stream is frozen by NumPy's compatibility policy, unlike ``Generator`` methods), in this order: one output per image
for its corner, the training images first and then the test images, in split order (bit 0 set: the last four rows,
else the first four; bit 1 set: the last four columns, else the first four); then one output per test image for its
shade digit r = output mod 10 (a bias below 10⁻¹⁸ against uniform).

Digits come from the bundled MNIST subset by default (``source: mnist_subset``, 4,000 train / 1,000 test, no data
root needed) or from full MNIST in the data root (``source: mnist``, 60,000 / 10,000, as in the paper), keeping each
source's own train/test split and order; all ten digits, labels unchanged.

Which models learn the decoy (measured with ``gibench.testing.trained_model``: erm, Adam lr 1e-3, batch 64, the 4,000
bundled training digits, 3 epochs, seed 0, scored on the 1,000 test digits by ``decoy_reliance``): ``gibench_mlp``
does (accuracy 0.97 with the label's shade, 0.63 with a random one: gap 0.34); ``gibench_cnn`` with softplus hardly
does (0.966 against 0.964: gap 0.002), nor with ReLU after 5 epochs (gap 0.004).
"""

from __future__ import annotations

__all__ = ["SWATCH", "DecoyMNIST", "DecoyMNISTConfig", "decoy_draws", "decoy_shade", "stamp", "swatch_mask"]

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from gibench.api.plugin import DECOY_SHORTCUT, IRRELEVANT_MASK, DatasetBundle, DataSizes
from gibench.core.config_types import Seed, plugin_config
from gibench.core.errors import DataError
from gibench.data.digits import BuiltFromDigits, DigitSource
from gibench.data.tensors import make_bundle

SIDE = 28
#: the swatch's side in pixels
SWATCH = 4


def decoy_shade(k: Tensor) -> Tensor:
    """The swatch's gray level for digit(s) ``k`` in [0, 1] pixel units: (255 − 25·k)/255, float32."""
    return (255.0 - 25.0 * k.to(torch.float32)) / 255.0


def decoy_draws(n_train: int, n_test: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The dataset's random choices, from the raw PCG64 stream of ``seed`` in the order the module docstring states.

    Returns ``(bottom, right, shade)``: two (n_train + n_test,) bool tensors, each image's corner (train images
    first, then test; bit 0 and bit 1 of its raw output), and the test images' shade digits r, (n_test,) int64 in
    0..9 (the next n_test raw outputs, each mod 10).
    """
    n = n_train + n_test
    raw = np.random.PCG64(seed).random_raw(n + n_test) if n + n_test else np.zeros(0, dtype=np.uint64)
    corner, shade = raw[:n], raw[n:]
    bottom = (corner & np.uint64(1)).astype(bool)
    right = ((corner >> np.uint64(1)) & np.uint64(1)).astype(bool)
    digits = (shade % np.uint64(10)).astype(np.int64)
    return torch.from_numpy(bottom), torch.from_numpy(right), torch.from_numpy(digits)


def swatch_mask(bottom: Tensor, right: Tensor, height: int = SIDE, width: int = SIDE) -> Tensor:
    """(N, 1, H, W) bool, True on each image's 4×4 corner swatch."""
    rows = torch.arange(height)
    cols = torch.arange(width)
    in_top, in_bottom = rows < SWATCH, rows >= height - SWATCH
    in_left, in_right = cols < SWATCH, cols >= width - SWATCH
    row_in = torch.where(bottom.view(-1, 1), in_bottom.view(1, -1), in_top.view(1, -1))  # (N, H)
    col_in = torch.where(right.view(-1, 1), in_right.view(1, -1), in_left.view(1, -1))  # (N, W)
    return (row_in[:, :, None] & col_in[:, None, :]).unsqueeze(1)


def stamp(digits: Tensor, mask: Tensor, shade_of: Tensor) -> Tensor:
    """``digits`` (N, 1, H, W) with the ``mask`` pixels replaced by the shade of digit ``shade_of`` (N,)."""
    shade = decoy_shade(shade_of).to(digits.dtype).view(-1, 1, 1, 1)
    return torch.where(mask, shade, digits).contiguous()


@plugin_config
class DecoyMNISTConfig:
    source: DigitSource = "mnist_subset"
    """mnist_subset: the bundled digits (default); mnist: full MNIST from the data root."""
    decoy_seed: Seed = 0
    """Seed of the swatch corners and of the test split's random shades."""


class DecoyMNIST(BuiltFromDigits):
    """28×28 MNIST digits with a 4×4 corner swatch shaded by the label (train) or by a random digit (test)."""

    name: ClassVar[str] = "decoy_mnist"
    Config = DecoyMNISTConfig
    version = "1"
    history = {"1": "first version: Ross et al.'s Decoy MNIST, corners and test shades from the raw PCG64 stream of "
                    "decoy_seed"}

    def load(self, data_root: Path | None = None, download: bool = False) -> DatasetBundle:
        base = self.source_bundle(data_root, download)
        for split_name, split in (("train", base.train), ("test", base.test)):
            if tuple(split.x.shape[1:]) != (1, SIDE, SIDE) or base.num_classes != 10:
                raise DataError(f"decoy_mnist needs 1×28×28 digits of 10 classes, the source's {split_name} split "
                                f"gives {tuple(split.x.shape[1:])} and {base.num_classes} classes.")
        train_x, train_y, test_x, test_y = base.train.x, base.train.y, base.test.x, base.test.y
        n_train, n_test = len(train_y), len(test_y)
        bottom, right, random_digits = decoy_draws(n_train, n_test, self.config.decoy_seed)
        train_mask = swatch_mask(bottom[:n_train], right[:n_train])
        test_mask = swatch_mask(bottom[n_train:], right[n_train:])
        return make_bundle(
            self.name or "decoy_mnist",
            stamp(train_x, train_mask, train_y), train_y, stamp(test_x, test_mask, random_digits), test_y,
            num_classes=10,
            class_names=base.class_names or tuple(str(d) for d in range(10)),
            capabilities={IRRELEVANT_MASK, DECOY_SHORTCUT},
            train_extras={IRRELEVANT_MASK: train_mask},
            test_extras={IRRELEVANT_MASK: test_mask, DECOY_SHORTCUT: stamp(test_x, test_mask, test_y)},
        )

    def sizes(self) -> DataSizes:
        """From the source's split sizes (the bundled subset's split, or full MNIST's files), without loading."""
        counts = self.source_digit_counts()
        return DataSizes((1, SIDE, SIDE), 10, sum(counts["train"]), sum(counts["test"]),
                         frozenset({IRRELEVANT_MASK, DECOY_SHORTCUT}))

