"""The two records every layer above names a model by: :class:`PluginSpec` (one grid point of a plugin entry: its
name, the user's options and the resolved config) and :class:`TrainConfig` (how a model is trained).

They live here, below the training loop that takes them (:func:`gibench.training.train.fit`), and not with the suite
files that build them (:mod:`gibench.suites.suite`, which re-exports both), so that training never imports the
suite layer.
"""

from __future__ import annotations

__all__ = ["HASHED_UNLESS_DEFAULT", "PluginSpec", "TrainConfig"]

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gibench.core.params import check, did_you_mean, jsonable
from gibench.training.augment import AUGMENTATIONS


@dataclass(frozen=True)
class TrainConfig:
    """How every model of a suite is trained. All of it is part of the job hash (see :meth:`hash_dict`).

    ``milestones`` are fractions of the total number of epochs (for ``schedule: multistep``; ``[0.5, 0.75]`` with
    ``gamma: 0.1`` is the seed papers' schedule); ``amp`` turns on bfloat16 autocast on CUDA only (ignored on the
    CPU), and only for regularizers that declare ``amp_safe`` (see :mod:`gibench.training.train`); ``log_every`` is how
    often (in steps) logged loss parts are read back from the device. ``augment`` names a batch augmentation of
    :data:`gibench.training.augment.AUGMENTATIONS` (``none``, ``crop_flip``), applied to training batches only.
    ``channels_last`` stores the model and the batches in channels-last memory order (a speed setting for
    convolutions on GPUs; off by default until a GPU measurement shows it helps, see docs/benchmarks.md).
    ``nesterov`` turns on Nesterov momentum (``optimizer: sgd`` only, with ``momentum > 0``). ``schedule: onecycle`` is
    the one-cycle policy (:func:`gibench.training.train.build_schedule`): a warm-up to ``lr`` over the first 30 % of the
    steps, then a cosine anneal to ``lr / 2.5e5``; momentum stays ``momentum``.

    The seed papers' recipe: ``{optimizer: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4, batch_size: 128,
    epochs: 200, schedule: multistep, milestones: [0.5, 0.75], augment: crop_flip}``.
    """

    epochs: int = 3
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Literal["constant", "cosine", "multistep", "onecycle"] = "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    grad_clip: float = 0.0
    amp: bool = True
    log_every: int = 50
    augment: str = "none"
    channels_last: bool = False
    nesterov: bool = False

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(all(0 < m < 1 for m in self.milestones),
              f"milestones are fractions of training in (0, 1), got {self.milestones}")
        check(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        check(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        check(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        check(self.augment in AUGMENTATIONS, f"unknown augment {self.augment!r}."
              f"{did_you_mean(str(self.augment), list(AUGMENTATIONS))} Choices: {', '.join(AUGMENTATIONS)}.")
        check(not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
              f"nesterov needs optimizer: sgd and momentum > 0, got optimizer {self.optimizer!r} and momentum "
              f"{self.momentum}")

    def hash_dict(self) -> dict[str, Any]:
        """The fields as JSON for job hashes: every field, except those added later while they keep their default.

        Fields of :data:`HASHED_UNLESS_DEFAULT` (added after the first release) are left out at their default value,
        so the hash of every job that does not use them is what it was before they existed.
        """
        values = dataclasses.asdict(self)
        defaults = TrainConfig.__dataclass_fields__
        for name in HASHED_UNLESS_DEFAULT:
            if values[name] == defaults[name].default:
                del values[name]
        return values


#: TrainConfig fields added after job hashes were first stored: part of the hash only when set to a non-default value.
HASHED_UNLESS_DEFAULT: tuple[str, ...] = ("augment", "channels_last", "nesterov")


@dataclass(frozen=True)
class PluginSpec:
    """One grid point of a plugin entry: its name, the options the user gave, and the full resolved config.

    ``params`` (user-given, in the order given) make the display label; ``config`` (defaults filled in) goes into
    hashes, so writing a default explicitly does not change a job's identity. Both are stored as JSON text so that a
    spec is immutable and hashable.
    """

    name: str
    params_json: str = "{}"
    config_json: str = "{}"

    @classmethod
    def of(cls, name: str, params: Mapping[str, Any], config: Mapping[str, Any]) -> PluginSpec:
        return cls(name, json.dumps(jsonable(params)), json.dumps(jsonable(config), sort_keys=True))

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def label(self) -> str:
        """``name`` or ``name(key=value, ...)`` with the user-given options."""
        params = self.params
        if not params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={_short(v)}' for k, v in params.items())})"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
