"""Kill a real `gibench run` with SIGKILL mid-way, rerun it: it finishes, reusing every finished job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import write_suite


def _gibench(*args: str) -> list[str]:
    return [sys.executable, "-m", "gibench", *args]


def test_sigkill_then_rerun_reuses_finished_jobs(tmp_path):
    suite = write_suite(tmp_path, regularizers=["erm", {"gradient_norm": {"weight": [1.0e-3, 1.0e-2]}}],
                        train={"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-2})
    runs = tmp_path / "runs"
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(_gibench("run", "--suite", str(suite), "--runs-dir", str(runs), "--device", "cpu"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:  # wait until the first job is committed
        if any(p.read_text().find('"trained"') >= 0 for p in runs.glob("jobs/*/status.json")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make the suite longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = {p.parent.name for p in runs.glob("jobs/*/status.json")}
    assert finished_before

    rerun = subprocess.run(_gibench("run", "--suite", str(suite), "--runs-dir", str(runs), "--device", "cpu"),
                           capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "[1/3] mnist_subset / gibench_linear / erm / seed 0: cached" in rerun.stderr
    assert rerun.stderr.count("trained in") == 3 - len(finished_before)
    for path in runs.rglob("*.json"):  # nothing half-written anywhere
        json.loads(path.read_text())
    assert not list(runs.rglob(".tmp-*"))
    assert len(list(runs.glob("jobs/*/results/*.json"))) == 3 * 2
