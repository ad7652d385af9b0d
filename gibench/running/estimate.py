"""``gibench run --estimate``: the device time a suite still needs, from a short calibration on the actual device.

Nothing trains and nothing downloads. The estimate is a calibration plus a sum: the work of every remaining job in
units (:mod:`gibench.api.cost`), each distinct unit timed once on the device (:mod:`gibench.running.calibration`),
count × seconds added up per dataset × backbone × regularizer.

* A job's training: ``epochs × ⌈N / batch_size⌉`` training steps (N = the train images; the last, smaller batch is
  costed as a full one).
* An evaluation: what the evaluator's own :meth:`~gibench.api.evaluator.Evaluator.cost` hook declares (forwards and
  saliency passes per image, training steps of the models it trains, its own plugin work; the rules of the built-in
  evaluators are in their docstrings and checked against the passes they really run). An evaluator without the hook
  is listed by name as not estimated.
* Shared work (an auxiliary model: GAN-test's judge, the learned-score denoiser) is counted once per key per suite,
  whenever a remaining evaluation needs it, even if an earlier run stored it already (an overestimate of at most one
  per dataset).

Dataset sizes come from each dataset's :meth:`~gibench.api.dataset.Dataset.sizes` (the built-in datasets answer
without their files, so ``full`` is priced before anything is downloaded); a dataset that does not answer is loaded,
without download.

Not counted: starting Python and importing torch, loading the datasets, the preflight, writing checkpoints and
results, the report and the local leaderboard page (seconds per run, not per job; ``docs/benchmarks.md`` compares the
estimate with measured runs). Done work is left out: a job trained in the runs directory costs no training, and an
evaluation whose result is stored costs nothing.
"""

from __future__ import annotations

__all__ = ["Row", "SuiteEstimate", "data_sizes", "estimate_suite", "evaluation_cost", "plan_suite"]

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gibench.api import registry
from gibench.api.cost import CostContext, EvaluationCost, TrainStep, Unit, Work, add_work
from gibench.api.dataset import DataSizes
from gibench.core.errors import GibenchError
from gibench.running.calibration import (
    TIMED_STEPS,
    WARMUP_STEPS,
    Calibration,
    CalibrationCache,
    default_cache_path,
)
from gibench.suites.suite import PluginSpec, Suite


def data_sizes(spec: PluginSpec, data_root: Path | None = None) -> DataSizes:
    """The sizes of dataset ``spec``: what the dataset says (:meth:`Dataset.sizes`), else those of the loaded bundle
    (no download)."""
    sizes = registry.datasets.create(spec.name, **spec.params).sizes()
    if sizes is not None:
        return sizes
    from gibench.running.options import RunOptions, load_bundle

    try:
        bundle = load_bundle(spec, RunOptions(data_root=data_root, download=False))
    except GibenchError as exc:
        raise GibenchError(f"the estimate cannot size dataset {spec.label}: {exc}") from None
    return DataSizes.of(bundle)


def evaluation_cost(spec: PluginSpec, job: Any, data: DataSizes, eval_batch: int) -> EvaluationCost | None:
    """The work of evaluator ``spec`` on ``job`` from the evaluator's own ``cost`` hook; None when it declares none."""
    evaluator = registry.evaluators.create(spec.name, **spec.params)
    try:
        cost = evaluator.cost(CostContext(job, data, eval_batch))
    except Exception as exc:
        raise GibenchError(f"evaluator {spec.label}'s cost hook failed on {job.label}: {type(exc).__name__}: "
                           f"{exc}. Fix the hook, or remove it to list the evaluator as not estimated.") from None
    if cost is not None and not isinstance(cost, EvaluationCost):
        raise GibenchError(f"evaluator {spec.label}'s cost hook returned {type(cost).__name__}; it must return a "
                           "gibench.api.cost.EvaluationCost or None")
    return cost


@dataclass
class Row:
    """One dataset × backbone × regularizer (over seeds), or one dataset's auxiliary model (what, as
    ``regularizer``)."""

    dataset: str
    backbone: str
    regularizer: str
    jobs: int = 0
    jobs_left: int = 0
    train_work: Work = field(default_factory=dict)
    eval_work: Work = field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds


@dataclass
class SuiteEstimate:
    suite: str
    device: str
    device_name: str | None
    rows: list[Row]
    auxiliary: list[Row]
    not_estimated: list[str]  # evaluators without a cost hook
    calibration: Calibration

    @property
    def jobs(self) -> int:
        return sum(r.jobs for r in self.rows)

    @property
    def jobs_left(self) -> int:
        return sum(r.jobs_left for r in self.rows)

    @property
    def train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.rows)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rows) + sum(r.seconds for r in self.auxiliary)


def plan_suite(suite: Suite, runs_dir: Path, *, data_root: Path | None = None,
               eval_batch_size: int = 256) -> tuple[list[Row], list[Row], list[str]]:
    """The work ``suite`` still needs in ``runs_dir``, not yet priced: rows per dataset × backbone × regularizer,
    rows of shared auxiliary models, and the evaluators without a cost hook. Reads only."""
    from gibench.store.runs import RunStore
    from gibench.suites.jobs import planned_jobs

    sizes = {spec: data_sizes(spec, data_root) for spec in suite.datasets}
    store = RunStore(Path(runs_dir), repair=False)
    rows: dict[tuple, Row] = {}
    shared: dict[str, Row] = {}
    not_estimated: set[str] = set()
    for job in planned_jobs(suite):  # a suite that selects: its sweep, and each selected setting at the default
        row = rows.setdefault((job.dataset, job.backbone, job.regularizer),
                              Row(job.dataset.label, job.backbone.label, job.regularizer.label))
        row.jobs += 1
        data = sizes[job.dataset] if job.validation is None else job.validation.sizes(sizes[job.dataset])
        row.jobs_left += _add_job(job, data, store.job(job.hash), row, shared, eval_batch_size, not_estimated)
    return list(rows.values()), list(shared.values()), sorted(not_estimated)


def estimate_suite(suite: Suite, runs_dir: Path, *, device: str | None = None, data_root: Path | None = None,
                   eval_batch_size: int = 256, cache_path: Path | None = None, warmup: int = WARMUP_STEPS,
                   timed: int = TIMED_STEPS) -> SuiteEstimate:
    """The device time ``suite`` still needs in ``runs_dir`` (read only; nothing is written there)."""
    from gibench.running.options import resolve_device
    from gibench.store.provenance import device_name

    torch_device = resolve_device(device)
    rows, shared, not_estimated = plan_suite(suite, runs_dir, data_root=data_root, eval_batch_size=eval_batch_size)
    calibration = Calibration(torch_device, CalibrationCache(cache_path or default_cache_path()), warmup, timed)
    costs: dict[Unit, float] = {}
    for row in [*rows, *shared]:
        row.train_seconds = _price(row.train_work, calibration, costs)
        row.eval_seconds = _price(row.eval_work, calibration, costs)
    return SuiteEstimate(suite.name, str(torch_device), device_name(str(torch_device)), rows, shared, not_estimated,
                         calibration)


def _add_job(job: Any, data: DataSizes, folder: Any, row: Row, shared: dict[str, Row], eval_batch: int,
             not_estimated: set[str]) -> int:
    """Add the remaining work of ``job`` to ``row`` (and the shared auxiliary rows); 1 if anything remains, else 0."""
    from gibench.store.runs import evaluation_key

    remaining = False
    if not folder.is_trained():
        remaining = True
        step = TrainStep(job.backbone, job.regularizer, job.train, data.shape, data.num_classes)
        add_work(row.train_work, step, CostContext.training_steps(job.train, data.n_train))
    for spec in job.evaluators:
        evaluator = registry.evaluators.get(spec.name)
        if folder.has_result(evaluation_key(spec.name, evaluator.version, spec.config)):
            continue
        remaining = True
        cost = evaluation_cost(spec, job, data, eval_batch)
        if cost is None:
            not_estimated.add(spec.name)
            continue
        for unit, count in cost.per_job.items():
            add_work(row.eval_work, unit, count)
        for key, (what, aux) in cost.shared.items():
            if key not in shared:
                shared[key] = Row(job.dataset.label, "", what, eval_work=dict(aux))
    return int(remaining)


def _price(work: Work, calibration: Calibration, costs: dict[Unit, float]) -> float:
    total = 0.0
    for unit, count in work.items():
        if unit not in costs:
            costs[unit] = calibration.seconds(unit)
        total += costs[unit] * count
    return total
