"""Run a suite: preflight, then for every job claim it, reuse or train the model, and run every evaluation not stored.

Public interface (executors, the CLI and tests build on exactly this):

``RunOptions``
    Frozen, validated (``ConfigError`` naming the option), picklable dataclass of every option a run's jobs read:
    ``data_root``, ``download``, ``device`` (None/"auto", "cpu", "cuda", "cuda:N"), ``retry_failed``,
    ``eval_batch_size``, ``claim_timeout_s`` (a claim whose owner file has no heartbeat for this long, from another
    host, is taken over; on one host a dead owner's claim is taken over at once), ``heartbeat_s`` (left at its default:
    ``min(10, claim_timeout_s / 4)``), ``claim_poll_s``
    (how often the local executor looks again at jobs other workers hold), ``preflight``. The lock alone cannot
    tell a dead owner on another host from a filesystem whose locks other hosts do not see, so after a worker on
    another host dies its job waits up to ``claim_timeout_s`` (default 120 s) before another host takes it over.

``RunObserver``
    Base class whose methods are all no-ops: ``suite_started(suite, jobs)`` (in a suite that selects: with the
    sweep), ``jobs_added(jobs)`` (a suite that selects: the scored jobs of units just decided join the run; the total
    grows), ``job_started(job, number, total)``, ``job_step(job, done, total)``, ``job_phase(job, phase)``,
    ``job_finished(report)``, ``selection_made(selection)`` (the units just decided, each once),
    ``suite_finished(summary)``, ``warning(message)`` (damaged files moved aside, preflight warnings). The rich
    display is one observer (:mod:`gibench.running.progress`, used by the CLI); a Ray driver is another.

``run_job(job, runs_dir, options, observer=None, *, number=1, total=1) -> JobReport``
    Top-level, picklable arguments, safe to call from any process on any host that sees ``runs_dir``. It claims the
    job (:class:`gibench.core.fsio.Claim` at ``runs_dir/claims/<hash>.lock``), cache-or-trains it, runs its evaluations,
    releases the claim and returns the report; the observer gets ``job_started``, steps, phases and
    ``job_finished``. When another live worker holds the claim it does nothing and returns
    ``JobReport(state="busy", reason="claimed by pid P on HOST ...")``: call it again later (the local executor
    polls every ``claim_poll_s``); once the other worker is done, the call finds the job cached and runs only the
    evaluations still missing. It never raises for anything that happens inside the job (states: trained, cached,
    failed, busy); only errors of the call itself (bad options, an unusable runs directory) raise. Datasets come from
    a per-process cache keyed by (data root, download, dataset, options); auxiliary models from a per-process
    :class:`gibench.store.auxiliary.AuxiliaryModels` per (runs dir, device).

``run_suite(suite, runs_dir, options=None, *, observer=None, executor="local", address=None, gpus_per_job=None,
executor_options=None, dry_run=False, **option_fields) -> RunSummary``
    The options (``options``, or ``option_fields``: RunOptions fields given directly, ``device="cpu"``) and the
    executor's (:func:`gibench.running.options.check_executor_options`) are validated first, by the same code that
    validates ``gibench run``'s, so every flag of ``gibench run`` that is not only about the terminal is an argument
    here, with the flag's default, and a bad value raises the ConfigError the command prints. Then the preflight
    (:mod:`gibench.running.preflight`; errors raise one :class:`gibench.running.preflight.PreflightError` listing
    them all, before anything trains), a manifest entry (locked read-modify-write), then the jobs.
    ``executor="local"`` runs them in the suite's order, each in a worker process this process supervises
    (``isolation="process"``, the default: a job that kills its process, segfaults or passes ``job_timeout_s`` /
    ``eval_timeout_s`` is recorded as failed and the run goes on; :mod:`gibench.running.isolation`), or in this
    process (``isolation="none"``, for a debugger in a plugin; no time limits); ``executor="ray"`` imports
    :mod:`gibench.running.ray_executor` lazily and calls
    ``run_jobs(jobs, runs_dir, options, observer, address=..., gpus_per_job=..., more=...) -> list[JobReport]`` (in
    job order; ``more`` as the local executor's)
    with the Ray options given: ``address`` and ``gpus_per_job`` (``--address``, ``--gpus-per-job``; None: Ray's
    own address rule and one GPU per job on a GPU cluster, see that module), and whatever ``executor_options`` holds
    (the same names and ``cpus_per_job``; a name given both ways is an error). ``dry_run`` runs the preflight and
    returns one report per job (planned / cached / failed / invalid, with its ``findings``) without writing anything.

    A suite with ``select: {rule: max_drop}`` (:mod:`gibench.suites.selection_plan`) runs its sweep
    (:func:`gibench.suites.jobs.sweep_jobs`, scored by ``validation_accuracy`` only), selects from the stored
    validation accuracies (:mod:`gibench.running.selection`, written to ``<runs>/selections/``), and runs the selected
    settings with the suite's seeds and evaluators, streamed: the local executor selects whenever it has no job left
    that it can start (the rest of the sweep done, or held by other workers), Ray after every finished job, and the
    scored jobs of every unit whose sweep is stored join the run, so no worker waits for another's last sweep job
    while scored jobs are ready. A unit whose sweep is incomplete when the run ends (a job not run) is picked up by
    the next run. The preflight checks every job the run could train, with each selected setting stood in for by the
    default; a dry run lists the sweep and the scored jobs the store's selection gives so far.

Where they live: ``RunOptions``, ``RunObserver``, ``RunSummary``, ``EXECUTORS``, ``check_executor_options``,
``check_device``, ``resolve_device`` and ``load_bundle`` in :mod:`gibench.running.options`, ``run_job`` in
:mod:`gibench.running.run_job`, the reports in :mod:`gibench.running.job_runner`; this module re-exports them all.
They sit below the runner so that the preflight and the Ray executor, which the runner imports, can use them without
importing the runner back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from gibench.api import registry
from gibench.core.errors import ConfigError
from gibench.core.params import jsonable
from gibench.running.job_runner import EvaluationReport, JobReport, now  # noqa: F401  (EvaluationReport re-exported)
from gibench.running.options import (  # noqa: F401  (re-exported: the runner's interface, documented above)
    EXECUTORS,
    RunObserver,
    RunOptions,
    RunSummary,
    check_device,
    check_executor_options,
    load_bundle,
    resolve_device,
)
from gibench.running.preflight import is_error, preflight
from gibench.running.run_job import run_job
from gibench.running.selection import stored_selection, write_selection
from gibench.store.provenance import environment_info
from gibench.store.records import RunEntry, plugin_source
from gibench.store.rekey import rekey_store, stale_keys
from gibench.store.runs import RunStore
from gibench.suites.jobs import Job, expand, merge_jobs, planned_jobs, sweep_jobs
from gibench.suites.suite import Suite

__all__ = [
    "EXECUTORS", "EvaluationReport", "JobReport", "RunObserver", "RunOptions", "RunSummary", "check_device",
    "check_executor_options", "load_bundle", "resolve_device", "run_job", "run_suite",
]


# ----------------------------------------------------------------------------------------------------------------------
# A suite


def run_suite(suite: Suite, runs_dir: Path, options: RunOptions | None = None, *, observer: RunObserver | None = None,
              executor: str = "local", address: str | None = None, gpus_per_job: float | None = None,
              executor_options: Mapping[str, Any] | None = None, dry_run: bool = False,
              **option_fields: Any) -> RunSummary:
    """Preflight, then train and evaluate every job of ``suite`` into ``runs_dir``; see the module docstring."""
    if options is not None and option_fields:
        raise TypeError("give either options=RunOptions(...) or option fields, not both")
    options = options or RunOptions(**option_fields)
    options = dataclasses.replace(options, **{key: value for key, value in suite.limits  # the flags win over the file
                                              if getattr(options, key) is None})
    ray_options = check_executor_options(executor, options.device, address=address, gpus_per_job=gpus_per_job,
                                         executor_options=executor_options)
    observer = observer or RunObserver()
    runs_dir = Path(runs_dir)
    sweep = sweep_jobs(suite)
    findings = _preflight(suite, planned_jobs(suite) if sweep else expand(suite), runs_dir, options, observer,
                          executor, dry_run, ray_options)
    if dry_run:
        store = RunStore(runs_dir, repair=False, warn=observer.warning)  # a dry run reads only
        pending = stale_keys(runs_dir)
        if pending.moved or pending.set_aside:
            observer.warning(f"{pending.counts()} are stored under keys of an older identity rule, and "
                             f"{len(pending.set_aside)} superseded copies under them; `gibench run` (or `gibench "
                             "doctor --fix`) re-keys them before anything trains.")
        selection = stored_selection(suite, runs_dir) if sweep else None
        jobs = merge_jobs(sweep, expand(suite, selection.chosen())) if selection else expand(suite)
        return RunSummary(runs_dir, suite, [_dry_report(job, store, findings) for job in jobs],
                          warnings=store.warnings, dry_run=True, selection=selection)
    store = RunStore(runs_dir, repair=True, warn=observer.warning)
    _rekey(runs_dir, observer)
    # Under Ray each worker resolves the device it was given; the driver records what was asked for.
    device = resolve_device(options.device) if executor != "ray" else (options.device or "auto (per Ray worker)")
    first = sweep or expand(suite)
    entry = _manifest_entry(suite, first, device)
    store.record_run(entry)

    def run(jobs: list[Job], more: Callable[[], list[Job]] | None = None) -> list[JobReport]:
        observer.suite_started(suite, jobs)
        if executor == "ray":
            streaming = {} if more is None else {"more": more}  # only a suite that selects has more to give
            return list(_ray_executor().run_jobs(jobs, runs_dir, options, observer, **streaming, **ray_options))
        return _run_local(jobs, runs_dir, options, observer, more)

    selection = None
    if sweep:  # one stream: each unit's scored jobs join the run as soon as its sweep is stored
        scoring = _Scoring(suite, runs_dir, store, entry, sweep, observer)
        reports = _one_report_per_job(run(first, scoring.more))
        selection, entry = scoring.finish(), scoring.entry
    else:
        reports = run(first)
    summary = RunSummary(runs_dir, suite, list(reports), warnings=list(store.warnings), selection=selection)
    store.record_run(dataclasses.replace(entry, finished=now(),
                                         failed_jobs=[r.job.hash for r in reports if r.state == "failed"]))
    observer.suite_finished(summary)
    return summary


class _Scoring:
    """The scored jobs of a suite that selects, fed to the executor as its ``more()`` (the local executor asks when it
    has no job left that it can start, Ray's driver after every finished job): select from the stored sweep; the units
    decided since the last look are announced (``observer.selection_made`` with those units), their scored jobs join
    the run and the manifest entry, and the selection record is rewritten. A unit whose sweep is not stored yet (a job
    another worker holds) stays pending and is looked at again; one still pending when the run ends is picked up by
    the next run."""

    def __init__(self, suite: Suite, runs_dir: Path, store: RunStore, entry: RunEntry, sweep: list[Job],
                 observer: RunObserver) -> None:
        self.suite, self.runs_dir, self.store, self.entry, self.sweep = suite, runs_dir, store, entry, sweep
        self.observer = observer
        self.announced: set[Any] = set()  # units whose choice was announced
        self.queued: list[Job] = []  # scored jobs handed to the executor, in order
        self._keys: set[tuple[str, tuple[Any, ...]]] = set()

    @staticmethod
    def _key(job: Job) -> tuple[str, tuple[Any, ...]]:
        return job.hash, tuple(job.evaluators)  # a scored job may share its training (hash) with a sweep job

    def more(self) -> list[Job]:
        selection = stored_selection(self.suite, self.runs_dir)
        decided = [choice for choice in selection.units if choice.state != "pending" and choice.unit not in
                   self.announced]
        new = [job for job in expand(self.suite, selection.chosen()) if self._key(job) not in self._keys]
        if decided:
            self.announced.update(choice.unit for choice in decided)
            write_selection(self.runs_dir, self.suite, selection)
            self.observer.selection_made(dataclasses.replace(selection, units=tuple(decided)))
        if new:
            self.queued.extend(new)
            self._keys.update(self._key(job) for job in new)
            self.entry = dataclasses.replace(self.entry,
                                             jobs=[job.hash for job in merge_jobs(self.sweep, self.queued)])
            self.store.record_run(self.entry)
        return new

    def finish(self) -> Any:
        """The selection as the store gives it at the end of the run (written, and returned for the summary)."""
        selection = stored_selection(self.suite, self.runs_dir)
        write_selection(self.runs_dir, self.suite, selection)
        return selection


def _one_report_per_job(reports: list[JobReport]) -> list[JobReport]:
    """One report per trained model: a sweep job whose model a scored job reused (erm at a sweep seed, the selected
    setting's sweep seed) reports the scored run, which holds every evaluation."""
    merged = {report.job.hash: report for report in reports}  # a later report of a hash replaces an earlier one
    return list(merged.values())


def _rekey(runs_dir: Path, observer: RunObserver) -> None:
    """Move what the store holds under an older identity rule to its current keys (:mod:`gibench.store.rekey`), and say
    so."""
    rekeyed = rekey_store(runs_dir)
    if rekeyed.moved:
        observer.warning(f"{rekeyed.summary()}.")
    for path, why in rekeyed.set_aside.items():
        observer.warning(f"{path} was superseded ({why}); moved into quarantine/, not deleted.")
    for line in rekeyed.left:
        observer.warning(f"not re-keyed: {line}")


def _run_local(jobs: list[Job], runs_dir: Path, options: RunOptions, observer: RunObserver,
               more: Callable[[], list[Job]] | None = None) -> list[JobReport]:
    """Jobs in order; those another worker holds are looked at again once the others are done. With
    ``isolation="process"`` (the default) each job runs in a supervised worker process
    (:mod:`gibench.running.isolation`), else in this process.

    ``more()`` is asked for further jobs whenever every job so far has run or is held by another worker (a suite
    that selects: the scored jobs of the units whose sweep is now stored); what it returns joins the run (numbered
    after the others, ``observer.jobs_added``), so a worker never waits for another's sweep job while a unit's
    scored jobs are ready. The run ends when nothing is left, nothing is held and ``more()`` has nothing more."""
    queue = list(jobs)
    with contextlib.ExitStack() as stack:
        if options.isolation_mode == "process":
            from gibench.running.isolation import Supervisor

            supervisor = stack.enter_context(Supervisor(runs_dir, options, warn=observer.warning))

            def execute(job: Job, seen: RunObserver, number: int) -> JobReport:
                return supervisor.run_job(job, seen, number=number, total=len(queue))
        else:
            if options.job_timeout_s is not None or options.eval_timeout_s is not None:
                observer.warning("the time limits (--job-timeout, --eval-timeout, the suite's limits) are enforced "
                                 "only with --isolation process; this run has none.")

            def execute(job: Job, seen: RunObserver, number: int) -> JobReport:
                return run_job(job, runs_dir, options, seen, number=number, total=len(queue))

        reports: dict[int, JobReport] = {}
        waiting: list[int] = []
        next_number = 1
        while True:
            if next_number <= len(queue):  # the next job in order
                report = execute(queue[next_number - 1], observer, next_number)
                (waiting.append(next_number) if report.state == "busy" else reports.__setitem__(next_number, report))
                next_number += 1
                continue
            added = more() if more is not None else []
            if added:
                queue.extend(added)
                observer.jobs_added(added)
                continue
            if not waiting:
                break
            time.sleep(options.claim_poll_s)
            still = []
            for number in waiting:
                report = execute(queue[number - 1], _QuietWhileBusy(observer), number)
                (still.append(number) if report.state == "busy" else reports.__setitem__(number, report))
            waiting = still
    return [reports[number] for number in range(1, len(queue) + 1)]


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

        from gibench.running import ray_executor
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray and gibench's Ray executor ({exc}). Install them with "
                          "`pip install 'gibench[ray]'`, or run with --executor local.") from None
    return ray_executor


def _preflight(suite: Suite, jobs: list[Job], runs_dir: Path, options: RunOptions, observer: RunObserver,
               executor: str, dry_run: bool, ray_options: Mapping[str, Any]) -> dict[str, list[str]]:
    """Run the preflight (unless disabled); returns per-job findings for a dry run, raises on errors otherwise."""
    if not options.preflight:
        return {}
    report = preflight(suite, jobs, runs_dir, options, executor=executor, writes=not dry_run, ray_options=ray_options)
    for message in report.warnings:
        observer.warning(message)
    if not dry_run:
        report.raise_errors()
    return report.per_job()


def _dry_report(job: Job, store: RunStore, findings: dict[str, list[str]]) -> JobReport:
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
    names = {"regularizers": {s.name for s in suite.regularizers}, "evaluators": {s.name for s in suite.evaluators},
             "datasets": {s.name for s in suite.datasets}}
    plugins = {kind: {n: plugin_source(getattr(registry, kind), n) for n in sorted(group)}
               for kind, group in names.items()}
    return RunEntry(suite_name=suite.name, suite_hash=suite.hash, suite=jsonable(suite.raw), suite_source=suite.source,
                    jobs=[job.hash for job in jobs], started=now(), environment=environment_info(str(device)),
                    plugins=plugins, run_id=f"{now().replace(':', '')}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
