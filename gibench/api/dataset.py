"""The dataset contract: a factory that loads (or generates) a :class:`DatasetBundle` of two in-memory splits and
may say its sizes without loading (:meth:`Dataset.sizes`). Part of the contracts (:mod:`gibench.api.plugin`)."""

from __future__ import annotations

__all__ = ["DataSizes", "Dataset", "DatasetBundle", "Split"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from gibench.api.plugin_base import Plugin


@dataclass(frozen=True)
class Split:
    """One split of a dataset, held in memory.

    ``x``: float32 (N, C, H, W) in [0, 1]; ``y``: int64 (N,); ``extras``: per-sample tensors with first dimension N
    (for example ``signal_mask``).
    """

    x: Tensor
    y: Tensor
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset ready for training and evaluation.

    ``mean``/``std`` are per-channel statistics of the train split, used by the model's normalization layer.
    ``capabilities`` names what evaluators may rely on (see the module constants); ``extras`` holds dataset-level
    objects that back them (for example the analytic score of a synthetic mixture).
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    extras: Mapping[str, Any] = field(default_factory=dict)
    #: A part of the original training split held out for model selection (``None``: none held out); ``train`` is
    #: then the rest. Made by :func:`gibench.data.validation.hold_out_validation` (which adds the capability
    #: ``validation_split``); read only by the ``validation_accuracy`` evaluator, for selection.
    validation: Split | None = None

    @property
    def in_chans(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])


@dataclass(frozen=True)
class DataSizes:
    """What a dataset's jobs cost depends on, known without loading it: the image shape (C, H, W), the number of
    classes, the sizes of both splits and the capabilities the bundle will have. :meth:`Dataset.sizes` returns it;
    ``gibench run --estimate`` prices a suite from it (:class:`gibench.api.cost.CostContext`)."""

    shape: tuple[int, int, int]
    num_classes: int
    n_train: int
    n_test: int
    capabilities: frozenset[str] = frozenset()
    #: images held out of the training split for selection (0 unless the runner holds a validation split out)
    n_validation: int = 0

    @classmethod
    def of(cls, bundle: DatasetBundle) -> DataSizes:
        """The sizes of a loaded bundle (what :meth:`Dataset.sizes` must agree with)."""
        return cls(tuple(bundle.train.x.shape[1:]), bundle.num_classes, len(bundle.train), len(bundle.test),
                   frozenset(bundle.capabilities), len(bundle.validation) if bundle.validation is not None else 0)


class Dataset(Plugin):
    """A dataset factory. ``load`` must not touch the network unless ``download`` is True."""

    def load(self, data_root: Path, download: bool = False) -> DatasetBundle:
        """Load (or generate) the dataset.

        Args:
            data_root: the folder holding datasets on disk (``--data-root``; the user cache folder by default).
                Generated datasets may ignore it.
            download: whether the network may be used to fetch missing files. Without it a missing dataset is a
                :class:`gibench.core.errors.DataError` that says where the files are expected and how to get them.

        Returns:
            A :class:`DatasetBundle` with both splits in memory (build it with :func:`gibench.make_bundle`, which
            checks shapes, ranges and that every declared capability is backed).

        Example:
            >>> import torch
            >>> from gibench import Dataset, make_bundle
            >>> class Noise(Dataset):
            ...     def load(self, data_root, download=False):
            ...         g = torch.Generator().manual_seed(0)
            ...         x, y = torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 2
            ...         return make_bundle("noise", x[:30], y[:30], x[30:], y[30:], num_classes=2)
            >>> Noise().load(data_root=None).num_classes
            2
        """
        raise NotImplementedError

    def sizes(self) -> DataSizes | None:
        """The shape, classes, split sizes and capabilities :meth:`load` would give, without loading anything.

        Optional: the default None means "unknown", and ``gibench run --estimate`` then loads the dataset (without
        download) to size it. A dataset whose files may be absent (a download) should answer here, so that a suite
        can be priced before its data exists.

        Args:
            (none besides the dataset's config)

        Returns:
            A :class:`DataSizes` equal to ``DataSizes.of(self.load(...))``, or None.

        Example:
            >>> from gibench.api import registry
            >>> registry.datasets.create("gaussian_mixture", train_size=300).sizes().n_train
            300
        """
        return None
