"""The validation split: a fixed, seeded part of a dataset's training split, held out so that a setting (a
regularizer's strength) can be selected without ever reading the test split.

The protocol follows "In Search of Lost Domain Generalization" (Gulrajani & Lopez-Paz, ICLR 2021; public code
facebookresearch/DomainBed, ``domainbed/model_selection.py``): every method gets the same held-out part of its
training data, and selection reads only that part. gibench's choices:

* **Stratified by class**, with the same seeded rule as the bundled dataset's train/test split
  (:func:`gibench.data.tensors.stratified_split`): ``round(n_c · fraction)`` images of each class c are held out,
  chosen by the raw PCG64 stream of ``seed``, so the validation split is identical on every machine and for every
  regularizer, backbone and training seed of a dataset.
* **Both parts keep the training split's order** (the held-out images are removed, the rest keep their relative
  order), and per-sample extras (a signal mask) are split alike.
* **The model trained on the rest normalizes with the rest's statistics**: ``mean``/``std`` are recomputed from the
  remaining images, as a bundle's statistics always come from the images it trains on.
* **The test split is untouched** (the same tensors), and so is everything the dataset declares (capabilities,
  extras, class names).
"""

from __future__ import annotations

__all__ = ["DEFAULT_VALIDATION", "ValidationSplit", "hold_out_validation"]

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gibench.api.plugin import VALIDATION_SPLIT, DatasetBundle, DataSizes, Split
from gibench.core.errors import DataError
from gibench.data.tensors import channel_stats, stratified_split


@dataclass(frozen=True)
class ValidationSplit:
    """Which validation split a job's training split loses: ``fraction`` of each class, chosen by ``seed``.

    Part of a job's identity (:meth:`gibench.suites.jobs.Job.training_spec` records it with the dataset), so a model
    trained on the rest never shares a hash, a row or an auxiliary model with one trained on the whole split.
    """

    fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not (math.isfinite(self.fraction) and 0.0 < self.fraction <= 0.5):
            raise DataError(f"validation fraction must be a number in (0, 0.5], got {self.fraction!r}: it is the "
                            "share of each class's training images held out for selection, e.g. 0.1.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"validation seed must be a non-negative integer, got {self.seed!r}.")
        object.__setattr__(self, "fraction", float(self.fraction))

    def as_json(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "seed": self.seed}

    def sizes(self, sizes: DataSizes) -> DataSizes:
        """``sizes`` of a dataset with this split held out (per-class rounding aside, which pricing can ignore)."""
        held = round(sizes.n_train * self.fraction)
        return dataclasses.replace(sizes, n_train=sizes.n_train - held, n_validation=held,
                                   capabilities=sizes.capabilities | {VALIDATION_SPLIT})

    def apply(self, bundle: DatasetBundle) -> DatasetBundle:
        """``bundle`` with this split held out (:func:`hold_out_validation`)."""
        return hold_out_validation(bundle, self.fraction, self.seed)

    @property
    def label(self) -> str:
        """``"10 % held out"``: how a table names the training data of such a job."""
        return f"{self.fraction * 100:g} % held out"


#: The split a suite that selects holds out unless its ``validation`` key says otherwise: a tenth of each class, seed 0
#: (DomainBed holds out 20 % of each training domain; gibench's bundled data is small, so a tenth).
DEFAULT_VALIDATION = ValidationSplit(0.1, 0)


def hold_out_validation(bundle: DatasetBundle, fraction: float, seed: int) -> DatasetBundle:
    """``bundle`` with ``round(n_c · fraction)`` training images of each class c held out as ``validation`` (seeded,
    see the module docstring) and ``train`` the rest.

    Raises:
        DataError: the bundle holds a validation split already, ``fraction`` is not in (0, 0.5], or a part would be
            empty.
    """
    if bundle.validation is not None:
        raise DataError(f"dataset {bundle.name!r} already holds out a validation split; hold one out only once.")
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 < fraction <= 0.5):
        raise DataError(f"validation fraction must be in (0, 0.5], got {fraction!r}: it is the share of each class's "
                        "training images held out for selection, e.g. 0.1.")
    try:
        rest, held = stratified_split(bundle.train.y, fraction, seed)
    except DataError as exc:
        raise DataError(f"dataset {bundle.name!r}: holding out a validation split failed: {exc}") from None
    rest, held = np.sort(rest), np.sort(held)  # keep the training split's order in both parts
    train, validation = _take(bundle.train, rest), _take(bundle.train, held)
    mean, std = channel_stats(train.x)
    return dataclasses.replace(bundle, train=train, validation=validation, mean=mean, std=std,
                               capabilities=bundle.capabilities | {VALIDATION_SPLIT})


def _take(split: Split, indices: np.ndarray) -> Split:
    index = torch.from_numpy(indices.astype(np.int64))
    return Split(split.x[index], split.y[index], {key: value[index] for key, value in split.extras.items()})
