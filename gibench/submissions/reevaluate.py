"""``gibench verify --reevaluate``: the cheap check before the expensive one. The submitted models are loaded,
each checked against the SHA-256 its submission's ``models.json`` records, and the recorded evaluations of their jobs
run again on them and compared with the submitted values; re-training a sample (:mod:`gibench.submissions.verify`)
stays the stronger check, since it also reproduces the weights from the recorded suite (docs/models.md,
"Re-evaluating the submitted models").

Choices:

* **What is sampled**: ``jobs`` of the jobs that have an ``ok`` result and a model in ``models.json``, drawn as
  :func:`gibench.submissions.verify.sample_jobs` draws them (the same seed gives the same jobs); a ``--jobs`` at
  least the number of models checks every one.
* **How the evaluations run again**: exactly as ``gibench run`` ran them. The job is rebuilt from the recorded suites
  with the installed plugins (a job they no longer produce is *stale*, as in a retraining), the loaded network is
  committed as that job's checkpoint in a scratch runs folder (the same scratch rules as ``gibench verify``), and
  :func:`gibench.running.run_job.run_job` evaluates it: every evaluator of the job with its options, the job's seed,
  the evaluation batch size and auxiliary models of a run, on ``device`` (default the CPU). So an honest submission
  whose models were evaluated on the CPU agrees exactly; the comparison and its tolerance are the retraining's
  (:func:`gibench.submissions.verify.compare`, absolute, :data:`gibench.submissions.verify.DEFAULT_TOLERANCE`).
* **A model that is not the submitted one**: a file whose size, SHA-256 or structure differs from the record, or
  whose tensors do not fit the job's network, is *rejected*: the job is reported as ``model rejected`` with the
  reason, and its rows disagree. A file that cannot be had (not downloaded, since nothing is fetched without
  ``download``; a ``file:`` URL naming nothing) stops the check with an error saying how to get it, as a missing
  dataset does.
* **The record**: ``verification.json`` as for a retraining, with ``check: "reevaluated"`` and the ``models.json``
  SHA-256 the models were loaded from; each job lists the URL and SHA-256 of its weights.
"""

from __future__ import annotations

__all__ = ["reevaluate_submission"]

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.core.errors import DataError, SubmissionError
from gibench.core.fsio import atomic_write_json
from gibench.submissions.model_files import ModelFileError
from gibench.submissions.schema import MODELS_FILE, LoadedSubmission
from gibench.submissions.submitted_models import submitted_models
from gibench.submissions.verify import (
    DEFAULT_TOLERANCE,
    VERIFICATION_FILE,
    Verification,
    _check_options,
    _rebuild,
    _scratch,
    _verification,
    compare,
    installed_versions,
    sample_jobs,
)

#: How a model file that cannot be had begins its problem (gibench.submissions.model_files): not a rejection.
_UNAVAILABLE = ("is not in the cache", "could not be downloaded", "the weights file is missing",
                "the model card is missing")


def reevaluate_submission(submission: LoadedSubmission, *, jobs: int = 1, seed: int = 0,
                          tolerance: float = DEFAULT_TOLERANCE, runs_dir: Path | None = None, device: str = "cpu",
                          data_root: Path | None = None, download: bool = False,
                          cache_dir: str | Path | None = None, write: bool = True, observer: Any = None,
                          warn: Callable[[str], None] | None = None) -> Verification:
    """Load ``jobs`` sampled submitted models, evaluate them again and compare (see the module docstring).

    Writes ``verification.json`` into the submission folder unless ``write`` is False. Raises SubmissionError for a
    submission without ``models.json`` (saying how to add one) or without an ok result of a job with a model,
    ConfigError for a bad option or scratch folder, ModelFileError for a model file that cannot be had (not
    downloaded, missing), DataError for a missing dataset.
    """
    _check_options(jobs, tolerance)
    record = submission.submission.models
    if submission.path is None:
        raise SubmissionError(f"{submission.submission.id} was packaged in memory: re-evaluation reads the models "
                              "its folder references. Fix: write it with `gibench submit` and pass its folder.")
    if record is None:
        raise SubmissionError(
            f"{submission.path} references no trained models (it has no {MODELS_FILE}), "
            "so `gibench verify --reevaluate` has nothing to load. Fix: export the models of the runs directory "
            "(`gibench export --runs-dir <runs> --out <folder>`), publish the folder, and submit again with "
            "`gibench submit ... --models <folder> --models-url <its URL>`; or check the submission by re-training "
            "(`gibench verify` without --reevaluate).")
    entries = {entry.identity.job_hash: entry for entry in submitted_models(submission)}
    sampled = sample_jobs(submission.results, jobs, seed, among=set(entries))
    scratch, keep = _scratch(runs_dir)
    try:
        rebuilt = _rebuild(submission, sampled)
        recomputed, reports = _rerun(submission, rebuilt, sampled, entries, scratch, device, data_root, download,
                                     cache_dir, observer, warn)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    rows = compare(submission.results[submission.results["job_hash"].isin(sampled)], recomputed, tolerance,
                   installed_versions(submission.results), stale_jobs=set(sampled) - set(rebuilt))
    result = _verification(submission, rows, reports, sampled, jobs, seed, tolerance, device, check="reevaluated",
                           models_sha256=record.sha256)
    if write:
        atomic_write_json(submission.path / VERIFICATION_FILE, result.to_json())
    return result


def _rerun(submission: LoadedSubmission, rebuilt: dict[str, Any], sampled: list[str], entries: dict[str, Any],
           scratch: Path, device: str, data_root: Path | None, download: bool, cache_dir: str | Path | None,
           observer: Any, warn: Callable[[str], None] | None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from gibench.results.tables import collect_results
    from gibench.running.job_runner import now
    from gibench.running.options import RunOptions
    from gibench.running.run_job import run_job
    from gibench.store.records import job_record
    from gibench.store.runs import RunStore
    from gibench.submissions.model_cards import WEIGHTS_FILE
    from gibench.submissions.model_load import find_model

    options = RunOptions(device=device, data_root=data_root)
    store = RunStore(scratch)
    reports, evaluated = [], set()
    for number, job_hash in enumerate(sampled, 1):
        job, weights = rebuilt.get(job_hash), entries[job_hash].files[WEIGHTS_FILE]
        report: dict[str, Any] = {"job_hash": job_hash, "label": job.label if job is not None else "",
                                  "weights_sha256": weights.sha256, "url": weights.url}
        reports.append(report)
        if job is None:
            report.update(state="not reproducible",
                          reason="the installed plugins do not rebuild this job hash from the recorded suites (a "
                                 "dataset or regularizer version, or gibench's training code, changed)")
            continue
        try:
            model = find_model(submission.path, job=job_hash, sha256=submission.submission.models.sha256,
                               download=download, cache_dir=cache_dir, data_root=data_root).load("cpu")
        except ModelFileError as exc:
            if exc.problem.startswith(_UNAVAILABLE):
                raise
            report.update(state="model rejected", reason=str(exc))
            continue
        folder = store.job(job_hash)
        folder.write_spec(job_record(job))
        saved = folder.save_trained(model, {"submitted_model": {"url": weights.url, "sha256": weights.sha256}},
                                    finished=now())
        folder.record_event("submitted model", weights_sha256=weights.sha256)
        ran = run_job(job, scratch, options, observer, number=number, total=len(sampled))
        if ran.state == "failed" and (ran.reason or "").startswith("could not load dataset"):
            raise DataError(f"cannot re-evaluate job {job_hash} ({job.label}): {ran.reason} Fix: pass --data-root "
                            "with the folder holding that dataset (verify never downloads data).")
        status = folder.status()
        if status is None or status.checkpoint_sha256 != saved.checkpoint_sha256:  # the runner could not load it
            report.update(state="model rejected",
                          reason=f"{weights.url}: its tensors do not fit the network of job {job_hash} as the suite "
                                 "builds it")
            continue
        evaluated.add(job_hash)
        failed = [e for e in ran.evaluations if e.state == "failed"]
        report.update(state="re-evaluated" if ran.state in ("cached", "trained") else ran.state,
                      reason=ran.reason or "; ".join(f"{e.evaluator} failed: {e.reason}" for e in failed[:3]),
                      seconds=round(float(ran.seconds or 0.0), 3))
    recomputed = collect_results(scratch, evaluated, warn=warn) if evaluated else pd.DataFrame(
        columns=["job_hash", "evaluator", "evaluator_version", "evaluator_params", "metric", "status", "value"])
    return recomputed, reports
