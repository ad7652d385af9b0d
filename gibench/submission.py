"""Submissions: a results table packaged with its metadata and provenance, checked against one schema.

A submission is a folder ``submissions/<id>/`` holding two files:

``submission.json``
    :class:`Submission`: ``schema_version``, ``id``, ``created``, the :class:`SubmissionMetadata` (name, authors,
    description, links), the :class:`Provenance` (every suite with its hash, and every ``gibench run`` that produced
    the rows: its environment from :func:`gibench.provenance.environment_info`, its plugins' distributions and
    versions, and its job hashes), the results file's row count and SHA-256, and metric descriptions.
``results.csv``
    The long results table of :func:`gibench.results.collect_results`, one row per job × evaluator × metric, with the
    columns of :data:`RESULT_COLUMNS` (extra columns are kept). Rows are sorted, and floats are written with full
    precision, so the same runs give the same bytes.

Choices:

* ``id`` is ``<slug of the name>-<12 hex digits>``: the SHA-256 of the canonical JSON of metadata, provenance and the
  results file's digest (not of ``created``). Submitting the same runs twice is a no-op returning the existing
  folder; a different folder under the same id is refused.
* Folders are written to a hidden temporary folder and renamed into place, so a half-written submission never
  appears. Folders whose name starts with ``.`` or ``_`` are not submissions.
* Validation is strict and reports the file, the field (or column and line) and how to fix it. ``results.csv`` is
  checked for columns, types, ``status`` values, finite values on ``ok`` rows, duplicate results, consistent job and
  metric descriptions, job hashes covered by the provenance, row count, and lastly the SHA-256 recorded at submit.
* Links must be ``http(s)://`` URLs (they become ``href`` attributes on the site).
"""

from __future__ import annotations

__all__ = [
    "Environment", "ID_PATTERN", "LoadedSubmission", "MANIFEST_FILE", "PluginRecord", "Provenance", "RESULTS_FILE",
    "RESULT_COLUMNS", "ResultsFile", "RunRecord", "SCHEMA_VERSION", "STATUSES", "SUBMISSION_FILE", "Submission",
    "SubmissionMetadata", "SubmissionScan", "SuiteRecord", "build_submission", "load_submission",
    "load_submissions", "package_results", "scan_submissions", "slugify", "submission_json_schema",
    "validate_submission", "write_json_schema",
]

import hashlib
import io
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import gibench
from gibench.errors import GibenchError, SubmissionError
from gibench.fsio import atomic_folder, canonical_hash
from gibench.provenance import suite_hash
from gibench.results import REQUIRED_COLUMNS
from gibench.store import RunStore

SCHEMA_VERSION = 1
SUBMISSION_FILE = "submission.json"
RESULTS_FILE = "results.csv"
MANIFEST_FILE = "manifest.json"
ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{12}$"
STATUSES = ("ok", "skipped", "failed")
#: Column of results.csv -> kind: the results table's schema, defined once in :mod:`gibench.results`.
RESULT_COLUMNS: dict[str, str] = REQUIRED_COLUMNS
_JOB_COLUMNS = ["dataset", "backbone", "backbone_params", "regularizer", "regularizer_params", "variant", "seed"]
_RESULT_KEY = ["job_hash", "evaluator", "evaluator_version", "evaluator_params", "metric"]
_KIND_TEXT = {"str": "a non-empty string", "json": "a JSON object such as {} or {\"weight\": 0.01}",
              "int": "an integer", "float": "a number (or empty for no value)", "bool": "True or False",
              "status": "one of " + ", ".join(STATUSES)}
_REMAKE = "re-create the submission with `gibench submit` instead of editing it by hand"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmissionMetadata(_Strict):
    """What the submitters say about their submission (all of it is shown, escaped, on the site)."""

    name: str = Field(min_length=1, max_length=200, description="Display name of the submission")
    authors: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    description: str = ""
    links: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+\S*$")]] = Field(
        default_factory=list, description="http(s) URLs: paper, code, checkpoints")

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name must contain a visible character")
        return value.strip()


class PluginRecord(_Strict):
    distribution: str
    version: str


class Environment(BaseModel):
    """:func:`gibench.provenance.environment_info`; unknown keys are kept (newer gibench versions may add some)."""

    model_config = ConfigDict(extra="allow")
    gibench_version: str
    git_commit: str | None = None
    git_dirty: bool | None = None
    python: str
    platform: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    timm: str | None = None
    numpy: str | None = None
    pandas: str | None = None
    cuda: str | None = None
    cuda_available: bool | None = None
    device: str
    device_name: str | None = None


class SuiteRecord(_Strict):
    name: str
    suite: dict[str, Any]
    hash: str = Field(pattern=r"^[0-9a-f]{16}$")

    @field_validator("hash")
    @classmethod
    def _hash_matches(cls, value: str, info: Any) -> str:
        if "suite" in info.data and suite_hash(info.data["suite"]) != value:
            raise ValueError(f"does not match the suite (its hash is {suite_hash(info.data['suite'])})")
        return value


class RunRecord(_Strict):
    """One ``gibench run`` invocation (an entry of ``runs_dir/manifest.json``)."""

    suite_name: str
    suite_hash: str
    started: datetime
    finished: datetime | None = None
    environment: Environment
    plugins: dict[str, dict[str, PluginRecord]] = Field(default_factory=dict)
    jobs: list[str]


class Provenance(_Strict):
    suites: list[SuiteRecord] = Field(min_length=1)
    runs: list[RunRecord] = Field(min_length=1)

    @model_validator(mode="after")
    def _runs_name_known_suites(self) -> Provenance:
        known = {s.hash for s in self.suites}
        for i, run in enumerate(self.runs):
            if run.suite_hash not in known:
                raise ValueError(f"runs[{i}].suite_hash {run.suite_hash!r} is not the hash of any entry of 'suites'")
        return self

    def job_hashes(self) -> set[str]:
        return {job for run in self.runs for job in run.jobs}


class ResultsFile(_Strict):
    file: Literal["results.csv"] = RESULTS_FILE
    rows: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Submission(_Strict):
    """The schema of ``submission.json`` (JSON Schema: :func:`submission_json_schema`)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(pattern=ID_PATTERN)
    created: datetime
    gibench_version: str
    metadata: SubmissionMetadata
    provenance: Provenance
    results: ResultsFile
    metric_descriptions: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="evaluator -> metric -> one-line description (from the installed plugins)")


@dataclass(frozen=True)
class LoadedSubmission:
    """A validated submission folder and its typed results table."""

    path: Path | None  # None for a submission packaged in memory (package_results), not written anywhere
    submission: Submission
    results: pd.DataFrame = field(repr=False)
    data: bytes = field(default=b"", repr=False)  # the results.csv bytes


@dataclass(frozen=True)
class SubmissionScan:
    """Every folder under a submissions root: the valid ones, and (folder, error message) for the others."""

    valid: list[LoadedSubmission]
    invalid: list[tuple[Path, str]]


# ----------------------------------------------------------------------------------------------------------------------
# Building


def build_submission(runs_dir: str | Path, out_dir: str | Path, metadata: SubmissionMetadata | Mapping[str, Any],
                     suite_name: str | None = None, *, results: pd.DataFrame | None = None,
                     warn: Callable[[str], None] | None = None) -> Path:
    """Package the results in ``runs_dir`` as ``out_dir/<id>/`` and return that folder.

    Args:
        runs_dir: a run store written by ``gibench run`` (it must hold ``manifest.json`` and results).
        out_dir: the submissions root, e.g. ``submissions/``.
        metadata: name, authors, description, links (a :class:`SubmissionMetadata` or a mapping).
        suite_name: keep only the runs of this suite, and the results of their jobs; None keeps every run.
        results: the long results table; defaults to ``gibench.results.collect_results(runs_dir)``.
        warn: called with a message for each damaged file that is skipped (default: ``warnings.warn``).

    Raises:
        SubmissionError: no manifest or no results (run ``gibench run`` first), an unknown suite name, bad metadata,
            malformed results, or a different submission already stored under the same id.

    Example:
        >>> build_submission("runs", "submissions", {"name": "My method", "authors": ["A. Person"]}, "smoke")
        PosixPath('submissions/my-method-3f2a9c0b1d4e')
    """
    loaded = package_results(runs_dir, metadata, suite_name, results=results, warn=warn)
    return _write(Path(out_dir), loaded.submission, loaded.data)


def package_results(runs_dir: str | Path, metadata: SubmissionMetadata | Mapping[str, Any],
                    suite_name: str | None = None, *, results: pd.DataFrame | None = None,
                    job_hashes: set[str] | None = None, warn: Callable[[str], None] | None = None) -> LoadedSubmission:
    """The submission of ``runs_dir``'s results, in memory (``path`` None): what :func:`build_submission` writes.

    ``job_hashes`` restricts it to those jobs (and to the runs that list one of them). Same errors as
    :func:`build_submission`; nothing is written.
    """
    runs_dir = Path(runs_dir)
    meta = _parse(SubmissionMetadata, metadata, "metadata")
    suites, runs = _read_runs(runs_dir, suite_name, warn)
    if job_hashes is not None:
        runs = [run for run in runs if job_hashes & set(run.jobs)]
        suites = [s for s in suites if any(run.suite_hash == s.hash for run in runs)]
    if results is None:
        from gibench.results import collect_results
        results = collect_results(runs_dir, job_hashes, warn=warn)
    data = _results_csv(_select_rows(results, runs, suite_name, runs_dir))
    table = _parse_results(data, f"{runs_dir} (results)", {job for run in runs for job in run.jobs})
    provenance = Provenance(suites=suites, runs=runs)
    digest = hashlib.sha256(data).hexdigest()
    submission = Submission(
        id=f"{slugify(meta.name)}-{_content_hash(meta, provenance, digest)}",
        created=datetime.now(timezone.utc).replace(microsecond=0), gibench_version=gibench.__version__,
        metadata=meta, provenance=provenance, results=ResultsFile(rows=len(table), sha256=digest),
        metric_descriptions=_metric_descriptions(table))
    return LoadedSubmission(None, submission, table, data)


def slugify(text: str, max_length: int = 40) -> str:
    """Lower-case ASCII words joined by ``-``: ``"<b>My Method</b>"`` → ``"b-my-method-b"`` (or ``"submission"``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_length].strip("-")
    return slug or "submission"


def _read_runs(runs_dir: Path, suite_name: str | None,
               warn: Callable[[str], None] | None = None) -> tuple[list[SuiteRecord], list[RunRecord]]:
    path = runs_dir / MANIFEST_FILE
    store = RunStore(runs_dir, repair=False, warn=warn)
    manifest = {"runs": [run.to_json() for run in store.manifest().runs]}  # a damaged one is rebuilt from runs/*.json
    if not path.is_file() and not manifest["runs"]:
        raise SubmissionError(f"{path} does not exist: {runs_dir} holds no gibench runs. Run `gibench run` with this "
                              "runs folder first, then submit.")
    entries = manifest.get("runs") if isinstance(manifest, dict) else None
    if not entries or not isinstance(entries, list):
        raise SubmissionError(f"{path} lists no runs. Run `gibench run` with this runs folder first, then submit.")
    if suite_name is not None:
        entries = [e for e in entries if isinstance(e, Mapping) and e.get("suite_name") == suite_name]
        if not entries:
            names = sorted({str(e.get("suite_name")) for e in manifest["runs"] if isinstance(e, Mapping)})
            raise SubmissionError(f"{path}: no run of suite {suite_name!r}. Suites run here: {', '.join(names)}.")
    suites: dict[str, SuiteRecord] = {}
    runs = []
    for i, entry in enumerate(entries):
        where = f"{path}: runs[{i}]"
        if not isinstance(entry, Mapping):
            raise SubmissionError(f"{where} is not an object; the run store is damaged. Re-run `gibench run`.")
        record = _parse(SuiteRecord, {"name": entry.get("suite_name"), "suite": entry.get("suite"),
                                      "hash": entry.get("suite_hash")}, where)
        suites.setdefault(record.hash, record)
        # only the recorded fields: other manifest keys (e.g. the suite file's local path) stay private
        runs.append(_parse(RunRecord, {k: v for k, v in entry.items() if k in RunRecord.model_fields}, where))
    return list(suites.values()), runs


def _select_rows(table: pd.DataFrame, runs: list[RunRecord], suite_name: str | None, runs_dir: Path) -> pd.DataFrame:
    if table is None or len(table) == 0:
        raise SubmissionError(f"{runs_dir} holds no results. Run `gibench run` with this runs folder first.")
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise SubmissionError(f"The results table of {runs_dir} lacks the columns {', '.join(missing)}; it was "
                              "written by an incompatible gibench version. Re-run `gibench run` with this version.")
    jobs = {job for run in runs for job in run.jobs}
    listed = table["job_hash"].isin(jobs)
    if suite_name is None and not listed.all():
        orphans = sorted(set(table.loc[~listed, "job_hash"]))
        raise SubmissionError(f"{runs_dir}: results of {len(orphans)} job(s) (e.g. {orphans[0]}) belong to no run in "
                              f"{MANIFEST_FILE}, so their provenance is unknown. Re-run their suite with `gibench run`"
                              " (finished jobs are reused) or pass a suite name.")
    selected = table.loc[listed]
    if len(selected) == 0:
        raise SubmissionError(f"{runs_dir}: suite {suite_name!r} has no results yet. Run `gibench run` first.")
    return selected


def _results_csv(table: pd.DataFrame) -> bytes:
    columns = list(RESULT_COLUMNS) + sorted(c for c in table.columns if c not in RESULT_COLUMNS)
    order = _JOB_COLUMNS + ["evaluator", "evaluator_version", "evaluator_params", "metric", "job_hash"]
    table = table[columns].sort_values(order, kind="mergesort")
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _content_hash(meta: SubmissionMetadata, provenance: Provenance, results_sha256: str) -> str:
    payload = {"metadata": meta.model_dump(mode="json"), "provenance": provenance.model_dump(mode="json"),
               "results_sha256": results_sha256}
    return canonical_hash(payload, length=12)


def _metric_descriptions(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Descriptions of the table's metrics from the installed evaluator plugins (unloadable ones are left out)."""
    from gibench import registry

    found: dict[str, dict[str, str]] = {}
    for evaluator, metrics in table.groupby("evaluator")["metric"]:
        try:
            declared = {m.name: m.description for m in registry.evaluators.get(str(evaluator)).metrics}
        except GibenchError:
            continue
        known = {str(m): declared[m] for m in sorted(set(metrics)) if m in declared}
        if known:
            found[str(evaluator)] = known
    return found


def _write(out_dir: Path, submission: Submission, data: bytes) -> Path:
    final = out_dir / submission.id
    if final.exists():
        try:
            existing = load_submission(final).submission
        except SubmissionError as exc:
            raise SubmissionError(f"{final} already exists and is not a valid submission ({exc}). Remove it and "
                                  "submit again.") from None
        if _same(existing, submission):
            return final
        raise SubmissionError(f"{final} already exists and holds a different submission. Remove it, or submit under "
                              "another name.")
    try:
        with atomic_folder(final) as tmp:
            (tmp / RESULTS_FILE).write_bytes(data)
            (tmp / SUBMISSION_FILE).write_text(submission.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except FileExistsError:  # another process wrote the same id meanwhile
        return _write(out_dir, submission, data)
    return final


def _same(a: Submission, b: Submission) -> bool:
    return a.id == b.id and _content_hash(a.metadata, a.provenance, a.results.sha256) == _content_hash(
        b.metadata, b.provenance, b.results.sha256)


# ----------------------------------------------------------------------------------------------------------------------
# Loading and validation


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
    submission = _parse(Submission, _read_json(file), str(file))
    if submission.id != folder.name:
        raise SubmissionError(f"{file}: field 'id' is {submission.id!r} but the folder is named {folder.name!r}. "
                              f"Fix: rename the folder to {submission.id!r}.")
    results_path = folder / submission.results.file
    if not results_path.is_file():
        raise SubmissionError(f"{results_path} is missing (named by field 'results.file' in {file}); {_REMAKE}.")
    data = results_path.read_bytes()
    table = _parse_results(data, str(results_path), submission.provenance.job_hashes())
    if len(table) != submission.results.rows:
        raise SubmissionError(f"{results_path} has {len(table)} rows but field 'results.rows' in {file} says "
                              f"{submission.results.rows}; {_REMAKE}.")
    if hashlib.sha256(data).hexdigest() != submission.results.sha256:
        raise SubmissionError(f"{results_path} does not match field 'results.sha256' in {file}: the file changed "
                              f"after `gibench submit`; {_REMAKE}.")
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


def submission_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``submission.json``, generated from :class:`Submission`."""
    schema = Submission.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "gibench submission"}


def write_json_schema(path: str | Path) -> Path:
    """Write :func:`submission_json_schema` to ``path`` (e.g. ``submission.schema.json``) and return the path."""
    path = Path(path)
    path.write_text(json.dumps(submission_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"{file} is not valid UTF-8 JSON ({exc}); {_REMAKE}.") from None


def _parse(model: type[BaseModel], value: Any, where: str) -> Any:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SubmissionError(_describe_errors(where, exc)) from None


def _describe_errors(where: str, exc: ValidationError) -> str:
    errors = exc.errors()
    lines = []
    for err in errors[:8]:
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        lines.append(f"{where}: field '{loc}': {err['msg']}{got}. Fix: {_fix(err)}")
    if len(errors) > 8:
        lines.append(f"{where}: ... and {len(errors) - 8} more problem(s)")
    return "\n".join(lines)


def _fix(err: Any) -> str:
    name = str(err["loc"][-1]) if err["loc"] else "the value"
    if err["type"] == "missing":
        return f"add '{name}' (the format is described by gibench.submission.submission_json_schema())."
    if err["type"] == "extra_forbidden":
        return f"remove '{name}'; the schema has no such field (check its spelling)."
    return f"set '{name}' to a valid value (see submission_json_schema()), or re-create it with `gibench submit`."


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------------------------------------------------
# results.csv


def _parse_results(data: bytes, file: str, known_jobs: set[str]) -> pd.DataFrame:
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
    for keys, columns, what in ((["job_hash"], _JOB_COLUMNS, "job"),
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
