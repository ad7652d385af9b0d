"""The runner's own overhead: many tiny jobs through the local executor, against the same jobs' training time alone.

    python benchmarks/runner_overhead.py [--jobs 24] [--epochs 1] [--device cpu] [--isolation none|process|both]

A suite of ``--jobs`` tiny jobs (the in-tree linear model on the bundled MNIST subset, ``erm``, one seed each, one
epoch of batches of 128, the ``accuracy`` evaluator) is timed three ways, all in this process with the data loaded
once:

* **training alone**: ``gibench.training.train.fit`` for each job, back to back (the work a job cannot avoid);
* **cold run**: ``run_suite`` into a fresh runs directory (preflight, manifest, claims, training, evaluation,
  checkpoint/log/status/result writes, events);
* **cached rerun**: ``run_suite`` again on the finished directory (claims, reading and validating every status and
  result, checkpoint size checks; nothing trained or evaluated).

The cold run's time is split into training (the loop's own clock in train_log.json), evaluation (the seconds each
result records), preflight (timed separately) and the rest (store I/O, claims, model building, bookkeeping).
With ``--isolation both`` (the default) the cold run is timed in this process (``none``) and with process isolation
(``process``: the jobs in a supervised worker process, :mod:`gibench.running.isolation`), and the start of one worker
(spawn, import torch and gibench) is timed on its own; the peak resident memory of this process and of its workers
(``getrusage``) is printed too, so that runs of different ``--jobs`` show whether it grows with the job count.
Prints a Markdown table. Process start-up (importing torch, timm) and the CLI's report and site build are not in
these figures; ``benchmarks/suite_wall_time.py`` times the CLI end to end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path

from gibench.api import registry
from gibench.running.isolation import WORKER_MAX_JOBS
from gibench.running.preflight import preflight
from gibench.running.runner import RunOptions, load_bundle, run_suite
from gibench.suites.jobs import expand
from gibench.suites.suite import parse_suite
from gibench.training.train import fit


def suite(jobs: int, epochs: int):
    return parse_suite({
        "name": "overhead", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"], "regularizers": ["erm"],
        "evaluators": ["accuracy"], "seeds": list(range(jobs)),
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2},
    })


def training_alone(the_suite, options: RunOptions) -> float:
    start = time.perf_counter()
    for job in expand(the_suite):
        regularizer = registry.regularizers.create(job.regularizer.name, **job.regularizer.params)
        fit(load_bundle(job.dataset, options), job.backbone, regularizer, job.train, job.seed, options.device)
    return time.perf_counter() - start


def _started(conn) -> None:
    import gibench.running.run_job  # noqa: F401  (what a worker imports before its first job)

    conn.send(True)


def worker_start() -> float:
    """Seconds from starting a spawned process to its having imported torch and gibench's runner."""
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_started, args=(send,))
    process.start()
    receive.recv()
    elapsed = time.perf_counter() - start
    process.join()
    return elapsed


class WorkerPeaks:
    """Samples the peak resident memory (``VmHWM``, Linux) of this process's workers while a run goes on: the largest,
    per worker pid, in MB. (``RUSAGE_CHILDREN`` cannot say it: a child's peak starts at its parent's at the fork.)"""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for child in multiprocessing.active_children():
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), int(line.split()[1]) / 1024)


def peak_mb() -> float:
    """Peak resident memory of this process, in MB (Linux reports KiB)."""
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def timed_run(the_suite, runs: Path, options: RunOptions) -> float:
    start = time.perf_counter()
    summary = run_suite(the_suite, runs, options)
    elapsed = time.perf_counter() - start
    if not summary.ok:
        raise SystemExit(f"the run failed: {summary.failures()}")
    return elapsed


def recorded_seconds(runs: Path) -> tuple[float, float]:
    train = sum(json.loads(p.read_text())["entries"][-1]["seconds"] for p in runs.glob("jobs/*/train_log.json"))
    evaluate = sum(json.loads(p.read_text())["seconds"] for p in runs.glob("jobs/*/results/*.json"))
    return train, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--isolation", choices=["none", "process", "both"], default="both")
    args = parser.parse_args()
    the_suite = suite(args.jobs, args.epochs)
    modes = ["none", "process"] if args.isolation == "both" else [args.isolation]
    options = RunOptions(device=args.device, isolation=modes[0])
    load_bundle(the_suite.datasets[0], options)  # every figure below starts with the data in memory
    alone = training_alone(the_suite, options)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        start = time.perf_counter()
        preflight(the_suite, expand(the_suite), runs, options)
        checks = time.perf_counter() - start
        with WorkerPeaks() as first_workers:
            cold = timed_run(the_suite, runs, options)
        cached = timed_run(the_suite, runs, options)
        train, evaluate = recorded_seconds(runs)
        isolated = {}
        workers = WorkerPeaks()
        if "process" in modes[1:]:
            other = RunOptions(device=args.device, isolation="process")
            with workers:
                isolated["cold run_suite, isolation=process"] = timed_run(the_suite, Path(tmp) / "isolated", other)
            isolated["cached rerun_suite, isolation=process"] = timed_run(the_suite, Path(tmp) / "isolated", other)
        if "process" in modes:
            isolated["one worker's start (spawn, import torch and gibench)"] = worker_start()
    rest = cold - train - evaluate - checks
    print(f"{args.jobs} jobs (gibench_linear, erm, {args.epochs} epoch(s) of 4,000 digits) on {args.device}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| measure | seconds | per job (ms) | vs. training alone |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in [("training alone (fit, back to back)", alone), ("cold run_suite, total", cold),
                          ("  of which training (train_log)", train), ("  of which evaluation (accuracy)", evaluate),
                          ("  of which preflight", checks), ("  of which the rest (store, claims, bookkeeping)", rest),
                          ("cached rerun_suite (nothing to do)", cached), *isolated.items()]:
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / args.jobs:.1f} | {seconds / alone:.2f}× |")
    peaks = {**first_workers.peaks, **workers.peaks}
    shown = ", ".join(f"{mb:.0f}" for mb in peaks.values()) or "none started"
    print(f"\nisolation {' then '.join(modes)} (the first rows' runs use {modes[0]}); peak resident memory: this "
          f"process {peak_mb():.0f} MB; the cold run's workers (one per {WORKER_MAX_JOBS} jobs), each: {shown} MB")


if __name__ == "__main__":
    main()
