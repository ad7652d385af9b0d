"""Loading and validating a submission folder: ``submission.json`` against the schema, ``results.csv`` cell by cell,
the packed artifacts against their recorded SHA-256, and the models it references (``models.json``: its shape and
recorded SHA-256, gibench.submissions.submitted_models).

Validation is strict and reports the file, the field (or column and line) and how to fix it. ``results.csv`` is
checked for columns, types, ``status`` values, finite values on ``ok`` rows, duplicate results, consistent job and
metric descriptions, job hashes covered by the provenance, row count, the SHA-256 recorded at submit, and then
for plausibility:

* **Bounds.** Every ``ok`` value lies in its metric's declared range (:attr:`gibench.api.Metric.bounds`), widened by
  :data:`BOUNDS_SLACK` · max(1, |bound|) for floating-point rounding (a float32 cosine can come out as 1.0000001).
  The range is the installed evaluator's declaration when the installed version is the one that produced the rows
  (and a submission whose recorded bounds differ from it is rejected: it was edited, or made by a plugin that
  declared them differently under the same version), else the bounds recorded in ``submission.json``'s
  ``metrics``, else unbounded.
* **Plain text.** No cell of ``results.csv`` contains a character of Unicode category Cc (control: NUL, newline,
  ESC, ...) or Cf (format: the right-to-left override U+202E, zero-width characters); the metadata is checked the
  same way by :mod:`gibench.submissions.schema`.
"""

from __future__ import annotations

__all__ = [
    "BOUNDS_SLACK", "check_metric_records", "check_plausible", "installed_metric", "load_submission",
    "load_submissions", "parse_results", "scan_submissions", "validate_submission",
]

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.core.errors import SubmissionError
from gibench.results.tables import REQUIRED_COLUMNS
from gibench.submissions.artifacts import check_artifacts
from gibench.submissions.schema import (
    MODELS_FILE,
    STATUSES,
    SUBMISSION_FILE,
    LoadedSubmission,
    MetricInfo,
    Submission,
    SubmissionScan,
    bounds_from_json,
    bounds_to_json,
    control_character,
    parse_model,
)

RESULT_COLUMNS: dict[str, str] = REQUIRED_COLUMNS
JOB_COLUMNS = ["dataset", "backbone", "backbone_params", "regularizer", "regularizer_params", "variant", "seed"]
_RESULT_KEY = ["job_hash", "evaluator", "evaluator_version", "evaluator_params", "metric"]
_KIND_TEXT = {"str": "a non-empty string", "json": "a JSON object such as {} or {\"weight\": 0.01}",
              "int": "an integer", "float": "a number (or empty for no value)", "bool": "True or False",
              "status": "one of " + ", ".join(STATUSES)}
_REMAKE = "re-create the submission with `gibench submit` instead of editing it by hand"
#: Relative slack of the bounds check (see the module docstring).
BOUNDS_SLACK = 1e-6


def validate_submission(path: str | Path) -> Submission:
    """Check the folder ``path`` against the schema; return its :class:`Submission` or raise SubmissionError."""
    return load_submission(path).submission


def load_submission(path: str | Path) -> LoadedSubmission:
    """Validate the folder ``path`` and return it with its results table (typed columns)."""
    folder = Path(path)
    file = folder / SUBMISSION_FILE
    if not folder.is_dir():
        raise SubmissionError(f"{folder} is not a folder. A submission is a folder made by `gibench submit`.")
    if not file.is_file():
        raise SubmissionError(f"{file} is missing. Every submission folder needs one; {_REMAKE}.")
    submission = parse_model(Submission, _read_json(file), str(file))
    if submission.id != folder.name:
        raise SubmissionError(f"{file}: field 'id' is {submission.id!r} but the folder is named {folder.name!r}. "
                              f"Fix: rename the folder to {submission.id!r}.")
    results_path = folder / submission.results.file
    if not results_path.is_file():
        raise SubmissionError(f"{results_path} is missing (named by field 'results.file' in {file}); {_REMAKE}.")
    data = results_path.read_bytes()
    table = parse_results(data, str(results_path), submission.provenance.job_hashes())
    if len(table) != submission.results.rows:
        raise SubmissionError(f"{results_path} has {len(table)} rows but field 'results.rows' in {file} says "
                              f"{submission.results.rows}; {_REMAKE}.")
    if hashlib.sha256(data).hexdigest() != submission.results.sha256:
        raise SubmissionError(f"{results_path} does not match field 'results.sha256' in {file}: the file changed "
                              f"after `gibench submit`; {_REMAKE}.")
    check_metric_records(submission.metrics, table, file)
    check_plausible(table, submission.metrics, results_path)
    check_artifacts(folder, submission.artifacts, file)
    models = b""
    if submission.models is not None or (folder / MODELS_FILE).exists():  # torch is imported only then
        from gibench.submissions.submitted_models import check_models

        models = check_models(folder, submission.models, table, file)
    return LoadedSubmission(folder, submission, table, data, models_data=models)


def scan_submissions(root: str | Path) -> SubmissionScan:
    """Validate every submission folder under ``root`` (skipping names that start with ``.`` or ``_``)."""
    root = Path(root)
    if not root.is_dir():
        raise SubmissionError(f"{root} is not a folder. Pass the submissions folder (e.g. submissions/).")
    valid, invalid = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        try:
            valid.append(load_submission(folder))
        except SubmissionError as exc:
            invalid.append((folder, str(exc)))
    return SubmissionScan(valid, invalid)


def load_submissions(root: str | Path) -> list[LoadedSubmission]:
    """Every submission under ``root``; raises SubmissionError naming every invalid folder and its problem."""
    scan = scan_submissions(root)
    if scan.invalid:
        raise SubmissionError(f"{len(scan.invalid)} invalid submission(s) under {root}:\n"
                              + "\n".join(message for _, message in scan.invalid))
    return scan.valid


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"{file} is not valid UTF-8 JSON ({exc}); {_REMAKE}.") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------------------------------------------------
# results.csv


def parse_results(data: bytes, file: str, known_jobs: set[str]) -> pd.DataFrame:
    """Parse and check results.csv bytes; returns the table with typed columns (raises SubmissionError)."""
    try:
        raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{file} is not a readable CSV file ({exc}); {_REMAKE}.") from None
    missing = [c for c in RESULT_COLUMNS if c not in raw.columns]
    if missing:
        raise SubmissionError(f"{file}: missing column(s) {', '.join(repr(c) for c in missing)}. Fix: results.csv "
                              f"needs the columns {', '.join(RESULT_COLUMNS)}; {_REMAKE}.")
    if len(raw) == 0:
        raise SubmissionError(f"{file} has no rows; {_REMAKE}.")
    _check_plain_text(raw, file)
    table = raw.copy()
    for column, kind in RESULT_COLUMNS.items():
        table[column] = _convert(raw[column], column, kind, file)
    _check_rows(table, file, known_jobs)
    return table


def _convert(values: pd.Series, column: str, kind: str, file: str) -> pd.Series:
    strings = values.astype(str)
    if kind in ("str", "text"):
        bad = strings.str.strip() == "" if kind == "str" else pd.Series(False, index=values.index)
        converted = strings.astype(object)
    elif kind == "json":
        parsed = {s: _json_object(s) for s in set(strings)}
        bad = strings.map(lambda s: parsed[s] is None)
        converted = strings.astype(object)
    elif kind in ("int", "float"):
        numbers = pd.to_numeric(strings.where(strings != "", "nan"), errors="coerce")
        bad = numbers.isna() & ~strings.str.lower().isin(["", "nan"])
        if kind == "int":
            bad |= numbers.isna() | (numbers.fillna(0) % 1 != 0)
        converted = numbers.fillna(0).astype("int64") if kind == "int" and not bad.any() else numbers.astype(float)
    elif kind == "bool":
        mapping = {"true": True, "false": False, "1": True, "0": False}
        bad = ~strings.str.lower().isin(list(mapping))
        converted = strings.str.lower().map(mapping).astype(object)
    else:  # status
        bad = ~strings.isin(STATUSES)
        converted = strings.astype(object)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise SubmissionError(f"{file}: column '{column}', line {i + 2}: {_short(strings.iloc[i])} is not "
                              f"{_KIND_TEXT[kind]}. Fix: correct that cell; {_REMAKE}.")
    return converted.astype(bool) if kind == "bool" else converted


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _check_rows(table: pd.DataFrame, file: str, known_jobs: set[str]) -> None:
    table = table.reset_index(drop=True)

    def fail(index: int, message: str) -> None:
        raise SubmissionError(f"{file}: line {index + 2}: {message}")

    finite = table["value"].map(math.isfinite)
    for index in table.index[(table["status"] == "ok") & ~finite][:1]:
        value = float(table.at[index, "value"])
        fail(index, f"column 'status' is 'ok' but column 'value' is {value}. Fix: an ok result needs a finite "
                    "value; mark it 'failed' or 'skipped' otherwise.")
    for index in table.index[table.duplicated(_RESULT_KEY)][:1]:
        fail(index, f"a second row for the same job, evaluator and metric ({', '.join(_RESULT_KEY)}). Fix: keep one.")
    for index in table.index[~table["job_hash"].isin(known_jobs)][:1]:
        fail(index, f"column 'job_hash' {table.at[index, 'job_hash']!r} is not listed in any run of field "
                    "'provenance.runs' of submission.json. Fix: submit results only from runs in the manifest.")
    for keys, columns, what in ((["job_hash"], JOB_COLUMNS, "job"),
                                (["evaluator", "evaluator_version", "metric"], ["higher_is_better", "headline"],
                                 "evaluator metric")):
        spread = table.groupby(keys)[columns].nunique()
        conflict = spread[(spread > 1).any(axis=1)]
        if len(conflict):
            bad = [c for c in columns if conflict.iloc[0][c] > 1]
            raise SubmissionError(f"{file}: the {what} {conflict.index[0]!r} has different values of column "
                                  f"'{bad[0]}' on different rows. Fix: one {what} has one description; {_REMAKE}.")
    headlines = table[table["headline"]].groupby(["evaluator", "evaluator_version"])["metric"].nunique()
    if (headlines > 1).any():
        raise SubmissionError(f"{file}: evaluator {headlines[headlines > 1].index[0]!r} has more than one metric with "
                              f"column 'headline' True. Fix: an evaluator has exactly one headline metric.")


def _check_plain_text(raw: pd.DataFrame, file: str) -> None:
    """No cell contains a Cc/Cf character (the error names the column and line)."""
    for column in raw.columns:
        found = {text: control_character(text) for text in set(raw[column])}
        bad = {text for text, hit in found.items() if hit}
        if bad:
            i = int(raw[column].isin(bad).to_numpy().nonzero()[0][0])
            position, char = found[raw[column].iloc[i]]
            raise SubmissionError(f"{file}: column '{column}', line {i + 2}: contains the invisible character {char} "
                                  f"at position {position}. Fix: remove it (the site shows plain visible text only); "
                                  f"{_REMAKE}.")


# ----------------------------------------------------------------------------------------------------------------------
# plausibility


def installed_metric(evaluator: str, version: str, metric: str) -> Any:
    """The installed evaluator's :class:`gibench.api.Metric` of that name when its version is ``version``, else None."""
    from gibench.api import registry
    from gibench.core.errors import GibenchError

    try:
        cls = registry.evaluators.get(evaluator)
    except GibenchError:
        return None
    if str(cls.version) != version:
        return None
    return next((m for m in cls.metrics if m.name == metric), None)


def check_metric_records(metrics: list[MetricInfo], table: pd.DataFrame, file: Path | str) -> None:
    """``submission.json``'s ``metrics`` cover every metric of the rows, agree with them on direction and headline,
    and record the installed evaluator's bounds and companion (``read_beside``) where that version is installed. An
    empty list (a submission made before metrics were recorded) is accepted."""
    if not metrics:
        return
    recorded = {(m.evaluator, m.version, m.metric): (i, m) for i, m in enumerate(metrics)}
    first = table.drop_duplicates(["evaluator", "evaluator_version", "metric"])
    for row in first.itertuples():
        key = (str(row.evaluator), str(row.evaluator_version), str(row.metric))
        if key not in recorded:
            raise SubmissionError(f"{file}: field 'metrics' has no entry for evaluator {key[0]!r} version {key[1]!r} "
                                  f"metric {key[2]!r} of results.csv. Fix: {_REMAKE}.")
        i, info = recorded[key]
        for name in ("higher_is_better", "headline"):
            if bool(getattr(row, name)) != getattr(info, name):
                raise SubmissionError(f"{file}: field 'metrics.{i}.{name}' is {getattr(info, name)} but column "
                                      f"'{name}' of results.csv says {bool(getattr(row, name))} for {key[0]}: "
                                      f"{key[2]}. Fix: {_REMAKE}.")
        declared = installed_metric(*key)
        if declared is None:
            continue
        if tuple(bounds_to_json(declared.bounds)) != tuple(info.bounds):
            raise SubmissionError(
                f"{file}: field 'metrics.{i}.bounds' is {_range(info.bounds)} for {key[0]} (version {key[1]}) metric "
                f"{key[2]!r}, but the installed evaluator of that version declares {_range(declared.bounds)}. Fix: "
                f"{_REMAKE} (the bounds are copied from the installed evaluator).")
        if declared.read_beside != info.read_beside:  # else the site would show e.g. sensitivity without infidelity
            raise SubmissionError(
                f"{file}: field 'metrics.{i}.read_beside' is {info.read_beside!r} for {key[0]} (version {key[1]}) "
                f"metric {key[2]!r}, but the installed evaluator of that version declares "
                f"{declared.read_beside!r}. Fix: {_REMAKE} (it is copied from the installed evaluator).")


def check_plausible(table: pd.DataFrame, metrics: list[MetricInfo], file: Path | str) -> None:
    """Every ``ok`` value lies within its metric's bounds (see the module docstring)."""
    recorded = {(m.evaluator, m.version, m.metric): bounds_from_json(m.bounds) for m in metrics}
    table = table.reset_index(drop=True)
    ok = table[table["status"] == "ok"]
    for key, rows in ok.groupby(["evaluator", "evaluator_version", "metric"], sort=True):
        key = tuple(str(k) for k in key)
        declared = installed_metric(*key)
        low, high = declared.bounds if declared is not None else recorded.get(key, (-math.inf, math.inf))
        slack_low, slack_high = (BOUNDS_SLACK * max(1.0, abs(b)) if math.isfinite(b) else 0.0 for b in (low, high))
        outside = (rows["value"] < low - slack_low) | (rows["value"] > high + slack_high)
        if outside.any():
            index = int(rows.index[outside.to_numpy()][0])
            raise SubmissionError(
                f"{file}: column 'value', line {index + 2}: {float(table.at[index, 'value'])!r} for {key[0]} (version "
                f"{key[1]}) metric {key[2]!r} lies outside its declared range {_range((low, high))}. Fix: such a "
                "value cannot come from that evaluator; re-create the submission with `gibench submit` from the runs "
                "that produced it, instead of editing it by hand.")


def _range(bounds: tuple) -> str:
    low, high = bounds_from_json(tuple(None if b is None else b for b in bounds))
    return f"[{low:g}, {high:g}]"
