"""The index page's overview: per table, a heatmap of regularizer variants × evaluator headlines, each cell the Δ of
the headline mean against ``erm``, coloured only where its 95 % interval excludes zero.

The numbers are those of the table below it: :func:`gibench.results.summarize` as the site runs it
(:func:`gibench.leaderboard.tables.aggregate`: Δ against the ``erm`` row of the same submission in the same table,
paired t by seed when both rows have the same seeds, else Welch's t; ``verdict`` ``better``/``worse`` only when the
Δ interval excludes zero, in the metric's direction). This module only chooses which of them to show and how to
label them; the template ``_heatmap.html.j2`` draws them. Choices:

* **One heatmap per** :class:`~gibench.leaderboard.tables.Table` (dataset × backbone and options × training config),
  under a heading per dataset, in the tables' order. Δ is only defined within a table (erm of the same backbone and
  training config), so two backbones or training configs never share a grid, and each grid links to its table.
* **Columns**: the table's headline columns that are ranked, in the table's order (accuracy first). Secondary metrics
  are left out (the grid is the headline picture; the table has them), and so are diagnostic metrics (reported,
  never ranked: a green cell would rank them), the accuracy column a table adds when no submission evaluated accuracy,
  and the columns the table itself leaves out (skipped on every row, or held back without their companion). A column
  read beside another (``read_beside``) keeps its place after its companion, with its † and caveat, as in the table.
  Labels are :func:`gibench.results.tables.metric_label` (``pixel_perturbation: auc ↓``), the labels of the report
  and the evaluator agreement; columns that would share one (one evaluator at two versions or with two sets of
  options) add what tells them apart: the version, then only the options that differ (``saliency=x_gradient``
  beside ``saliency=default``).
* **Rows**: the table's rows that are not collapsed, in its order, each labelled by its variant (the regularizer
  with its options), with the submission's name when the table holds several submissions (Δ is against each
  submission's own erm). ``erm`` rows are the zero reference: shown as ``erm (reference)`` with their mean, never a Δ
  and never coloured. A row whose collapse could not be judged is shown like any other (the table says why).
* **A cell**: Δ printed with two significant digits (:func:`compact`; the exact Δ, its interval and erm's mean are
  in the cell's tooltip and in the table). Its verdict (``data-verdict`` on the page) is one of :data:`VERDICTS`:
  ``better``/``worse`` (coloured: the interval excludes zero), ``includes-zero`` (an interval that contains zero),
  ``no-interval`` (a Δ without an interval: fewer than 2 seeds in the row or in erm), ``missing`` (no Δ: no value,
  or no single erm row to compare with), ``reference`` (an erm row). Only the first two are coloured.
* **One tint per verdict**, not scaled by |Δ|: the metrics have different units and ranges, so a scale per column
  would make one shade mean different effects in two columns; the printed number carries the size.
* **Collapsed rows** (:mod:`gibench.results.collapse`) have no cells in the grid: they are listed under it with
  their reason (``collapsed: accuracy … vs erm …``), so a collapsed model's Δ is never coloured as a gain.
"""

from __future__ import annotations

__all__ = ["VERDICTS", "HeatCell", "HeatColumn", "HeatRow", "Heatmap", "HeatmapCollapsed", "compact",
           "dataset_groups", "make_heatmaps"]

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gibench.leaderboard.tables import Column, Table, fmt
from gibench.results.tables import METRIC_KEYS, TABLE_KEYS, metric_label

#: The verdict of a cell; only ``better`` and ``worse`` are coloured.
VERDICTS = ("better", "worse", "includes-zero", "no-interval", "missing", "reference")
_ROW_KEYS = ("submission_id", "regularizer", "regularizer_params", "variant")


@dataclass(frozen=True)
class HeatColumn:
    """One evaluator headline of a table."""

    label: str  # metric_label, with the version or options when two columns would share it
    evaluator: str
    metric: str
    higher_is_better: bool
    table_column: str  # the id of the same column in the table below
    caveat: str = ""  # why it is read beside another column (the table's † footnote)
    read_beside: str = ""  # "evaluator.metric" it is read beside ("" for none)


@dataclass(frozen=True)
class HeatCell:
    text: str  # the compact Δ ("+0.012", "−101"), erm's mean in a reference row, "—" when there is none
    verdict: str  # one of VERDICTS
    title: str  # the tooltip: exact Δ, its interval and method, erm's mean


@dataclass(frozen=True)
class HeatRow:
    label: str  # the variant, with the submission's name when the table holds several
    variant: str
    submission: str
    regularizer: str
    cells: list[HeatCell]
    reference: bool = False  # an erm row: the zero reference, never coloured


@dataclass(frozen=True)
class HeatmapCollapsed:
    """A collapsed row of the table, listed under its heatmap instead of in it."""

    label: str
    variant: str
    submission: str
    reason: str  # "collapsed: accuracy 0.223 vs erm 0.960 (floor 0.745: ...)"


@dataclass
class Heatmap:
    anchor: str  # the table's anchor on the index (the heatmap links to it)
    dataset: str
    backbone: str
    train_label: str
    columns: list[HeatColumn] = field(default_factory=list)
    rows: list[HeatRow] = field(default_factory=list)
    collapsed: list[HeatmapCollapsed] = field(default_factory=list)

    @property
    def cells(self) -> list[HeatCell]:
        """The Δ cells (not the erm reference ones)."""
        return [c for r in self.rows if not r.reference for c in r.cells]

    @property
    def counts(self) -> dict[str, int]:
        """How many Δ cells have each verdict (every verdict but ``reference`` listed, zeros included)."""
        found = Counter(c.verdict for c in self.cells)
        return {v: found.get(v, 0) for v in VERDICTS if v != "reference"}

    @property
    def interval_note(self) -> str:
        """What the caption says about the intervals: nothing when every Δ has one; otherwise that intervals need
        ≥ 2 seeds, and whether that leaves the whole grid, or some cells, uncoloured."""
        counts = self.counts
        with_delta = sum(counts[v] for v in ("better", "worse", "includes-zero", "no-interval"))
        if not counts["no-interval"]:
            return ""
        if counts["no-interval"] == with_delta:
            return ("No Δ here has an interval: intervals need ≥ 2 seeds (in the row and in erm), so no cell is "
                    "coloured.")
        return (f"{counts['no-interval']} Δ{'s have' if counts['no-interval'] > 1 else ' has'} no interval "
                "(intervals need ≥ 2 seeds, in the row and in erm) and stay uncoloured.")


def compact(x: float, scale: float = 0.0) -> str:
    """A Δ as a heatmap cell prints it: two significant digits, signed, with a true minus (``+0.012``, ``−0.6``,
    ``+1.4``, ``−0.00043``, ``+1.2e−05``), whole numbers from 100 on (``−101``, not ``−1e+02``) and scientific from
    100,000; ``0`` for no change, or for float rounding on the ``scale`` of the means (|x| ≤ 1e−9 × |scale|: a Δ of
    equal means read as ``+5.6e−17``). Two digits keep twenty columns within the page; the cell's tooltip and the
    table hold the exact Δ."""
    if x == 0 or abs(x) <= 1e-9 * abs(scale):
        return "0"
    text = f"{x:+.0f}" if 99.5 <= abs(x) < 99_999.5 else f"{x:+.2g}"
    return text.replace("-", "−")


def make_heatmaps(summary: pd.DataFrame, tables: list[Table]) -> list[Heatmap]:
    """One :class:`Heatmap` per table, in the tables' order, from ``summary`` (the site's
    :func:`~gibench.leaderboard.tables.aggregate`, from which ``tables`` were made by
    :func:`~gibench.leaderboard.tables.make_tables`). A table without a headline column to show still gets its
    heatmap, with its rows and no cells."""
    maps = []
    for table in tables:
        records = _records(summary, table)
        columns = [c for c in table.columns if c.headline and not c.diagnostic and c.evaluated]
        labels = _labels(columns)
        several = len({r.submission_id for r in table.rows}) > 1
        heat = Heatmap(table.anchor, table.dataset, table.backbone, table.train_label,
                       [HeatColumn(label, c.evaluator, c.metric, c.higher_is_better, c.id, c.caveat, c.read_beside)
                        for c, label in zip(columns, labels)])
        for row in table.rows:
            label = f"{row.variant} · {row.submission}" if several else row.variant
            if row.collapsed:
                heat.collapsed.append(HeatmapCollapsed(label, row.variant, row.submission, row.collapse_reason))
                continue
            key = tuple(getattr(row, k) for k in _ROW_KEYS)
            cells = [_cell(records.get((*key, *c.key)), row.is_baseline) for c in columns]
            heat.rows.append(HeatRow(f"{label} (reference)" if row.is_baseline else label, row.variant,
                                     row.submission, row.regularizer, cells, row.is_baseline))
        maps.append(heat)
    return maps


def dataset_groups(maps: list[Heatmap]) -> list[tuple[str, list[Heatmap]]]:
    """(dataset, its heatmaps) in the order the datasets first appear (the tables are sorted by dataset)."""
    groups: dict[str, list[Heatmap]] = {}
    for heat in maps:
        groups.setdefault(heat.dataset, []).append(heat)
    return list(groups.items())


def _records(summary: pd.DataFrame, table: Table) -> dict[tuple[str, ...], dict[str, Any]]:
    """The summary rows of ``table``, keyed by the row keys of a :class:`~gibench.leaderboard.tables.Row` and the
    key of a :class:`~gibench.leaderboard.tables.Column`."""
    if summary.empty:
        return {}
    values = (table.dataset, table.backbone_name, table.backbone_params, table.train_hash, table.train_label)
    mask = pd.Series(True, index=summary.index)
    for column, value in zip(TABLE_KEYS, values):
        mask &= summary[column].astype(str) == value
    keys = [*_ROW_KEYS, *METRIC_KEYS]
    return {tuple(str(r[k]) for k in keys): r for r in summary[mask].to_dict("records")}


def _labels(columns: list[Column]) -> list[str]:
    """:func:`metric_label` of each column; to the labels that several columns share, what tells them apart: the
    version (when the versions differ), then only the options that differ among them, ``default`` for one not given
    (``(saliency=x_gradient)`` beside ``(saliency=default)``, not every option of both)."""
    base = [metric_label(c.evaluator, c.metric, c.higher_is_better) for c in columns]
    shared = {label for label, n in Counter(base).items() if n > 1}
    out = []
    for column, label in zip(columns, base):
        if label in shared:
            twins = [c for c, b in zip(columns, base) if b == label]
            if len({c.version for c in twins}) > 1:
                label += f" v{column.version}"
            options = [_options(c.params) for c in twins if c.version == column.version]
            differ = sorted({k for o in options for k in o if any(o.get(k, _DEFAULT) != p.get(k, _DEFAULT)
                                                                    for p in options)})
            if differ:
                mine = _options(column.params)
                label += " (" + ", ".join(f"{k}={_option_text(mine.get(k, _DEFAULT))}" for k in differ) + ")"
        out.append(label)
    return out


_DEFAULT = object()  # an option a column's evaluator was not given


def _options(params: str) -> dict[str, Any]:
    value = json.loads(params or "{}")
    return value if isinstance(value, dict) else {}


def _option_text(value: Any) -> str:
    """As :func:`~gibench.leaderboard.tables.params_label` writes a value; ``default`` for one not given."""
    if value is _DEFAULT:
        return "default"
    return value if isinstance(value, str) else json.dumps(value)


def _cell(record: dict[str, Any] | None, reference: bool) -> HeatCell:
    if record is None or not record["n_ok"]:
        return HeatCell("—", "reference" if reference else "missing", "no value")
    mean = float(record["mean"])
    if reference:
        return HeatCell(fmt(mean), "reference", f"erm's mean {fmt(mean)} over {int(record['n_ok'])} seed(s): "
                                                "the reference of every Δ in this column")
    delta = float(record["delta_vs_erm"])
    if math.isnan(delta):
        return HeatCell("—", "missing", f"mean {fmt(mean)}; no Δ: no single erm row with a value to compare with")
    erm = mean - delta
    title = f"Δ {fmt(delta, signed=True, scale=mean)} against erm's mean {fmt(erm)} (this row: {fmt(mean)})"
    low, high = float(record["delta_low"]), float(record["delta_high"])
    if math.isnan(low):
        return HeatCell(compact(delta, mean), "no-interval", f"{title}; no interval: fewer than 2 seeds")
    title += (f"; 95 % interval [{fmt(low, signed=True, scale=mean)}, {fmt(high, signed=True, scale=mean)}] "
              f"({record['delta_method']})")
    verdict = str(record["verdict"]) or "includes-zero"
    return HeatCell(compact(delta, mean), verdict, title + ("" if verdict != "includes-zero" else ": it includes zero"))
