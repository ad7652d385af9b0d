"""``gibench verify``: re-train and re-evaluate a random sample of a submission's jobs and compare every metric.

A submission records its suites (the parsed suite files, with their hashes) and, per run, the job hashes it holds.
:func:`verify_submission` draws ``jobs`` of the jobs with at least one ``ok`` result, seeded (``random.Random(seed)``
over the sorted job hashes, so the same seed checks the same jobs), rebuilds them from the recorded suites with the
installed plugins (a job whose hash the installed plugins no longer produce cannot be re-run: a dataset or
regularizer version or gibench's training code changed), trains and evaluates each with gibench's own runner
(:func:`gibench.running.runner.run_job`) in a scratch runs folder, and compares each result of the submission with the
recomputed one.

Choices:

* **Tolerance**: absolute, :data:`DEFAULT_TOLERANCE` = 1e-6 by default, the same for every metric. gibench seeds the
  weights, the batch order, the regularizers' noise and every evaluation, and training on the CPU with the same library
  versions, thread count and CPU model gives bit-identical weights (:mod:`gibench.training.train`; oneDNN and MKL
  choose their kernels by the instructions the CPU has, AVX-512 against AVX2 and the extensions beyond, and those give
  other last bits); results.csv stores floats with full precision. So on the CPU a correct submission agrees exactly,
  and 1e-6 only absorbs printing. Measured: submissions trained with 1 thread re-verified with 2 threads agreed bit for
  bit (max |Δ| 0 on every metric, for ``gibench_linear`` and ``gibench_cnn``, one epoch on ``mnist_subset``); the
  shipped ``smoke`` reference, trained on an AMD EPYC, re-trained on an Intel Xeon (both AVX-512, the same library
  versions and thread count) differed by 5e-5 in the density ratio, 0.04 in DiffROAR's accuracies and 0.42 in
  GAN-test's diversity, so ``environment_changes`` names the CPU model too. Other torch versions or a GPU change the
  floating-point summation order; their differences can grow through training to a flipped prediction (1/n on an
  accuracy), so pass a larger ``--tolerance`` (for example 0.02) there; the record says which tolerance was used and the
  thread count. The default device is the CPU for that reason.
* **What is compared**: every row of a sampled job (each evaluator × metric): both ``ok`` and within the tolerance,
  or the same non-ok status (a skipped evaluation stays skipped). A row whose evaluator's installed version differs
  from the recorded one cannot be compared (the installed evaluator computes something else) and is *stale*, as is
  a job the installed plugins cannot rebuild. Rows of the pseudo-evaluator ``training`` (a failed job) are not
  sampled: verify checks results, not failures.
* **Data**: datasets are read from ``data_root`` (``--data-root``) and never downloaded; a sampled job whose dataset
  is missing stops verify with a DataError saying so, rather than counting as a disagreement.
* **Selections**: for every recorded suite that selects (``select: {rule: max_drop}``), the selection is computed
  again (:func:`gibench.running.selection.select`) from the submitted ``validation_accuracy`` rows and training
  failures, with the installed plugins, and compared with the recorded one: the chosen value and state of every
  unit (``selections`` in the record; a suite the installed plugins cannot parse is ``not checked``). A submission
  whose rows do not give its recorded selection ``disagrees``: its scored settings were not the ones the rule picks.
  The retrained sample's own ``validation_accuracy`` rows are compared like any other metric.
* **Outcome**: ``disagrees`` when any compared row or any selection disagrees (exit status 1); else ``stale`` when
  any row or job could not be compared (exit status 1); else ``verified`` (exit status 0).
* **Scratch folder**: a fresh temporary folder, deleted afterwards; with ``runs_dir`` a folder that is new, empty, or
  made by an earlier ``gibench verify`` (it holds :data:`SCRATCH_MARKER`), kept for inspection. A user's runs
  folder (anything else) is refused: verify never reuses a finished checkpoint of the user's, so it re-trains for
  real and never writes next to the user's runs. Reusing a verify folder reuses its own re-trained models.
* **The record**: ``verification.json`` (:data:`VERIFICATION_FILE`) in the submission folder, written atomically. It
  is not part of the submission's hashed content (the id and the SHA-256 of results.csv are unchanged) and holds the
  date, the tolerance, gibench's version and environment (and ``environment_changes``: the library versions or
  device that differ from those the sampled jobs were run with), the thread count, the seed, the jobs checked, the
  outcome per metric and per row, and the results' SHA-256 it was made for. :func:`verification_status` turns it
  into what the site shows: ``verified`` (date, tolerance), ``disagrees``, ``stale`` (the record says so, or an
  evaluator's installed version has changed since it was made) or ``unverified`` (no record, or one made for other
  results).
* **Which check**: the record's ``check`` is ``retrained`` (this module) or ``reevaluated`` (``gibench verify
  --reevaluate``, :mod:`gibench.submissions.reevaluate`: the submitted models loaded, checked against their SHA-256,
  and evaluated again; a record of that check also holds the ``models.json`` SHA-256 it was made for, and is
  ``unverified`` once the submission lists other models). A record written before ``check`` existed is a
  retraining. The record holds the latest check: re-evaluating a submission replaces the record of its retraining.
"""

from __future__ import annotations

__all__ = [
    "COMPARED_ENVIRONMENT", "DEFAULT_TOLERANCE", "MetricOutcome", "RowComparison", "SCRATCH_MARKER",
    "VERIFICATION_FILE", "Verification", "VerificationStatus", "environment_changes", "verification_status",
    "verify_submission",
]

import json
import math
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.core.errors import ConfigError, DataError, GibenchError, SubmissionError
from gibench.core.fsio import atomic_write_json
from gibench.submissions.schema import LoadedSubmission
from gibench.version import __version__

VERIFICATION_FILE = "verification.json"
SCRATCH_MARKER = ".gibench-verify"
DEFAULT_TOLERANCE = 1e-6
_KEY = ["job_hash", "evaluator", "evaluator_version", "evaluator_params", "metric"]
TRAINING = "training"  # gibench.results.TRAINING: the pseudo-evaluator of a failed job


@dataclass(frozen=True)
class RowComparison:
    """One row of a sampled job: the submitted and recomputed value (None: no value) and the outcome."""

    job_hash: str
    evaluator: str
    evaluator_version: str
    evaluator_params: str
    metric: str
    submitted_status: str
    submitted: float | None
    recomputed_status: str | None
    recomputed: float | None
    abs_diff: float | None
    outcome: str  # agrees | disagrees | stale


@dataclass(frozen=True)
class MetricOutcome:
    """Per (evaluator, version, metric): rows compared, the largest |difference| and the outcome."""

    evaluator: str
    evaluator_version: str
    metric: str
    rows: int
    max_abs_diff: float | None
    outcome: str  # agrees | disagrees | stale


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_submission` found; :meth:`to_json` is ``verification.json``."""

    submission_id: str
    results_sha256: str
    status: str  # verified | disagrees | stale
    date: str
    tolerance: float
    seed: int
    jobs_requested: int
    jobs: list[dict[str, Any]]
    metrics: list[MetricOutcome]
    rows: list[RowComparison]
    evaluator_versions: dict[str, str]
    environment: dict[str, Any]
    torch_threads: int
    environment_changes: dict[str, list[Any]] = field(default_factory=dict)
    selections: list[dict[str, Any]] = field(default_factory=list)  # per suite that selects: outcome and differences
    check: str = "retrained"  # retrained | reevaluated (see the module docstring)
    models_sha256: str | None = None  # the models.json a re-evaluation loaded its models from
    gibench_version: str = __version__
    schema_version: int = 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tolerance"] = {"absolute": self.tolerance}
        return data


@dataclass(frozen=True)
class VerificationStatus:
    """What the site shows for a submission (see the module docstring)."""

    state: str  # verified | disagrees | stale | unverified
    date: str | None = None
    tolerance: float | None = None
    jobs_checked: int = 0
    detail: str = ""
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # evaluator -> (at verify, installed now)
    check: str = "retrained"  # which check the record is of: retrained | reevaluated


def verify_submission(submission: LoadedSubmission, *, jobs: int = 1, seed: int = 0,
                      tolerance: float = DEFAULT_TOLERANCE, runs_dir: Path | None = None, device: str = "cpu",
                      data_root: Path | None = None, write: bool = True, observer: Any = None,
                      warn: Callable[[str], None] | None = None) -> Verification:
    """Re-train and re-evaluate ``jobs`` sampled jobs of ``submission`` and compare (see the module docstring).

    Writes ``verification.json`` into the submission folder unless ``write`` is False (or the submission has no
    folder). Raises ConfigError for a bad option or a runs folder that is not a scratch folder, SubmissionError for a
    submission without ok results.
    """
    _check_options(jobs, tolerance)
    if submission.path is None:
        write = False
    sampled = sample_jobs(submission.results, jobs, seed)
    scratch, keep = _scratch(runs_dir)
    try:
        rebuilt = _rebuild(submission, sampled)
        recomputed, job_reports = _rerun(rebuilt, sampled, scratch, device, data_root, observer, warn)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    rows = compare(submission.results[submission.results["job_hash"].isin(sampled)], recomputed, tolerance,
                   installed_versions(submission.results), stale_jobs=set(sampled) - set(rebuilt))
    result = _verification(submission, rows, job_reports, sampled, jobs, seed, tolerance, device)
    if write:
        atomic_write_json(submission.path / VERIFICATION_FILE, result.to_json())
    return result


def sample_jobs(results: pd.DataFrame, jobs: int, seed: int, among: set[str] | None = None) -> list[str]:
    """``jobs`` job hashes drawn (``random.Random(seed)``) from the sorted jobs with an ok result (and in ``among``,
    when given)."""
    ok = results[(results["status"] == "ok") & (results["evaluator"] != TRAINING)]
    candidates = sorted(set(ok["job_hash"]) & among if among is not None else set(ok["job_hash"]))
    if not candidates:
        raise SubmissionError("the submission has no ok results" + (" of a job with a submitted model" if among
                                                                    is not None else "")
                              + ", so there is nothing to verify.")
    return sorted(random.Random(seed).sample(candidates, min(jobs, len(candidates))))


def installed_versions(results: pd.DataFrame) -> dict[str, str | None]:
    """Evaluator → installed version (None: not installed) for every evaluator of ``results``."""
    from gibench.api import registry

    found: dict[str, str | None] = {}
    for name in sorted(set(results["evaluator"]) - {TRAINING}):
        try:
            found[str(name)] = str(registry.evaluators.get(str(name)).version)
        except GibenchError:
            found[str(name)] = None
    return found


def compare(submitted: pd.DataFrame, recomputed: pd.DataFrame, tolerance: float,
            versions: dict[str, str | None], stale_jobs: set[str] = frozenset()) -> list[RowComparison]:
    """Every submitted row against the recomputed one with the same job, evaluator, version, params and metric.

    A row without a recomputed counterpart is ``stale`` when its job could not be rebuilt (``stale_jobs``) or its
    evaluator's installed version (``versions``) is another one, else it ``disagrees`` (the re-run lost it)."""
    again = {tuple(_key(r)): r for r in recomputed.to_dict("records")}
    rows = []
    for r in submitted[submitted["evaluator"] != TRAINING].to_dict("records"):
        other = again.get(tuple(_key(r)))
        value = _value(r)
        if other is None:
            stale = r["job_hash"] in stale_jobs or versions.get(r["evaluator"]) != str(r["evaluator_version"])
            outcome = "stale" if stale else "disagrees"
            rows.append(_row(r, value, None, None, None, outcome))
            continue
        new = _value(other)
        diff = abs(value - new) if value is not None and new is not None else None
        same_status = r["status"] == other["status"]
        agrees = same_status and (diff <= tolerance if r["status"] == "ok" and diff is not None else
                                  r["status"] != "ok")
        rows.append(_row(r, value, other["status"], new, diff, "agrees" if agrees else "disagrees"))
    return rows


def metric_outcomes(rows: list[RowComparison]) -> list[MetricOutcome]:
    """One line per (evaluator, version, metric): any disagreement disagrees, else any stale row is stale."""
    groups: dict[tuple[str, str, str], list[RowComparison]] = {}
    for row in rows:
        groups.setdefault((row.evaluator, row.evaluator_version, row.metric), []).append(row)
    found = []
    for (evaluator, version, metric), group in sorted(groups.items()):
        outcomes = {r.outcome for r in group}
        outcome = "disagrees" if "disagrees" in outcomes else "stale" if "stale" in outcomes else "agrees"
        diffs = [r.abs_diff for r in group if r.abs_diff is not None]
        found.append(MetricOutcome(evaluator, version, metric, len(group), max(diffs) if diffs else None, outcome))
    return found


def verification_status(submission: LoadedSubmission) -> VerificationStatus:
    """The site's view of ``submission``'s ``verification.json`` (see the module docstring); never raises for a
    missing or unreadable record (that is ``unverified``)."""
    if submission.path is None or not (submission.path / VERIFICATION_FILE).is_file():
        return VerificationStatus("unverified", detail="never verified")
    try:
        record = json.loads((submission.path / VERIFICATION_FILE).read_text(encoding="utf-8"))
        state, date = str(record["status"]), str(record["date"])
        tolerance = float(record["tolerance"]["absolute"])
        checked = len(record["jobs"])
        at_verify = {str(k): str(v) for k, v in record["evaluator_versions"].items() if v is not None}
        sha256 = record["results_sha256"]
        check = str(record.get("check", "retrained"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return VerificationStatus("unverified", detail=f"{VERIFICATION_FILE} is unreadable ({exc})")
    if sha256 != submission.submission.results.sha256:
        return VerificationStatus("unverified", detail=f"{VERIFICATION_FILE} was made for other results")
    if state not in ("verified", "disagrees", "stale") or check not in ("retrained", "reevaluated"):
        return VerificationStatus("unverified", detail=f"{VERIFICATION_FILE} has an unknown status {state!r} or "
                                                       f"check {check!r}")
    models = submission.submission.models
    if check == "reevaluated" and (models is None or record.get("models_sha256") != models.sha256):
        return VerificationStatus("unverified", detail=f"{VERIFICATION_FILE} re-evaluated other models than the "
                                                       "ones models.json lists", check=check)
    now = installed_versions(submission.results)
    changed = {name: (old, now[name]) for name, old in at_verify.items() if now.get(name) not in (None, old)}
    if changed and state == "verified":
        names = ", ".join(f"{n} v{a} → v{b}" for n, (a, b) in sorted(changed.items()))
        return VerificationStatus("stale", date, tolerance, checked, f"evaluator versions changed since: {names}",
                                  changed, check)
    return VerificationStatus(state, date, tolerance, checked, _detail(record), changed, check)


# ----------------------------------------------------------------------------------------------------------------------


def _check_options(jobs: int, tolerance: float) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number >= 1, got {jobs!r}. Fix: e.g. --jobs 2.")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"--tolerance must be a finite number >= 0, got {tolerance!r}. Fix: e.g. --tolerance 1e-6 "
                          "on the CPU, or --tolerance 0.02 across devices.")


def _scratch(runs_dir: Path | None) -> tuple[Path, bool]:
    """The folder to re-run in, and whether to keep it (only a folder the user named)."""
    if runs_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="gibench-verify-"))
        (scratch / SCRATCH_MARKER).write_text("made by gibench verify\n")
        return scratch, False
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and (not runs_dir.is_dir() or (any(runs_dir.iterdir())
                                                        and not (runs_dir / SCRATCH_MARKER).is_file())):
        raise ConfigError(f"--runs-dir {runs_dir} is not empty and was not made by `gibench verify`. verify re-trains "
                          "in a scratch folder and never reuses or writes into a runs folder of yours. Fix: pass a "
                          "new or empty folder, or leave --runs-dir out for a temporary one.")
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / SCRATCH_MARKER).write_text("made by gibench verify\n")
    return runs_dir, True


def _rebuild(submission: LoadedSubmission, sampled: list[str]) -> dict[str, Any]:
    """job hash → Job rebuilt from the recorded suites with the installed plugins (absent: not reproducible)."""
    from gibench.suites.jobs import rebuildable_jobs
    from gibench.suites.suite import parse_suite

    wanted, found = set(sampled), {}
    for record in submission.submission.provenance.suites:
        try:
            suite = parse_suite(record.suite, source=f"recorded suite {record.name!r}")
        except GibenchError:  # a plugin of the suite is not installed (any more)
            continue
        for job in rebuildable_jobs(suite):
            if job.hash in wanted:
                found.setdefault(job.hash, job)
    return found


def _rerun(rebuilt: dict[str, Any], sampled: list[str], scratch: Path, device: str, data_root: Path | None,
           observer: Any, warn: Callable[[str], None] | None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from gibench.results.tables import collect_results
    from gibench.running.options import RunOptions
    from gibench.running.run_job import run_job

    options = RunOptions(device=device, data_root=data_root)
    reports = []
    for number, job_hash in enumerate(sampled, 1):
        job = rebuilt.get(job_hash)
        if job is None:
            reports.append({"job_hash": job_hash, "label": "", "state": "not reproducible",
                            "reason": "the installed plugins do not rebuild this job hash from the recorded suites "
                                      "(a dataset or regularizer version, or gibench's training code, changed)"})
            continue
        report = run_job(job, scratch, options, observer, number=number, total=len(sampled))
        if report.state == "failed" and (report.reason or "").startswith("could not load dataset"):
            raise DataError(f"cannot verify job {job_hash} ({job.label}): {report.reason} Fix: pass --data-root "
                            "with the folder holding that dataset (verify never downloads).")
        reports.append({"job_hash": job_hash, "label": job.label, "state": report.state,
                        "reason": report.reason or "", "seconds": round(float(report.seconds or 0.0), 3)})
    recomputed = collect_results(scratch, set(rebuilt), warn=warn)
    return recomputed, reports


def _verification(submission: LoadedSubmission, rows: list[RowComparison], job_reports: list[dict[str, Any]],
                  sampled: list[str], jobs: int, seed: int, tolerance: float, device: str, check: str = "retrained",
                  models_sha256: str | None = None) -> Verification:
    import torch

    from gibench.store.provenance import environment_info

    outcomes = metric_outcomes(rows)
    selections = recheck_selections(submission)
    states = {m.outcome for m in outcomes} | {s["outcome"] for s in selections}
    unreproducible = any(r["state"] == "not reproducible" for r in job_reports)
    status = ("disagrees" if "disagrees" in states else "stale" if "stale" in states or unreproducible or not rows
              else "verified")
    versions = installed_versions(submission.results)
    environment = environment_info(device)
    return Verification(
        submission_id=submission.submission.id, results_sha256=submission.submission.results.sha256, status=status,
        date=datetime.now(timezone.utc).replace(microsecond=0).isoformat(), tolerance=float(tolerance), seed=seed,
        jobs_requested=jobs, jobs=job_reports, metrics=outcomes, rows=rows,
        evaluator_versions={k: v for k, v in versions.items() if v is not None},
        environment=environment, torch_threads=torch.get_num_threads(),
        environment_changes=environment_changes(submission, sampled, environment), selections=selections,
        check=check, models_sha256=models_sha256)


def recheck_selections(submission: LoadedSubmission) -> list[dict[str, Any]]:
    """Each recorded selection against the one the submitted rows give (see the module docstring): per suite that
    selects, ``{"suite", "outcome": agrees | disagrees | not checked, "differences": [...]}``."""
    from gibench.running.selection import FAILED, select
    from gibench.suites.jobs import VALIDATION_EVALUATOR
    from gibench.suites.suite import parse_suite

    results = submission.results
    accuracy = results[(results["evaluator"] == VALIDATION_EVALUATOR.name) & (results["status"] == "ok")]
    values: dict[str, Any] = dict(zip(accuracy["job_hash"], accuracy["value"].astype(float)))
    values.update({h: FAILED for h in results.loc[results["evaluator"] == TRAINING, "job_hash"]})
    checks = []
    for record in submission.submission.provenance.suites:
        if record.selection is None:
            continue
        try:
            suite = parse_suite(record.suite, source=f"recorded suite {record.name!r}")
            recomputed = select(suite, values.get).to_json()
        except GibenchError as exc:
            checks.append({"suite": record.name, "outcome": "not checked", "differences": [str(exc)]})
            continue
        recorded = record.selection.model_dump()
        differences = _selection_differences(recorded["units"], recomputed["units"])
        checks.append({"suite": record.name, "outcome": "disagrees" if differences else "agrees",
                       "differences": differences})
    return checks


def _selection_differences(recorded: list[dict[str, Any]], recomputed: list[dict[str, Any]]) -> list[str]:
    """The units whose choice differs. Units are compared in order (both lists follow the suite's grids, datasets,
    backbones and regularizers): their labels may differ in the order of options, since a submission stores its
    suite with sorted keys."""
    if len(recorded) != len(recomputed):
        return [f"{len(recorded)} units recorded, the suite has {len(recomputed)}"]
    lines = []
    for old, new in zip(recorded, recomputed):
        if (old["selected"], old["state"]) != (new["selected"], new["state"]) or old["name"] != new["name"]:
            unit = " / ".join(old[k] for k in ("dataset", "backbone", "regularizer"))
            lines.append(f"{unit}: recorded {(old['selected'], old['state'])}, the submitted rows give "
                         f"{(new['selected'], new['state'])}")
    return lines


#: The parts of the recorded environment that decide whether a re-run can be bit-identical (``device_name``: the CPU
#: or GPU model, whose kernels decide the last bits).
COMPARED_ENVIRONMENT = ("gibench_version", "python", "torch", "torchvision", "timm", "numpy", "device", "device_name")


def environment_changes(submission: LoadedSubmission, sampled: list[str],
                        environment: dict[str, Any]) -> dict[str, list[Any]]:
    """{key: [recorded, now]} for each :data:`COMPARED_ENVIRONMENT` entry that differs between the runs that
    produced the sampled jobs and this verification (a reason to expect small differences and raise the tolerance)."""
    changes: dict[str, list[Any]] = {}
    for run in submission.submission.provenance.runs:
        if not set(sampled) & set(run.jobs):
            continue
        recorded = run.environment.model_dump()
        for key in COMPARED_ENVIRONMENT:
            if recorded.get(key) != environment.get(key) and key not in changes:
                changes[key] = [recorded.get(key), environment.get(key)]
    return changes


def _key(r: dict[str, Any]) -> list[str]:
    params = json.dumps(json.loads(str(r["evaluator_params"]) or "{}"), sort_keys=True)
    return [str(r["job_hash"]), str(r["evaluator"]), str(r["evaluator_version"]), params, str(r["metric"])]


def _value(r: dict[str, Any]) -> float | None:
    value = r.get("value")
    return float(value) if value is not None and not pd.isna(value) else None


def _row(r: dict[str, Any], submitted: float | None, status: str | None, recomputed: float | None,
         diff: float | None, outcome: str) -> RowComparison:
    job, evaluator, version, params, metric = _key(r)
    return RowComparison(job, evaluator, version, params, metric, str(r["status"]), submitted, status, recomputed,
                         diff, outcome)


def _detail(record: dict[str, Any]) -> str:
    bad = [m for m in record.get("metrics", []) if m.get("outcome") != "agrees"]
    rejected = [j for j in record.get("jobs", []) if j.get("state") == "model rejected"]
    if not bad and not rejected:
        return f"{len(record.get('metrics', []))} metric(s) agree on {len(record.get('jobs', []))} job(s)"
    return "; ".join([f"the model of job {j['job_hash']} is not the submitted one" for j in rejected[:2]]
                     + [f"{m['evaluator']}: {m['metric']} {m['outcome']}" for m in bad[:5]])
