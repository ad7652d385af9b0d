"""``gibench run --workers N``: N worker processes on one machine share a suite through its runs directory.

The command itself is worker 1 (it draws the progress display and prints the report); once its preflight has passed
(so every dataset is on disk: with ``--download`` it has fetched them), it starts workers 2..N as copies of itself
(``python -m gibench run`` with the same suite and options, without ``--workers`` and ``--download``: two processes
must never fetch into one folder), each writing what it prints to ``<runs>/logs/worker-<i>.log``. They need no
coordination beyond what every run has: a job claims its folder before it trains, a worker that meets a job another
holds looks at it again when its other jobs are done, and in a suite that selects, a worker with nothing else to
start selects the units whose sweep is stored and scores them. So each job trains once, and the command returns
when its own loop and every other worker are done.

Choices:

* **Threads.** Unless the environment sets ``OMP_NUM_THREADS``, each worker gets ``max(1, cores // N)`` threads: the
  small models of the CPU suites scale poorly over threads, and N one-thread workers on N cores is how the reference
  runs are made (docs/benchmarks.md).
* **GPUs.** Unless the environment sets ``CUDA_VISIBLE_DEVICES``, on a machine with G > 1 visible GPUs and the device
  ``cuda`` or the default, worker i sees GPU ``(i − 1) mod G`` alone, so N = G puts one worker on each GPU (a device
  such as ``cuda:1`` names one GPU for every worker, and is left as it is).
* **Stopping.** Ctrl-C, or an error in the command, stops the other workers (an interrupt, then a kill after 10 s);
  finished jobs are kept, and a rerun resumes from them. A worker that ends with a status other than 0 (done) or 1
  (some job failed: the command's own report lists it too) is named, with its log, and the command exits 1.
"""

from __future__ import annotations

__all__ = [
    "WORKERS_LOG_DIR", "StartingWorkers", "Workers", "check_workers", "other_workers", "worker_argv",
    "worker_environment",
]

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gibench.core.errors import ConfigError

#: Where the other workers' output goes, under the runs directory.
WORKERS_LOG_DIR = "logs"
_STOP_GRACE_S = 10.0


def check_workers(args: argparse.Namespace) -> None:
    """A ConfigError when ``--workers`` is not a positive count or does not apply to this command."""
    if args.workers < 1:
        raise ConfigError(f"--workers must be a whole number of at least 1, got {args.workers}. Fix: pass e.g. "
                          "--workers 2 (one worker per CPU core or per GPU).")
    if args.workers == 1:
        return
    if args.executor != "local":
        raise ConfigError(f"--workers starts local worker processes; with --executor {args.executor} the executor "
                          "schedules the jobs itself. Fix: drop --workers.")
    for flag, given in (("--dry-run", args.dry_run), ("--estimate", args.estimate), ("--check", args.check)):
        if given:
            raise ConfigError(f"--workers applies to a run that trains; {flag} trains nothing. Fix: drop --workers "
                              f"or {flag}.")


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``gibench`` arguments of another worker of this run: the same suite, runs directory and options, without
    ``--workers`` and ``--download`` (it starts when the datasets are on disk)."""
    argv = ["run", "--suite", str(args.suite), "--runs-dir", str(args.runs_dir),
            "--eval-batch-size", str(args.eval_batch_size), "--claim-timeout", repr(args.claim_timeout_s)]
    for flag, value in (("--data-root", args.data_root), ("--device", args.device), ("--isolation", args.isolation),
                        ("--job-timeout", args.job_timeout_s), ("--eval-timeout", args.eval_timeout_s)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--retry-failed"] if args.retry_failed else [])


def worker_environment(worker: int, count: int, environ: Mapping[str, str], *, cores: int, gpus: int) -> dict[str, str]:
    """The environment of worker ``worker`` (1-based) of ``count``: ``environ`` with its thread count and, on a
    machine with several GPUs, its GPU (see the module docstring); what ``environ`` sets already wins."""
    env = dict(environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // count)))
    if gpus > 1:
        env.setdefault("CUDA_VISIBLE_DEVICES", str((worker - 1) % gpus))
    return env


@dataclass
class Workers:
    """The other workers of a run: the command they run, their environments and logs (worker 2 first), and, once
    :meth:`start` has run, their processes."""

    command: list[str]
    environments: list[dict[str, str]]
    logs: list[Path]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> None:
        """Start the workers (once; a second call does nothing)."""
        if self.processes:
            return
        for env, log in zip(self.environments, self.logs):
            with open(log, "ab") as out:
                self.processes.append(interruptible_popen(self.command, stdin=subprocess.DEVNULL, stdout=out,
                                                          stderr=subprocess.STDOUT, env=env))

    def failed(self) -> list[str]:
        """One line per worker that ended with a status other than 0 or 1."""
        return [f"worker {i} exited with status {p.returncode} (its log: {log})"
                for i, (p, log) in enumerate(zip(self.processes, self.logs), 2) if p.returncode not in (0, 1)]


class StartingWorkers:
    """A run observer that forwards every event to ``display`` and starts ``workers`` first, at the first
    ``suite_started``: the run has passed its preflight then, so every dataset is on disk. ``started(workers)`` is
    called once they run (to say where their output goes)."""

    def __init__(self, display: Any, workers: Workers, started: Callable[[Workers], None]) -> None:
        self.display, self.workers, self.started = display, workers, started

    def suite_started(self, suite: Any, jobs: Any) -> None:
        if not self.workers.processes:
            self.workers.start()
            self.started(self.workers)
        self.display.suite_started(suite, jobs)

    def __getattr__(self, name: str) -> Any:  # every other event goes to the display as it is
        return getattr(self.display, name)


@contextlib.contextmanager
def other_workers(args: argparse.Namespace) -> Iterator[Workers]:
    """Give this process worker 1's threads and GPU and yield workers 2..``args.workers``, to be started with
    :meth:`Workers.start` once the preflight has passed; on leaving, wait for every worker (stop them first when
    leaving on an error or an interrupt) and restore this process's settings."""
    import torch

    count = args.workers
    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if args.device in (None, "cuda") else 0  # "cuda:1" names its GPU itself
    folder = Path(args.runs_dir) / WORKERS_LOG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    workers = Workers([sys.executable, "-m", "gibench", *worker_argv(args)],
                      [worker_environment(i, count, os.environ, cores=cores, gpus=gpus) for i in range(2, count + 1)],
                      [folder / f"worker-{i}.log" for i in range(2, count + 1)])
    own = worker_environment(1, count, os.environ, cores=cores, gpus=gpus)
    saved_environ = {key: os.environ.get(key) for key in own if os.environ.get(key) != own[key]}
    saved_threads = torch.get_num_threads()
    try:
        os.environ.update(own)  # for the supervised processes that run this worker's jobs
        if own["OMP_NUM_THREADS"].isdigit() and int(own["OMP_NUM_THREADS"]) > 0:  # for jobs run in this process
            torch.set_num_threads(int(own["OMP_NUM_THREADS"]))  # (--isolation none); a bad value is OpenMP's to judge
        yield workers
    except BaseException:
        _stop(workers.processes)
        raise
    finally:
        for process in workers.processes:
            process.wait()
        for key, value in saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def interruptible_popen(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` of a process that SIGINT interrupts even when this one ignores SIGINT: a command started
    in the background of a non-interactive shell (``nohup gibench run ... &``) ignores it, every child inherits that,
    and :func:`_stop`'s interrupt would then do nothing."""
    if os.name == "posix":
        kwargs.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(command, **kwargs)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(processes: list[subprocess.Popen]) -> None:
    """Interrupt the workers still running (each stops between steps and keeps what it finished); kill those that
    have not ended after the grace period."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    for process in running:
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
