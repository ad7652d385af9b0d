"""The facade's names whose modules are heavy (the runner, timm), imported on first use so that ``import gibench``
stays cheap: the module attribute hook that resolves the lazily exported classes (the facade's ``_LAZY`` table), and
the functions that run a suite and collect its results. ``gibench`` re-exports the functions; import them from there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas

    from gibench.running.runner import RunObserver, RunSummary
    from gibench.suites.suite import Suite

__all__ = ["collect_results", "lazy_attributes", "run_suite"]


def lazy_attributes(
    namespace: dict[str, Any], table: Mapping[str, str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` (PEP 562) for the names of ``table`` (name → the module defining
    it): each is imported on first access and then kept in ``namespace``, the module's globals."""

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__


def run_suite(
    suite: Suite | str | Path,
    runs_dir: str | Path,
    *,
    device: str | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    retry_failed: bool = False,
    eval_batch_size: int = 256,
    preflight: bool = True,
    claim_timeout_s: float = 120.0,
    heartbeat_s: float | None = None,
    claim_poll_s: float = 2.0,
    isolation: Literal["process", "none"] | None = None,
    job_timeout_s: float | None = None,
    eval_timeout_s: float | None = None,
    executor: Literal["local", "ray"] = "local",
    address: str | None = None,
    gpus_per_job: float | None = None,
    executor_options: Mapping[str, Any] | None = None,
    observer: RunObserver | None = None,
    dry_run: bool = False,
) -> RunSummary:
    """Preflight, then train and evaluate every job of ``suite`` into ``runs_dir`` (what ``gibench run`` does).

    Finished jobs and evaluations in ``runs_dir`` are reused, so a rerun resumes; any number of processes may share
    one runs directory (each job is claimed before it trains).

    Args:
        suite: a :class:`Suite` from :func:`load_suite`, or a shipped suite's name or a YAML path.
        runs_dir: the run store (created if missing).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or None/``"auto"`` (CUDA when available).
        data_root: where datasets live on disk; default: the user cache folder.
        download: allow downloading missing datasets.
        retry_failed: train again jobs whose training failed before (otherwise their failure is kept).
        eval_batch_size: images per evaluation batch (reduced step by step when an evaluation runs out of memory).
        preflight: check data, backbones, plugins, device and runs directory before anything trains.
        claim_timeout_s: a job claimed by a worker on another host without a heartbeat for this long is taken over.
        heartbeat_s: how often a worker refreshes its claim (must be shorter than ``claim_timeout_s``; default
            ``min(10, claim_timeout_s / 4)``).
        claim_poll_s: how often the local executor looks again at jobs that other workers hold.
        isolation: ``"process"`` runs each job of the local executor in a supervised worker process (a job that
            exits, segfaults or hangs fails alone), ``"none"`` in this process; None: ``$GIBENCH_ISOLATION``, else
            ``"process"``. Under ``"process"`` call this from a script only under ``if __name__ == "__main__":``.
        job_timeout_s: stop a job (and record it as timed out) after this many seconds; None: no limit.
        eval_timeout_s: the same for each evaluation; None: no limit.
        executor: ``"local"`` (this process, in the suite's order) or ``"ray"`` (one task per job).
        address: the Ray cluster to join (``--address``: ``"auto"``, ``"ray://host:10001"``); Ray only.
        gpus_per_job: GPUs each Ray task reserves (``--gpus-per-job``; a fraction packs several jobs on one GPU);
            Ray only.
        executor_options: further options of the Ray executor by name (the same two are accepted here too).
        observer: receives progress events (:class:`RunObserver`); default: none.
        dry_run: run the preflight and report each job's state (planned, cached, failed, invalid) writing nothing.

    Returns:
        The :class:`RunSummary`: one ``gibench.running.runner.JobReport`` per job (state, reason, evaluations), the
        warnings, and ``ok`` / ``failures()``.

    Raises:
        PreflightError: listing every problem the preflight found; nothing was trained. ConfigError: a bad option.

    Example:
        >>> summary = run_suite("smoke", "runs", device="cpu")  # doctest: +SKIP
        >>> summary.ok, summary.count("trained")  # doctest: +SKIP
        (True, 3)
    """
    from gibench.running.runner import RunOptions
    from gibench.running.runner import run_suite as _run
    from gibench.suites.suite import load_suite

    if not hasattr(suite, "datasets"):
        suite = load_suite(suite)
    options = RunOptions(data_root=Path(data_root) if data_root is not None else None, download=download,
                         device=device, retry_failed=retry_failed, eval_batch_size=eval_batch_size,
                         claim_timeout_s=claim_timeout_s, heartbeat_s=heartbeat_s, claim_poll_s=claim_poll_s,
                         preflight=preflight, isolation=isolation, job_timeout_s=job_timeout_s,
                         eval_timeout_s=eval_timeout_s)
    return _run(suite, Path(runs_dir), options, observer=observer, executor=executor, address=address,
                gpus_per_job=gpus_per_job, executor_options=executor_options, dry_run=dry_run)


def collect_results(runs_dir: str | Path) -> pandas.DataFrame:
    """The long results table of a runs directory: one row per job × evaluator × metric, with provenance columns.

    Example:
        >>> collect_results("runs").groupby(["regularizer", "metric"])["value"].mean()  # doctest: +SKIP
    """
    from gibench.results.tables import collect_results as _collect
    return _collect(Path(runs_dir))
