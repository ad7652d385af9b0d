"""Peak memory of `gibench run` with process isolation against the number of jobs: the parent and each worker apart.

    python benchmarks/isolation_memory.py [--jobs 10 50] [--out memory.json]

For each job count, a suite of that many tiny jobs (the in-tree linear model on the bundled MNIST subset, ``erm``, one
seed each, one epoch, the ``accuracy`` evaluator) runs through the real command, ``gibench run --isolation process``,
into a fresh runs directory. While it runs, this script reads every 50 ms the kernel's peak resident set size
(``VmHWM`` in ``/proc/<pid>/status``, the high-water mark of that process alone) of the parent and of every process
below it (the workers, and the resource tracker ``multiprocessing`` starts). A worker runs up to
``gibench.running.isolation.WORKER_MAX_JOBS`` jobs and is then replaced, so 50 jobs use two workers. If neither the
parent's peak nor a worker's grows from the smaller job count to the larger, a long run's memory is bounded by one
worker's, whatever its length. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def suite_file(folder: Path, jobs: int) -> Path:
    path = folder / f"memory-{jobs}.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"memory-{jobs}", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"],
        "regularizers": ["erm"], "evaluators": ["accuracy"], "seeds": list(range(jobs)),
        "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2},
    }))
    return path


def peak_kib(pid: int) -> int | None:
    """VmHWM of ``pid`` in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += children
            stack += children
    return found


def measure(jobs: int, folder: Path) -> dict:
    command = [sys.executable, "-m", "gibench", "run", "--suite", str(suite_file(folder, jobs)), "--runs-dir",
               str(folder / f"runs-{jobs}"), "--device", "cpu", "--isolation", "process"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent, children = 0, {}
    while process.poll() is None:
        parent = max(parent, peak_kib(process.pid) or 0)
        for child in descendants(process.pid):
            children[child] = max(children.get(child, 0), peak_kib(child) or 0)
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"gibench run failed ({process.returncode}): {process.stderr.read()[-2000:]}")
    workers = sorted((kib for kib in children.values() if kib > 200 * 1024), reverse=True)  # the trainers
    return {"jobs": jobs, "seconds": round(time.perf_counter() - start, 1), "parent_peak_mib": round(parent / 1024),
            "worker_peaks_mib": [round(kib / 1024) for kib in workers], "processes_below_parent": len(children)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(jobs, Path(tmp)) for jobs in args.jobs]
    print("| jobs | wall time (s) | parent peak RSS (MiB) | worker peak RSS (MiB), each | processes below the parent |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['jobs']} | {row['seconds']} | {row['parent_peak_mib']} | "
              f"{', '.join(map(str, row['worker_peaks_mib']))} | {row['processes_below_parent']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
