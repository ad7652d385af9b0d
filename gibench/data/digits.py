"""Datasets built from MNIST digits (``blockmnist``, ``decoy_mnist``): where their digits come from.

Their ``source`` option names the digits: ``mnist_subset``, the bundled 5,000 digits (4,000 train / 1,000 test, no
data root needed; the default), or ``mnist``, full MNIST in the data root (60,000 / 10,000). Each source keeps its
own train/test split and order. :class:`BuiltFromDigits` is their common base: it loads and sizes the source, and says
which file dataset the run must find on disk (the preflight reports a missing one with the command that fetches it).
"""

from __future__ import annotations

__all__ = ["BuiltFromDigits", "DigitSource"]

from pathlib import Path
from typing import Any, Literal

from gibench.api.plugin import Dataset, DatasetBundle

DigitSource = Literal["mnist_subset", "mnist"]


class BuiltFromDigits(Dataset):
    """A dataset whose Config has ``source: DigitSource``: the digits it is built from."""

    def file_source(self) -> Any | None:
        """The file dataset (``gibench.data.torchvision_sets.MNIST``) whose files this one reads; None for the bundled
        digits."""
        if self.config.source == "mnist_subset":
            return None
        from gibench.data.torchvision_sets import MNIST

        return MNIST()

    def source_bundle(self, data_root: Path | None, download: bool) -> DatasetBundle:
        """The source digits, loaded (full MNIST from ``data_root``, or the default data root)."""
        source = self.file_source()
        if source is None:
            from gibench.data.bundled import MNISTSubset

            return MNISTSubset().load(data_root)
        from gibench.data import default_data_root

        return source.load(Path(data_root) if data_root else default_data_root(), download=download)

    def source_digit_counts(self) -> dict[str, tuple[int, ...]]:
        """Images per digit of the source, {"train": [10 counts], "test": [...]}, without loading the images."""
        from gibench.data.bundled import MNISTSubset
        from gibench.data.torchvision_sets import MNIST

        return MNISTSubset().digit_counts() if self.config.source == "mnist_subset" else MNIST.digit_counts
