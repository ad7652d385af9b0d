"""The runner's own overhead: many tiny jobs through the local executor, against the same jobs' training time alone.

    python benchmarks/runner_overhead.py [--jobs 24] [--epochs 1] [--device cpu]

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
Prints a Markdown table. Process start-up (importing torch, timm) and the CLI's report and site build are not in
these figures; ``benchmarks/suite_wall_time.py`` times the CLI end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from gibench.api import registry
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
    args = parser.parse_args()
    the_suite = suite(args.jobs, args.epochs)
    options = RunOptions(device=args.device)
    load_bundle(the_suite.datasets[0], options)  # every figure below starts with the data in memory
    alone = training_alone(the_suite, options)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        start = time.perf_counter()
        preflight(the_suite, expand(the_suite), runs, options)
        checks = time.perf_counter() - start
        cold = timed_run(the_suite, runs, options)
        cached = timed_run(the_suite, runs, options)
        train, evaluate = recorded_seconds(runs)
    rest = cold - train - evaluate - checks
    print(f"{args.jobs} jobs (gibench_linear, erm, {args.epochs} epoch(s) of 4,000 digits) on {args.device}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| measure | seconds | per job (ms) | vs. training alone |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in [("training alone (fit, back to back)", alone), ("cold run_suite, total", cold),
                          ("  of which training (train_log)", train), ("  of which evaluation (accuracy)", evaluate),
                          ("  of which preflight", checks), ("  of which the rest (store, claims, bookkeeping)", rest),
                          ("cached rerun_suite (nothing to do)", cached)]:
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / args.jobs:.1f} | {seconds / alone:.2f}× |")


if __name__ == "__main__":
    main()
