"""The options, events and records of a run, below the code that runs it.

:mod:`gibench.running.runner` (the suite), :mod:`gibench.running.run_job` (one job), :mod:`gibench.running.preflight`,
:mod:`gibench.running.ray_executor` and :mod:`gibench.running.progress` all build on these; keeping them here, rather
than in the runner, is what lets the runner import the preflight and the executors without those importing the runner
back. Everything here is re-exported by :mod:`gibench.running.runner`, where the documentation of the whole interface
lives.

Every option of ``gibench run`` is validated here, once: the per-job options by :class:`RunOptions` (on construction),
the executor and its options by :func:`check_executor_options`. The command line and
:func:`gibench.running.runner.run_suite` both call them, so a bad value gives the same message from either side.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HEARTBEAT_S", "EXECUTORS", "ISOLATIONS", "ISOLATION_ENV", "RAY_OPTIONS", "RunObserver", "RunOptions",
    "RunSummary",
    "check_device", "check_executor_options", "check_gpus_per_job", "load_bundle", "load_job_bundle", "resolve_device",
]

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gibench.api import registry
from gibench.api.plugin import DatasetBundle
from gibench.core.errors import ConfigError
from gibench.suites.suite import PluginSpec, Suite

if TYPE_CHECKING:
    from gibench.running.job_runner import JobReport
    from gibench.suites.jobs import Job

#: The heartbeat of a claim when ``claim_timeout_s`` allows it (at most a quarter of the timeout, see RunOptions).
DEFAULT_HEARTBEAT_S = 10.0

#: How the local executor runs a job: in a supervised worker process, or in the run's own process.
ISOLATIONS = ("process", "none")
#: The environment variable that chooses ``isolation`` when the option is left at None (the test suite sets "none").
ISOLATION_ENV = "GIBENCH_ISOLATION"

#: The executors of a run: ``local`` (the jobs one after another in this process) and ``ray`` (one Ray task per job).
EXECUTORS = ("local", "ray")

#: The options of the Ray executor: the keyword arguments of :func:`gibench.running.ray_executor.run_jobs`.
#: ``address`` and ``gpus_per_job`` are ``gibench run``'s ``--address`` and ``--gpus-per-job``; ``cpus_per_job``
#: (default 1) has no flag.
RAY_OPTIONS = ("address", "gpus_per_job", "cpus_per_job")


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run that its jobs read (see :mod:`gibench.running.runner`).

    The executor and its options (``--executor``, ``--address``, ``--gpus-per-job``) are not fields: they concern the
    process that dispatches the jobs, not the jobs, which receive these options (``run_job``, pickled to every Ray
    task); :func:`check_executor_options` validates them, and ``run_suite`` takes them as its own arguments.

    ``isolation`` (``--isolation``): ``"process"`` runs each job of the local executor in a worker process that the
    run supervises (:mod:`gibench.running.isolation`), ``"none"`` in the run's own process (for a debugger in a
    plugin); None is ``$GIBENCH_ISOLATION`` when set, else ``"process"``. ``job_timeout_s`` and ``eval_timeout_s``
    (``--job-timeout``, ``--eval-timeout``; None: the suite's ``limits``, else no limit) bound a job's time and one
    evaluation's, enforced by the supervising process (so only with process isolation).

    ``heartbeat_s`` left at None becomes ``min(10, claim_timeout_s / 4)``: a live owner refreshes its claim four
    times within the timeout, so ``claim_timeout_s=5`` alone is a valid run (heartbeat 1.25 s), as ``gibench run
    --claim-timeout 5`` is. A value given is taken as given and must be shorter than ``claim_timeout_s``.
    """

    data_root: Path | None = None
    download: bool = False
    device: str | None = None
    retry_failed: bool = False
    eval_batch_size: int = 256
    claim_timeout_s: float = 120.0
    heartbeat_s: float | None = None
    claim_poll_s: float = 2.0
    preflight: bool = True
    isolation: str | None = None
    job_timeout_s: float | None = None
    eval_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.data_root is not None and not isinstance(self.data_root, Path):
            if not isinstance(self.data_root, (str, os.PathLike)):
                raise ConfigError(f"--data-root must be a folder path, got {_shown(self.data_root)}.")
            object.__setattr__(self, "data_root", Path(self.data_root))
        _positive_int(self.eval_batch_size, "--eval-batch-size", "the number of images per evaluation batch, e.g. 256")
        # claim_timeout_s is `gibench run --claim-timeout`, so its message names the flag; the other two have none.
        seconds = {
            "claim_timeout_s": ("--claim-timeout", "how long another host's claim on a job may go without a heartbeat "
                                "before it is taken over; default 120"),
            "heartbeat_s": ("RunOptions.heartbeat_s", "how often a worker refreshes its claim; default "
                            "min(10, claim_timeout_s / 4)"),
            "claim_poll_s": ("RunOptions.claim_poll_s", "how often the local executor looks again at a job another "
                             "worker holds; default 2"),
        }
        for name, (shown, meaning) in seconds.items():
            value = getattr(self, name)
            if name == "heartbeat_s" and value is None:
                continue
            if not _is_number(value) or not value > 0:
                raise ConfigError(f"{shown} must be a positive number of seconds ({meaning}), got {_shown(value)}.")
        if self.isolation not in ISOLATIONS + (None,):
            raise ConfigError(f"--isolation must be one of {', '.join(ISOLATIONS)}, got {_shown(self.isolation)} "
                              "(process: each job in a supervised worker process; none: in the run's own process).")
        for name, flag, what in (("job_timeout_s", "--job-timeout", "a job"),
                                 ("eval_timeout_s", "--eval-timeout", "one evaluation")):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{flag} must be a positive number of seconds (how long {what} may run before its "
                                  f"process is stopped and it is recorded as timed out), got {_shown(value)}.")
        if self.claim_heartbeat_s >= self.claim_timeout_s:
            raise ConfigError(f"RunOptions.heartbeat_s ({self.heartbeat_s}) must be shorter than claim_timeout_s "
                              f"({self.claim_timeout_s}), or a live owner's claim would look dead.")
        check_device(self.device)

    @property
    def isolation_mode(self) -> str:
        """``isolation`` resolved: as given, else ``$GIBENCH_ISOLATION`` (when it names a mode), else ``"process"``."""
        if self.isolation is not None:
            return self.isolation
        env = os.environ.get(ISOLATION_ENV, "").strip()
        return env if env in ISOLATIONS else "process"

    @property
    def claim_heartbeat_s(self) -> float:
        """The heartbeat a worker's claims use: ``heartbeat_s`` when given, else ``min(10, claim_timeout_s / 4)``
        (computed, not stored, so ``dataclasses.replace(options, claim_timeout_s=...)`` derives it again)."""
        if self.heartbeat_s is not None:
            return self.heartbeat_s
        return min(DEFAULT_HEARTBEAT_S, self.claim_timeout_s / 4)


def _positive_int(value: Any, name: str, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer ({meaning}), got {value!r}.")


def _is_number(value: Any) -> bool:
    """An int or a float, not a bool (``True`` is an int to Python, never a count of seconds or GPUs here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value as a message shows it: numbers as ``gibench run`` would take them (``-1``, ``0.25``, ``nan``), so the
    library's ``-1`` and the command line's ``-1.0`` read alike; anything else as its repr."""
    return f"{value:g}" if _is_number(value) else repr(value)


def check_executor_options(executor: str, device: str | None, *, address: str | None = None,
                           gpus_per_job: float | None = None,
                           executor_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate the executor of a run and its options; return the keyword arguments of the Ray executor's ``run_jobs``
    (empty for ``local``).

    ``address`` and ``gpus_per_job`` are ``gibench run``'s ``--address`` and ``--gpus-per-job``; ``executor_options``
    holds the same names (and ``cpus_per_job``) as a mapping, the form ``run_suite`` took them in before it took the
    two as arguments, kept so that its callers go on working; a name given both ways is an error rather than one
    silently winning. ``device`` is the run's ``RunOptions.device``: a GPU count that contradicts it is an error
    here, before Ray starts. What depends on the cluster (a GPU count no node has) is checked once connected, by
    :func:`gibench.running.ray_cluster.resolve_gpus_per_job`.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {_shown(executor)} (local: the "
                          "jobs one after another in this process; ray: one Ray task per job).")
    given = {name: value for name, value in (("address", address), ("gpus_per_job", gpus_per_job))
             if value is not None}
    for name, value in dict(executor_options or {}).items():
        if name not in RAY_OPTIONS:
            raise ConfigError(f"executor_options: {name!r} is not an option of the Ray executor; it takes "
                              f"{', '.join(RAY_OPTIONS)}.")
        if name in given and value is not None:
            raise ConfigError(f"{name} is given twice, as an argument of run_suite and in executor_options; give it "
                              "once.")
        if value is not None:
            given[name] = value
    if executor == "local" and given:
        flags = {"address": "--address ", "gpus_per_job": "--gpus-per-job "}
        shown = ", ".join(f"{flags.get(name, name + '=')}{_shown(value)}" for name, value in given.items())
        raise ConfigError(f"--address and --gpus-per-job apply to --executor ray only, got {shown} with --executor "
                          "local. Pass --executor ray, or leave them out.")
    if "address" in given and not isinstance(given["address"], str):
        raise ConfigError("--address must be a Ray cluster address such as HOST:PORT, got "
                          f"{_shown(given['address'])}.")
    if "gpus_per_job" in given:
        given["gpus_per_job"] = check_gpus_per_job(given["gpus_per_job"], device)
    if "cpus_per_job" in given and not (_is_number(given["cpus_per_job"]) and math.isfinite(given["cpus_per_job"])
                                        and given["cpus_per_job"] >= 0):
        raise ConfigError(f"executor_options: cpus_per_job must be a number >= 0 (CPU cores Ray reserves per job), "
                          f"got {_shown(given['cpus_per_job'])}.")
    return given


def check_gpus_per_job(requested: Any, device: str | None) -> float:
    """``requested`` (``--gpus-per-job``) as a float, or a ConfigError for a value Ray could never schedule whatever
    the cluster: not a finite number >= 0, a fraction above 1 (Ray shares a GPU among jobs, never a job across part
    of a second GPU), or a count that contradicts ``device`` (``--device cuda`` with 0 GPUs, ``--device cpu`` with
    some)."""
    if not _is_number(requested) or not math.isfinite(requested) or requested < 0:
        raise ConfigError(f"--gpus-per-job must be 0 (CPU tasks) or a positive number (e.g. 0.25 or 1), got "
                          f"{_shown(requested)}.")
    requested = float(requested)
    if requested > 1 and not requested.is_integer():
        raise ConfigError(f"--gpus-per-job {requested:g}: Ray accepts a fraction below 1 (several jobs share a GPU) "
                          "or a whole number of GPUs, not a fraction above 1.")
    if requested == 0 and device not in (None, "auto", "cpu"):
        raise ConfigError(f"--device {device} with --gpus-per-job 0: Ray would give the jobs no GPU. Pass "
                          "--gpus-per-job 1 (or a fraction such as 0.25), or --device cpu.")
    if requested > 0 and device == "cpu":
        raise ConfigError(f"--gpus-per-job {requested:g} reserves GPUs that --device cpu would not use; pass "
                          "--gpus-per-job 0 or drop --device cpu.")
    return requested


def check_device(device: str | None) -> None:
    """Raise a ConfigError unless ``device`` is a device name gibench accepts (checked without touching CUDA)."""
    if device in (None, "auto", "cpu", "cuda"):
        return
    if not (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"--device must be 'cpu', 'cuda' or 'cuda:N' (or 'auto'), got {device!r}.")


def resolve_device(device: str | None) -> torch.device:
    """The torch device of ``device``; a ConfigError naming the fix when it does not exist on this machine."""
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


_DATASETS: dict[tuple[str, bool, str, str], DatasetBundle] = {}


def load_bundle(spec: PluginSpec, options: RunOptions) -> DatasetBundle:
    """The dataset of ``spec``, loaded once per process (per data root, download flag and options)."""
    from gibench.data import default_data_root

    root = options.data_root or default_data_root()
    key = (str(root), options.download, spec.name, spec.config_json)
    if key not in _DATASETS:
        dataset = registry.datasets.create(spec.name, **spec.params)
        _DATASETS[key] = dataset.load(root, download=options.download)
    return _DATASETS[key]


_HELD_OUT: dict[tuple, DatasetBundle] = {}


def load_job_bundle(job: Job, options: RunOptions) -> DatasetBundle:
    """The data a job trains and is evaluated on: its dataset (:func:`load_bundle`) with the job's validation split
    held out (:class:`gibench.data.validation.ValidationSplit`), once per process."""
    bundle = load_bundle(job.dataset, options)
    if job.validation is None:
        return bundle
    key = (id(bundle), job.validation)
    if key not in _HELD_OUT:
        _HELD_OUT[key] = job.validation.apply(bundle)
    return _HELD_OUT[key]


class RunObserver:
    """Receives the events of a run; every method is a no-op here (subclass and override what you need)."""

    def suite_started(self, suite: Suite, jobs: list[Job]) -> None: ...
    def jobs_added(self, jobs: list[Job]) -> None: ...  # more jobs joined the run (a selected unit's scored jobs)
    def job_started(self, job: Job, number: int, total: int) -> None: ...
    def job_step(self, job: Job, done: int, total: int) -> None: ...
    def job_phase(self, job: Job, phase: str) -> None: ...
    def job_finished(self, report: JobReport) -> None: ...
    def suite_finished(self, summary: RunSummary) -> None: ...
    def selection_made(self, selection: Any) -> None: ...  # a gibench.running.selection.Selection: units just decided
    def warning(self, message: str) -> None: ...


@dataclass
class RunSummary:
    """What :func:`gibench.running.runner.run_suite` returns: one :class:`JobReport` per job of the suite, in its order.

    ``warnings`` are the run's warnings (damaged files moved aside, capability mismatches); ``dry_run`` marks the
    reports of a dry run (states planned / cached / failed / invalid, nothing written). ``ok`` is True when no
    training and no evaluation failed; ``failures()`` lists them, one line each; ``count(state)`` counts the jobs in a
    state (trained, cached, failed, busy, planned, invalid); ``selection`` is the selection of a suite that selects.
    """

    runs_dir: Path
    suite: Suite
    jobs: list[JobReport]
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    #: a suite with ``select: {rule: max_drop}``: the selection the run made after its sweep (a dry run: the one the
    #: store gives now), a :class:`gibench.running.selection.Selection`; None for any other suite
    selection: Any = None

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
