"""A table beside its X-DNN twin: the accuracy (and every other headline metric) of the same regularizer variant
trained on the biased backbone and on its X-DNN (``bias: false``), with the difference.

An X-DNN (Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks", NeurIPS 2021) is the network
with every bias removed and no BatchNorm, so f(αx) = α·f(x) for α ≥ 0 and its X-Gradient equals Integrated Gradients
from the zero baseline of normalized space (the dataset's mean colour). Which tables are twins is
:func:`gibench.leaderboard.tables.link_twins`. Choices (stated on the page too):

* A row is a (submission, variant) that both tables have, in the order of the biased table's rows; variants only one
  of them has are left out (the page says how many).
* The metrics are accuracy, then every headline column both tables have (same evaluator, version, parameters and
  metric), in the biased table's column order. A diagnostic headline is shown too: nothing here is ranked or marked
  best.
* Each net's cell is the table's own cell (mean ± half-width of the 95 % t-interval over its ok seeds; no ± with one
  seed: "one seed: no interval"). The difference is the X-DNN's mean minus the biased net's, with no interval: the two
  are different networks whose seeds are not paired draws of one quantity.
"""

from __future__ import annotations

__all__ = ["TwinCell", "TwinMetric", "TwinRow", "TwinSection", "XDNN_NOTE", "twin_section"]

from dataclasses import dataclass

from gibench.leaderboard.tables import Cell, Column, Row, Table, fmt

#: The one line the page says about X-DNNs.
XDNN_NOTE = ("An X-DNN (Hesse et al. 2021) is the same network with every bias removed and no BatchNorm, so "
             "f(αx) = α·f(x) and its X-Gradient equals Integrated Gradients from the mean colour.")


@dataclass(frozen=True)
class TwinMetric:
    label: str  # "accuracy", "complexity · gini (saliency=x_gradient)": the column's label and its options
    id: str  # the column's DOM id in the biased table
    arrow: str
    diagnostic: bool


@dataclass(frozen=True)
class TwinCell:
    biased: str  # the biased table's cell text, or its status
    xdnn: str
    delta: str  # "+0.0123" (X-DNN − biased), or "" when either has no value
    delta_value: float | None = None
    biased_one_seed: bool = False  # a value without an interval: one ok seed
    xdnn_one_seed: bool = False


@dataclass(frozen=True)
class TwinRow:
    submission_id: str
    submission: str
    regularizer: str
    variant: str
    cells: list[TwinCell]


@dataclass(frozen=True)
class TwinSection:
    heading: str  # "Beside its X-DNN twin" | "Beside its biased twin"
    twin_anchor: str
    twin_title: str
    twin_is_xdnn: bool
    metrics: list[TwinMetric]
    rows: list[TwinRow]
    only_here: int  # variants of this table its twin lacks
    only_there: int  # variants of the twin this table lacks

    @property
    def one_seed_everywhere(self) -> bool:
        """Every value of the section has one seed (the page then says "one seed: no interval" once)."""
        cells = [c for r in self.rows for c in r.cells]
        return bool(cells) and all(c.biased_one_seed and c.xdnn_one_seed for c in cells)


def twin_section(table: Table, tables: list[Table]) -> TwinSection | None:
    """The comparison of ``table`` with its twin (``table.twin``), or None when it has none."""
    twin = next((t for t in tables if t.anchor == table.twin), None) if table.twin else None
    if twin is None:
        return None
    biased, xdnn = (twin, table) if table.xdnn else (table, twin)
    pairs = _shared_columns(biased, xdnn)
    x_rows = {(r.submission_id, r.variant): r for r in xdnn.rows}
    rows = [_row(r, x_rows[(r.submission_id, r.variant)], pairs) for r in biased.rows
            if (r.submission_id, r.variant) in x_rows]
    here, there = {(r.submission_id, r.variant) for r in table.rows}, {(r.submission_id, r.variant) for r in twin.rows}
    metrics = [TwinMetric(f"{c.label} {c.params_label}".strip(), c.id, c.arrow, c.diagnostic) for c, _, _ in pairs]
    return TwinSection("Beside its biased twin" if table.xdnn else "Beside its X-DNN twin", twin.anchor, twin.title,
                       twin.xdnn, metrics, rows, len(here - there), len(there - here))


def _shared_columns(biased: Table, xdnn: Table) -> list[tuple[Column, int, int]]:
    """(column, its index in the biased table, its index in the X-DNN table) of accuracy and every headline
    both tables evaluate, in the biased table's order."""
    x_index = {c.key: i for i, c in enumerate(xdnn.columns) if c.evaluated}
    return [(c, i, x_index[c.key]) for i, c in enumerate(biased.columns)
            if c.evaluated and c.headline and c.key in x_index]


def _row(biased: Row, xdnn: Row, pairs: list[tuple[Column, int, int]]) -> TwinRow:
    return TwinRow(biased.submission_id, biased.submission, biased.regularizer, biased.variant,
                   [_cell(biased.cells[i], xdnn.cells[j]) for _, i, j in pairs])


def _one_seed(cell: Cell) -> bool:
    return cell.sort_value is not None and cell.low != cell.low  # a value, and a NaN interval


def _cell(biased: Cell, xdnn: Cell) -> TwinCell:
    if biased.sort_value is None or xdnn.sort_value is None:
        return TwinCell(biased.text, xdnn.text, "", None, _one_seed(biased), _one_seed(xdnn))
    difference = xdnn.sort_value - biased.sort_value
    return TwinCell(biased.text, xdnn.text, fmt(difference, signed=True, scale=biased.sort_value), difference,
                    _one_seed(biased), _one_seed(xdnn))
