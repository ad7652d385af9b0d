"""The numbers of the site as page objects: one :class:`Table` per dataset × backbone × training config.

Everything here is computed from :func:`gibench.results.summarize` (the aggregation ``gibench report`` uses), run with
``by`` = the submission, so a site cell equals the report's for the same runs. Choices (stated on the pages too):

* A row is one variant (regularizer and its parameters) of one submission; a variant whose training failed keeps its
  row, with "training failed" in its cells.
* Columns: every metric of every evaluator, one per (evaluator, version, parameters, metric): numbers from different
  evaluator versions or settings never share a column. Headline metrics are shown by default, the others are
  *secondary* (hidden until chosen in the column chooser). A column in which no row has a value and every result
  was ``skipped`` (an evaluator that does not apply to the dataset, e.g. ``blockmnist`` without a signal mask) is
  left out, and the table says which evaluators were left out and why.
* A cell is the mean ± the half-width of the 95 % Student-t interval over the ``ok`` seeds (no ± with one seed,
  never "± 0"), Δ against the ``erm`` row of the same submission with its own interval (coloured only when that
  interval excludes zero), and the rank among the table's rows with the range its intervals allow.
* A metric declared with ``read_beside`` (:class:`gibench.api.Metric`; e.g. sensitivity, which a constant map wins,
  reads beside infidelity) is placed immediately after its companion's column (after the first, when the companion
  has columns of several versions or settings), carries its ``caveat`` as a footnote, and is shown only beside it: a
  table without the companion leaves the column out (and out of the evaluator agreement) and says why
  (:attr:`Table.held_back`); on the page the column is hidden while its companion's is.
* The best mean per column is marked, unless the metric is ``diagnostic`` (reported, never ranked: no rank, no
  mark) or fewer than two rows have a value. Ties (equal up to float rounding) are all marked.
* A collapsed row (:mod:`gibench.results.collapse`: its accuracy fell below the floor set by the ``erm`` row of the
  same submission and chance) keeps its numbers and Δ but has no rank, is never marked best, is left out of the
  evaluator agreement and the scatter plots' Pareto front, and is shown apart, under the other rows, with its reason.
  Each submission is judged by the floor its own recorded suites declare (the default when they declare none), and
  the table says which; rows that could not be judged (no ``erm`` in their submission, say) are listed with why.
* A setting trained only for a strength sweep (a suite that selects scores only the setting it selects: the others
  have a validation accuracy and no number on the test split, :func:`gibench.results.tables.sweep_point_mask`) is not
  a row: the rows are the settings compared at matched accuracy, and the table says how many sweep settings it
  leaves out; the page's selection charts draw them (:mod:`gibench.leaderboard.strength`).
"""

from __future__ import annotations

__all__ = [
    "Agreement", "Cell", "Column", "HeldBack", "MetricInfo", "Omitted", "Problem", "Row", "Table", "aggregate",
    "combine", "fmt", "link_twins", "make_tables", "metric_info", "note_sweep_points", "params_label",
    "split_sweep_points", "unique_name",
]

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from gibench.results.collapse import (
    COLLAPSED,
    NOT_JUDGED,
    collapse_verdicts,
    dataset_classes,
    judge,
    rule_of,
)
from gibench.results.tables import (
    BASELINE,
    METRIC_KEYS,
    REASON_SEPARATOR,
    TABLE_KEYS,
    TRAINING,
    agreement_table,
    complete,
    summarize,
    sweep_point_mask,
)
from gibench.submissions.build import LoadedSubmission, slugify

ACCURACY_EVALUATOR = "accuracy"
SUBMISSION_KEYS = ["submission_id", "submission"]
ROW_KEYS = ["submission_id", "regularizer", "regularizer_params", "variant"]
FIXED_COLUMNS = ("variant", "family", "submission", "seeds")


@dataclass(frozen=True)
class MetricInfo:
    """What a submission records about a metric: its description, the closed range of its values, whether it is
    diagnostic (shown, never ranked), the metric it is read beside (``"evaluator.metric"``, or ``""``) and why."""

    description: str = ""
    bounds: tuple[float, float] = (-math.inf, math.inf)
    diagnostic: bool = False
    read_beside: str = ""
    caveat: str = ""

    @property
    def companion(self) -> tuple[str, str] | None:
        """``read_beside`` as (evaluator, metric), or None."""
        evaluator, _, metric = self.read_beside.partition(".")
        return (evaluator, metric) if evaluator and metric else None


@dataclass(frozen=True)
class Column:
    evaluator: str
    version: str
    params: str
    metric: str
    higher_is_better: bool
    headline: bool = True
    description: str = ""
    diagnostic: bool = False
    evaluated: bool = True
    id: str = ""  # the DOM hook: "<evaluator>--<metric>" as a slug, unique in its table
    read_beside: str = ""  # "evaluator.metric" this column is shown beside ("" for none)
    caveat: str = ""  # why (shown as a footnote)
    companion: str = ""  # the id of the column it is shown beside, in its table

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.evaluator, self.version, self.params, self.metric)

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def params_label(self) -> str:
        return params_label(self.params)

    @property
    def secondary(self) -> bool:
        """Hidden until chosen: every metric that is not its evaluator's headline."""
        return not self.headline

    @property
    def label(self) -> str:
        return self.evaluator if self.metric == self.evaluator else f"{self.evaluator} · {self.metric}"


@dataclass(frozen=True)
class Cell:
    text: str  # "0.9123 ± 0.0041" (half-width of the 95 % t-interval), or the status when there is no value
    sort_value: float | None = None
    note: str = ""  # "2/3 seeds"
    delta: str = ""  # "Δ +0.0123 ± 0.0050", "baseline" or ""
    delta_class: str = ""  # "better" | "worse" | "" (no verdict: the Δ interval contains zero, or there is none)
    rank: str = ""  # "rank 2 (1–3)"
    reasons: str = ""  # why results are skipped or failed (a tooltip)
    best: bool = False
    low: float = math.nan  # the 95 % interval of the mean (NaN with one seed)
    high: float = math.nan


@dataclass(frozen=True)
class Agreement:
    metric_a: str
    metric_b: str
    rho: str  # "+0.50", or "—" with fewer than 3 variants
    n_variants: int


@dataclass(frozen=True)
class Problem:
    variant: str
    submission: str
    evaluator: str
    status: str
    reasons: str


@dataclass(frozen=True)
class Omitted:
    """An evaluator left out of a table because it was skipped on every row."""

    evaluator: str
    reasons: str


@dataclass(frozen=True)
class HeldBack:
    """A metric column left out of a table because the metric it must be read beside is not in that table."""

    label: str
    metric: str
    read_beside: str
    caveat: str

    @property
    def note(self) -> str:
        companion = self.read_beside.replace(".", " · ")
        return (f"{self.metric} is shown only beside {companion}, which this table lacks"
                + (f": {self.caveat}" if self.caveat else ""))


@dataclass(frozen=True)
class Row:
    submission_id: str
    submission: str
    regularizer: str
    regularizer_params: str
    variant: str
    family: str
    n_seeds: int
    cells: list[Cell]
    evaluators: tuple[str, ...] = ()  # evaluators with at least one ok value in this row
    collapse: str = ""  # "collapsed", "kept", "baseline", "not judged" (gibench.results.collapse)
    collapse_reason: str = ""  # "collapsed: accuracy 0.228 vs erm 0.892 (floor 0.694: ...)"

    @property
    def is_baseline(self) -> bool:
        return self.regularizer == BASELINE

    @property
    def collapsed(self) -> bool:
        return self.collapse == COLLAPSED


@dataclass
class Table:
    anchor: str
    dataset: str
    backbone: str  # display label: name and parameters
    backbone_name: str
    backbone_params: str  # JSON
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    train_label: str = ""  # "3 ep · adam · lr 0.001" ("" for submissions made before it was recorded)
    train_hash: str = ""
    agreement: list[Agreement] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    omitted: list[Omitted] = field(default_factory=list)
    held_back: list[HeldBack] = field(default_factory=list)
    twin: str = ""  # the anchor of its twin table (same but for the backbone's ``bias`` option), or ""
    xdnn: bool = False  # its backbone has ``bias: false`` (an X-DNN)
    floors: list[tuple[str, str]] = field(default_factory=list)  # (submission, the collapse floor it was judged by)
    #: (submission, variant) of each setting trained only for a strength sweep: not a row (:func:`note_sweep_points`)
    sweep_points: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ranked_rows(self) -> list[Row]:
        """The rows that are not collapsed, in order."""
        return [r for r in self.rows if not r.collapsed]

    @property
    def collapsed_rows(self) -> list[Row]:
        """The collapsed rows, shown apart."""
        return [r for r in self.rows if r.collapsed]

    @property
    def not_judged(self) -> list[Row]:
        """The rows whose collapse could not be judged (their reason says why)."""
        return [r for r in self.rows if r.collapse == NOT_JUDGED]

    @property
    def caveats(self) -> list[Column]:
        """The columns with a caveat, in column order (their footnotes)."""
        return [c for c in self.columns if c.caveat]

    @property
    def title(self) -> str:
        return f"{self.dataset} × {self.backbone}" + (f" · {self.train_label}" if self.train_label else "")

    @property
    def evaluators(self) -> list[str]:
        return sorted({c.evaluator for c in self.columns if c.evaluated})

    @property
    def families(self) -> list[str]:
        return sorted({r.family for r in self.rows})

    def column(self, evaluator: str, metric: str) -> Column | None:
        return next((c for c in self.columns if c.evaluator == evaluator and c.metric == metric), None)


# ----------------------------------------------------------------------------------------------------------------------


def combine(submissions: list[LoadedSubmission]) -> pd.DataFrame:
    """The long results tables of all submissions, with ``submission_id`` and ``submission`` (name) columns."""
    parts = [s.results.assign(submission_id=s.submission.id, submission=s.submission.metadata.name)
             for s in submissions]
    if not parts:
        return pd.DataFrame(columns=[*SUBMISSION_KEYS, *TABLE_KEYS, *ROW_KEYS[1:], *METRIC_KEYS, "higher_is_better",
                                     "headline", "seed", "value", "status"])
    return pd.concat(parts, ignore_index=True)


def split_sweep_points(long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``long`` split in two: the results of the settings the tables show, and those of settings trained only for a
    strength sweep (:func:`gibench.results.tables.sweep_point_mask`, per submission)."""
    mask = sweep_point_mask(long, by=SUBMISSION_KEYS)
    return long[~mask], long[mask]


def note_sweep_points(tables: list[Table], sweep: pd.DataFrame) -> None:
    """Give each table the (submission, variant) of the sweep settings of its dataset, backbone and training config
    (``sweep``: the second part of :func:`split_sweep_points`)."""
    if sweep.empty:
        return
    found: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    for record in complete(sweep).to_dict("records"):
        key = tuple(str(record[k]) for k in TABLE_KEYS)
        found.setdefault(key, set()).add((str(record["submission"]), str(record["variant"])))
    for table in tables:
        key = (table.dataset, table.backbone_name, table.backbone_params, table.train_hash, table.train_label)
        table.sweep_points = sorted(found.get(key, ()))


def aggregate(long: pd.DataFrame, submissions: list[LoadedSubmission] | None = None) -> pd.DataFrame:
    """:func:`gibench.results.summarize` per submission (the one aggregation the report uses too): Δ is against the
    ``erm`` row of the same submission, ranks are across the submissions of a table; every row judged for collapse
    (:mod:`gibench.results.collapse`) against the ``erm`` row of its submission, by the floor that submission's recorded
    suites declare (``collapse_rule`` says which; the default for a submission not among ``submissions``), collapsed
    rows ranked no more."""
    summary = summarize(long, by=SUBMISSION_KEYS)
    suites = {s.submission.id: [r.suite for r in s.submission.provenance.suites] for s in submissions or []}
    classes = dataset_classes(summary["dataset"].astype(str), [raw for group in suites.values() for raw in group])
    rules = {str(sid): rule_of(suites.get(str(sid), [])) for sid in summary["submission_id"].unique()}
    verdicts = [collapse_verdicts(summary[summary["submission_id"] == sid], classes, rule, by=SUBMISSION_KEYS)
                for sid, rule in rules.items()] or [collapse_verdicts(summary, classes, by=SUBMISSION_KEYS)]
    summary = judge(summary, pd.concat(verdicts, ignore_index=True), by=SUBMISSION_KEYS)
    summary["collapse_rule"] = [rules[str(sid)].text if str(sid) in rules else "" for sid in summary["submission_id"]]
    return summary.sort_values([*SUBMISSION_KEYS, *TABLE_KEYS, *ROW_KEYS[1:], *METRIC_KEYS],
                               kind="stable").reset_index(drop=True)


def metric_info(submissions: list[LoadedSubmission]) -> dict[tuple[str, str], MetricInfo]:
    """(evaluator, metric) → what the submissions record about it (the first submission that records it wins).

    Read from ``submission.json``'s ``metrics`` (description, bounds, diagnostic, as declared by the evaluator at
    submit time), else from its ``metric_descriptions`` (older submissions: a description only), so the site never
    asks the installed plugins what a submitted number means. ``read_beside`` and ``caveat`` are taken from any record
    that declares them (a record of an older evaluator version, made when the installed one was newer, has none).
    """
    found: dict[tuple[str, str], MetricInfo] = {}
    for s in submissions:
        for record in getattr(s.submission, "metrics", None) or []:
            info, key = _info(record), (record.evaluator, record.metric)
            first = found.setdefault(key, info)
            if info.companion and not first.companion:  # a record of any version that names a companion wins
                found[key] = replace(first, read_beside=info.read_beside, caveat=info.caveat)
        for evaluator, metrics in s.submission.metric_descriptions.items():
            for metric, text in metrics.items():
                found.setdefault((evaluator, metric), MetricInfo(str(text)))
    return found


def _info(record: Any) -> MetricInfo:
    get = record.get if isinstance(record, Mapping) else (lambda k, d=None: getattr(record, k, d))
    low, high = get("bounds", None) or (None, None)
    return MetricInfo(str(get("description", "") or ""),
                      (-math.inf if low is None else float(low), math.inf if high is None else float(high)),
                      bool(get("diagnostic", False)), str(get("read_beside", "") or ""), str(get("caveat", "") or ""))


def make_tables(summary: pd.DataFrame, info: Mapping[tuple[str, str], MetricInfo] | None = None,
                families: Mapping[str, str] | None = None) -> list[Table]:
    """One :class:`Table` per dataset × backbone (its parameters included) × training config, in sorted order.

    ``families`` maps a regularizer name to its family (``Regularizer.family``); unknown ones are ``other``.
    """
    tables: list[Table] = []
    anchors: set[str] = set()
    shown = summary[~summary.apply(lambda r: _diagnostic(info, r), axis=1) & ~_held_back_mask(summary, info or {})]
    agreement = agreement_table(shown if len(summary) else summary, by=SUBMISSION_KEYS)
    for key, part in summary.groupby(TABLE_KEYS, sort=True):
        dataset, backbone, backbone_params, train_hash, train_label = key
        label = f"{backbone}{params_label(backbone_params)}"
        anchor = f"{slugify(dataset, 60)}--{slugify(label, 60)}" + (f"--{train_hash}" if train_hash else "")
        anchor = unique_name(anchor, anchors)
        columns, omitted, held_back = _columns(part, info or {})
        rows = [_row(k, group, columns, families or {}) for k, group in part.groupby(ROW_KEYS, sort=False)]
        rows.sort(key=lambda r: (r.regularizer != BASELINE, r.regularizer, r.variant, r.submission, r.submission_id))
        rows = _mark_best(rows, columns)
        mine = agreement.merge(pd.DataFrame([dict(zip(TABLE_KEYS, key))]), on=TABLE_KEYS)
        floors = sorted({(str(r["submission"]), str(r["collapse_rule"])) for r in part.to_dict("records")
                         if r.get("collapse_rule")})
        tables.append(Table(anchor, str(dataset), label, str(backbone), str(backbone_params), columns, rows,
                            str(train_label), str(train_hash), _agreement(mine), _problems(part), omitted,
                            held_back, floors=floors))
    link_twins(tables)
    return tables


def _without_bias(table: Table) -> tuple[str, str, str, str, str] | None:
    """The key a table shares with its twin: dataset, backbone name, its options less ``bias`` (as canonical JSON),
    training config; None for options that are not a JSON object."""
    try:
        params = json.loads(table.backbone_params or "{}")
    except ValueError:
        return None
    if not isinstance(params, dict):
        return None
    rest = {k: v for k, v in params.items() if k != "bias"}
    return (table.dataset, table.backbone_name, json.dumps(rest, sort_keys=True), table.train_hash, table.train_label)


def link_twins(tables: list[Table]) -> None:
    """Record the X-DNN twin relation both ways: a table whose backbone has ``bias: false`` and one that differs from
    it only in ``bias`` (absent, or ``true``), same dataset, backbone name and training config. Sets ``xdnn`` on
    every table with ``bias: false`` and ``twin`` (the other's anchor) on both of a pair; with two biased candidates
    (``bias`` absent and ``bias: true``) the one without the option is the twin."""
    biased: dict[tuple[str, str, str, str, str], Table] = {}
    for table in tables:
        params = json.loads(table.backbone_params or "{}") if _without_bias(table) else {}
        table.xdnn = params.get("bias", True) is False
        if not table.xdnn and params.get("bias", True) is True:
            key = _without_bias(table)
            if key is not None and ("bias" not in params or key not in biased):
                biased[key] = table
    for table in tables:
        twin = biased.get(_without_bias(table)) if table.xdnn else None
        if twin is not None and not twin.twin:
            table.twin, twin.twin = twin.anchor, table.anchor


def _held_back_mask(summary: pd.DataFrame, info: Mapping[tuple[str, str], MetricInfo]) -> pd.Series:
    """True for the summary rows of a metric whose ``read_beside`` companion has no column in the same table."""
    mask = pd.Series(False, index=summary.index)
    if not len(summary) or not any(m.companion for m in info.values()):
        return mask
    for _, part in summary.groupby(TABLE_KEYS, sort=False):
        kept = _kept_metrics(part)
        for index, evaluator, metric in zip(part.index, part["evaluator"], part["metric"]):
            companion = info.get((evaluator, metric), MetricInfo()).companion
            mask.at[index] = companion is not None and companion not in kept
    return mask


def _kept_metrics(part: pd.DataFrame) -> set[tuple[str, str]]:
    """(evaluator, metric) of the columns a table keeps: not skipped on every row (training excluded)."""
    metrics = part[part["evaluator"] != TRAINING]
    return {(str(key[0]), str(key[3])) for key, group in metrics.groupby(METRIC_KEYS, sort=False)
            if not _skipped_everywhere(group)}


def _skipped_everywhere(group: pd.DataFrame) -> bool:
    return group["n_ok"].max() == 0 and set(",".join(group["statuses"]).split(",")) == {"skipped"}


def _diagnostic(info: Mapping[tuple[str, str], MetricInfo] | None, record: Any) -> bool:
    return bool(info) and info.get((record["evaluator"], record["metric"]), MetricInfo()).diagnostic


def _agreement(rows: pd.DataFrame) -> list[Agreement]:
    return [Agreement(r.metric_a, r.metric_b, "—" if math.isnan(r.rho) else fmt(r.rho, signed=True, scale=1.0),
                      int(r.n_variants)) for r in rows.itertuples()]


def _problems(part: pd.DataFrame) -> list[Problem]:
    """Skipped and failed evaluations of a table, once per (variant, submission, evaluator, status)."""
    bad = part[part["statuses"] != ""]
    found: dict[tuple[str, str, str, str], set[str]] = {}
    for r in bad.itertuples():
        for status in r.statuses.split(","):
            found.setdefault((r.variant, r.submission, r.evaluator, status), set()).update(
                x for x in r.reasons.split(REASON_SEPARATOR) if x)
    return [Problem(*k, REASON_SEPARATOR.join(sorted(v)) or "no reason recorded") for k, v in sorted(found.items())]


def _columns(part: pd.DataFrame, info: Mapping[tuple[str, str], MetricInfo]
             ) -> tuple[list[Column], list[Omitted], list[HeldBack]]:
    metrics = part[part["evaluator"] != TRAINING]
    columns, omitted, ids = [], {}, set(FIXED_COLUMNS)
    for key, group in metrics.groupby(METRIC_KEYS, sort=True):
        evaluator, version, params, metric = key
        if _skipped_everywhere(group):
            reasons = {x for r in group["reasons"] for x in r.split(REASON_SEPARATOR) if x}
            omitted.setdefault(str(evaluator), set()).update(reasons)
            continue
        first = group.iloc[0]
        meta = info.get((evaluator, metric), MetricInfo())
        columns.append(Column(str(evaluator), str(version), str(params), str(metric), bool(first["higher_is_better"]),
                              bool(first["headline"]), meta.description, meta.diagnostic,
                              read_beside=meta.read_beside if meta.companion else "", caveat=meta.caveat))
    if not any(c.evaluator == ACCURACY_EVALUATOR for c in columns):
        columns.append(Column(ACCURACY_EVALUATOR, "", "{}", "accuracy", True, True, "clean test accuracy",
                              evaluated=False))
    columns.sort(key=lambda c: (c.evaluator != ACCURACY_EVALUATOR, not c.headline, c.key))
    columns, held_back = _beside_companions([_with_id(c, ids) for c in columns])
    kept = {c.evaluator for c in columns}
    gone = [Omitted(e, REASON_SEPARATOR.join(sorted(r)) or "skipped on every row")
            for e, r in sorted(omitted.items()) if e not in kept]
    return columns, gone, held_back


def _beside_companions(columns: list[Column]) -> tuple[list[Column], list[HeldBack]]:
    """Each column with a ``read_beside`` moved to just after its companion's first column (several keep their
    order), with ``companion`` set to that column's id; those whose companion has no column (or reads beside another
    one itself) are held back."""
    standing = [c for c in columns if not c.read_beside]
    placed: list[Column] = []
    held: list[HeldBack] = []
    for column in standing:
        placed.append(column)
        for other in columns:
            if other.read_beside and other.read_beside == f"{column.evaluator}.{column.metric}" and not any(
                    p.key == other.key for p in placed):
                placed.append(replace(other, companion=column.id))
    for column in columns:
        note = HeldBack(column.label, column.metric, column.read_beside, column.caveat)
        if column.read_beside and not any(p.key == column.key for p in placed) and note not in held:
            held.append(note)  # once per metric, however many versions or settings it has
    return placed, held


def _with_id(column: Column, taken: set[str]) -> Column:
    """``column`` with its DOM id, unique among ``taken`` (which it joins)."""
    return replace(column, id=unique_name(f"{slugify(column.evaluator, 40)}--{slugify(column.metric, 60)}", taken))


def _row(key: tuple[Any, ...], group: pd.DataFrame, columns: list[Column], families: Mapping[str, str]) -> Row:
    submission_id, regularizer, regularizer_params, variant = key
    records = {tuple(r[k] for k in METRIC_KEYS): r for r in group.to_dict("records")}
    n_seeds = int(group["n_seeds"].max())
    training = group[group["evaluator"] == TRAINING]
    missing = f"training failed ({int(training['n_seeds'].iloc[0])} seed(s))" if len(training) else "not evaluated"
    cells = [_cell(records.get(c.key), n_seeds, regularizer == BASELINE, c.diagnostic, missing) for c in columns]
    evaluators = tuple(sorted(set(group.loc[group["n_ok"] > 0, "evaluator"]) - {TRAINING}))
    first = group.iloc[0]
    collapse = (str(first.get("collapse", "")), str(first.get("collapse_reason", "")))  # one verdict per row
    return Row(str(submission_id), str(group["submission"].iloc[0]), str(regularizer), str(regularizer_params),
               str(variant), families.get(str(regularizer), "other"), n_seeds, cells, evaluators, *collapse)


def _cell(record: dict[str, Any] | None, n_seeds: int, is_baseline: bool, diagnostic: bool = False,
          missing: str = "not evaluated") -> Cell:
    if record is None or record["n_ok"] == 0:
        text = missing if record is None else (record["statuses"] or "—")
        return Cell(text, reasons="" if record is None else record["reasons"])
    mean = float(record["mean"])
    text = fmt(mean) + (f" ± {fmt(_half(record['ci_low'], record['ci_high']), scale=mean)}"
                        if not math.isnan(record["ci_low"]) else "")
    note = f"{record['n_ok']}/{n_seeds} seeds" if record["n_ok"] < n_seeds else ""
    delta = "baseline" if is_baseline else ""
    if not is_baseline and not math.isnan(record["delta_vs_erm"]):
        delta = f"Δ {fmt(float(record['delta_vs_erm']), signed=True, scale=mean)}"
        if not math.isnan(record["delta_low"]):
            delta += f" ± {fmt(_half(record['delta_low'], record['delta_high']), scale=mean)}"
    rank = ""
    if not diagnostic and not pd.isna(record["rank"]):
        best, worst = int(record["rank_best"]), int(record["rank_worst"])
        rank = f"rank {int(record['rank'])}" + (f" ({best}–{worst})" if best != worst else "")
    return Cell(text, mean, note, delta, record["verdict"], rank, record["reasons"], low=float(record["ci_low"]),
                high=float(record["ci_high"]))


def _mark_best(rows: list[Row], columns: list[Column]) -> list[Row]:
    """Rows with the best mean of each non-diagnostic column marked (none with < 2 values), among the rows that are
    not collapsed (a collapsed row is never marked, nor counted). Ties are all marked: means equal up to float
    rounding (relative 1e-12), e.g. 0.2 and (0.1 + 0.2 + 0.3) / 3."""
    best: dict[int, float] = {}
    for i, column in enumerate(columns):
        values = [r.cells[i].sort_value for r in rows if r.cells[i].sort_value is not None and not r.collapsed]
        if column.diagnostic or len(values) < 2:
            continue
        best[i] = max(values) if column.higher_is_better else min(values)
    return [r if r.collapsed else
            replace(r, cells=[replace(c, best=True) if i in best and c.sort_value is not None
                              and math.isclose(c.sort_value, best[i], rel_tol=1e-12, abs_tol=1e-15) else c
                              for i, c in enumerate(r.cells)]) for r in rows]


def _half(low: float, high: float) -> float:
    return (float(high) - float(low)) / 2


def fmt(x: float, signed: bool = False, scale: float | None = None) -> str:
    """Four decimals when ``scale`` (default ``x``) is 0 or within [0.001, 10000), else scientific with 3 digits.

    A std and a Δ are formatted on the scale of their mean, so ``0.9100 ± 0.0000`` rather than ``0.9100 ± 1.2e-06``.
    """
    scale = x if scale is None else scale
    plain = scale == 0 or 1e-3 <= abs(scale) < 1e4
    text = f"{x:+.4f}" if plain and signed else f"{x:.4f}" if plain else f"{x:+.2e}" if signed else f"{x:.2e}"
    return text.replace("-", "−")


def params_label(params_json: str) -> str:
    """``'{"act": "softplus"}'`` → ``'(act=softplus)'``; ``'{}'`` → ``''``."""
    params = json.loads(params_json) if params_json else {}
    if not params:
        return ""
    return "(" + ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(params.items())) + ")"


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when taken; the result is added to ``taken`` (page anchors and ids)."""
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}-{i}", i + 1
    taken.add(candidate)
    return candidate
