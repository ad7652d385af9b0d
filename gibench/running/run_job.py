"""One job of a run: claim it, cache-or-train it, evaluate it (:func:`run_job`; its contract is documented in
:mod:`gibench.running.runner`, which re-exports it).

A module of its own, below the runner, because both executors call it: the local one in :mod:`gibench.running.runner`
and the Ray one in :mod:`gibench.running.ray_executor`, which the runner imports; neither executor needs the runner for
it.
"""

from __future__ import annotations

__all__ = ["run_job"]

import time
from pathlib import Path

import torch

from gibench.core.errors import GibenchError
from gibench.core.fsio import Claim
from gibench.running.job_runner import JobReport, JobRunner
from gibench.running.options import RunObserver, RunOptions, load_job_bundle, resolve_device
from gibench.store.auxiliary import AuxiliaryModels
from gibench.store.runs import RunStore
from gibench.suites.jobs import Job

_AUX: dict[tuple[str, str], AuxiliaryModels] = {}


def _aux_for(runs_dir: Path, device: torch.device) -> AuxiliaryModels:
    """The auxiliary-model store of a runs directory and device, one per process (shared by its jobs)."""
    key = (str(runs_dir.resolve()), str(device))
    if key not in _AUX:
        _AUX[key] = AuxiliaryModels(runs_dir / "aux", device)
    return _AUX[key]


def run_job(job: Job, runs_dir: Path, options: RunOptions, observer: RunObserver | None = None, *,
            number: int = 1, total: int = 1) -> JobReport:
    """Claim, cache-or-train and evaluate one job (see :mod:`gibench.running.runner` for the contract)."""
    observer = observer or RunObserver()
    runs_dir = Path(runs_dir)
    device = resolve_device(options.device)
    store = RunStore(runs_dir, repair=True, warn=observer.warning)
    observer.job_started(job, number, total)
    claim = Claim(store.claim_path(job.hash), options.claim_timeout_s, options.claim_heartbeat_s)
    if not claim.try_acquire():
        holder = claim.holder()
        report = JobReport(job, "busy", f"claimed by {holder.describe() if holder else 'another process'}")
        observer.job_finished(report)
        return report
    start = time.perf_counter()
    try:
        report = _run_claimed(job, store, options, device, observer)
    finally:
        claim.release()
    report.seconds = report.seconds or time.perf_counter() - start
    observer.job_finished(report)
    return report


def _run_claimed(job: Job, store: RunStore, options: RunOptions, device: torch.device,
                 observer: RunObserver) -> JobReport:
    """The claimed job's work; a dataset that cannot load fails this job only, not the run."""
    try:
        bundle = load_job_bundle(job, options)
    except Exception as exc:  # data missing or unreadable: this job cannot run, the others may
        reason = str(exc) if isinstance(exc, GibenchError) else f"{type(exc).__name__}: {exc}"
        return JobReport(job, "failed", f"could not load dataset {job.dataset.label}: {reason}")
    runner = JobRunner(job, store.job(job.hash), bundle, device, options.eval_batch_size,
                       _aux_for(store.runs_dir, device),
                       on_step=lambda done, steps: observer.job_step(job, done, steps),
                       on_phase=lambda phase: observer.job_phase(job, phase))
    return runner.run(options.retry_failed)
