"""Run a suite: preflight, then for every job claim it, reuse or train the model, and run every evaluation not stored.

Public interface (executors, the CLI and tests build on exactly this):

``RunOptions``
    Frozen, validated (``ConfigError`` naming the option), picklable dataclass of every option of a run:
    ``data_root``, ``download``, ``device`` (None/"auto", "cpu", "cuda", "cuda:N"), ``retry_failed``,
    ``eval_batch_size``, ``claim_timeout_s`` (a claim whose owner file has no heartbeat for this long, from another
    host, is taken over; on one host a dead owner's claim is taken over at once), ``heartbeat_s``, ``claim_poll_s``
    (how often the local executor looks again at jobs other workers hold), ``preflight``. The lock alone cannot
    tell a dead owner on another host from a filesystem whose locks other hosts do not see, so after a worker on
    another host dies its job waits up to ``claim_timeout_s`` (default 120 s) before another host takes it over.

``RunObserver``
    Base class whose methods are all no-ops: ``suite_started(suite, jobs)``, ``job_started(job, number, total)``,
    ``job_step(job, done, total)``, ``job_phase(job, phase)``, ``job_finished(report)``, ``suite_finished(summary)``,
    ``warning(message)`` (damaged files moved aside, preflight warnings). The rich display is one observer
    (:mod:`gibench.progress`, used by the CLI); a Ray driver is another.

``run_job(job, runs_dir, options, observer=None, *, number=1, total=1) -> JobReport``
    Top-level, picklable arguments, safe to call from any process on any host that sees ``runs_dir``. It claims the
    job (:class:`gibench.fsio.Claim` at ``runs_dir/claims/<hash>.lock``), cache-or-trains it, runs its evaluations,
    releases the claim and returns the report; the observer gets ``job_started``, steps, phases and
    ``job_finished``. When another live worker holds the claim it does nothing and returns
    ``JobReport(state="busy", reason="claimed by pid P on HOST ...")``: call it again later (the local executor
    polls every ``claim_poll_s``); once the other worker is done, the call finds the job cached and runs only the
    evaluations still missing. It never raises for anything that happens inside the job (states: trained, cached,
    failed, busy); only errors of the call itself (bad options, an unusable runs directory) raise. Datasets come from
    a per-process cache keyed by (data root, download, dataset, options); auxiliary models from a per-process
    :class:`gibench.auxiliary.AuxiliaryModels` per (runs dir, device).

``run_suite(suite, runs_dir, options=None, *, observer=None, executor="local", executor_options=None,
dry_run=False, **option_fields) -> RunSummary``
    Preflight (:mod:`gibench.preflight`; errors raise one :class:`gibench.preflight.PreflightError` listing them
    all, before anything trains), a manifest entry (locked read-modify-write), then the jobs. ``executor="local"``
    runs them in this process in the suite's order; ``executor="ray"`` imports :mod:`gibench.ray_executor` lazily and
    calls ``run_jobs(jobs, runs_dir, options, observer, **executor_options) -> list[JobReport]`` (in job order; CLI:
    ``--address`` and ``--gpus-per-job`` become ``address`` and ``gpus_per_job``). ``dry_run`` runs the preflight
    and returns one report per job (planned / cached / failed / invalid, with its ``findings``) without writing
    anything. ``option_fields`` are RunOptions fields given directly (``device="cpu"``), instead of ``options``.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gibench import registry
from gibench.api import AuxCache, DatasetBundle
from gibench.auxiliary import AuxiliaryModels
from gibench.config import PluginSpec, Suite
from gibench.errors import ConfigError, GibenchError
from gibench.fsio import Claim
from gibench.job_runner import EvaluationReport, JobReport, JobRunner, now  # noqa: F401  (re-exported)
from gibench.jobs import Job, expand, plugin_source
from gibench.params import jsonable
from gibench.records import RunEntry
from gibench.rekey import rekey_store, stale_keys
from gibench.store import RunStore

__all__ = [
    "EXECUTORS", "EvaluationReport", "JobReport", "RunObserver", "RunOptions", "RunSummary", "check_device",
    "load_bundle", "resolve_device", "run_job", "run_suite",
]

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run (see the module docstring)."""

    data_root: Path | None = None
    download: bool = False
    device: str | None = None
    retry_failed: bool = False
    eval_batch_size: int = 256
    claim_timeout_s: float = 120.0
    heartbeat_s: float = 10.0
    claim_poll_s: float = 2.0
    preflight: bool = True

    def __post_init__(self) -> None:
        if self.data_root is not None and not isinstance(self.data_root, Path):
            object.__setattr__(self, "data_root", Path(self.data_root))
        _positive_int(self.eval_batch_size, "--eval-batch-size", "the number of images per evaluation batch, e.g. 256")
        for name in ("claim_timeout_s", "heartbeat_s", "claim_poll_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"RunOptions.{name} must be a positive number of seconds, got {value!r}.")
        if self.heartbeat_s >= self.claim_timeout_s:
            raise ConfigError(f"RunOptions.heartbeat_s ({self.heartbeat_s}) must be shorter than claim_timeout_s "
                              f"({self.claim_timeout_s}), or a live owner's claim would look dead.")
        check_device(self.device)


def _positive_int(value: Any, name: str, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer ({meaning}), got {value!r}.")


def check_device(device: str | None) -> None:
    if device in (None, "auto", "cpu", "cuda"):
        return
    if not (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"--device must be 'cpu', 'cuda' or 'cuda:N' (or 'auto'), got {device!r}.")


def resolve_device(device: str | None) -> torch.device:
    check_device(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu.")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return torch.device(device)


class RunObserver:
    """Receives the events of a run; every method is a no-op here (subclass and override what you need)."""

    def suite_started(self, suite: Suite, jobs: list[Job]) -> None: ...
    def job_started(self, job: Job, number: int, total: int) -> None: ...
    def job_step(self, job: Job, done: int, total: int) -> None: ...
    def job_phase(self, job: Job, phase: str) -> None: ...
    def job_finished(self, report: JobReport) -> None: ...
    def suite_finished(self, summary: RunSummary) -> None: ...
    def warning(self, message: str) -> None: ...


@dataclass
class RunSummary:
    """What :func:`run_suite` returns: one :class:`JobReport` per job of the suite, in the suite's order.

    ``warnings`` are the run's warnings (damaged files moved aside, capability mismatches); ``dry_run`` marks the
    reports of a dry run (states planned / cached / failed / invalid, nothing written). ``ok`` is True when no
    training and no evaluation failed; ``failures()`` lists them, one line each; ``count(state)`` counts the jobs in a
    state (trained, cached, failed, busy, planned, invalid).
    """

    runs_dir: Path
    suite: Suite
    jobs: list[JobReport]
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    def count(self, state: str) -> int:
        return sum(report.state == state for report in self.jobs)

    def failures(self) -> list[str]:
        """One line per failed training and per failed evaluation (empty when everything succeeded)."""
        lines = [f"{r.job.label}: training failed: {r.reason}" for r in self.jobs if r.state == "failed"]
        lines += [f"{r.job.label}: preflight: {'; '.join(r.findings)}" for r in self.jobs if r.state == "invalid"]
        lines += [f"{r.job.label}: {e.evaluator} failed: {_last_line(e.reason)}"
                  for r in self.jobs for e in r.evaluations if e.state == "failed"]
        return lines

    @property
    def ok(self) -> bool:
        return not self.failures()


def _last_line(text: str | None) -> str:
    return text.strip().splitlines()[-1] if text and text.strip() else ""


# ----------------------------------------------------------------------------------------------------------------------
# One job


_DATASETS: dict[tuple[str, bool, str, str], DatasetBundle] = {}
_AUX: dict[tuple[str, str], tuple[AuxCache, AuxiliaryModels]] = {}


def load_bundle(spec: PluginSpec, options: RunOptions) -> DatasetBundle:
    """The dataset of ``spec``, loaded once per process (per data root, download flag and options)."""
    from gibench.data import default_data_root

    root = options.data_root or default_data_root()
    key = (str(root), options.download, spec.name, spec.config_json)
    if key not in _DATASETS:
        dataset = registry.datasets.create(spec.name, **spec.params)
        _DATASETS[key] = dataset.load(root, download=options.download)
    return _DATASETS[key]


def _aux_for(runs_dir: Path, device: torch.device) -> tuple[AuxCache, AuxiliaryModels]:
    key = (str(runs_dir.resolve()), str(device))
    if key not in _AUX:
        _AUX[key] = (AuxCache(), AuxiliaryModels(runs_dir / "aux", device))
    return _AUX[key]


def run_job(job: Job, runs_dir: Path, options: RunOptions, observer: RunObserver | None = None, *,
            number: int = 1, total: int = 1) -> JobReport:
    """Claim, cache-or-train and evaluate one job (see the module docstring for the contract)."""
    observer = observer or RunObserver()
    runs_dir = Path(runs_dir)
    device = resolve_device(options.device)
    store = RunStore(runs_dir, repair=True, warn=observer.warning)
    observer.job_started(job, number, total)
    claim = Claim(store.claim_path(job.hash), options.claim_timeout_s, options.heartbeat_s)
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
    try:
        bundle = load_bundle(job.dataset, options)
    except Exception as exc:  # data missing or unreadable: this job cannot run, the others may
        reason = str(exc) if isinstance(exc, GibenchError) else f"{type(exc).__name__}: {exc}"
        return JobReport(job, "failed", f"could not load dataset {job.dataset.label}: {reason}")
    aux_cache, aux_models = _aux_for(store.runs_dir, device)
    runner = JobRunner(job, store.job(job.hash), bundle, device, options.eval_batch_size, aux_cache, aux_models,
                       on_step=lambda done, steps: observer.job_step(job, done, steps),
                       on_phase=lambda phase: observer.job_phase(job, phase))
    return runner.run(options.retry_failed)


# ----------------------------------------------------------------------------------------------------------------------
# A suite


def run_suite(suite: Suite, runs_dir: Path, options: RunOptions | None = None, *, observer: RunObserver | None = None,
              executor: str = "local", executor_options: Mapping[str, Any] | None = None, dry_run: bool = False,
              **option_fields: Any) -> RunSummary:
    """Preflight, then train and evaluate every job of ``suite`` into ``runs_dir``; see the module docstring."""
    if options is not None and option_fields:
        raise TypeError("give either options=RunOptions(...) or option fields, not both")
    options = options or RunOptions(**option_fields)
    observer = observer or RunObserver()
    runs_dir = Path(runs_dir)
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    if executor == "local" and executor_options:
        raise ConfigError(f"executor options {sorted(executor_options)} apply to --executor ray only.")
    jobs = expand(suite)
    findings = _preflight(suite, jobs, runs_dir, options, observer, executor, dry_run)
    if dry_run:
        store = RunStore(runs_dir, repair=False, warn=observer.warning)  # a dry run reads only
        pending = stale_keys(runs_dir)
        if pending.moved:
            observer.warning(f"{pending.counts()} are stored under keys of an older identity rule; "
                             "`gibench run` (or `gibench doctor --fix`) re-keys them before anything trains.")
        return RunSummary(runs_dir, suite, [_dry_report(job, store, findings) for job in jobs],
                          warnings=store.warnings, dry_run=True)
    store = RunStore(runs_dir, repair=True, warn=observer.warning)
    _rekey(runs_dir, observer)
    # Under Ray each worker resolves the device it was given; the driver records what was asked for.
    device = resolve_device(options.device) if executor != "ray" else (options.device or "auto (per Ray worker)")
    entry = _manifest_entry(suite, jobs, device)
    store.record_run(entry)
    observer.suite_started(suite, jobs)
    if executor == "ray":
        reports = _ray_executor().run_jobs(jobs, runs_dir, options, observer, **dict(executor_options or {}))
    else:
        reports = _run_local(jobs, runs_dir, options, observer)
    summary = RunSummary(runs_dir, suite, list(reports), warnings=list(store.warnings))
    store.record_run(dataclasses.replace(entry, finished=now(),
                                         failed_jobs=[r.job.hash for r in reports if r.state == "failed"]))
    observer.suite_finished(summary)
    return summary


def _rekey(runs_dir: Path, observer: RunObserver) -> None:
    """Move what the store holds under an older identity rule to its current keys (:mod:`gibench.rekey`), and say so."""
    rekeyed = rekey_store(runs_dir)
    if rekeyed.moved:
        observer.warning(f"{rekeyed.summary()}.")
    for line in rekeyed.left:
        observer.warning(f"not re-keyed: {line}")


def _run_local(jobs: list[Job], runs_dir: Path, options: RunOptions, observer: RunObserver) -> list[JobReport]:
    """Jobs in order; those another worker holds are looked at again once the others are done."""
    reports: dict[int, JobReport] = {}
    waiting = []
    for number, job in enumerate(jobs, 1):
        report = run_job(job, runs_dir, options, observer, number=number, total=len(jobs))
        (waiting.append(number) if report.state == "busy" else reports.__setitem__(number, report))
    while waiting:
        time.sleep(options.claim_poll_s)
        still = []
        for number in waiting:
            report = run_job(jobs[number - 1], runs_dir, options, _QuietWhileBusy(observer), number=number,
                             total=len(jobs))
            (still.append(number) if report.state == "busy" else reports.__setitem__(number, report))
        waiting = still
    return [reports[number] for number in range(1, len(jobs) + 1)]


class _QuietWhileBusy(RunObserver):
    """Forwards the events of a second look at a job, except when it is still busy (already reported once)."""

    def __init__(self, inner: RunObserver) -> None:
        self.inner, self._pending = inner, None

    def _open(self) -> None:
        if self._pending is not None:
            self.inner.job_started(*self._pending)
            self._pending = None

    def job_started(self, job, number, total): self._pending = (job, number, total)
    def job_step(self, job, done, total): self._open(); self.inner.job_step(job, done, total)  # noqa: E702
    def job_phase(self, job, phase): self._open(); self.inner.job_phase(job, phase)  # noqa: E702
    def warning(self, message): self.inner.warning(message)

    def job_finished(self, report):
        if report.state != "busy":
            self._open()
            self.inner.job_finished(report)


def _ray_executor():
    try:
        import ray  # noqa: F401

        from gibench import ray_executor
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray and gibench's Ray executor ({exc}). Install them with "
                          "`pip install 'gibench[ray]'`, or run with --executor local.") from None
    return ray_executor


def _preflight(suite: Suite, jobs: list[Job], runs_dir: Path, options: RunOptions, observer: RunObserver,
               executor: str, dry_run: bool) -> dict[str, list[str]]:
    """Run the preflight (unless disabled); returns per-job findings for a dry run, raises on errors otherwise."""
    if not options.preflight:
        return {}
    from gibench.preflight import preflight

    report = preflight(suite, jobs, runs_dir, options, executor=executor, writes=not dry_run)
    for message in report.warnings:
        observer.warning(message)
    if not dry_run:
        report.raise_errors()
    return report.per_job()


def _dry_report(job: Job, store: RunStore, findings: dict[str, list[str]]) -> JobReport:
    from gibench.preflight import is_error

    folder = store.job(job.hash)
    problems = findings.get(job.hash, [])
    status = folder.status()
    if any(is_error(p) for p in problems):
        state = "invalid"
    elif folder.is_trained():
        state = "cached"
    else:
        state = "failed" if status and status.state == "failed" else "planned"
    return JobReport(job, state, status.reason if state == "failed" and status else None, findings=problems)


def _manifest_entry(suite: Suite, jobs: list[Job], device: torch.device | str) -> RunEntry:
    from gibench.provenance import environment_info

    names = {"regularizers": {s.name for s in suite.regularizers}, "evaluators": {s.name for s in suite.evaluators},
             "datasets": {s.name for s in suite.datasets}}
    plugins = {kind: {n: plugin_source(getattr(registry, kind), n) for n in sorted(group)}
               for kind, group in names.items()}
    return RunEntry(suite_name=suite.name, suite_hash=suite.hash, suite=jsonable(suite.raw), suite_source=suite.source,
                    jobs=[job.hash for job in jobs], started=now(), environment=environment_info(str(device)),
                    plugins=plugins, run_id=f"{now().replace(':', '')}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
