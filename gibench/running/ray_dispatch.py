"""The dispatch of a suite's jobs to Ray: the task that runs one job on a worker, and the driver's loop that submits
the tasks, relays their progress and collects their reports (part of :mod:`gibench.running.ray_executor`, whose
docstring states the choices: **Worker reuse**, **Failures**, **Progress**, **Busy jobs**).
"""

from __future__ import annotations

__all__ = ["POLL_INTERVAL_S", "STEP_EVENT_INTERVAL_S", "ForwardingObserver", "SuiteDriver", "job_task"]

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gibench.core.errors import GibenchError
from gibench.running.job_runner import JobReport
from gibench.running.options import RunObserver, RunOptions
from gibench.running.ray_cluster import task_device
from gibench.running.ray_shared_store import Marker, check_marker
from gibench.running.run_job import run_job
from gibench.suites.jobs import Job

#: The shortest interval between two ``job_step`` events a worker sends (its last step is always sent).
STEP_EVENT_INTERVAL_S = 0.2
#: How long the driver waits for a finished task before it relays the queued events again.
POLL_INTERVAL_S = 0.1


# -- the worker side -----------------------------------------------------------------------------------------------


class ForwardingObserver(RunObserver):
    """Sends one job attempt's events to the driver's queue; a lost event never fails the job.

    ``job_finished`` is not sent: the driver reports the task's returned report itself, once per job.
    """

    def __init__(self, events: Any, index: int, submission: int) -> None:
        self.events, self.key, self._last_step = events, (index, submission), 0.0

    def job_started(self, job: Job, number: int, total: int) -> None:
        self._send("started", ())

    def job_step(self, job: Job, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_step >= STEP_EVENT_INTERVAL_S:
            self._last_step = now
            self._send("step", (done, total))

    def job_phase(self, job: Job, phase: str) -> None:
        self._send("phase", (phase,))

    def warning(self, message: str) -> None:
        self._send("warning", (message,))

    def _send(self, kind: str, args: tuple) -> None:
        if self.events is None:
            return
        try:
            self.events.put((*self.key, kind, args))
        except Exception:  # the driver is gone or its queue broke: keep training, stop reporting
            self.events = None


def job_task(job: Job, runs_dir: Path, options: RunOptions, marker: Marker, events: Any, number: int,
             total: int, submission: int) -> JobReport:
    """One job on a Ray worker: check the runs directory is the driver's, train on the device Ray gave the task
    (:func:`gibench.running.ray_cluster.task_device`), and send the job's events to the driver's ``events`` queue,
    tagged with ``submission`` so that the driver ignores those of an earlier, busy submission."""
    import ray
    import torch

    check_marker(marker)
    device = task_device(options.device, ray.get_gpu_ids(), torch.cuda.is_available(),
                         os.environ.get("CUDA_VISIBLE_DEVICES"))
    observer = ForwardingObserver(events, number - 1, submission)
    return run_job(job, runs_dir, dataclasses.replace(options, device=device), observer, number=number, total=total)


# -- the driver side -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _JobState:
    submission: int = 0  # how many tasks were submitted for the job (a "busy" answer resubmits)
    starts: int = 0  # job_started events of the current submission (more than one: Ray retried a dead worker)
    announced: bool = False  # job_started reached the observer
    pending_start: bool = False  # job_started held back until the job turns out not to be busy again
    told_busy: bool = False  # a "busy" report reached the observer already


class SuiteDriver:
    """Submits one task per job, relays the workers' events to the observer, collects the reports in order.

    A job another worker holds (``run_job`` answers ``busy``) is resubmitted every ``options.claim_poll_s``, and
    the observer sees it as the local executor shows it: the first ``busy`` report, then nothing until the job runs.
    ``more()`` (a suite that selects: the scored jobs of units whose sweep is now stored) is asked after every
    finished job; what it returns is submitted at once (``observer.jobs_added``), numbered after the others.
    """

    def __init__(self, ray: Any, jobs: list[Job], runs_dir: Path, options: RunOptions, observer: RunObserver,
                 marker: Marker, gpus: float, cpus: float, more: Callable[[], list[Job]] | None = None) -> None:
        self.ray, self.jobs, self.runs_dir, self.options = ray, list(jobs), runs_dir, options
        self.observer, self.marker, self.more = observer, marker, more
        # max_calls left to Ray's default (1 for GPU tasks, 0 = reuse for CPU tasks): **Worker reuse** in ray_executor.
        self.task = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=1, retry_exceptions=False)(job_task)
        self.states = [_JobState() for _ in jobs]
        self.pending: dict[Any, int] = {}
        self.due: list[tuple[float, int]] = []  # busy jobs: (monotonic time, index) of their next submission

    def run(self) -> list[JobReport]:
        from ray.util.queue import Queue

        self.events = Queue(actor_options={"num_cpus": 0})
        reports: list[JobReport | None] = [None] * len(self.jobs)
        try:
            for index in range(len(self.jobs)):
                self._submit(index)
            while self.pending or self.due:
                self._submit_due()
                ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending),
                                         timeout=POLL_INTERVAL_S) if self.pending else ([], [])
                self._relay()  # a finished task's events were queued before it returned
                finished = False
                for ref in ready:
                    index = self.pending.pop(ref)
                    report = self._report(ref, index)
                    if report.state == "busy":
                        self._busy(index, report)
                    else:
                        reports[index] = report
                        self._announce(index, even_unstarted=True)
                        self.observer.job_finished(report)
                        finished = True
                if finished and self.more is not None:
                    self._add(self.more(), reports)
                if not self.pending and self.due:
                    time.sleep(POLL_INTERVAL_S)
        finally:
            for ref in self.pending:  # interrupted: end the workers now, so that their claims are released
                self.ray.cancel(ref, force=True)
            self.events.shutdown()
        return reports  # type: ignore[return-value]

    def _add(self, jobs: list[Job], reports: list[JobReport | None]) -> None:
        """Submit jobs that join the run (numbered after the others)."""
        if not jobs:
            return
        self.observer.jobs_added(jobs)
        for job in jobs:
            self.jobs.append(job)
            self.states.append(_JobState())
            reports.append(None)
            self._submit(len(self.jobs) - 1)

    def _submit(self, index: int) -> None:
        state = self.states[index]
        state.submission += 1
        state.starts = 0
        ref = self.task.remote(self.jobs[index], self.runs_dir, self.options, self.marker, self.events, index + 1,
                               len(self.jobs), state.submission)
        self.pending[ref] = index

    def _submit_due(self) -> None:
        now = time.monotonic()
        for entry in [entry for entry in self.due if entry[0] <= now]:
            self.due.remove(entry)
            self._submit(entry[1])

    def _busy(self, index: int, report: JobReport) -> None:
        state = self.states[index]
        if not state.told_busy:
            state.told_busy = True
            self._announce(index, even_unstarted=True)
            self.observer.job_finished(report)
        state.announced = state.pending_start = False
        self.due.append((time.monotonic() + self.options.claim_poll_s, index))

    def _announce(self, index: int, even_unstarted: bool = False) -> None:
        """Tell the observer the job started, once (``even_unstarted``: before a report whose task never began)."""
        state = self.states[index]
        if (state.pending_start or even_unstarted) and not state.announced:
            state.announced, state.pending_start = True, False
            self.observer.job_started(self.jobs[index], index + 1, len(self.jobs))

    def _relay(self) -> None:
        size = self.events.qsize()
        for index, submission, kind, args in self.events.get_nowait_batch(size) if size else ():
            state, job = self.states[index], self.jobs[index]
            if submission != state.submission:
                continue  # a leftover of an earlier, busy submission
            if kind == "warning":
                self.observer.warning(*args)
            elif kind == "started":
                state.starts += 1
                if state.starts > 1:
                    self._announce(index)
                    self.observer.job_phase(job, f"restarted (attempt {state.starts}): its Ray worker died")
                else:
                    state.pending_start = True
                    if not state.told_busy:  # as the local executor: announce at once unless it was busy before
                        self._announce(index)
            else:
                self._announce(index)
                (self.observer.job_step if kind == "step" else self.observer.job_phase)(job, *args)

    def _report(self, ref: Any, index: int) -> JobReport:
        from ray.exceptions import RayError, RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as exc:  # run_job raised: an error of the call itself (runs dir, options) or a bug
            cause = getattr(exc, "cause", None)
            reason = str(cause) if isinstance(cause, GibenchError) else str(exc)
            return JobReport(self.jobs[index], "failed", reason)
        except RayError as exc:  # the worker or its node died on both attempts
            text = str(exc).strip()
            detail = text.splitlines()[0] if text else type(exc).__name__
            return JobReport(self.jobs[index], "failed",
                             f"its Ray worker died on both attempts ({type(exc).__name__}: {detail}); not recorded "
                             "in the store, so the next run tries the job again")
