"""``gibench run --estimate``: the work a suite still needs, in device-independent model passes and in device-hours
(from a short calibration on the actual device, or from a throughput the user states).

Nothing trains and nothing downloads. The estimate is a count plus a price: the work of every remaining job in units
(:mod:`gibench.api.cost`), counted per dataset × backbone × regularizer (:func:`plan`), then each unit either timed
once on the device (:mod:`gibench.running.calibration`; count × seconds) or priced at a stated throughput.

* A job's training: ``epochs × ⌈N / batch_size⌉`` training steps (N = the train images; the last, smaller batch is
  costed as a full one).
* An evaluation: what the evaluator's own :meth:`~gibench.api.evaluator.Evaluator.cost` hook declares (forwards and
  saliency passes per image, training steps of the models it trains, its own plugin work; the rules of the built-in
  evaluators are in their docstrings and checked against the passes they really run). An evaluator without the hook
  is listed by name as not estimated.
* Shared work (an auxiliary model: GAN-test's judge, the learned-score denoiser) is counted once per key per suite,
  whenever a remaining evaluation needs it, even if an earlier run stored it already (an overestimate of at most one
  per dataset).

**Passes** (:class:`gibench.api.passes.Passes`), the device-independent measure: images through a model (forwards)
and back through one of its graphs (backwards). A training step counts its regularizer's
:meth:`~gibench.api.regularizer.Regularizer.passes_per_step` × the batch size (so a training counts ``steps × batch
size`` images, the last batch as a full one, as its hours do), a forward pass one forward per image, a saliency pass
one forward and one backward per image, plugin work what it declares (``PluginWork.passes``; undeclared plugin work
is listed as not counted). A pass is one image through the model that the unit runs: the job's backbone, a judge's,
a denoiser. The totals are reported per row, per evaluator (its per-job work over every remaining job), per shared
auxiliary model and in all, as forwards and backwards and as **forward-equivalent passes**, forward + 2 × backward
(:data:`gibench.api.passes.BACKWARD_IN_FORWARDS`: a backward computes the input and the weight gradient of every
layer, each about one forward's arithmetic). They depend on neither the device nor its load, so a change that makes
a suite cheaper shows in them on any machine, and a document can state a suite's work exactly.

**Hours**: from the calibration on ``device`` (:func:`estimate_suite`), or, with ``throughput`` (forward-equivalent
passes per second, which a user measures or knows for the device), seconds = forward-equivalent passes /
throughput, without any calibration (one rate for every backbone and kind of pass: a rough price; plugin work that
declares no passes is left out and listed). :func:`plan` counts the passes alone, with no device.

Dataset sizes come from each dataset's :meth:`~gibench.api.dataset.Dataset.sizes` (the built-in datasets answer
without their files, so ``full`` is priced before anything is downloaded); a dataset that does not answer is loaded,
without download.

Not counted: starting Python and importing torch, loading the datasets, the preflight, writing checkpoints and
results, the report and the local leaderboard page (seconds per run, not per job; ``docs/benchmarks.md`` compares the
estimate with measured runs). Done work is left out: a job trained in the runs directory costs no training, and an
evaluation whose result is stored costs nothing.
"""

from __future__ import annotations

__all__ = ["EvaluatorRow", "Plan", "Row", "SuiteEstimate", "data_sizes", "estimate_suite", "evaluation_cost",
           "plan", "plan_suite", "unit_passes", "work_passes"]

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gibench.api import registry
from gibench.api.cost import (
    FORWARD,
    CostContext,
    EvaluationCost,
    ModelPass,
    Passes,
    TrainStep,
    Unit,
    Work,
    add_work,
)
from gibench.api.dataset import DataSizes
from gibench.core.errors import ConfigError, GibenchError
from gibench.running.calibration import (
    TIMED_STEPS,
    WARMUP_STEPS,
    Calibration,
    CalibrationCache,
    default_cache_path,
    describe,
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


def unit_passes(unit: Unit) -> Passes | None:
    """The model passes of one ``unit`` (per step or per image, as the unit is counted): a training step's are its
    regularizer's ``passes_per_step()`` × the batch size, a forward pass's one forward, a saliency pass's one forward
    and one backward, plugin work's what its evaluator declared (None: not declared)."""
    if isinstance(unit, TrainStep):
        regularizer = registry.regularizers.create(unit.regularizer.name, **unit.regularizer.params)
        try:
            per_image = regularizer.passes_per_step()
        except Exception as exc:
            raise GibenchError(f"regularizer {unit.regularizer.label}'s passes_per_step failed: "
                               f"{type(exc).__name__}: {exc}") from None
        if not isinstance(per_image, Passes):
            raise GibenchError(f"regularizer {unit.regularizer.label}'s passes_per_step returned "
                               f"{type(per_image).__name__}; it must return a gibench.Passes")
        return per_image * unit.train.batch_size
    if isinstance(unit, ModelPass):
        return Passes(forward=1) if unit.kind == FORWARD else Passes(forward=1, backward=1)
    if unit.passes is None:
        return None
    return unit.passes * (unit.batch_size if unit.per == "step" else 1)


def work_passes(work: Work) -> Passes:
    """The passes of ``work`` (count × :func:`unit_passes`); units without a pass count add nothing."""
    total = Passes()
    for unit, count in work.items():
        passes = unit_passes(unit)
        if passes is not None:
            total = total + passes * count
    return total


def _uncounted(works: list[Work]) -> list[str]:
    return sorted({describe(unit) for work in works for unit in work if unit_passes(unit) is None})


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

    @property
    def train_passes(self) -> Passes:
        return work_passes(self.train_work)

    @property
    def eval_passes(self) -> Passes:
        return work_passes(self.eval_work)

    @property
    def passes(self) -> Passes:
        return self.train_passes + self.eval_passes


@dataclass
class EvaluatorRow:
    """One evaluator (its label) over every remaining job: its per-job work (its shared work is in the auxiliary
    rows)."""

    evaluator: str
    jobs_left: int = 0
    work: Work = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passes(self) -> Passes:
        return work_passes(self.work)


@dataclass
class Plan:
    """The work ``suite`` still needs in a runs directory, counted and not priced: rows per dataset × backbone ×
    regularizer, rows of shared auxiliary models, rows per evaluator (the same evaluation work as the rows', split
    by evaluator), and the evaluators without a cost hook."""

    suite: str
    rows: list[Row]
    auxiliary: list[Row]
    not_estimated: list[str]  # evaluators without a cost hook
    evaluators: list[EvaluatorRow] = field(default_factory=list)
    failed: int = 0  # jobs whose training failed before and that a rerun does not train again (not in rows' work)

    @property
    def jobs(self) -> int:
        return sum(r.jobs for r in self.rows)

    @property
    def jobs_left(self) -> int:
        return sum(r.jobs_left for r in self.rows)

    @property
    def train_passes(self) -> Passes:
        return sum((r.train_passes for r in self.rows), Passes())

    @property
    def passes(self) -> Passes:
        """Every remaining pass: the rows' training and evaluation and the auxiliary models'."""
        return sum((r.passes for r in [*self.rows, *self.auxiliary]), Passes())

    @property
    def not_counted(self) -> list[str]:
        """Plugin work whose passes its evaluator does not declare (in the hours, not in the passes)."""
        return _uncounted([w for r in [*self.rows, *self.auxiliary] for w in (r.train_work, r.eval_work)])


@dataclass
class SuiteEstimate(Plan):
    """A :class:`Plan` priced in seconds: on ``device`` from ``calibration``, or at ``throughput`` forward-equivalent
    passes per second (then ``calibration`` is None)."""

    device: str | None = None
    device_name: str | None = None
    calibration: Calibration | None = None
    throughput: float | None = None

    @property
    def train_seconds(self) -> float:
        if self.throughput is not None:
            return self.train_passes.forward_equivalents / self.throughput
        return sum(r.train_seconds for r in self.rows)

    @property
    def seconds(self) -> float:
        if self.throughput is not None:  # exactly passes / throughput (a sum of per-row quotients would round)
            return self.passes.forward_equivalents / self.throughput
        return sum(r.seconds for r in self.rows) + sum(r.seconds for r in self.auxiliary)


def plan(suite: Suite, runs_dir: Path, *, data_root: Path | None = None, eval_batch_size: int = 256,
         retry_failed: bool = False) -> Plan:
    """The work ``suite`` still needs in ``runs_dir``, counted (passes) and not priced. Reads only; needs no device.

    A job whose training failed before is recorded as failed and not trained again by a rerun (the runner's rule,
    :mod:`gibench.running.job_runner`), so it is no work left, unless ``retry_failed`` (``--retry-failed``) or its
    failure is retryable (out of memory); such jobs are counted in ``Plan.failed``."""
    from gibench.store.runs import RunStore
    from gibench.suites.jobs import planned_jobs

    sizes = {spec: data_sizes(spec, data_root) for spec in suite.datasets}
    store = RunStore(Path(runs_dir), repair=False)
    rows: dict[tuple, Row] = {}
    shared: dict[str, Row] = {}
    evaluators: dict[str, EvaluatorRow] = {}
    not_estimated: set[str] = set()
    failed = 0
    # a suite that selects: its sweep, and each scored setting as selected from the stored sweep (at the default
    # where the sweep is not finished), so the jobs already scored at a selected strength count as done
    from gibench.running.selection import stored_selection  # the store's reader, only for a suite that selects

    selection = stored_selection(suite, Path(runs_dir))
    for job in planned_jobs(suite, selection.chosen() if selection else None):
        row = rows.setdefault((job.dataset, job.backbone, job.regularizer),
                              Row(job.dataset.label, job.backbone.label, job.regularizer.label))
        row.jobs += 1
        folder = store.job(job.hash)
        status = folder.status()
        if status is not None and status.keeps_a_rerun_from_training(retry_failed):  # the runner's own rule
            failed += 1
            continue
        data = sizes[job.dataset] if job.validation is None else job.validation.sizes(sizes[job.dataset])
        row.jobs_left += _add_job(job, data, folder, row, shared, evaluators, eval_batch_size, not_estimated)
    return Plan(suite.name, list(rows.values()), list(shared.values()), sorted(not_estimated),
                list(evaluators.values()), failed)


def plan_suite(suite: Suite, runs_dir: Path, *, data_root: Path | None = None,
               eval_batch_size: int = 256) -> tuple[list[Row], list[Row], list[str]]:
    """The work ``suite`` still needs in ``runs_dir``, not yet priced: rows per dataset × backbone × regularizer,
    rows of shared auxiliary models, and the evaluators without a cost hook (:func:`plan`, which also splits the
    evaluation work by evaluator). Each row's ``passes`` counts its work in model passes. Reads only."""
    counted = plan(suite, runs_dir, data_root=data_root, eval_batch_size=eval_batch_size)
    return counted.rows, counted.auxiliary, counted.not_estimated


def estimate_suite(suite: Suite, runs_dir: Path, *, device: str | None = None, data_root: Path | None = None,
                   eval_batch_size: int = 256, cache_path: Path | None = None, warmup: int = WARMUP_STEPS,
                   timed: int = TIMED_STEPS, throughput: float | None = None,
                   progress: Callable[[int, int, str], None] | None = None,
                   retry_failed: bool = False) -> SuiteEstimate:
    """The work ``suite`` still needs in ``runs_dir``, in passes and in device seconds (read only; nothing is written
    there): timed by a calibration on ``device``, or, with ``throughput`` (forward-equivalent passes per second,
    positive), seconds = forward-equivalent passes / throughput, with no calibration and no device needed.

    ``progress(done, total, what)`` is called before each unit that is not yet in the calibration cache is timed
    (``done`` of ``total`` such units timed so far, ``what`` the unit in words), so a caller can show how far a long
    first calibration has got. ``retry_failed``: count the jobs whose training failed before as work left
    (:func:`plan`)."""
    from gibench.running.options import resolve_device
    from gibench.store.provenance import device_name

    if throughput is not None:
        throughput = check_throughput(throughput)
        torch_device = None
    else:
        torch_device = resolve_device(device)
    counted = plan(suite, runs_dir, data_root=data_root, eval_batch_size=eval_batch_size, retry_failed=retry_failed)
    est = SuiteEstimate(counted.suite, counted.rows, counted.auxiliary, counted.not_estimated, counted.evaluators,
                        counted.failed)
    if throughput is not None:
        est.throughput = throughput  # plugin work without declared passes (est.not_counted) is left out
        for row in [*est.rows, *est.auxiliary]:
            row.train_seconds = row.train_passes.forward_equivalents / throughput
            row.eval_seconds = row.eval_passes.forward_equivalents / throughput
        for evaluator in est.evaluators:
            evaluator.seconds = evaluator.passes.forward_equivalents / throughput
        return est
    est.device, est.device_name = str(torch_device), device_name(str(torch_device))
    est.calibration = Calibration(torch_device, CalibrationCache(cache_path or default_cache_path()), warmup, timed)
    costs: dict[Unit, float] = {}
    if progress is not None:
        _report_progress(est, progress)
    for row in [*est.rows, *est.auxiliary]:
        row.train_seconds = _price(row.train_work, est.calibration, costs)
        row.eval_seconds = _price(row.eval_work, est.calibration, costs)
    for evaluator in est.evaluators:
        evaluator.seconds = _price(evaluator.work, est.calibration, costs)
    return est


def check_throughput(value: Any) -> float:
    """``value`` as a positive finite number of forward-equivalent passes per second; a ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--throughput must be a positive number of forward-equivalent passes per second (images "
                          f"through the model per second, a backward counting as 2), got {value!r}.")
    return float(value)


def _add_job(job: Any, data: DataSizes, folder: Any, row: Row, shared: dict[str, Row],
             evaluators: dict[str, EvaluatorRow], eval_batch: int, not_estimated: set[str]) -> int:
    """Add the remaining work of ``job`` to ``row``, the shared auxiliary rows and the evaluators' rows; 1 if
    anything remains, else 0."""
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
        share = evaluators.setdefault(spec.label, EvaluatorRow(spec.label))
        share.jobs_left += 1
        for unit, count in cost.per_job.items():
            add_work(row.eval_work, unit, count)
            add_work(share.work, unit, count)
        for key, (what, aux) in cost.shared.items():
            if key not in shared:
                shared[key] = Row(job.dataset.label, "", what, eval_work=dict(aux))
    return int(remaining)


def _report_progress(est: SuiteEstimate, progress: Callable[[int, int, str], None]) -> None:
    """Make ``est.calibration`` call ``progress(done, total, what)`` before it times each unit that is not cached."""
    calibration = est.calibration
    works = [w for r in [*est.rows, *est.auxiliary] for w in (r.train_work, r.eval_work)]
    # one per cache key: units that differ only in what does not change a step's cost are timed once
    total = len({calibration.key(unit) for work in works for unit in work if not calibration.is_cached(unit)})
    calibration.before_measuring = lambda unit: progress(calibration.measured, total, describe(unit))


def _price(work: Work, calibration: Calibration, costs: dict[Unit, float]) -> float:
    total = 0.0
    for unit, count in work.items():
        if unit not in costs:
            costs[unit] = calibration.seconds(unit)
        total += costs[unit] * count
    return total
