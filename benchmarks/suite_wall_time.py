"""Time a suite end to end, as a user runs it: a cold `gibench run` into a fresh runs directory, then a rerun that
must find everything cached.

    python benchmarks/suite_wall_time.py --suite smoke [--device cpu] [--repeats 1]

Prints a Markdown table (cold wall time, cached-rerun wall time, per-job training times from the store) to paste into
docs/benchmarks.md. Wall time includes process start-up (importing torch) and the final report and site build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliRun:
    """One ``gibench`` command run in a child process."""

    argv: list[str]
    returncode: int | None  # None: stopped at the timeout
    seconds: float
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_cli(argv: list[str], timeout: float | None = None) -> CliRun:
    """``python -m gibench ARGV`` in a child process (wide console lines), its wall time and output; with a
    ``timeout`` in seconds the child and every process it started (its own process group) are killed when it runs
    past it (returncode None)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "gibench", *argv]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "COLUMNS": "200"}, start_new_session=True) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            out, err = child.communicate()
            return CliRun(argv, None, time.perf_counter() - start, out, err)
    return CliRun(argv, child.returncode, time.perf_counter() - start, out, err)


def timed_run(suite: str, runs_dir: Path, device: str) -> tuple[float, str]:
    done = run_cli(["run", "--suite", suite, "--runs-dir", str(runs_dir), "--device", device])
    if done.returncode != 0:
        sys.exit(f"gibench run failed:\n{done.stderr}")
    return done.seconds, done.stderr


def training_seconds(runs_dir: Path) -> dict[str, float]:
    times = {}
    for job in sorted((runs_dir / "jobs").iterdir()):
        log = json.loads((job / "train_log.json").read_text())
        labels = json.loads((job / "job.json").read_text())["labels"]
        label = f"{labels['dataset']}/{labels['variant']}"
        times[label] = log["entries"][-1]["seconds"] if log.get("entries") else float("nan")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for _repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs = Path(tmp) / "runs"
            cold, _ = timed_run(args.suite, runs, args.device)
            cached, log = timed_run(args.suite, runs, args.device)
            if "trained in" in log:
                sys.exit("the rerun trained something: caching is broken")
            rows.append((cold, cached, training_seconds(runs)))
    print(f"suite `{args.suite}` on {args.device} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores), torch threads default\n")
    print("| repeat | cold run (s) | cached rerun (s) | training time per job (s) |")
    print("| --- | --- | --- | --- |")
    for i, (cold, cached, jobs) in enumerate(rows, 1):
        per_job = ", ".join(f"{k}: {v:.1f}" for k, v in jobs.items())
        print(f"| {i} | {cold:.1f} | {cached:.1f} | {per_job} |")


if __name__ == "__main__":
    main()
