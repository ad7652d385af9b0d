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
  so one job per core, as the local executor with ``OMP_NUM_THREADS=1``, and the numbers are identical to it. A
  GPU count no cluster could schedule (negative, a fraction above 1, one that contradicts ``device``) is refused
  before Ray starts (:func:`gibench.running.options.check_gpus_per_job`, which ``run_suite`` and ``gibench run``
  share); one this cluster cannot (more than its largest node has) once connected.
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

The executor is three modules besides this one, each a part of the above: :mod:`gibench.running.ray_cluster`
(connecting, GPUs per job, a task's device), :mod:`gibench.running.ray_shared_store` (that every node sees the runs
directory) and :mod:`gibench.running.ray_dispatch` (the job task and the driver's loop). This module joins them in
:func:`run_jobs` and re-exports their public names, so ``from gibench.running.ray_executor import ...`` reaches all of
them.
"""

from __future__ import annotations

__all__ = [
    "ForwardingObserver", "INSTALL_HINT", "MARKER_PREFIX", "Marker", "POLL_INTERVAL_S", "STEP_EVENT_INTERVAL_S",
    "SuiteDriver", "check_marker", "check_nodes_see_runs_dir", "cluster_gpus", "import_ray", "job_task",
    "ray_session", "resolve_gpus_per_job", "run_jobs", "task_device", "visibility_marker",
]

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from gibench.running.job_runner import JobReport
from gibench.running.options import RunObserver, RunOptions
from gibench.running.ray_cluster import (
    INSTALL_HINT,
    cluster_gpus,
    import_ray,
    ray_session,
    resolve_gpus_per_job,
    task_device,
)
from gibench.running.ray_dispatch import (
    POLL_INTERVAL_S,
    STEP_EVENT_INTERVAL_S,
    ForwardingObserver,
    SuiteDriver,
    job_task,
)
from gibench.running.ray_shared_store import (
    MARKER_PREFIX,
    Marker,
    check_marker,
    check_nodes_see_runs_dir,
    visibility_marker,
)
from gibench.suites.jobs import Job


def run_jobs(
    jobs: Sequence[Job],
    runs_dir: Path,
    options: RunOptions,
    observer: RunObserver | None = None,
    *,
    address: str | None = None,
    gpus_per_job: float | None = None,
    cpus_per_job: float = 1.0,
    more: Callable[[], list[Job]] | None = None,
) -> list[JobReport]:
    """Run every job as a Ray task writing into ``runs_dir``; the reports come back in the order of ``jobs``, then
    of the jobs ``more()`` added (asked after every finished job: a suite that selects adds each decided unit's
    scored jobs, :class:`gibench.running.ray_dispatch.SuiteDriver`).

    ``address`` and ``gpus_per_job`` are ``gibench run``'s ``--address`` and ``--gpus-per-job`` (``run_suite``
    validates them with :func:`gibench.running.options.check_executor_options` before it calls this); ``cpus_per_job``
    is Ray's ``num_cpus`` per task (see **Resources** above).
    """
    ray = import_ray()
    runs_dir = Path(runs_dir).resolve()  # workers on other nodes start elsewhere: no relative paths
    if options.data_root is not None:
        options = dataclasses.replace(options, data_root=Path(options.data_root).resolve())
    with ray_session(ray, address):
        gpus = resolve_gpus_per_job(gpus_per_job, cluster_gpus(ray), options.device)
        with visibility_marker(runs_dir) as marker:
            check_nodes_see_runs_dir(ray, marker)
            return SuiteDriver(ray, list(jobs), runs_dir, options, observer or RunObserver(), marker,
                               gpus, cpus_per_job, more).run()
