"""Jobs: the cross product of a suite, and the content hash that names each trained model.

A job is one (dataset, backbone, regularizer grid point, seed) with the suite's training config for that dataset
(``train`` merged with its ``train_per_dataset`` entry). Its hash covers
everything that determines the trained weights, and nothing else, hashed by :func:`gibench.core.identity.identity_hash`
(floats rounded to ten significant digits, so every machine agrees): the dataset and its resolved options,
the backbone and its options, the regularizer's name, version and resolved config, the seed, the (merged) training
config (:meth:`TrainConfig.hash_dict`: fields added later count only when not at their default, so existing hashes
are unchanged) and :data:`TRAINING_CODE_VERSION`. Evaluator settings and the suite's name are not in it, so adding an
evaluator or reusing a job in another suite never retrains. A job of a suite that holds out a validation split
(:class:`gibench.data.validation.ValidationSplit`) records the split with its dataset, so it never shares a hash with
one trained on the whole training split; a job without one hashes as before the split existed.

A suite that selects (:mod:`gibench.suites.selection_plan`) has two kinds of jobs: :func:`sweep_jobs`, every swept
setting (and ``erm``) with the sweep's seeds, scored only by ``validation_accuracy``; and :func:`expand`, the settings
selection chose (:class:`SelectionUnit` → value), with the suite's seeds and evaluators. Both are the same job where
they meet (same setting and seed), so its training is reused.
"""

from __future__ import annotations

__all__ = [
    "Job", "SelectionUnit", "TRAINING_CODE_VERSION", "VALIDATION_EVALUATOR", "expand", "merge_jobs", "planned_jobs",
    "rebuildable_jobs", "selection_units", "sweep_jobs", "sweep_point", "training_identity",
]

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gibench.api import registry
from gibench.core.identity import identity_hash
from gibench.core.params import build_config
from gibench.data.validation import ValidationSplit
from gibench.suites.suite import Grid, PluginSpec, Suite, TrainConfig, identity_config

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
    #: the validation split held out of the training split (None: trained on all of it)
    validation: ValidationSplit | None = None

    def training_spec(self) -> dict[str, Any]:
        """Everything that determines the trained weights, as plain JSON (:func:`training_identity`)."""
        dataset = {"name": self.dataset.name, "version": registry.datasets.get(self.dataset.name).version,
                   "config": self.dataset.config}
        if self.validation is not None:
            dataset["validation"] = self.validation.as_json()
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


#: The evaluator selection reads (``evaluators/validation_accuracy.py``); every job of a suite that selects runs it.
VALIDATION_EVALUATOR = PluginSpec.of("validation_accuracy", {}, {})


@dataclass(frozen=True)
class SelectionUnit:
    """What one selection chooses a setting for: a dataset, a backbone and a regularizer entry (labels, as in the
    suite; the entry without its swept parameter)."""

    dataset: str
    backbone: str
    regularizer: str

    def as_json(self) -> dict[str, str]:
        return {"dataset": self.dataset, "backbone": self.backbone, "regularizer": self.regularizer}


def sweep_point(spec: PluginSpec, parameter: str, value: float) -> PluginSpec:
    """The regularizer entry ``spec`` with its swept ``parameter`` set to ``value`` (the label names it)."""
    cls = registry.regularizers.get(spec.name)
    params = {**spec.params, parameter: value}
    return PluginSpec.of(spec.name, params, identity_config(build_config(cls.Config, params, f"{spec.label} sweep")))


def swept_values(suite: Suite, spec: PluginSpec) -> tuple[str, tuple[float, ...]] | None:
    """(parameter, values) of a regularizer entry in a suite that selects; None for one without a sweep (erm)."""
    sweep = registry.regularizers.get(spec.name).sweep
    if sweep is None or suite.selection is None:
        return None
    return sweep.parameter, suite.selection.values_for(spec.name, spec.label) or tuple(sweep.values)


def selection_units(suite: Suite) -> dict[SelectionUnit, tuple[Grid, PluginSpec, PluginSpec, PluginSpec]]:
    """Every unit a suite that selects chooses a setting for → (its grid, dataset, backbone, regularizer entry)."""
    units = {}
    for grid, dataset, backbone, regularizer in _entries(suite):
        if swept_values(suite, regularizer) is not None:
            unit = SelectionUnit(dataset.label, backbone.label, regularizer.label)
            units.setdefault(unit, (grid, dataset, backbone, regularizer))
    return units


def _entries(suite: Suite) -> Iterator[tuple[Grid, PluginSpec, PluginSpec, PluginSpec]]:
    """(grid, dataset, backbone, regularizer entry) of every grid in turn, in the suite's nesting order."""
    for grid in suite.all_grids():
        for dataset in grid.datasets:
            for backbone in grid.backbones:
                for regularizer in grid.regularizers:
                    yield grid, dataset, backbone, regularizer


def sweep_jobs(suite: Suite) -> list[Job]:
    """The sweep of a suite with ``select: {rule: max_drop}``: every swept setting and ``erm``, with the sweep's seeds,
    scored by ``validation_accuracy`` only (selection needs nothing else). Empty for any other suite."""
    if suite.selection is None or suite.selection.rule != "max_drop":
        return []
    jobs: dict[str, Job] = {}
    for _, dataset, backbone, regularizer in _entries(suite):
        swept = swept_values(suite, regularizer)
        if swept is None and regularizer.name != "erm":
            continue
        points = [regularizer] if swept is None else [sweep_point(regularizer, swept[0], v) for v in swept[1]]
        for point in points:
            for seed in suite.selection.seeds:
                _add(jobs, Job(dataset, backbone, point, seed, suite.train_for(dataset), (VALIDATION_EVALUATOR,),
                               suite.validation))
    return list(jobs.values())


def expand(suite: Suite, chosen: Mapping[SelectionUnit, float] | None = None, *,
           every_setting: bool = False) -> list[Job]:
    """The jobs of a suite that are scored: datasets × backbones × regularizers × seeds, in that nesting order
    (deterministic), for each of its grids in turn (``extra_grids`` after the main one). A job that two grids produce
    is listed once, at its first place, and scored by the evaluators of both.

    In a suite that selects, each swept regularizer entry stands for the settings the rule keeps: every swept value
    for ``rule: all``, the value ``chosen`` maps its :class:`SelectionUnit` to for ``rule: max_drop`` (a unit not in
    ``chosen``, not selected yet, has no jobs here); regularizers without a sweep (erm, fooled) are scored as listed.
    Every job of such a suite holds out its validation split and also runs ``validation_accuracy``.
    ``every_setting`` lists the jobs of every swept value whatever the rule (what any selection could score: how
    ``gibench verify`` rebuilds a submitted job from its suite).
    """
    jobs: dict[str, Job] = {}
    chosen = chosen or {}
    for grid, dataset, backbone, regularizer in _entries(suite):
        evaluators = grid.evaluators
        if suite.validation is not None and VALIDATION_EVALUATOR not in evaluators:
            evaluators = (*evaluators, VALIDATION_EVALUATOR)
        for point in _scored_points(suite, dataset, backbone, regularizer, chosen, every_setting):
            for seed in suite.seeds:
                _add(jobs, Job(dataset, backbone, point, seed, suite.train_for(dataset), evaluators,
                               suite.validation))
    return list(jobs.values())


def rebuildable_jobs(suite: Suite) -> list[Job]:
    """Every job a run of ``suite`` could have trained, whatever its selection chose: the sweep and every swept
    setting with the suite's seeds (for a suite that does not select: :func:`expand`)."""
    return merge_jobs(sweep_jobs(suite), expand(suite, every_setting=True))


def planned_jobs(suite: Suite, chosen: Mapping[SelectionUnit, float] | None = None) -> list[Job]:
    """Every job a run of ``suite`` would train, for pricing, preflight and counting: the sweep, then the scored jobs,
    each at the setting ``chosen`` holds for its unit (a selection made from a store's sweep) or, where none is chosen
    yet, stood in for by the regularizer's default (the cost of a job does not depend on its strength)."""
    settings = {}
    for unit, (_, _, _, regularizer) in selection_units(suite).items():
        if chosen is not None and unit in chosen:
            settings[unit] = chosen[unit]
            continue
        parameter, values = swept_values(suite, regularizer)
        default = getattr(registry.regularizers.get(regularizer.name).Config(), parameter)
        settings[unit] = default if default in values else values[0]
    return merge_jobs(sweep_jobs(suite), expand(suite, settings))


def merge_jobs(*lists: list[Job]) -> list[Job]:
    """The jobs of the lists once each, in order of first appearance; a job listed again (the sweep's job that is also
    scored) keeps the evaluators of every listing."""
    merged: dict[str, Job] = {}
    for jobs in lists:
        for job in jobs:
            _add(merged, job)
    return list(merged.values())


def _scored_points(suite: Suite, dataset: PluginSpec, backbone: PluginSpec, regularizer: PluginSpec,
                   chosen: Mapping[SelectionUnit, float], every_setting: bool) -> list[PluginSpec]:
    swept = swept_values(suite, regularizer)
    if swept is None:
        return [regularizer]
    parameter, values = swept
    if suite.selection.rule == "all" or every_setting:
        return [sweep_point(regularizer, parameter, v) for v in values]
    value = chosen.get(SelectionUnit(dataset.label, backbone.label, regularizer.label))
    return [] if value is None else [sweep_point(regularizer, parameter, value)]


def _add(jobs: dict[str, Job], job: Job) -> None:
    """Add ``job``; the same job again (another grid, or the sweep) adds only the evaluators it lacks."""
    first = jobs.setdefault(job.hash, job)
    if first is not job:
        extra = tuple(e for e in job.evaluators if e not in first.evaluators)
        jobs[job.hash] = dataclasses.replace(first, evaluators=first.evaluators + extra)
