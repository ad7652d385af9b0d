"""Strength curves on a table page: how a regularizer entry's numbers move with its strength (the swept parameter,
:class:`gibench.api.Sweep`), from the site's summary frame and the selection records the submissions carry. This
module only gathers the numbers; :func:`gibench.leaderboard.figures.inline_chart` lays out each chart and the
template ``_strength.html.j2`` draws it. Nothing is recomputed: every number is one the table shows or the record
holds. Choices:

* **Selection charts**: one per selection unit (dataset × backbone × regularizer entry) of a suite that selected with
  ``rule: max_drop`` (:mod:`gibench.running.selection`), on the page of the table that holds the unit's settings. The
  chart is the record as recorded: the mean validation accuracy over the sweep's seeds at each swept value (each
  seed's accuracy as a dot when there are several), erm's mean as a line, the budget (erm − ``max_drop``) as a dashed
  line, the chosen value ringed and labelled ``selected`` or ``over budget``, a value whose training failed on the
  x axis, and the record's reason under it. Selection reads the validation split only; the caption says so.
* **Which table holds a unit**: the record names the unit by labels, and the site's rows carry the same labels. A
  table holds the unit when its dataset is the unit's dataset, its backbone and options give the unit's backbone label
  (in any order of the options: the results keep them sorted, the label keeps the suite's order), and it has a row of
  the submission that is the unit's entry at one of its swept values: the regularizer's name, and its options less
  the swept parameter giving the entry's label. Job hashes are not used: recomputing them needs every plugin of the
  run installed at the same version, and the site is built from submissions alone. The training config is not in
  the labels, so a unit can match two tables of one submission (two suites training the same settings differently);
  then it goes to the table whose stored per-seed validation accuracies are the recorded curve, and when none is (or
  several are) to every table it matched: the record is shown rather than dropped.
* **Strength blocks**: one small-multiples block per regularizer entry of a submission whose table holds at least
  two settings that differ only in the swept parameter and have a test-split value (``select: {rule: all}``, a
  max_drop rerun that scored a second choice, or settings listed by hand). The swept parameter is the one a selection
  record names, else the one the installed plugin declares, else (a plugin not installed here) every numeric option
  whose rows differ in it alone. Settings with no value but validation accuracy (the sweep-only jobs of a max_drop
  suite) are left out: their curve is the selection chart's. A panel per table column that the scatter plots use (a
  headline that is evaluated and not diagnostic; accuracy first, as in the table): the mean over seeds against the
  strength, with the 95 % interval as a whisker where the row has ≥ 2 seeds (the same numbers as its cell),
  erm's mean of the same submission as a line, collapsed rows drawn hollow, and the value a selection record chose
  ringed. A panel needs two points; a block, one panel.
* **The x axis** is logarithmic when the sweep's ``scale`` is ``log`` (the record's, else the installed plugin's;
  for neither, when every value is positive and they span a factor of 20, as for the curves); a value ≤ 0 makes it
  linear.
"""

from __future__ import annotations

__all__ = [
    "VALIDATION_EVALUATOR", "SelectionChart", "StrengthBlock", "StrengthPanel", "TableStrength", "label_matches",
    "strength_sections",
]

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gibench.leaderboard.figures import ChartPoint, ChartRule, InlineChart, inline_chart, log_axis
from gibench.leaderboard.tables import ACCURACY_EVALUATOR, Column, Row, Table, fmt, params_label, unique_name
from gibench.results.tables import BASELINE, METRIC_KEYS, TABLE_KEYS, TRAINING, complete, metric_label
from gibench.submissions.build import LoadedSubmission, slugify
from gibench.training.specs import PluginSpec

#: The evaluator whose numbers selection reads (``gibench.suites.jobs.VALIDATION_EVALUATOR``).
VALIDATION_EVALUATOR = "validation_accuracy"
_FAILED = "failed"
_CHOSEN = {"selected": "selected", "over_budget": "over budget"}
_ROW_KEYS = ("submission_id", "regularizer", "regularizer_params", "variant")


@dataclass(frozen=True)
class SelectionChart:
    """One selection unit's record, drawn: its curve, reference, budget and choice."""

    submission: str
    submission_id: str
    suite: str
    dataset: str
    backbone: str
    regularizer: str  # the entry's label, without its swept parameter
    parameter: str
    scale: str  # "log" | "linear", as recorded
    state: str  # selected, over_budget, pending, no_reference, failed
    selected: float | None
    reason: str
    reference: float | None
    budget: float | None
    max_drop: float | None
    seeds: tuple[int, ...]  # the sweep's seeds
    validation: str  # the held-out split, in words
    chart: InlineChart

    @property
    def selected_attr(self) -> str:
        """The chosen value as a data attribute holds it (``repr``: exact), or ``""``."""
        return "" if self.selected is None else exact(self.selected)

    @property
    def chosen_word(self) -> str:
        return _CHOSEN.get(self.state, self.state.replace("_", " "))


@dataclass(frozen=True)
class StrengthPanel:
    """One column of the table against the strength."""

    label: str  # metric_label, with the version or options when two columns of the block would share it
    column: str  # the table column's id
    evaluator: str
    metric: str
    accuracy: bool  # the test accuracy panel
    chart: InlineChart


@dataclass(frozen=True)
class StrengthBlock:
    """The small multiples of one regularizer entry of one submission: a panel per evaluator headline."""

    id: str  # the DOM id, unique on the page
    submission: str
    submission_id: str
    name: str  # the regularizer
    entry: str  # the entry's label: the regularizer with its other options
    parameter: str
    scale: str  # "log" | "linear": the axis drawn
    values: tuple[float, ...]  # the settings drawn, in increasing strength
    selected: float | None  # the value a selection record chose, when it is among them
    selected_state: str  # "selected" | "over_budget" | ""
    panels: tuple[StrengthPanel, ...]
    left_out: tuple[str, ...] = ()  # settings of the entry without a test-split value
    one_seed: bool = False  # no row of the block has ≥ 2 seeds (no whiskers anywhere)
    several: bool = False  # the table holds several submissions (the heading names this one)

    @property
    def selected_attr(self) -> str:
        return "" if self.selected is None else exact(self.selected)


@dataclass
class TableStrength:
    selections: list[SelectionChart] = field(default_factory=list)
    blocks: list[StrengthBlock] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.selections or self.blocks)


@dataclass(frozen=True)
class _Unit:
    """A selection unit of a submission's suite, with what drawing it needs."""

    loaded: LoadedSubmission
    suite: str
    record: Any  # gibench.submissions.schema.SelectionRecord
    unit: Any  # gibench.submissions.schema.SelectionUnitRecord

    @property
    def submission_id(self) -> str:
        return self.loaded.submission.id


def exact(value: float) -> str:
    """A number as the page's data attributes hold it: Python's shortest round-trip spelling (``0.1``, ``10.0``)."""
    return repr(float(value))


def strength_sections(tables: list[Table], summary: pd.DataFrame,
                      submissions: list[LoadedSubmission]) -> dict[str, TableStrength]:
    """Table anchor → its selection charts and strength blocks (empty for a table without a sweep), from
    ``summary`` (the site's :func:`~gibench.leaderboard.tables.aggregate`, from which ``tables`` were made) and the
    selection records of ``submissions``."""
    homes = _selection_homes(tables, submissions)
    return {t.anchor: TableStrength([_selection_chart(u) for u in homes[t.anchor]],
                                    _blocks(t, summary, homes[t.anchor])) for t in tables}


# ----------------------------------------------------------------------------------------------------------------------
# Which table holds a unit


def label_matches(label: str, name: str, params: dict[str, Any]) -> bool:
    """True when ``label`` is :attr:`PluginSpec.label` of ``name`` with ``params`` in some order of its options (the
    results store options sorted; a label keeps the order the suite gave them)."""
    if not params:
        return label == name
    if not (label.startswith(f"{name}(") and label.endswith(")")):
        return False
    inner, where = label[len(name) + 1:-1], {}
    for key in params:
        found = re.search(rf"(?:^|, ){re.escape(key)}=", inner)
        if found is None:
            return False
        where[key] = found.start()
    return PluginSpec.of(name, {k: params[k] for k in sorted(params, key=where.get)}, {}).label == label


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _split(params_json: str, parameter: str) -> tuple[float | None, dict[str, Any]]:
    """(the value of ``parameter``, or None when it is absent or not a number; the other options)."""
    params = json.loads(params_json or "{}")
    params = params if isinstance(params, dict) else {}
    value = params.pop(parameter, None)
    return (float(value) if _number(value) else None), params


def _entry_value(unit: Any, regularizer: str, params_json: str) -> float | None:
    """The swept value of a row that is a setting of ``unit``'s entry, else None."""
    if regularizer != unit.name:
        return None
    value, rest = _split(params_json, unit.parameter)
    return value if value is not None and label_matches(unit.regularizer, unit.name, rest) else None


def _curve_value(unit: Any, regularizer: str, params_json: str) -> float | None:
    """The curve point of ``unit`` a row is (its recorded value), else None."""
    value = _entry_value(unit, regularizer, params_json)
    if value is None:
        return None
    return next((p.value for p in unit.curve if math.isclose(p.value, value, rel_tol=1e-9, abs_tol=0.0)), None)


def _holds(table: Table, submission_id: str, unit: Any) -> bool:
    if table.dataset != unit.dataset:
        return False
    backbone = json.loads(table.backbone_params or "{}")
    if not label_matches(unit.backbone, table.backbone_name, backbone if isinstance(backbone, dict) else {}):
        return False
    return any(r.submission_id == submission_id and _curve_value(unit, r.regularizer, r.regularizer_params) is not None
               for r in table.rows)


def _selection_homes(tables: list[Table], submissions: list[LoadedSubmission]) -> dict[str, list[_Unit]]:
    homes: dict[str, list[_Unit]] = {t.anchor: [] for t in tables}
    frames: dict[str, pd.DataFrame] = {}
    for loaded in submissions:
        sid = loaded.submission.id
        for suite in loaded.submission.provenance.suites:
            if suite.selection is None:
                continue
            for unit in suite.selection.units:
                found = [t for t in tables if _holds(t, sid, unit)]
                if len(found) > 1:
                    frame = frames.setdefault(sid, complete(loaded.results))
                    found = [t for t in found if _stored_curve_agrees(frame, t, suite.selection, unit)] or found
                for table in found:
                    homes[table.anchor].append(_Unit(loaded, suite.name, suite.selection, unit))
    return homes


def _stored_curve_agrees(frame: pd.DataFrame, table: Table, record: Any, unit: Any) -> bool:
    """True when the submission's rows in ``table`` hold exactly the recorded per-seed validation accuracies of
    ``unit`` (a failed training where the record says ``failed``, nothing where it says not run)."""
    seeds = record.rule.get("seeds")
    if not isinstance(seeds, list):
        return False
    mask = pd.Series(True, index=frame.index)
    for key, value in zip(TABLE_KEYS[:4], (table.dataset, table.backbone_name, table.backbone_params,
                                           table.train_hash)):
        mask &= frame[key].astype(str) == value
    part = frame[mask]
    points = [_curve_value(unit, reg, params) for reg, params in zip(part["regularizer"], part["regularizer_params"])]
    part = part.assign(_point=points)
    for point in unit.curve:
        rows = part[part["_point"] == point.value]
        for seed, expected in zip(seeds, point.accuracies):
            mine = rows[rows["seed"].astype(int) == int(seed)]
            values = mine.loc[(mine["evaluator"] == VALIDATION_EVALUATOR) & (mine["status"] == "ok"), "value"]
            failed = bool((mine["evaluator"] == TRAINING).any())
            if expected == _FAILED:
                agrees = failed
            elif expected is None:
                agrees = values.empty and not failed
            else:
                agrees = len(values) == 1 and math.isclose(float(values.iloc[0]), float(expected), rel_tol=1e-9,
                                                           abs_tol=1e-12)
            if not agrees:
                return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# Selection charts


def _selection_chart(found: _Unit) -> SelectionChart:
    unit, record = found.unit, found.record
    budget = unit.budget
    points = []
    for p in unit.curve:
        known = [a for a in p.accuracies if isinstance(a, float)]
        where = f"{unit.parameter} = {p.value:g}"
        if p.mean is not None:
            state = "within" if budget is None or p.mean >= budget - 1e-12 else "below"
            title = f"{where}: mean validation accuracy {fmt(p.mean)}" + (
                f" (seeds: {', '.join(fmt(a) for a in known)})" if len(known) > 1 else "")
        elif _FAILED in p.accuracies:
            state, title = "failed", f"{where}: training failed, so it cannot meet the budget"
        else:
            state, title = "pending", f"{where}: not trained yet"
        chosen = unit.selected is not None and p.value == unit.selected
        if chosen:
            state = unit.state.replace("_", "-")
            title += f"; {_CHOSEN[unit.state]}"
        points.append(ChartPoint(p.value, p.mean, state=state, title=title,
                                 seeds=tuple(known) if len(p.accuracies) > 1 else (),
                                 mark=_CHOSEN[unit.state] if chosen else "",
                                 attrs=(("value", exact(p.value)), ("mean", "" if p.mean is None else exact(p.mean)))))
    max_drop = record.rule.get("max_drop")
    rules = []
    if unit.reference is not None:
        rules.append(ChartRule(unit.reference, f"erm {fmt(unit.reference)}", "reference"))
    if budget is not None:
        rules.append(ChartRule(budget, f"budget {fmt(budget)}", "budget"))
    log_x = unit.scale == "log" and all(p.value > 0 for p in unit.curve)
    chart = inline_chart(points, rules, log_x=log_x, x_label=unit.parameter + (" (log scale)" if log_x else ""),
                         y_label="validation accuracy", width=460, height=230, right_margin=96)
    seeds = tuple(int(s) for s in record.rule.get("seeds") or ())
    split = record.validation
    validation = (f"{float(split.get('fraction', 0)) * 100:g} % of each class's training images, held out with seed "
                  f"{split.get('seed', 0)}")
    return SelectionChart(found.loaded.submission.metadata.name, found.submission_id, found.suite, unit.dataset,
                          unit.backbone, unit.regularizer, unit.parameter, unit.scale, unit.state, unit.selected,
                          unit.reason, unit.reference, budget, float(max_drop) if _number(max_drop) else None, seeds,
                          validation, chart)


# ----------------------------------------------------------------------------------------------------------------------
# Strength blocks


def _records(summary: pd.DataFrame, table: Table) -> dict[tuple[str, ...], dict[str, Any]]:
    """The summary rows of ``table``, keyed by a row's keys and a column's key (as the heatmap reads them)."""
    if summary.empty:
        return {}
    mask = pd.Series(True, index=summary.index)
    for key, value in zip(TABLE_KEYS, (table.dataset, table.backbone_name, table.backbone_params, table.train_hash,
                                       table.train_label)):
        mask &= summary[key].astype(str) == value
    keys = [*_ROW_KEYS, *METRIC_KEYS]
    return {tuple(str(r[k]) for k in keys): r for r in summary[mask].to_dict("records")}


def _declared(name: str) -> tuple[str, str] | None:
    """(parameter, scale) of the installed regularizer's declared sweep; None when it declares none or is not
    installed here."""
    try:
        from gibench.api import registry

        sweep = registry.regularizers.get(name).sweep
    except Exception:  # not installed here, or fails to load: its parameter is inferred from the rows
        return None
    return None if sweep is None else (str(sweep.parameter), str(sweep.scale))


def _inferred(rows: list[Row]) -> list[str]:
    """The numeric options of every row (the candidates for a strength when no sweep is declared)."""
    options = [json.loads(r.regularizer_params or "{}") for r in rows]
    options = [o if isinstance(o, dict) else {} for o in options]
    keys = set.intersection(*[set(o) for o in options]) if options else set()
    return sorted(k for k in keys if all(_number(o[k]) for o in options))


def _panel_labels(columns: list[Column]) -> list[str]:
    """:func:`metric_label` of each column, with the version and options where two columns would share one."""
    base = [metric_label(c.evaluator, c.metric, c.higher_is_better) for c in columns]
    return [label if base.count(label) == 1 else f"{label} v{c.version}{params_label(c.params)}"
            for c, label in zip(columns, base)]


def _blocks(table: Table, summary: pd.DataFrame, units: list[_Unit]) -> list[StrengthBlock]:
    records = _records(summary, table)
    columns = [c for c in table.columns if c.headline and not c.diagnostic and c.evaluated]
    labels = _panel_labels(columns)
    tested = [c for c in columns if c.evaluator != VALIDATION_EVALUATOR]
    several = len({r.submission_id for r in table.rows}) > 1
    blocks: list[StrengthBlock] = []
    taken: set[str] = set()
    submissions = list(dict.fromkeys(r.submission_id for r in table.rows))
    for sid in submissions:
        mine = [r for r in table.rows if r.submission_id == sid]
        erm = next((r for r in mine if r.regularizer == BASELINE), None) if sum(
            r.regularizer == BASELINE for r in mine) == 1 else None
        for name in sorted({r.regularizer for r in mine} - {BASELINE}):
            rows = [r for r in mine if r.regularizer == name]
            chosen = [u for u in units if u.submission_id == sid and u.unit.name == name]
            declared = _declared(name)
            parameters = (sorted({u.unit.parameter for u in chosen}) if chosen
                          else [declared[0]] if declared else _inferred(rows))
            for parameter in parameters:
                entries: dict[str, list[tuple[float, Row]]] = {}
                for row in rows:
                    value, rest = _split(row.regularizer_params, parameter)
                    if value is not None:
                        entries.setdefault(json.dumps(rest, sort_keys=True), []).append((value, row))
                for rest, settings in entries.items():
                    block = _block(table, records, columns, labels, tested, erm, name, parameter, json.loads(rest),
                                   settings, chosen, declared, several, taken)
                    if block is not None:
                        blocks.append(block)
    return blocks


def _has_test_value(records: dict, row: Row, tested: list[Column]) -> bool:
    key = tuple(getattr(row, k) for k in _ROW_KEYS)
    return any((r := records.get((*key, *c.key))) is not None and r["n_ok"] > 0 for c in tested)


def _block(table: Table, records: dict, columns: list[Column], labels: list[str], tested: list[Column],
           erm: Row | None, name: str, parameter: str, rest: dict[str, Any], settings: list[tuple[float, Row]],
           chosen: list[_Unit], declared: tuple[str, str] | None, several: bool, taken: set[str]
           ) -> StrengthBlock | None:
    if len({v for v, _ in settings}) < 2:
        return None
    drawn = sorted(((v, r) for v, r in settings if _has_test_value(records, r, tested)), key=lambda item: item[0])
    if len({v for v, _ in drawn}) < 2:
        return None
    left_out = tuple(r.variant for v, r in sorted(settings, key=lambda item: item[0]) if (v, r) not in drawn)
    unit = next((u.unit for u in chosen if u.unit.parameter == parameter
                 and label_matches(u.unit.regularizer, name, rest)), None)
    values = [v for v, _ in drawn]
    scale = unit.scale if unit is not None else declared[1] if declared and declared[0] == parameter else (
        "log" if log_axis(values) else "linear")
    log_x = scale == "log" and all(v > 0 for v in values)
    selected = unit.selected if unit is not None and unit.selected is not None and any(
        math.isclose(v, unit.selected, rel_tol=1e-9, abs_tol=0.0) for v in values) else None
    state = unit.state if selected is not None else ""
    panels = []
    for column, label in zip(columns, labels):
        points = []
        for value, row in drawn:
            record = records.get((*(getattr(row, k) for k in _ROW_KEYS), *column.key))
            if record is None or not record["n_ok"]:
                continue
            points.append(_strength_point(parameter, value, row, record, selected, state))
        if len(points) < 2:
            continue
        rules = []
        reference = None if erm is None else records.get((*(getattr(erm, k) for k in _ROW_KEYS), *column.key))
        if reference is not None and reference["n_ok"]:
            rules.append(ChartRule(float(reference["mean"]), "erm", "reference"))
        chart = inline_chart(points, rules, log_x=log_x, x_label=parameter + (" (log scale)" if log_x else ""),
                             y_label="", width=300, height=190, right_margin=34)
        panels.append(StrengthPanel(label, column.id, column.evaluator, column.metric,
                                    column.evaluator == ACCURACY_EVALUATOR, chart))
    if not panels:
        return None
    submission = drawn[0][1]
    entry = f"{name}{params_label(json.dumps(rest, sort_keys=True))}"
    block_id = unique_name(f"strength--{slugify(submission.submission_id, 60)}--{slugify(entry, 60)}--"
                       f"{slugify(parameter, 30)}", taken)
    one_seed = all(math.isnan(q.point.low) for p in panels for q in p.chart.points)
    return StrengthBlock(block_id, submission.submission, submission.submission_id, name, entry, parameter,
                         "log" if log_x else "linear", tuple(values), selected, state, tuple(panels), left_out,
                         one_seed, several)


def _strength_point(parameter: str, value: float, row: Row, record: dict, selected: float | None,
                    state: str) -> ChartPoint:
    mean, low, high, n = float(record["mean"]), float(record["ci_low"]), float(record["ci_high"]), int(record["n_ok"])
    title = f"{parameter} = {value:g}: mean {fmt(mean)} over {n} seed{'s' if n != 1 else ''}"
    if not math.isnan(low):
        title += f", 95 % interval [{fmt(low, scale=mean)}, {fmt(high, scale=mean)}]"
    chosen = selected is not None and math.isclose(value, selected, rel_tol=1e-9, abs_tol=0.0)
    kind = "collapsed" if row.collapsed else "value"
    if row.collapsed:
        title += f"; {row.collapse_reason or 'collapsed'}"
    if chosen:
        kind = state.replace("_", "-")
        title += f"; {_CHOSEN[state]} on validation"
    return ChartPoint(value, mean, low, high, state=kind, title=title, mark=_CHOSEN[state] if chosen else "",
                      attrs=(("value", exact(value)), ("mean", exact(mean)), ("seeds", str(n)),
                             ("variant", row.variant), *((("collapsed", "true"),) if row.collapsed else ())))


