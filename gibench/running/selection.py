"""Selection: the swept setting a suite with ``select: {rule: max_drop}`` scores, chosen from stored validation
accuracies only (the protocol: :mod:`gibench.suites.selection_plan`).

For each :class:`gibench.suites.jobs.SelectionUnit` (dataset, backbone, regularizer entry) the curve is the mean
validation accuracy over the sweep's seeds at every swept value; the reference is ``erm``'s mean over the same seeds,
same dataset and backbone. The rule keeps the strongest value whose mean is at least ``erm − max_drop`` (state
``selected``); when none is, the weakest value that trained (``over_budget``: the row is scored and says so); a value
with a seed whose training failed does not meet the budget; a unit with a job not yet run is ``pending`` (nothing of it
is scored yet), and one whose ``erm`` failed has ``no_reference``.

:func:`select` is pure: it reads accuracies through a lookup (job hash → accuracy, ``"failed"`` or None), so the
runner (from the store, :func:`stored_accuracies`), ``gibench report`` and ``gibench verify`` (from a submission's
results table) compute the same selection from the same numbers. Nothing here reads a test split: the only number it
sees is ``validation_accuracy`` (``evaluators/validation_accuracy.py``).

The record (:meth:`Selection.to_json`) names the rule, the split, every unit's curve, the reference and the choice; the
runner writes it to ``<runs>/selections/<suite name>-<suite hash>.json`` (:func:`write_selection`), and a submission
carries it.
"""

from __future__ import annotations

__all__ = [
    "FAILED", "CurvePoint", "Lookup", "Selection", "UnitChoice", "read_selections", "select", "selection_path",
    "stored_accuracies", "stored_selection", "write_selection",
]

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gibench.api import registry
from gibench.core.errors import GibenchError
from gibench.core.fsio import DamagedFileError, atomic_write_json, read_json
from gibench.store.runs import RunStore, evaluation_key
from gibench.suites.jobs import VALIDATION_EVALUATOR, Job, SelectionUnit, selection_units, sweep_point, swept_values
from gibench.suites.suite import Suite

#: What a lookup returns for a job whose training failed.
FAILED = "failed"
#: job hash → its validation accuracy, :data:`FAILED`, or None (not run yet)
Lookup = Callable[[str], "float | str | None"]
STATES = ("selected", "over_budget", "pending", "no_reference", "failed")
_TOLERANCE = 1e-12  # a mean equal to the budget up to float rounding meets it


@dataclass(frozen=True)
class CurvePoint:
    """One swept value: the validation accuracy of each sweep seed (None: not run yet; ``failed``: training failed)
    and their mean (None unless every seed has an accuracy)."""

    value: float
    accuracies: tuple[float | str | None, ...]
    mean: float | None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "accuracies": list(self.accuracies), "mean": self.mean}


@dataclass(frozen=True)
class UnitChoice:
    """The selection of one unit: its curve, ``erm``'s mean (the reference), the budget and the chosen value."""

    unit: SelectionUnit
    regularizer: str
    parameter: str
    scale: str
    curve: tuple[CurvePoint, ...]
    reference: float | None
    budget: float | None
    selected: float | None
    state: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {**self.unit.as_json(), "name": self.regularizer, "parameter": self.parameter, "scale": self.scale,
                "curve": [p.as_json() for p in self.curve], "reference": self.reference, "budget": self.budget,
                "selected": self.selected, "state": self.state, "reason": self.reason}


@dataclass(frozen=True)
class Selection:
    """Every unit's choice for one suite (see the module docstring)."""

    suite: str
    suite_hash: str
    rule: Mapping[str, Any]
    validation: Mapping[str, Any]
    units: tuple[UnitChoice, ...]

    def chosen(self) -> dict[SelectionUnit, float]:
        """Unit → the value to score (selected or over budget); pending units are absent."""
        return {u.unit: u.selected for u in self.units if u.selected is not None}

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "suite": self.suite, "suite_hash": self.suite_hash, "rule": dict(self.rule),
                "validation": dict(self.validation), "units": [u.as_json() for u in self.units]}

    def pending(self) -> list[UnitChoice]:
        return [u for u in self.units if u.state == "pending"]


def select(suite: Suite, lookup: Lookup) -> Selection:
    """The selection of ``suite`` (``select: {rule: max_drop}``) from the validation accuracies ``lookup`` gives."""
    plan = suite.selection
    if plan is None or plan.rule != "max_drop":
        raise GibenchError(f"suite {suite.name!r} does not select with `rule: max_drop`; there is nothing to choose.")
    units = []
    for unit, (grid, dataset, backbone, regularizer) in selection_units(suite).items():
        parameter, values = swept_values(suite, regularizer)
        erm = next(spec for spec in grid.regularizers if spec.name == "erm")

        def accuracies(spec, dataset=dataset, backbone=backbone):
            jobs = [Job(dataset, backbone, spec, seed, suite.train_for(dataset), (), suite.validation)
                    for seed in plan.seeds]
            return tuple(_checked(lookup(job.hash)) for job in jobs)

        curve = tuple(_point(v, accuracies(sweep_point(regularizer, parameter, v))) for v in values)
        reference = _point(0.0, accuracies(erm))
        units.append(_choose(unit, regularizer.name, parameter, curve, reference, plan.max_drop))
    return Selection(suite.name, suite.hash, plan.as_json(), suite.validation.as_json(), tuple(units))


def _checked(value: float | str | None) -> float | str | None:
    if value is None or value == FAILED:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise GibenchError(f"a validation accuracy must be a number in [0, 1] or {FAILED!r}, got {value!r}")
    return float(value)


def _point(value: float, accuracies: tuple[float | str | None, ...]) -> CurvePoint:
    known = all(isinstance(a, float) for a in accuracies)
    return CurvePoint(value, accuracies, math.fsum(accuracies) / len(accuracies) if known else None)


def _choose(unit: SelectionUnit, name: str, parameter: str, curve: tuple[CurvePoint, ...], reference: CurvePoint,
            max_drop: float) -> UnitChoice:
    scale = registry.regularizers.get(name).sweep.scale

    def choice(selected, state, reason, budget=None):
        return UnitChoice(unit, name, parameter, scale, curve, reference.mean, budget, selected, state, reason)

    waiting = [p.value for p in curve if None in p.accuracies]
    if None in reference.accuracies or waiting:
        what = (["erm"] if None in reference.accuracies else []) + [f"{parameter}={v:g}" for v in waiting]
        return choice(None, "pending", f"not trained yet: {', '.join(what)}")
    if reference.mean is None:
        return choice(None, "no_reference", "erm's training failed, so there is no accuracy to compare with")
    budget = reference.mean - max_drop
    trained = [p for p in curve if p.mean is not None]
    within = [p for p in trained if p.mean >= budget - _TOLERANCE]
    failed = [f"{p.value:g}" for p in curve if p.mean is None]
    note = f"; training failed at {parameter} = {', '.join(failed)}" if failed else ""
    if within:
        best = within[-1]  # values are in increasing strength: the last within budget is the strongest
        if best.value == curve[-1].value:  # the budget may allow more than the grid offers: say so
            note += (f"; it is the strongest {parameter} swept, so a stronger one may be within the budget too: "
                     "extend the sweep (`sweep: {values: ...}`) to find the operating point")
        return choice(best.value, "selected", f"the strongest {parameter} whose mean validation accuracy "
                      f"{best.mean:.4f} is within {max_drop:g} of erm's {reference.mean:.4f}{note}", budget)
    if trained:
        weakest = trained[0]
        return choice(weakest.value, "over_budget", f"no {parameter} is within {max_drop:g} of erm's validation "
                      f"accuracy {reference.mean:.4f}; scored at the weakest, {weakest.value:g} "
                      f"({weakest.mean:.4f}){note}", budget)
    return choice(None, "failed", f"training failed at every {parameter}", budget)


# ----------------------------------------------------------------------------------------------------------------------
# The store


def stored_accuracies(runs_dir: Path) -> Lookup:
    """A lookup over the run store: the job's stored ``validation_accuracy``, :data:`FAILED` when its training failed,
    None otherwise (not trained, or not evaluated yet)."""
    store = RunStore(Path(runs_dir), repair=False, warn=lambda message: None)
    version = registry.evaluators.get(VALIDATION_EVALUATOR.name).version
    key = evaluation_key(VALIDATION_EVALUATOR.name, version, VALIDATION_EVALUATOR.config)

    def lookup(job_hash: str) -> float | str | None:
        folder = store.job(job_hash)
        status = folder.status()
        if status is not None and status.state == "failed":
            return FAILED
        result = folder.result(key)
        if result is None or result.status != "ok":
            return None
        return result.scalars.get("validation_accuracy")

    return lookup


def stored_selection(suite: Suite, runs_dir: Path) -> Selection | None:
    """The selection ``suite`` makes now from the sweep stored in ``runs_dir`` (what the runner scores, what
    ``--estimate`` prices); None for a suite that does not select with ``rule: max_drop``."""
    if suite.selection is None or suite.selection.rule != "max_drop":
        return None
    return select(suite, stored_accuracies(runs_dir))


def selection_path(runs_dir: Path, suite: Suite) -> Path:
    return Path(runs_dir) / "selections" / f"{suite.name}-{suite.hash[:12]}.json"


def write_selection(runs_dir: Path, suite: Suite, selection: Selection) -> Path:
    """Write the selection record (atomically; a rerun recomputes and rewrites it)."""
    path = selection_path(runs_dir, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, selection.to_json())
    return path


def read_selections(runs_dir: Path, warn: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Every selection record under ``runs_dir`` (a damaged one is skipped with a warning naming it)."""
    records = []
    for path in sorted((Path(runs_dir) / "selections").glob("*.json")):
        try:
            record = read_json(path)
            if not isinstance(record, dict) or not isinstance(record.get("units"), list):
                raise ValueError("not a selection record")
        except (OSError, ValueError, DamagedFileError) as exc:
            warn(f"{path}: unreadable selection record ({exc}); rerun the suite to write it again.")
            continue
        records.append(record)
    return records

