"""Named training recipes: ``train: {preset: <name>, <key>: <override>, ...}`` in a suite file.

A preset is a mapping of ordinary ``train`` keys (:class:`gibench.training.specs.TrainConfig`). A suite's ``train``
section, and each ``train_per_dataset`` entry, may name one with ``preset``; :func:`expand_preset` replaces it by its
keys, and the keys written beside it win. This happens before validation, so a job's identity is that of the expanded
config: the preset's name never enters a hash, and two suites that spell the same config differently share their jobs.
Every preset sets the same keys (:data:`RECIPE_KEYS`, ``nesterov: false`` included), so a preset in a
``train_per_dataset`` entry replaces the whole recipe of ``train``, whichever preset or keys ``train`` has.

* ``papers_cifar``: the seed papers' 200-epoch CIFAR recipe (Srinivas & Fleuret's train script), SGD with momentum,
  the rate divided by 10 after 50 % and 75 % of the epochs, random crop and flip (what ``full.yaml`` writes out, with
  ``augment: none`` at the top and ``crop_flip`` for CIFAR only).
* ``short_cifar``: 30 epochs of SGD with Nesterov momentum under the one-cycle policy (``schedule: onecycle``) of
  Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates" (SPIE 2019).
  Taken from them: one warm-up to the peak rate and one anneal over the whole run, in a fraction of the usual epochs.
  Not taken: their larger peak rates (up to 3), cyclical momentum, reduced weight decay and batches of 1,000; the
  peak rate, weight decay, batch and augmentation here are the papers' recipe's. Nor label smoothing, which fast
  CIFAR recipes often add: it is itself a regularizer of the logits (Müller, Kornblith & Hinton, "When does label
  smoothing help?", NeurIPS 2019, show it erases information from them), so it would act under every method this
  benchmark compares and change the very input gradients it scores. Its accuracy on CIFAR is not measured yet
  (docs/benchmarks.md).
* ``short_mnist``: the digit datasets (MNIST, Fashion-MNIST, BlockMNIST, the bundled ``mnist_subset``): 3 epochs of
  SGD with Nesterov momentum under the one-cycle policy, the same number of passes as the ``standard`` suite's
  constant-rate Adam recipe (``{epochs: 3, batch_size: 64, optimizer: adam, lr: 1.0e-3}``); measured on
  ``mnist_subset`` by benchmarks/train_presets.py.
"""

from __future__ import annotations

__all__ = ["PRESET_KEY", "RECIPE_KEYS", "TRAIN_PRESETS", "expand_preset"]

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gibench.core.errors import ConfigError
from gibench.core.params import did_you_mean

#: The key of a ``train`` section (or ``train_per_dataset`` entry) that names a preset.
PRESET_KEY = "preset"

#: The keys every preset sets, so that a preset in a ``train_per_dataset`` entry replaces the whole recipe of
#: ``train`` and keeps only its other keys (``amp``, ``grad_clip``, ``log_every``, ``channels_last``).
RECIPE_KEYS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "epochs", "schedule",
               "milestones", "gamma", "augment")

_PAPERS_SGD: dict[str, Any] = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4,
                               "batch_size": 128, "milestones": (0.5, 0.75), "gamma": 0.1}

#: name → the ``train`` keys it stands for (read-only); each sets every key of :data:`RECIPE_KEYS`.
TRAIN_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "papers_cifar": MappingProxyType({**_PAPERS_SGD, "nesterov": False, "epochs": 200, "schedule": "multistep",
                                      "augment": "crop_flip"}),
    "short_cifar": MappingProxyType({**_PAPERS_SGD, "nesterov": True, "epochs": 30, "schedule": "onecycle",
                                     "augment": "crop_flip"}),
    "short_mnist": MappingProxyType({**_PAPERS_SGD, "lr": 0.05, "nesterov": True, "batch_size": 64, "epochs": 3,
                                     "schedule": "onecycle", "augment": "none"}),
})


def expand_preset(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` with its ``preset`` key (if any) replaced by that preset's keys; the other keys win over them.

    Raises :class:`ConfigError` naming ``where`` and the presets when the name is not one of :data:`TRAIN_PRESETS`.
    """
    if PRESET_KEY not in options:
        return dict(options)
    name = options[PRESET_KEY]
    if not isinstance(name, str) or name not in TRAIN_PRESETS:
        choices = list(TRAIN_PRESETS)
        hint = did_you_mean(name, choices) if isinstance(name, str) else ""
        raise ConfigError(f"{where}: unknown preset {name!r}.{hint} Presets: {', '.join(choices)}.")
    overrides = {key: value for key, value in options.items() if key != PRESET_KEY}
    return {**TRAIN_PRESETS[name], **overrides}
