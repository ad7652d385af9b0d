"""The options, events and records of a run, below the code that runs it.

:mod:`gibench.running.runner` (the suite), :mod:`gibench.running.run_job` (one job), :mod:`gibench.running.preflight`,
:mod:`gibench.running.ray_executor` and :mod:`gibench.running.progress` all build on these; keeping them here, rather
than in the runner, is what lets the runner import the preflight and the executors without those importing the runner
back. Everything here is re-exported by :mod:`gibench.running.runner`, where the documentation of the whole interface
lives.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HEARTBEAT_S", "RunObserver", "RunOptions", "RunSummary", "check_device", "load_bundle",
    "resolve_device",
]

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


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run (see :mod:`gibench.running.runner`).

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

    def __post_init__(self) -> None:
        if self.data_root is not None and not isinstance(self.data_root, Path):
            object.__setattr__(self, "data_root", Path(self.data_root))
        _positive_int(self.eval_batch_size, "--eval-batch-size", "the number of images per evaluation batch, e.g. 256")
        for name in ("claim_timeout_s", "heartbeat_s", "claim_poll_s"):
            value = getattr(self, name)
            if name == "heartbeat_s" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"RunOptions.{name} must be a positive number of seconds, got {value!r}.")
        if self.claim_heartbeat_s >= self.claim_timeout_s:
            raise ConfigError(f"RunOptions.heartbeat_s ({self.heartbeat_s}) must be shorter than claim_timeout_s "
                              f"({self.claim_timeout_s}), or a live owner's claim would look dead.")
        check_device(self.device)

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
    """What :func:`gibench.running.runner.run_suite` returns: one :class:`JobReport` per job of the suite, in its order.

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
