"""Render ``submissions/`` into a static leaderboard site (Jinja2, autoescaped; no network, no timestamps).

``build_site(submissions_dir, out_dir)`` writes::

    index.html                      one table per dataset × backbone × training config (anchor
                                    ``#<dataset>--<backbone>[--<train hash>]``)
    tables/<anchor>.csv, .json      that table's numbers for every metric (not only the headlines shown)
    submissions/<id>.html           metadata and provenance of one submission
    submissions/<id>/submission.json, results.csv   copies of the submitted files
    submission.schema.json          the JSON Schema of submission.json
    static/style.css, static/sort.js

Choices (also stated on the page):

* Every submission is validated first. By default one invalid submission stops the build with a SubmissionError
  naming every bad folder and its problem; with ``skip_invalid=True`` the valid ones are rendered and the rejected
  folders are listed, with their errors, in a box at the top of the index page (never silently dropped).
* One aggregation: the numbers are :func:`gibench.results.summarize` of the submissions' results (``by`` the
  submission), the function ``gibench report`` uses, so a site cell equals the report's for the same runs.
* A table is one dataset × backbone (its parameters included) × training config (the hash of the jobs' resolved
  train config, labelled e.g. ``3 ep · adam · lr 0.001``): runs trained differently never share a table or a row.
* A row is one variant (regularizer and its parameters) of one submission. A cell is the mean ± the half-width of
  the 95 % Student-t interval over the seeds whose status is ``ok``; with one seed no ± is shown (never "± 0"); a
  cell that had results for fewer seeds than the row says ``k/n seeds``; a cell without any result shows the status
  (skipped / failed / —), with the recorded reasons as its tooltip and in the table's list of skipped and failed
  evaluations.
* Columns: clean accuracy (the ``accuracy`` evaluator's headline; a "not evaluated" column if no submission has it),
  then each evaluator's headline metric, one column per (evaluator, version, parameters): numbers from different
  evaluator versions or settings are not comparable and never share a column.
* Δ is the difference of means against the ``erm`` row of the *same submission* in the same table, for the same
  evaluator version and parameters, ± its 95 % interval (paired t by seed when both rows have the same seeds, else
  Welch's t; :mod:`gibench.stats`). It is coloured better/worse only when that interval excludes zero.
* Each cell carries the variant's rank on the metric among every row of the table (1 = best in its direction) and,
  when its interval allows others, the range of ranks; each table lists the evaluator agreement (Spearman's ρ between
  headline metrics across its rows).
* Rows are ordered erm first, then by regularizer, parameters and submission name; the order implies no ranking.
  Clicking a header sorts by it (static/sort.js; without JavaScript the table is complete, only unsortable).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

import gibench
from gibench.errors import SubmissionError
from gibench.fsio import atomic_folder
from gibench.results import (
    BASELINE, METRIC_KEYS, REASON_SEPARATOR, TABLE_KEYS, TRAINING, agreement_table, summarize,
)
from gibench.submission import (
    RESULTS_FILE, SUBMISSION_FILE, LoadedSubmission, scan_submissions, slugify, submission_json_schema,
)

log = logging.getLogger(__name__)

ACCURACY_EVALUATOR = "accuracy"
SUBMISSION_KEYS = ["submission_id", "submission"]
ROW_KEYS = ["submission_id", "regularizer", "regularizer_params", "variant"]
COLUMN_KEYS = METRIC_KEYS
MANAGED = ("index.html", "static", "tables", "submissions", "submission.schema.json")
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Column:
    evaluator: str
    version: str
    params: str
    metric: str
    higher_is_better: bool
    description: str = ""
    evaluated: bool = True

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.evaluator, self.version, self.params, self.metric)

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def params_label(self) -> str:
        return params_label(self.params)


@dataclass(frozen=True)
class Cell:
    text: str  # "0.9123 ± 0.0041" (half-width of the 95 % t-interval), or the status when there is no value
    sort_value: float | None = None
    note: str = ""  # "2/3 seeds"
    delta: str = ""  # "Δ +0.0123 ± 0.0050", "baseline" or ""
    delta_class: str = ""  # "better" | "worse" | "" (no verdict: the Δ interval contains zero, or there is none)
    rank: str = ""  # "rank 2 (1–3)"
    reasons: str = ""  # why results are skipped or failed (a tooltip)


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
class Row:
    submission_id: str
    submission: str
    regularizer: str
    variant: str
    n_seeds: int
    cells: list[Cell]

    @property
    def is_baseline(self) -> bool:
        return self.regularizer == BASELINE


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


def build_site(submissions_dir: str | Path, out_dir: str | Path, *, skip_invalid: bool = False) -> Path:
    """Validate every submission under ``submissions_dir`` and render the site into ``out_dir``.

    Only the paths this builder owns (``index.html``, ``static/``, ``tables/``, ``submissions/``,
    ``submission.schema.json``) are replaced in ``out_dir``; other files there are left alone. ``submissions_dir`` may
    be ``out_dir/submissions`` itself (a self-contained site folder): then its folders are kept as they are and only
    the pages are regenerated. It may not contain ``out_dir``, nor lie in another path the builder replaces.

    Returns:
        The path of ``index.html``.

    Raises:
        SubmissionError: an invalid submission (unless ``skip_invalid``; nothing is written then), a
            ``submissions_dir`` that is not a folder, or a layout the build would damage (see above).

    Example:
        >>> build_site("submissions", "site")
        PosixPath('site/index.html')
    """
    out = Path(out_dir)
    in_place = _check_layout(Path(submissions_dir), out)
    scan = scan_submissions(submissions_dir)
    if scan.invalid and not skip_invalid:
        raise SubmissionError(f"Refusing to build the site: {len(scan.invalid)} invalid submission(s) under "
                              f"{submissions_dir} (fix them, or build with skip_invalid to list them as rejected):\n"
                              + "\n".join(message for _, message in scan.invalid))
    for folder, message in scan.invalid:
        log.warning("rejected submission %s: %s", folder, message)
    return _render(scan.valid, scan.invalid, out, in_place)


def build_results_site(submissions: list[LoadedSubmission], out_dir: str | Path) -> Path:
    """Render already-loaded submissions (e.g. ``gibench.submission.package_results`` of one runs directory, built
    in memory from one ``collect_results`` frame) into ``out_dir``, which is replaced as a whole: the site is built
    in a temporary folder next to it and renamed into place, so concurrent builds never collide and a reader never
    sees a half-built site. Returns the path of ``index.html``.
    """
    out = Path(out_dir)
    with atomic_folder(out, replace=True) as tmp:
        _render(submissions, [], tmp, in_place=False)
    return out / "index.html"


def _render(valid: list[LoadedSubmission], invalid: list[tuple[Path, str]], out: Path, in_place: bool) -> Path:
    summary = aggregate(combine(valid))
    tables = make_tables(summary, _descriptions(valid))
    _clear(out, keep_submissions=in_place)
    env = _environment()
    _write_downloads(out / "tables", summary, tables)
    _write_submission_pages(env, out / "submissions", valid, tables, copy=not in_place)
    (out / "submission.schema.json").write_text(json.dumps(submission_json_schema(), indent=2) + "\n", "utf-8")
    shutil.copytree(STATIC_DIR, out / "static", ignore=shutil.ignore_patterns("__pycache__"))
    index = out / "index.html"
    index.write_text(env.get_template("index.html.j2").render(
        tables=tables, submissions=[s.submission for s in valid],
        rejected=[(f.name, m) for f, m in invalid], gibench_version=gibench.__version__, root=""), "utf-8")
    return index


# ----------------------------------------------------------------------------------------------------------------------
# Numbers


def combine(submissions: list[LoadedSubmission]) -> pd.DataFrame:
    """The long results tables of all submissions, with ``submission_id`` and ``submission`` (name) columns."""
    parts = [s.results.assign(submission_id=s.submission.id, submission=s.submission.metadata.name)
             for s in submissions]
    if not parts:
        return pd.DataFrame(columns=[*SUBMISSION_KEYS, *TABLE_KEYS, *ROW_KEYS[1:], *COLUMN_KEYS, "higher_is_better",
                                     "headline", "seed", "value", "status"])
    return pd.concat(parts, ignore_index=True)


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """:func:`gibench.results.summarize` per submission (the one aggregation the report uses too): Δ is against the
    ``erm`` row of the same submission, ranks are across the submissions of a table."""
    summary = summarize(long, by=SUBMISSION_KEYS)
    return summary.sort_values([*SUBMISSION_KEYS, *TABLE_KEYS, *ROW_KEYS[1:], *COLUMN_KEYS],
                               kind="stable").reset_index(drop=True)


def make_tables(summary: pd.DataFrame, descriptions: dict[tuple[str, str], str] | None = None) -> list[Table]:
    """One :class:`Table` per dataset × backbone (its parameters included) × training config, in sorted order."""
    tables: list[Table] = []
    anchors: set[str] = set()
    agreement = agreement_table(summary, by=SUBMISSION_KEYS)
    for key, part in summary.groupby(TABLE_KEYS, sort=True):
        dataset, backbone, backbone_params, train_hash, train_label = key
        label = f"{backbone}{params_label(backbone_params)}"
        anchor = f"{slugify(dataset, 60)}--{slugify(label, 60)}" + (f"--{train_hash}" if train_hash else "")
        anchor = _unique(anchor, anchors)
        columns = _columns(part, descriptions or {})
        rows = [_row(key, group, columns) for key, group in part.groupby(ROW_KEYS, sort=False)]
        rows.sort(key=lambda r: (r.regularizer != BASELINE, r.regularizer, r.variant, r.submission, r.submission_id))
        mine = agreement.merge(pd.DataFrame([dict(zip(TABLE_KEYS, key))]), on=TABLE_KEYS)
        tables.append(Table(anchor, str(dataset), label, str(backbone), str(backbone_params), columns, rows,
                            str(train_label), str(train_hash), _agreement(mine), _problems(part)))
    return tables


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


def _columns(part: pd.DataFrame, descriptions: dict[tuple[str, str], str]) -> list[Column]:
    heads = part[part["headline"]].drop_duplicates(COLUMN_KEYS)
    columns = [Column(r.evaluator, str(r.evaluator_version), r.evaluator_params, r.metric, bool(r.higher_is_better),
                      descriptions.get((r.evaluator, r.metric), "")) for r in heads.itertuples()]
    if not any(c.evaluator == ACCURACY_EVALUATOR for c in columns):
        columns.append(Column(ACCURACY_EVALUATOR, "", "{}", "accuracy", True, "clean test accuracy", evaluated=False))
    return sorted(columns, key=lambda c: (c.evaluator != ACCURACY_EVALUATOR, c.key))


def _row(key: tuple[Any, ...], group: pd.DataFrame, columns: list[Column]) -> Row:
    submission_id, regularizer, _, variant = key
    records = {tuple(r[k] for k in COLUMN_KEYS): r for r in group.to_dict("records")}
    n_seeds = int(group["n_seeds"].max())
    training = group[group["evaluator"] == TRAINING]
    missing = f"training failed ({int(training['n_seeds'].iloc[0])} seed(s))" if len(training) else "not evaluated"
    cells = [_cell(records.get(c.key), n_seeds, regularizer == BASELINE, missing) for c in columns]
    return Row(submission_id, str(group["submission"].iloc[0]), regularizer, variant, n_seeds, cells)


def _cell(record: dict[str, Any] | None, n_seeds: int, is_baseline: bool, missing: str = "not evaluated") -> Cell:
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
    if not pd.isna(record["rank"]):
        best, worst = int(record["rank_best"]), int(record["rank_worst"])
        rank = f"rank {int(record['rank'])}" + (f" ({best}–{worst})" if best != worst else "")
    return Cell(text, mean, note, delta, record["verdict"], rank, record["reasons"])


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


def _unique(anchor: str, taken: set[str]) -> str:
    candidate, i = anchor, 2
    while candidate in taken:
        candidate, i = f"{anchor}-{i}", i + 1
    taken.add(candidate)
    return candidate


def _descriptions(submissions: list[LoadedSubmission]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for s in submissions:
        for evaluator, metrics in s.submission.metric_descriptions.items():
            for metric, text in metrics.items():
                found.setdefault((evaluator, metric), text)
    return found


# ----------------------------------------------------------------------------------------------------------------------
# Files


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("gibench.leaderboard", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["sentence"] = lambda text: text[:1].upper() + text[1:]
    return env


def _check_layout(submissions: Path, out: Path) -> bool:
    """True when ``submissions`` is ``out/submissions``; raises SubmissionError for layouts the build would damage."""
    subs, site = submissions.resolve(), out.resolve()
    if site == subs or subs in site.parents:
        raise SubmissionError(f"The site folder {out} is inside the submissions folder {submissions}, where it would be "
                              "read as a submission. Build the site somewhere else (e.g. --out site).")
    if subs == site / "submissions":
        return True
    for name in MANAGED:
        if subs == site / name or site / name in subs.parents:
            raise SubmissionError(f"The submissions folder {submissions} lies in {out / name}, which the site build "
                                  "replaces. Move the submissions, or build the site somewhere else.")
    return False


def _clear(out: Path, keep_submissions: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in MANAGED:
        target = out / name
        if name == "submissions" and keep_submissions:
            for page in target.glob("*.html"):
                page.unlink()
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _table_rows(summary: pd.DataFrame, table: Table) -> pd.DataFrame:
    mask = ((summary["dataset"] == table.dataset) & (summary["backbone"] == table.backbone_name)
            & (summary["backbone_params"] == table.backbone_params) & (summary["train_hash"] == table.train_hash))
    return summary[mask]


def _write_downloads(folder: Path, summary: pd.DataFrame, tables: list[Table]) -> None:
    folder.mkdir(parents=True)
    for table in tables:
        rows = _table_rows(summary, table)
        rows.to_csv(folder / f"{table.anchor}.csv", index=False, lineterminator="\n")
        records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
        payload = {"dataset": table.dataset, "backbone": table.backbone, "train_label": table.train_label,
                   "train_hash": table.train_hash, "rows": records,
                   "agreement": [dataclasses.asdict(a) for a in table.agreement],
                   "problems": [dataclasses.asdict(p) for p in table.problems]}
        (folder / f"{table.anchor}.json").write_text(json.dumps(payload, indent=1, allow_nan=False, default=_plain)
                                                     + "\n", "utf-8")


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers for json.dumps."""
    return value.item() if hasattr(value, "item") else str(value)


def _write_submission_pages(env: jinja2.Environment, folder: Path, submissions: list[LoadedSubmission],
                            tables: list[Table], copy: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    template = env.get_template("submission.html.j2")
    for loaded in submissions:
        sub = loaded.submission
        if copy:
            (folder / sub.id).mkdir()
            if loaded.path is None:  # packaged in memory: write what `gibench submit` would have written
                (folder / sub.id / SUBMISSION_FILE).write_text(sub.model_dump_json(indent=2) + "\n", "utf-8")
                (folder / sub.id / RESULTS_FILE).write_bytes(loaded.data)
            else:
                for name in (SUBMISSION_FILE, RESULTS_FILE):
                    shutil.copyfile(loaded.path / name, folder / sub.id / name)
        in_tables = [t for t in tables if any(r.submission_id == sub.id for r in t.rows)]
        statuses = loaded.results["status"].value_counts().sort_index().to_dict()
        plugins = sorted({(kind, name, p.distribution, p.version) for run in sub.provenance.runs
                          for kind, entries in run.plugins.items() for name, p in entries.items()})
        (folder / f"{sub.id}.html").write_text(template.render(
            sub=sub, tables=in_tables, statuses=statuses, plugins=plugins, n_rows=len(loaded.results),
            gibench_version=gibench.__version__, root="../"), "utf-8")
