"""Submissions: a results table packaged with its metadata, provenance and artifacts, checked against one schema.

A submission is a folder ``submissions/<id>/`` holding:

``submission.json``
    :class:`Submission`: ``schema_version``, ``id``, ``created``, the :class:`SubmissionMetadata` (name, authors,
    description, links), the :class:`Provenance` (every suite with its hash, and every ``gibench run`` that produced
    the rows: its environment from :func:`gibench.store.provenance.environment_info`, its plugins' distributions and
    versions, and its job hashes), the results file's row count and SHA-256, the metrics' declarations
    (``metrics``: direction, headline, bounds, diagnostic; ``metric_descriptions``) and the packed artifacts.
``results.csv``
    The long results table of :func:`gibench.results.collect_results`, one row per job × evaluator × metric, with the
    columns of :data:`RESULT_COLUMNS` (extra columns are kept). Rows are sorted, and floats are written with full
    precision, so the same runs give the same bytes.
``artifacts/<job_hash>/<result key>/<file>``
    The images and curves the site shows, at most 20 MB in all by default (``--max-artifact-mb``); over the limit
    they are packed in a stated priority order and the rest is recorded as left out
    (:mod:`gibench.submissions.artifacts`).
``models.json`` (optional, ``gibench submit --models DIR --models-url PREFIX``)
    The trained models, referenced by URL with each file's SHA-256 and size, never held
    (:mod:`gibench.submissions.submitted_models`); ``submission.json`` records its SHA-256 (``models``).
``verification.json`` (optional, written later by ``gibench verify``; not part of the hashed content)

The module is split by responsibility: the schema (:mod:`gibench.submissions.schema`), validation
(:mod:`gibench.submissions.validate`), artifacts (:mod:`gibench.submissions.artifacts`) and, here, packaging; every
public name is importable from here.

Choices:

* ``id`` is ``<slug of the name>-<12 hex digits>``: the SHA-256 of the canonical JSON of metadata, provenance, the
  results file's digest, the artifacts record and ``models.json``'s digest when there is one (not of ``created``).
  The models are covered like the results: they are what the numbers were computed from, so a model swapped after
  the fact must not keep the submission's id. Submitting the same runs twice is a no-op
  returning the existing folder; a different folder under the same id is refused.
* Folders are written to a hidden temporary folder and renamed into place, so a half-written submission never
  appears. Folders whose name starts with ``.`` or ``_`` are not submissions.
* Local paths are removed from the failure reasons (column ``reason``): the runs folder becomes ``<runs>`` and the
  home folder ``~``. A submission is published, and those paths name the submitter's account and disk layout (the
  recorded environment leaves out the host name for the same reason) while meaning nothing to anyone else. Line
  breaks and other control characters in a reason (an exception message may hold colour codes) become spaces,
  since ``validate`` rejects them in every cell.
* Plausibility is checked at submit as at validate (:mod:`gibench.submissions.validate`): a value outside its
  metric's declared bounds is refused before anything is written.
* Metric declarations come from the installed evaluator when its version is the one that produced the rows;
  otherwise the metric is recorded without bounds (unbounded) and without a description.
"""

from __future__ import annotations

__all__ = [
    "ArtifactFile", "ArtifactsRecord", "DEFAULT_MAX_ARTIFACT_MB", "Environment", "ID_PATTERN", "LeftOutArtifact",
    "LoadedSubmission", "MANIFEST_FILE", "MODELS_FILE", "MetricInfo", "ModelsFile", "PluginRecord", "Provenance",
    "RESULTS_FILE", "RESULT_COLUMNS", "ResultsFile", "RunRecord", "SCHEMA_VERSION", "STATUSES", "SUBMISSION_FILE",
    "Submission", "SubmissionMetadata", "SubmissionScan", "SuiteRecord", "build_submission", "load_submission",
    "load_submissions", "package_results", "scan_submissions", "slugify", "submission_id", "submission_json_schema",
    "validate_submission", "write_json_schema",
]

import hashlib
import json
import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.core.errors import GibenchError, SubmissionError
from gibench.core.fsio import atomic_folder, canonical_hash
from gibench.store.runs import RunStore
from gibench.submissions.artifacts import (
    DEFAULT_MAX_ARTIFACT_MB,
    ArtifactPlan,
    limit_bytes,
    pack_artifacts,
    plan_artifacts,
)
from gibench.submissions.schema import (
    ID_PATTERN,
    MANIFEST_FILE,
    MODELS_FILE,
    RESULTS_FILE,
    SCHEMA_VERSION,
    STATUSES,
    SUBMISSION_FILE,
    ArtifactFile,
    ArtifactsRecord,
    Environment,
    LeftOutArtifact,
    LoadedSubmission,
    MetricInfo,
    ModelsFile,
    PluginRecord,
    Provenance,
    ResultsFile,
    RunRecord,
    Submission,
    SubmissionMetadata,
    SubmissionScan,
    SuiteRecord,
    bounds_to_json,
    parse_model,
    submission_json_schema,
    suite_selects,
    write_json_schema,
)
from gibench.submissions.validate import (
    JOB_COLUMNS,
    RESULT_COLUMNS,
    check_plausible,
    installed_metric,
    load_submission,
    load_submissions,
    parse_results,
    scan_submissions,
    validate_submission,
)
from gibench.version import __version__


def build_submission(runs_dir: str | Path, out_dir: str | Path, metadata: SubmissionMetadata | Mapping[str, Any],
                     suite_name: str | None = None, *, results: pd.DataFrame | None = None,
                     warn: Callable[[str], None] | None = None,
                     max_artifact_mb: float = DEFAULT_MAX_ARTIFACT_MB, models_dir: str | Path | None = None,
                     models_url: str | None = None) -> Path:
    """Package the results in ``runs_dir`` as ``out_dir/<id>/`` and return that folder.

    Args:
        runs_dir: a run store written by ``gibench run`` (it must hold ``manifest.json`` and results).
        out_dir: the submissions root, e.g. ``submissions/``.
        metadata: name, authors, description, links (a :class:`SubmissionMetadata` or a mapping).
        suite_name: keep only the runs of this suite, and the results of their jobs; None keeps every run.
        results: the long results table; defaults to ``gibench.results.collect_results(runs_dir)``, and then a suite
            with work left in ``runs_dir`` (jobs to train, evaluations to run) is submitted with a warning.
        warn: called with a message for each damaged file that is skipped (default: ``warnings.warn``).
        max_artifact_mb: the size limit of the packed artifacts in MB (10^6 bytes; default 20).
        models_dir, models_url: reference the trained models in ``models.json``: a folder made by ``gibench export``
            from ``runs_dir`` and the URL prefix its content is published under (``https://...``, or ``file:``; a
            relative ``file:`` URL starts from the submission folder). Both or neither.

    Raises:
        SubmissionError: no manifest or no results (run ``gibench run`` first), an unknown suite name, bad metadata,
            malformed results, or a different submission already stored under the same id.

    Example:
        >>> build_submission("runs", "submissions", {"name": "My method", "authors": ["A. Person"]}, "smoke")
        PosixPath('submissions/my-method-3f2a9c0b1d4e')
    """
    loaded = package_results(runs_dir, metadata, suite_name, results=results, warn=warn,
                             max_artifact_mb=max_artifact_mb, models_dir=models_dir, models_url=models_url)
    if results is None:  # results read from the store: say when the store is not finished
        _warn_of_unfinished_suites(Path(runs_dir), loaded.submission.provenance.suites, warn)
    if loaded.models_data and models_dir is not None:  # a relative file: URL starts from the submission folder
        from gibench.submissions.submitted_models import check_file_urls

        check_file_urls(loaded.models_data, Path(out_dir) / loaded.submission.id, models_dir)
    return _write(Path(out_dir), loaded)


def package_results(runs_dir: str | Path, metadata: SubmissionMetadata | Mapping[str, Any],
                    suite_name: str | None = None, *, results: pd.DataFrame | None = None,
                    job_hashes: set[str] | None = None, warn: Callable[[str], None] | None = None,
                    max_artifact_mb: float = DEFAULT_MAX_ARTIFACT_MB, models_dir: str | Path | None = None,
                    models_url: str | None = None) -> LoadedSubmission:
    """The submission of ``runs_dir``'s results, in memory (``path`` None): what :func:`build_submission` writes.

    ``job_hashes`` restricts it to those jobs (and to the runs that list one of them). Its artifacts stay in the runs
    store (``LoadedSubmission.sources``). Same errors as :func:`build_submission`; nothing is written.
    """
    runs_dir = Path(runs_dir)
    if (models_dir is None) != (models_url is None):
        raise SubmissionError("--models and --models-url go together: the folder `gibench export` wrote, and the URL "
                              "prefix its content is published under (https://host/path, or file:). Fix: pass both, "
                              "or neither to submit without models.")
    meta = parse_model(SubmissionMetadata, metadata, "metadata")
    limit = limit_bytes(max_artifact_mb)
    suites, runs = _read_runs(runs_dir, suite_name, warn)
    if job_hashes is not None:
        runs = [run for run in runs if job_hashes & set(run.jobs)]
        suites = [s for s in suites if any(run.suite_hash == s.hash for run in runs)]
    _warn_of_suite_versions(runs_dir, suites, warn)
    if results is None:
        from gibench.results.tables import collect_results
        results = collect_results(runs_dir, job_hashes, warn=warn)
    selected = _public_reasons(_select_rows(results, runs, suite_name, runs_dir), runs_dir)
    data = _results_csv(selected)
    table = parse_results(data, f"{runs_dir} (results)", {job for run in runs for job in run.jobs})
    metrics = metric_infos(table)
    check_plausible(table, metrics, f"{runs_dir} (results)")
    plan = plan_artifacts(runs_dir, table, limit, warn)
    provenance = Provenance(suites=suites, runs=runs)
    digest = hashlib.sha256(data).hexdigest()
    models_data, models = b"", None
    if models_dir is not None and models_url is not None:
        from gibench.submissions.submitted_models import reference_models

        models_data = reference_models(models_dir, models_url, set(table["job_hash"]), runs_dir, warn)
        models = ModelsFile(models=len(json.loads(models_data)["models"]),
                            sha256=hashlib.sha256(models_data).hexdigest())
    submission = Submission(
        id=submission_id(meta, provenance, digest, plan.record, models.sha256 if models else None),
        created=datetime.now(timezone.utc).replace(microsecond=0), gibench_version=__version__,
        metadata=meta, provenance=provenance, results=ResultsFile(rows=len(table), sha256=digest),
        metric_descriptions=_metric_descriptions(table), metrics=metrics, artifacts=plan.record, models=models)
    return LoadedSubmission(None, submission, table, data, dict(plan.sources), models_data=models_data)


def slugify(text: str, max_length: int = 40) -> str:
    """Lower-case ASCII words joined by ``-``: ``"<b>My Method</b>"`` → ``"b-my-method-b"`` (or ``"submission"``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_length].strip("-")
    return slug or "submission"


def metric_infos(table: pd.DataFrame) -> list[MetricInfo]:
    """The declaration of every (evaluator, version, metric) of ``table``: from the installed evaluator when its
    version is the rows' version, else the rows' direction and headline with no bounds and no description."""
    found = []
    for (evaluator, version, metric), rows in table.groupby(["evaluator", "evaluator_version", "metric"], sort=True):
        declared = installed_metric(str(evaluator), str(version), str(metric))
        info = {"evaluator": str(evaluator), "version": str(version), "metric": str(metric),
                "higher_is_better": bool(rows["higher_is_better"].iloc[0]), "headline": bool(rows["headline"].iloc[0])}
        if declared is not None:
            info |= {"description": declared.description, "bounds": bounds_to_json(declared.bounds),
                     "diagnostic": declared.diagnostic, "read_beside": declared.read_beside, "caveat": declared.caveat}
        found.append(MetricInfo(**info))
    return found


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
    selections = _selection_records(runs_dir, warn)
    for i, entry in enumerate(entries):
        where = f"{path}: runs[{i}]"
        if not isinstance(entry, Mapping):
            raise SubmissionError(f"{where} is not an object; the run store is damaged. Re-run `gibench run`.")
        fields = {"name": entry.get("suite_name"), "suite": entry.get("suite"), "hash": entry.get("suite_hash")}
        selection = selections.get((entry.get("suite_name"), entry.get("suite_hash")))
        if selection is None and suite_selects(entry.get("suite")):
            raise SubmissionError(
                f"{runs_dir} holds no readable selection record of suite {entry.get('suite_name')!r}, which selects a "
                "strength per regularizer (`select:`), so the submission cannot say which settings were chosen. "
                f"Run `gibench run` of that suite with --runs-dir {runs_dir} again: it makes the selection from the "
                "stored sweep and writes the record (nothing trained is trained again), then submit.")
        record = parse_model(SuiteRecord, {**fields, **({"selection": selection} if selection else {})}, where)
        suites.setdefault(record.hash, record)
        # only the recorded fields: other manifest keys (e.g. the suite file's local path) stay private
        runs.append(parse_model(RunRecord, {k: v for k, v in entry.items() if k in RunRecord.model_fields}, where))
    return list(suites.values()), runs


def _warn_of_suite_versions(runs_dir: Path, suites: list[SuiteRecord], warn: Callable[[str], None] | None) -> None:
    """Say when the runs hold several versions (hashes) of one suite: a suite edited between runs leaves the jobs of
    its older versions in the store, and the submission would hold them all."""
    hashes: dict[str, list[str]] = {}
    for suite in suites:
        hashes.setdefault(suite.name, []).append(suite.hash[:12])
    for name, versions in hashes.items():
        if len(versions) > 1:
            (warn or warnings.warn)(
                f"{runs_dir} holds runs of {len(versions)} versions of suite {name!r} (hashes {', '.join(versions)}): "
                "the suite file changed between runs, and the submission holds the jobs of every version. To submit "
                "one version alone, copy the runs directory's jobs/ folder into a new runs directory, run that "
                "version there (the copied jobs are found done, nothing retrains) and submit the new directory.")


def _warn_of_unfinished_suites(runs_dir: Path, suites: list[SuiteRecord],
                               warn: Callable[[str], None] | None) -> None:
    """Say when a submitted suite still has work left in ``runs_dir`` (jobs to train, evaluations to run; counted as
    ``gibench run --estimate`` counts them): the submission then holds only the finished part. A suite that cannot be
    parsed with the installed plugins is not checked."""
    from gibench.core.errors import GibenchError
    from gibench.running.estimate import plan
    from gibench.suites.suite import parse_suite, shipped_suites

    for record in suites:
        try:
            left = plan(parse_suite(record.suite, source=f"suite {record.name!r}"), runs_dir)
        except GibenchError:
            continue
        if left.jobs_left:
            suite_argument = record.name if record.name in shipped_suites() else "<its suite file>"
            (warn or warnings.warn)(
                f"suite {record.name!r} is not finished in {runs_dir}: {left.jobs_left} of its {left.jobs} jobs still "
                "have training or evaluations to run, so the submission holds only the finished results. Finish it "
                f"with `gibench run --suite {suite_argument} --runs-dir {runs_dir}` (nothing done is redone), then "
                "submit again.")


def _selection_records(runs_dir: Path, warn: Callable[[str], None] | None
                       ) -> dict[tuple[Any, Any], dict[str, Any]]:
    """(suite name, suite hash) → the selection record the run of a suite that selects wrote
    (:mod:`gibench.running.selection`), read once for every manifest entry; a damaged one is skipped with a warning
    that says to rerun the suite (which writes it again)."""
    from gibench.running.selection import read_selections

    records = read_selections(runs_dir, warn=warn or warnings.warn)
    return {(record.get("suite"), record.get("suite_hash")): record for record in records}


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


def _public_reasons(table: pd.DataFrame, runs_dir: Path) -> pd.DataFrame:
    """``reason`` with the runs folder written ``<runs>``, the home folder ``~``, and line breaks, terminal colour
    codes and other Cc/Cf characters as spaces (see the module docstring)."""
    if "reason" not in table.columns:
        return table
    replacements = [(str(runs_dir.resolve()), "<runs>"), (os.path.abspath(runs_dir), "<runs>")]
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        replacements.append((home, "~"))

    def strip(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for local, public in replacements:
            text = text.replace(local, public)
        return "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)

    return table.assign(reason=table["reason"].map(strip))


def _results_csv(table: pd.DataFrame) -> bytes:
    columns = list(RESULT_COLUMNS) + sorted(c for c in table.columns if c not in RESULT_COLUMNS)
    order = JOB_COLUMNS + ["evaluator", "evaluator_version", "evaluator_params", "metric", "job_hash"]
    table = table[columns].sort_values(order, kind="mergesort")
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


def submission_id(meta: SubmissionMetadata, provenance: Provenance, results_sha256: str,
                  artifacts: ArtifactsRecord | None, models_sha256: str | None = None) -> str:
    """``<slug of the name>-<content hash>``: the id a submission of this content gets (see :func:`_content_hash`);
    ``models_sha256`` is the SHA-256 of its ``models.json`` (None: it references no models)."""
    return f"{slugify(meta.name)}-{_content_hash(meta, provenance, results_sha256, artifacts, models_sha256)}"


def _content_hash(meta: SubmissionMetadata, provenance: Provenance, results_sha256: str,
                  artifacts: ArtifactsRecord | None, models_sha256: str | None = None) -> str:
    payload: dict[str, Any] = {"metadata": meta.model_dump(mode="json"),
                               "provenance": provenance.model_dump(mode="json"), "results_sha256": results_sha256}
    if artifacts is not None and (artifacts.files or artifacts.left_out):  # ids of submissions without any stay
        payload["artifacts"] = artifacts.model_dump(mode="json")
    if models_sha256 is not None:  # likewise: ids of submissions without models stay
        payload["models_sha256"] = models_sha256
    return canonical_hash(payload, length=12)


def _metric_descriptions(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Descriptions of the table's metrics from the installed evaluator plugins (unloadable ones are left out)."""
    from gibench.api import registry

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


def _write(out_dir: Path, loaded: LoadedSubmission) -> Path:
    submission = loaded.submission
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
            (tmp / RESULTS_FILE).write_bytes(loaded.data)
            if submission.artifacts is not None:
                pack_artifacts(tmp, ArtifactPlan(submission.artifacts, loaded.sources))
            if submission.models is not None:
                (tmp / MODELS_FILE).write_bytes(loaded.models_data)
            (tmp / SUBMISSION_FILE).write_text(submission.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except FileExistsError:  # another process wrote the same id meanwhile
        return _write(out_dir, loaded)
    return final


def _same(a: Submission, b: Submission) -> bool:
    return a.id == b.id and _content_hash(a.metadata, a.provenance, a.results.sha256, a.artifacts,
                                          _models_sha256(a)) == _content_hash(b.metadata, b.provenance,
                                                                              b.results.sha256, b.artifacts,
                                                                              _models_sha256(b))


def _models_sha256(submission: Submission) -> str | None:
    return submission.models.sha256 if submission.models is not None else None
