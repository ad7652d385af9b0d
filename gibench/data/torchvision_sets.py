"""Full image datasets through torchvision: ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``.

Files live in ``<data_root>/<name>`` (for example ``~/.cache/gibench/data/cifar10``), in torchvision's own layout
inside that folder. Nothing is downloaded unless the user passes ``--download`` (``download=True``); a missing
dataset is a :class:`~gibench.core.errors.DataError` that names the folder and both ways to fix it.

Images become float32 (N, C, H, W) in [0, 1] (uint8 / 255, no other transform, no augmentation); labels int64.
SVHN's digit "0" is label 0 (torchvision already maps the files' label 10 to 0). ``train_limit`` / ``test_limit``
(0 = all) keep the first N samples of a fixed seeded permutation of each split (:func:`seeded_permutation`, seed 0
for train and 1 for test), so a small experiment always sees the same near class-balanced subset. Limits larger
than a split keep the whole split.

Each class states its split sizes (:meth:`TorchvisionDataset.sizes`), the numbers of the datasets' papers and of
torchvision's loaders: MNIST, LeCun et al., "Gradient-based learning applied to document recognition" (1998);
Fashion-MNIST, Xiao, Rasul & Vollgraf (2017); CIFAR-10/100, Krizhevsky, "Learning multiple layers of features from
tiny images" (2009); SVHN, Netzer et al., "Reading digits in natural images with unsupervised feature learning"
(2011), cropped digits without the extra split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gibench.api.plugin import Dataset, DatasetBundle, DataSizes
from gibench.core.config_types import Limit, plugin_config
from gibench.core.errors import DataError
from gibench.data.tensors import make_bundle, seeded_permutation

_LIMIT_SEEDS = {"train": 0, "test": 1}


@plugin_config
class TorchvisionConfig:
    train_limit: Limit = 0
    """Keep this many training samples (0 = all): the first N of a fixed seeded permutation."""
    test_limit: Limit = 0
    """Keep this many test samples (0 = all), likewise."""


def to_float_images(data: Any, layout: str) -> Tensor:
    """uint8 images laid out ``'NHW'``, ``'NHWC'`` or ``'NCHW'`` (array or tensor) -> float32 (N, C, H, W) in [0, 1]."""
    x = data if isinstance(data, Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if x.dtype != torch.uint8:
        raise DataError(f"expected uint8 images, got {x.dtype}")
    if layout == "NHW":
        x = x.unsqueeze(1)
    elif layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    elif layout != "NCHW":
        raise ValueError(f"unknown layout {layout!r}")
    return x.contiguous().to(torch.float32).div_(255.0)


def limit_indices(n: int, limit: int, split: str) -> np.ndarray | None:
    """Indices of the kept samples: None (keep all, original order) or the first ``limit`` of a seeded permutation."""
    if limit <= 0 or limit >= n:
        return None
    return seeded_permutation(n, _LIMIT_SEEDS[split])[:limit]


def _limited(n: int, limit: int) -> int:
    return n if limit <= 0 else min(n, limit)


class TorchvisionDataset(Dataset):
    """Base of the torchvision-backed datasets; subclasses set the class attributes below."""

    Config = TorchvisionConfig
    folder: ClassVar[str] = ""  # sub-folder of data_root (also the dataset's gibench name)
    torchvision_class: ClassVar[str] = ""  # name in torchvision.datasets
    split_style: ClassVar[str] = "train"  # "train": train=True/False; "split": split="train"/"test"
    layout: ClassVar[str] = "NHW"  # layout of the torchvision object's .data
    label_attr: ClassVar[str] = "targets"
    num_classes: ClassVar[int] = 10
    default_class_names: ClassVar[tuple[str, ...]] = ()
    expected_files: ClassVar[str] = ""  # what torchvision looks for inside the folder, for error messages
    image_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)  # (C, H, W)
    split_sizes: ClassVar[tuple[int, int]] = (0, 0)  # (train, test) images in the files

    def sizes(self) -> DataSizes:
        """The split sizes from the class's table (after ``train_limit`` / ``test_limit``), so a suite is priced
        before its files are downloaded."""
        n_train, n_test = self.split_sizes
        return DataSizes(self.image_shape, self.num_classes, _limited(n_train, self.config.train_limit),
                         _limited(n_test, self.config.test_limit))

    def load(self, data_root: Path, download: bool = False) -> DatasetBundle:
        root = Path(data_root).expanduser() / self.folder
        train, train_names = self._read(root, "train", download)
        test, _ = self._read(root, "test", download)
        (train_x, train_y), (test_x, test_y) = train, test
        return make_bundle(
            self.name or self.folder, train_x, train_y, test_x, test_y,
            num_classes=self.num_classes, class_names=train_names or self.default_class_names,
        )

    def _read(self, root: Path, split: str, download: bool) -> tuple[tuple[Tensor, Tensor], tuple[str, ...]]:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.torchvision_class)
        split_kw: dict[str, Any] = (
            {"train": split == "train"} if self.split_style == "train" else {"split": split}
        )
        try:
            ds = cls(root=str(root), download=download, **split_kw)
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise DataError(self._missing_message(root, exc, download)) from None
        except OSError as exc:  # network errors (URLError) while downloading
            if not download:
                raise
            raise DataError(self._missing_message(root, exc, download)) from None
        limit = self.config.train_limit if split == "train" else self.config.test_limit
        data, labels = ds.data, torch.as_tensor(np.asarray(getattr(ds, self.label_attr)), dtype=torch.int64)
        keep = limit_indices(len(labels), limit, split)
        if keep is not None:  # select before converting, so only the kept images are expanded to float
            data, labels = data[torch.from_numpy(keep) if isinstance(data, Tensor) else keep], labels[keep]
        names = tuple(str(c) for c in getattr(ds, "classes", ()) or ())
        if names and len(names) != self.num_classes:
            names = ()
        return (to_float_images(data, self.layout), labels), names

    def _missing_message(self, root: Path, exc: Exception, download: bool) -> str:
        name = self.name or self.folder
        layout = f"torchvision expects {self.expected_files} inside that folder; torchvision said: {exc}"
        if download:
            return (
                f"dataset {name!r} could not be downloaded into {root} ({layout}). Check the network connection, "
                f"or copy the files there by hand, or pass `--data-root DIR` where DIR/{self.folder} holds them."
            )
        return (
            f"dataset {name!r} was not found (or is incomplete) in {root} ({layout}). Fix: run with `--download` "
            f"(e.g. `gibench run --suite <suite> --download`) to fetch it into that folder, or pass "
            f"`--data-root DIR` where DIR/{self.folder} holds the files already."
        )


class MNIST(TorchvisionDataset):
    """MNIST: 60,000 train / 10,000 test 28×28 grey digits."""

    folder = "mnist"
    torchvision_class = "MNIST"
    expected_files = "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    default_class_names = tuple(str(d) for d in range(10))
    split_sizes = (60_000, 10_000)
    #: images per digit 0..9 in the train and test files (counts of the files' labels; BlockMNIST sizes its subsets
    #: with them)
    digit_counts: ClassVar[dict[str, tuple[int, ...]]] = {
        "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)}


class FashionMNIST(TorchvisionDataset):
    """Fashion-MNIST: 60,000 train / 10,000 test 28×28 grey clothing images."""

    folder = "fashion_mnist"
    torchvision_class = "FashionMNIST"
    expected_files = "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    split_sizes = (60_000, 10_000)


class CIFAR10(TorchvisionDataset):
    """CIFAR-10: 50,000 train / 10,000 test 32×32 RGB images, 10 classes."""

    folder = "cifar10"
    torchvision_class = "CIFAR10"
    layout = "NHWC"
    expected_files = "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"
    image_shape = (3, 32, 32)
    split_sizes = (50_000, 10_000)


class CIFAR100(TorchvisionDataset):
    """CIFAR-100: 50,000 train / 10,000 test 32×32 RGB images, 100 fine classes."""

    folder = "cifar100"
    torchvision_class = "CIFAR100"
    layout = "NHWC"
    num_classes = 100
    expected_files = "cifar-100-python/ (train, test, meta)"
    image_shape = (3, 32, 32)
    split_sizes = (50_000, 10_000)


class SVHN(TorchvisionDataset):
    """SVHN (cropped digits): 73,257 train / 26,032 test 32×32 RGB images; the extra split is not used."""

    folder = "svhn"
    torchvision_class = "SVHN"
    split_style = "split"
    layout = "NCHW"
    label_attr = "labels"
    default_class_names = tuple(str(d) for d in range(10))
    expected_files = "train_32x32.mat and test_32x32.mat"
    image_shape = (3, 32, 32)
    split_sizes = (73_257, 26_032)
