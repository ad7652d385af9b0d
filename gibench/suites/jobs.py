"""Jobs: the cross product of a suite, and the content hash that names each trained model.

A job is one (dataset, backbone, regularizer grid point, seed) with the suite's training config for that dataset
(``train`` merged with its ``train_per_dataset`` entry). Its hash covers
everything that determines the trained weights, and nothing else, hashed by :func:`gibench.core.identity.identity_hash`
(floats rounded to ten significant digits, so every machine agrees): the dataset and its resolved options,
the backbone and its options, the regularizer's name, version and resolved config, the seed, the (merged) training
config (:meth:`TrainConfig.hash_dict`: fields added later count only when not at their default, so existing hashes
are unchanged) and :data:`TRAINING_CODE_VERSION`. Evaluator settings and the suite's name are not in it, so adding an
evaluator or reusing a job in another suite never retrains.
"""

from __future__ import annotations

__all__ = [
    "Job", "TRAINING_CODE_VERSION", "expand", "training_identity",
]

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gibench.api import registry
from gibench.core.identity import identity_hash
from gibench.suites.suite import PluginSpec, Suite, TrainConfig

#: Bump when a change to gibench/training/train.py or gibench/training/models.py changes the weights a job produces.
TRAINING_CODE_VERSION = "1"


@dataclass(frozen=True)
class Job:
    dataset: PluginSpec
    backbone: PluginSpec
    regularizer: PluginSpec
    seed: int
    train: TrainConfig
    evaluators: tuple[PluginSpec, ...] = ()

    def training_spec(self) -> dict[str, Any]:
        """Everything that determines the trained weights, as plain JSON (:func:`training_identity`)."""
        dataset = {"name": self.dataset.name, "version": registry.datasets.get(self.dataset.name).version,
                   "config": self.dataset.config}
        return training_identity("dataset", dataset, self.backbone, self.regularizer, self.train, self.seed)

    @cached_property
    def hash(self) -> str:
        return identity_hash(self.training_spec())

    @property
    def label(self) -> str:
        return f"{self.dataset.label} / {self.backbone.label} / {self.regularizer.label} / seed {self.seed}"


def training_identity(data_key: str, data: Mapping[str, Any], backbone: PluginSpec, regularizer: PluginSpec,
                      train: TrainConfig, seed: int) -> dict[str, Any]:
    """Everything that determines the weights gibench's training loop gives a classifier, as plain JSON.

    The one rule behind a job's hash (:meth:`Job.training_spec`) and an auxiliary classifier's identity
    (:func:`gibench.store.auxiliary.classifier`), so that the two cannot drift apart. ``data_key`` names the data's
    entry: ``"dataset"`` for a job (name, version, config), ``"data"`` for an auxiliary classifier (whose data may be
    derived); each keeps its name because the stored hashes cover it.
    """
    return {
        data_key: dict(data),
        "backbone": {"name": backbone.name, "options": backbone.config},
        "regularizer": {"name": regularizer.name, "version": registry.regularizers.get(regularizer.name).version,
                        "config": regularizer.config},
        "seed": seed,
        "train": train.hash_dict(),
        "training_code_version": TRAINING_CODE_VERSION,
    }


def expand(suite: Suite) -> list[Job]:
    """The jobs of a suite: datasets × backbones × regularizers × seeds, in that nesting order (deterministic), for
    each of its grids in turn (``extra_grids`` after the main one). A job that two grids produce is listed once, at
    its first place, and scored by the evaluators of both."""
    jobs: dict[str, Job] = {}
    for grid in suite.all_grids():
        for dataset in grid.datasets:
            for backbone in grid.backbones:
                for regularizer in grid.regularizers:
                    for seed in suite.seeds:
                        job = Job(dataset, backbone, regularizer, seed, suite.train_for(dataset), grid.evaluators)
                        first = jobs.setdefault(job.hash, job)
                        if first is not job:
                            extra = tuple(e for e in grid.evaluators if e not in first.evaluators)
                            jobs[job.hash] = dataclasses.replace(first, evaluators=first.evaluators + extra)
    return list(jobs.values())
