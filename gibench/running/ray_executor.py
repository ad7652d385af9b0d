"""Run a suite's jobs as Ray tasks, on one machine or a multi-node Ray cluster (``gibench run --executor ray``).

One Ray core task per job (Ray Tune brings nothing here: gibench already has the grid, the cache and the resume
logic, and a Tune trial would only wrap :func:`gibench.running.runner.run_job`). Every task calls ``run_job`` on the
same runs directory, so the store's claims (an OS file lock per job, released when its owner dies) make sure each job is
trained once, however many drivers and workers share the directory. Choices:

* **Connection.** ``address`` when given, else Ray's own rule: the cluster named by ``RAY_ADDRESS``, else one that
  ``ray start`` runs on this machine, else a fresh local cluster (all CPUs and GPUs of this machine). A HOST:PORT
  where nothing answers fails at once (``ray.init`` would retry for minutes). A Ray session this process already
  holds (a notebook, the tests) is used as it is, whatever ``address`` says. A cluster that :func:`run_jobs` did not
  start is never shut down; it only disconnects from it.
* **Resources.** ``num_gpus=gpus_per_job`` per task. The default is 1 GPU per job when the cluster has GPUs and 0
  on a CPU-only cluster (or under ``device="cpu"``). A fraction below 1 packs several small jobs on one GPU (Ray
  keeps no memory limit: the jobs must fit together). ``num_cpus=1`` per task: the training loop is one Python
  thread feeding in-memory tensors, and on a CPU-only cluster Ray then sets ``OMP_NUM_THREADS=1`` in each worker,
  so one job per core, as the local executor with ``OMP_NUM_THREADS=1``, and the numbers are identical to it.
* **Device.** Ray narrows ``CUDA_VISIBLE_DEVICES`` to the GPUs it gave the task; the job trains on the first of
  them. A task given no GPU trains on the CPU even on a GPU node (Ray leaves ``CUDA_VISIBLE_DEVICES`` alone for
  such tasks, so ``cuda`` would land on a GPU someone else reserved). A task given a GPU on a machine where CUDA is
  unavailable (logical GPUs: ``ray.init(num_gpus=1)`` on a laptop) falls back to the CPU.
* **Worker reuse.** Ray's defaults are kept: a GPU task gets a fresh worker process (``max_calls=1``), a CPU task
  reuses one (``max_calls=0``). A reused CUDA process keeps the first device it initialized and the memory its
  caching allocator holds, so reuse would put a later job on a GPU Ray gave to another; the cost is one process
  start (import torch, CUDA context, dataset load) per GPU job, measured in ``benchmarks/ray_overhead.py``.
* **Failures.** A Python exception inside a job is already a failed :class:`~gibench.running.runner.JobReport` from
  ``run_job``, so it is not retried (``retry_exceptions=False``: training is deterministic). A worker process that
  dies (SIGKILL, the OOM killer) or a node that disappears costs only its job, which Ray retries once
  (``max_retries=1``); the retry finds the dead worker's claim released by the OS. A job whose worker died on both
  attempts is reported as failed but not recorded as failed in the store, so the next run tries it again.
* **Shared store.** The runs directory must be the same path on a filesystem every node mounts (NFS, Lustre, ...).
  The driver writes a marker file with a random token into it and, before any job starts, runs a probe task on
  every alive node that reads it back; every job task checks it again (nodes that join later). A node that cannot
  see it is a :class:`~gibench.core.errors.ConfigError` naming the node and the path.
* **Progress.** Workers forward ``job_started``, ``job_step`` (at most every 0.2 s, and the last step) and
  ``job_phase`` through a ``ray.util.queue.Queue``; the driver's loop drains it and calls the real observer in the
  driver's thread. ``job_finished`` is called by the driver when the task's report arrives, once per job. A second
  ``job_started`` of one job (its retry after a dead worker) reaches the observer as a ``job_phase``.
* **Busy jobs.** When another live process holds a job's claim (a second ``gibench run`` on the same store),
  ``run_job`` answers ``busy``; the driver submits the job again every ``options.claim_poll_s`` until it runs or
  turns out cached, and the observer sees what the local executor shows: the first ``busy`` report, then the run.
* **Resume.** A driver killed and restarted resubmits every job: the finished ones are cached in the store, and the
  tasks of the dead driver died with it (Ray ends a driver's tasks when it exits), releasing their claims. A claim
  held by a node that vanished is taken over once its heartbeat is ``options.claim_timeout_s`` old.

Ray is optional: importing gibench never imports Ray; :func:`run_jobs` imports it and, when it is missing, raises a
:class:`~gibench.core.errors.ConfigError` that says ``pip install 'gibench[ray]'``.
"""

from __future__ import annotations

__all__ = [
    "ForwardingObserver", "INSTALL_HINT", "MARKER_PREFIX", "Marker", "POLL_INTERVAL_S", "STEP_EVENT_INTERVAL_S",
    "check_marker", "check_nodes_see_runs_dir", "import_ray", "ray_session", "resolve_gpus_per_job", "run_jobs",
    "task_device", "visibility_marker",
]

import dataclasses
import math
import os
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gibench.core.errors import ConfigError, GibenchError
from gibench.running.job_runner import JobReport
from gibench.running.options import RunObserver, RunOptions
from gibench.running.run_job import run_job
from gibench.suites.jobs import Job

INSTALL_HINT = "pip install 'gibench[ray]'"
MARKER_PREFIX = ".ray-visible-"
STEP_EVENT_INTERVAL_S = 0.2
POLL_INTERVAL_S = 0.1


def run_jobs(
    jobs: Sequence[Job],
    runs_dir: Path,
    options: RunOptions,
    observer: RunObserver | None = None,
    *,
    address: str | None = None,
    gpus_per_job: float | None = None,
    cpus_per_job: float = 1.0,
) -> list[JobReport]:
    """Run every job as a Ray task writing into ``runs_dir``; the reports come back in the order of ``jobs``."""
    ray = import_ray()
    runs_dir = Path(runs_dir).resolve()  # workers on other nodes start elsewhere: no relative paths
    if options.data_root is not None:
        options = dataclasses.replace(options, data_root=Path(options.data_root).resolve())
    with ray_session(ray, address):
        gpus = resolve_gpus_per_job(gpus_per_job, _node_gpus(ray), options.device)
        with visibility_marker(runs_dir) as marker:
            check_nodes_see_runs_dir(ray, marker)
            return _SuiteDriver(ray, list(jobs), runs_dir, options, observer or RunObserver(), marker,
                                gpus, cpus_per_job).run()


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed ({exc}). Install it with "
                          f"`{INSTALL_HINT}`, or run with `--executor local`.") from None
    return ray


# -- connecting ----------------------------------------------------------------------------------------------------


@contextmanager
def ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Connect (see the module docstring); disconnect afterwards only from a session opened here."""
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        _check_reachable(target)
    try:  # without an address Ray reads RAY_ADDRESS, then a `ray start` cluster on this machine, else starts one
        ray.init(address=address or None, include_dashboard=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {target!r}" if target else "a local Ray cluster"
        raise ConfigError(f"could not connect to {where}: {exc}. Start one with `ray start --head` and pass its "
                          "address (`--address HOST:PORT`, or set RAY_ADDRESS), or omit both to start a local "
                          "cluster.") from None
    try:
        yield
    finally:
        ray.shutdown()  # stops a cluster started here; only disconnects from one given by address


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nothing listens at (ray.init would retry for minutes); other forms go to Ray."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"could not connect to the Ray cluster at {address!r}: nothing answers there ({exc}). "
                          "Start one with `ray start --head` and pass the address it prints (`--address HOST:PORT`, "
                          "or set RAY_ADDRESS), or omit both to start a local cluster.") from None


def _node_gpus(ray: Any) -> list[float]:
    """The GPU count of every alive node."""
    return [float(node.get("Resources", {}).get("GPU", 0)) for node in ray.nodes() if node.get("Alive")]


# -- resources and devices -----------------------------------------------------------------------------------------


def resolve_gpus_per_job(requested: float | None, node_gpus: Sequence[float], device: str | None) -> float:
    """GPUs per job: the rule in the module docstring, and errors for requests Ray could never schedule."""
    most = max(node_gpus, default=0.0)
    if requested is None:
        if most == 0 and device not in (None, "auto", "cpu"):
            raise ConfigError(f"--device {device}, but the Ray cluster has no GPUs. Add GPU nodes, or pass "
                              "--device cpu.")
        return 0.0 if device == "cpu" or most == 0 else 1.0
    requested = float(requested)
    if not math.isfinite(requested) or requested < 0:
        raise ConfigError(f"--gpus-per-job must be a number >= 0, got {requested:g}.")
    if requested > 1 and not requested.is_integer():
        raise ConfigError(f"--gpus-per-job {requested:g}: Ray accepts a fraction below 1 (several jobs share a GPU) "
                          "or a whole number of GPUs, not a fraction above 1.")
    if requested == 0 and device not in (None, "auto", "cpu"):
        raise ConfigError(f"--device {device} with --gpus-per-job 0: Ray would give the jobs no GPU. Pass "
                          "--gpus-per-job 1 (or a fraction such as 0.25), or --device cpu.")
    if requested > 0 and device == "cpu":
        raise ConfigError(f"--gpus-per-job {requested:g} reserves GPUs that --device cpu would not use; pass "
                          "--gpus-per-job 0 or drop --device cpu.")
    if requested > most:
        have = f"the largest node has {most:g}" if most else "the cluster has no GPUs"
        raise ConfigError(f"--gpus-per-job {requested:g} can never be scheduled: {have}. Lower --gpus-per-job"
                          + ("" if most else " to 0 (CPU-only training)") + ".")
    return requested


def task_device(requested: str | None, gpu_ids: Sequence[Any], cuda_available: bool,
                visible_devices: str | None) -> str:
    """The torch device for a task Ray gave ``gpu_ids`` (see the module docstring).

    An explicit ``cuda`` on a worker without CUDA stays ``cuda``, so that ``run_job`` fails that job saying so.
    """
    if requested == "cpu" or not gpu_ids:
        return "cpu"
    if not cuda_available:
        return "cpu" if requested in (None, "auto") else requested
    visible = [v.strip() for v in visible_devices.split(",")] if visible_devices else []
    first = str(gpu_ids[0])
    index = visible.index(first) if first in visible else (0 if visible else int(first))
    return f"cuda:{index}"


# -- the shared runs directory -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Marker:
    """A file in the runs directory whose content only this driver knows."""

    path: Path
    token: str


@contextmanager
def visibility_marker(runs_dir: Path) -> Iterator[Marker]:
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        marker = Marker(runs_dir / f"{MARKER_PREFIX}{secrets.token_hex(8)}", secrets.token_hex(16))
        marker.path.write_text(marker.token)
    except OSError as exc:
        raise ConfigError(f"cannot write into the runs directory {runs_dir}: {exc}. Pass a writable --runs-dir.") \
            from None
    try:
        yield marker
    finally:
        marker.path.unlink(missing_ok=True)


def check_marker(marker: Marker) -> None:
    """Raise if this process does not see the driver's marker (run on a worker)."""
    try:
        seen = marker.path.read_text()
    except OSError:
        seen = None
    if seen != marker.token:
        raise ConfigError(
            f"the runs directory {marker.path.parent} is not the driver's on Ray node {socket.gethostname()}: "
            f"{'a different' if seen is not None else 'no'} file {marker.path.name} is there. Every node must "
            "mount the runs directory at the same path on a shared filesystem (NFS, Lustre, ...); pass a --runs-dir "
            "on it.")


def _probe(marker: Marker) -> str | None:
    try:
        check_marker(marker)
    except ConfigError as exc:
        return str(exc)
    return None


def check_nodes_see_runs_dir(ray: Any, marker: Marker) -> None:
    """Run the marker check once on every alive node, before any job starts."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=1)(_probe)  # a worker that dies is retried, as a job would be
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(marker) for node in nodes]
    problems = [problem for problem in ray.get(refs) if problem]
    if problems:
        raise ConfigError("\n".join(problems))


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


def _job_task(job: Job, runs_dir: Path, options: RunOptions, marker: Marker, events: Any, number: int,
              total: int, submission: int) -> JobReport:
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


class _SuiteDriver:
    """Submits one task per job, relays the workers' events to the observer, collects the reports in order.

    A job another worker holds (``run_job`` answers ``busy``) is resubmitted every ``options.claim_poll_s``, and
    the observer sees it as the local executor shows it: the first ``busy`` report, then nothing until the job runs.
    """

    def __init__(self, ray: Any, jobs: list[Job], runs_dir: Path, options: RunOptions, observer: RunObserver,
                 marker: Marker, gpus: float, cpus: float) -> None:
        self.ray, self.jobs, self.runs_dir, self.options = ray, jobs, runs_dir, options
        self.observer, self.marker = observer, marker
        # max_calls left to Ray's default (1 for GPU tasks, 0 = reuse for CPU tasks): see the module docstring.
        self.task = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=1, retry_exceptions=False)(_job_task)
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
                for ref in ready:
                    index = self.pending.pop(ref)
                    report = self._report(ref, index)
                    if report.state == "busy":
                        self._busy(index, report)
                    else:
                        reports[index] = report
                        self._announce(index, even_unstarted=True)
                        self.observer.job_finished(report)
                if not self.pending and self.due:
                    time.sleep(POLL_INTERVAL_S)
        finally:
            for ref in self.pending:  # interrupted: end the workers now, so that their claims are released
                self.ray.cancel(ref, force=True)
            self.events.shutdown()
        return reports  # type: ignore[return-value]

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
