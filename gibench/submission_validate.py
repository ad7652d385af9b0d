"""Loading and validating a submission folder: ``submission.json`` against the schema, ``results.csv`` cell by cell,
and the packed artifacts against their recorded SHA-256.

Validation is strict and reports the file, the field (or column and line) and how to fix it. ``results.csv`` is
checked for columns, types, ``status`` values, finite values on ``ok`` rows, duplicate results, consistent job and
metric descriptions, job hashes covered by the provenance, row count, and lastly the SHA-256 recorded at submit.
"""

from __future__ import annotations

__all__ = ["load_submission", "load_submissions", "parse_results", "scan_submissions", "validate_submission"]

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.errors import SubmissionError
from gibench.results import REQUIRED_COLUMNS
from gibench.submission_artifacts import check_artifacts
from gibench.submission_schema import (
    STATUSES, SUBMISSION_FILE, LoadedSubmission, Submission, SubmissionScan, parse_model,
)

RESULT_COLUMNS: dict[str, str] = REQUIRED_COLUMNS
JOB_COLUMNS = ["dataset", "backbone", "backbone_params", "regularizer", "regularizer_params", "variant", "seed"]
_RESULT_KEY = ["job_hash", "evaluator", "evaluator_version", "evaluator_params", "metric"]
_KIND_TEXT = {"str": "a non-empty string", "json": "a JSON object such as {} or {\"weight\": 0.01}",
              "int": "an integer", "float": "a number (or empty for no value)", "bool": "True or False",
              "status": "one of " + ", ".join(STATUSES)}
_REMAKE = "re-create the submission with `gibench submit` instead of editing it by hand"


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
    check_artifacts(folder, submission.artifacts, file)
    return LoadedSubmission(folder, submission, table, data)


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
