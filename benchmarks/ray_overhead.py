"""What the runner and Ray cost on top of training: many tiny jobs through the local executor and through Ray,
against the same jobs' training time alone; and a projection of jobs per hour per GPU with N jobs sharing a GPU.

    OMP_NUM_THREADS=1 python benchmarks/ray_overhead.py [--jobs 16] [--cpus 2] [--epochs 1]

The jobs: ``gibench_linear`` with ``erm`` on the bundled MNIST subset, one seed each, one epoch, evaluator
``accuracy`` only, so that training is as short as a real job gets and every other cost shows. Measured:

* *training alone*: ``gibench.training.train.fit`` of every job in one process, the dataset loaded once beforehand;
* *local executor*: ``run_suite(executor="local")`` into a fresh runs directory (preflight, claims, store writes,
  evaluation, dataset loaded once per process);
* *Ray, CPU tasks*: ``run_suite(executor="ray", gpus_per_job=0)`` on a fresh local cluster of ``--cpus`` CPUs;
  Ray reuses a worker process across CPU tasks; then the same jobs again into a fresh runs directory on the now
  warm workers (what every job after the first few costs);
* *Ray, GPU-style tasks*: the same on a cluster with one logical GPU and ``gpus_per_job = 1/cpus``; Ray starts a
  fresh worker for every GPU task (``max_calls=1``), as it does on a GPU node, and the jobs train on the CPU;
* the fixed costs one fresh worker pays, measured inside a Ray task: process start and connection, importing gibench
  (torch, timm), loading the dataset.

Prints Markdown for docs/benchmarks.md. The GPU projection is arithmetic on stated assumptions (flags), not a
measurement: no GPU was available when it was written.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml


def suite_file(folder: Path, jobs: int, epochs: int) -> Path:
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ray_overhead", "description": "many tiny jobs", "datasets": ["mnist_subset"],
        "backbones": ["gibench_linear"], "regularizers": ["erm"], "evaluators": ["accuracy"],
        "seeds": list(range(jobs)),
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2}}))
    return path


def training_alone(suite) -> tuple[float, int]:
    """Seconds of fit() summed over the jobs (dataset loaded before the clock starts), and steps per job."""
    from gibench import load_dataset
    from gibench.api import registry
    from gibench.suites.jobs import expand
    from gibench.training.train import fit

    jobs = expand(suite)
    bundle = load_dataset("mnist_subset")
    total, steps = 0.0, 0
    for job in jobs:
        regularizer = registry.regularizers.create(job.regularizer.name, **job.regularizer.params)
        start = time.perf_counter()
        outcome = fit(bundle, job.backbone, regularizer, job.train, job.seed, "cpu")
        total += time.perf_counter() - start
        steps = outcome.log["entries"][-1]["step"]
    return total, steps


TIMELINE: dict[str, dict[str, float]] = {}


def timed_suite(suite, runs_dir: Path, executor: str, name: str, **executor_options) -> float:
    """Wall seconds of run_suite; TIMELINE[name] gets when (from the call) the first job started and the last ended."""
    from gibench.running.runner import RunObserver, RunOptions, run_suite

    start = time.perf_counter()
    marks: dict[str, float] = {}

    class Clock(RunObserver):
        def job_started(self, job, number, total):
            marks.setdefault("first_start", time.perf_counter() - start)

        def job_finished(self, report):
            marks["last_finish"] = time.perf_counter() - start

    options = RunOptions(device="cpu" if executor == "local" or not executor_options.get("gpus_per_job") else None)
    summary = run_suite(suite, runs_dir, options, observer=Clock(), executor=executor,
                        executor_options=executor_options or None)
    elapsed = time.perf_counter() - start
    TIMELINE[name] = marks
    states = {report.state for report in summary.jobs}
    if states != {"trained"}:
        sys.exit(f"{executor}: expected every job trained, got {states}")
    return elapsed


def _fresh_worker_costs(dataset) -> tuple[float, float, float]:
    """Inside a fresh Ray worker: (seconds since the process started, import gibench.running.runner, load the
    dataset)."""
    import psutil  # a Ray dependency

    since_start = time.time() - psutil.Process().create_time()
    start = time.perf_counter()
    import gibench.running.runner  # noqa: F401  (torch, timm, the registries)
    imported = time.perf_counter()
    from gibench.running.runner import RunOptions, load_bundle

    load_bundle(dataset, RunOptions())
    return since_start, imported - start, time.perf_counter() - imported


def ray_runs(suite, folder: Path, cpus: int, probes: int) -> dict[str, float]:
    import ray

    from gibench.suites.jobs import expand

    dataset = expand(suite)[0].dataset
    figures = {}
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False)
    figures["ray_start"] = time.perf_counter() - start
    figures["ray_cpu"] = timed_suite(suite, folder / "ray_cpu", "ray", "ray_cpu", gpus_per_job=0)
    # the same jobs again into a fresh runs directory: the workers have imported gibench and loaded the data
    figures["ray_cpu_warm"] = timed_suite(suite, folder / "ray_cpu_warm", "ray", "ray_cpu_warm", gpus_per_job=0)
    ray.shutdown()

    ray.init(num_cpus=cpus, num_gpus=1, include_dashboard=False)
    figures["ray_gpu_style"] = timed_suite(suite, folder / "ray_gpu", "ray", "ray_gpu_style", gpus_per_job=1 / cpus)
    probe = ray.remote(num_cpus=1, num_gpus=1 / cpus, max_calls=1)(_fresh_worker_costs)
    costs, rounds = [], []
    for _ in range(probes):  # one at a time, so that each pays a full process start
        start = time.perf_counter()
        costs.append(ray.get(probe.remote(dataset)))
        rounds.append(time.perf_counter() - start)
    ray.shutdown()
    figures["worker_round_trip"] = sum(rounds) / probes
    figures["worker_age_at_task"] = sum(c[0] for c in costs) / probes
    figures["worker_import"] = sum(c[1] for c in costs) / probes
    figures["worker_data"] = sum(c[2] for c in costs) / probes
    return figures


def projection(args, steps: int, fixed_cpu_s: float) -> list[str]:
    """Jobs per hour on one GPU with k jobs sharing it (the assumptions are the flags; see the printed list)."""
    train_s = steps * args.gpu_step_ms / 1000
    rows = ["| jobs per GPU (`--gpus-per-job`) | per-job time (s) | jobs per hour per GPU |", "| --- | --- | --- |"]
    for k in (1, 2, 4, 8, 16):
        if k > args.cores_per_gpu:
            break
        slowdown = max(1.0, k * args.gpu_share)  # the GPU saturates once the jobs ask for more than all of it
        per_job = train_s * slowdown + fixed_cpu_s + args.cuda_init_s
        rows.append(f"| {k} (`{1 / k:g}`) | {per_job:.1f} | {3600 * k / per_job:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--probes", type=int, default=3, help="fresh workers timed one at a time")
    parser.add_argument("--gpu-step-ms", type=float, default=2.0,
                        help="assumed: one training step of a tiny model on a GPU (launch-bound), ms")
    parser.add_argument("--gpu-share", type=float, default=0.15,
                        help="assumed: the fraction of a GPU's throughput one tiny job keeps busy")
    parser.add_argument("--cuda-init-s", type=float, default=3.0, help="assumed: CUDA context start per fresh worker")
    parser.add_argument("--cores-per-gpu", type=int, default=8, help="assumed: CPU cores per GPU on the node")
    args = parser.parse_args()

    from gibench.suites.suite import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite = load_suite(suite_file(folder, args.jobs, args.epochs))
        alone, steps = training_alone(suite)
        local = timed_suite(suite, folder / "local", "local", "local")
        ray_figures = ray_runs(suite, folder, args.cpus, args.probes)

    n, cpus = args.jobs, args.cpus
    fixed = ray_figures["worker_round_trip"]  # process start + import + dataset, paid once per GPU job
    print(f"{n} jobs (gibench_linear / erm / mnist_subset, {args.epochs} epoch = {steps} steps, evaluator accuracy); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, Ray cluster of {cpus} CPUs\n")
    print("| what | wall (s) | per job (s) | / training alone | first job started at (s) | last job done at (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [("training alone (fit only, one process)", alone, None),
            ("local executor (`run_suite`)", local, "local"),
            (f"Ray, CPU tasks (reused workers, {cpus} at a time), excluding Ray start", ray_figures["ray_cpu"],
             "ray_cpu"),
            ("Ray, CPU tasks again on the warm workers (fresh runs directory)", ray_figures["ray_cpu_warm"],
             "ray_cpu_warm"),
            (f"Ray, GPU-style tasks (fresh worker per job, {cpus} at a time), excluding Ray start",
             ray_figures["ray_gpu_style"], "ray_gpu_style")]
    for name, seconds, key in rows:
        marks = TIMELINE.get(key, {}) if key else {}
        first, last = (f"{marks[m]:.1f}" if m in marks else "" for m in ("first_start", "last_finish"))
        print(f"| {name} | {seconds:.1f} | {seconds / n:.2f} | {seconds / alone:.2f} | {first} | {last} |")
    print(f"\nFixed costs: Ray start (`ray.init`, local cluster) {ray_figures['ray_start']:.1f} s; one fresh worker, "
          f"submit to result {ray_figures['worker_round_trip']:.1f} s, of which importing gibench (torch, timm) "
          f"{ray_figures['worker_import']:.1f} s and loading the dataset {ray_figures['worker_data']:.1f} s; the "
          f"process was {ray_figures['worker_age_at_task']:.1f} s old when the task began.\n")
    print(f"Projected jobs per hour on one GPU, the same jobs ({steps} steps each); assumptions: a step takes "
          f"{args.gpu_step_ms:g} ms on the GPU (launch-bound); one job keeps {args.gpu_share:.0%} of the GPU busy, so "
          f"k jobs run without slowing each other until k x {args.gpu_share:g} > 1, then share it; each job "
          f"pays the measured fresh-worker cost {fixed:.1f} s above plus {args.cuda_init_s:g} s of CUDA start (Ray "
          f"starts a fresh worker per GPU task), in its own slot; one CPU core per job, {args.cores_per_gpu} cores "
          f"per GPU.\n")
    print("\n".join(projection(args, steps, fixed)))
    if not math.isfinite(alone) or alone <= 0:
        sys.exit("training time not measured")


if __name__ == "__main__":
    main()
