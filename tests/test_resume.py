"""Kill a real `gibench run` with SIGKILL mid-job, rerun it: it finishes, reusing every finished job.

No race: the second job's first training step waits on a sentinel (tests/runner_plugins.py), so when the test kills
the process, the first job is certainly committed and the second certainly in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_suite

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _gibench(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.runner_plugins", *args]


def test_sigkill_then_rerun_reuses_finished_jobs(tmp_path):
    suite = write_suite(tmp_path, regularizers=["erm", "gate", {"gradient_norm": {"weight": 1.0e-3}}],
                        evaluators=["accuracy"])
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, "COLUMNS": "200", "GIBENCH_TEST_GATE": str(gate), "OMP_NUM_THREADS": "1"}
    command = _gibench("run", "--suite", str(suite), "--runs-dir", str(runs), "--device", "cpu")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 300  # a bound on reaching the sentinel, not a timing the test depends on
    while not (gate / "started").exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the gated job never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = {p.parent.name for p in runs.glob("jobs/*/status.json")}
    assert len(committed) == 1  # erm, and only erm: the gated job was killed in its first step

    (gate / "open").touch()
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "[1/3] mnist_subset / gibench_linear / erm / seed 0: cached" in rerun.stderr
    assert rerun.stderr.count("trained in") == 2
    for path in runs.rglob("*.json"):  # nothing half-written anywhere
        json.loads(path.read_text())
    assert not list(runs.rglob(".tmp-*"))
    assert len(list(runs.glob("jobs/*/results/*.json"))) == 3
    manifest = json.loads((runs / "manifest.json").read_text())
    assert [run["finished"] is not None for run in manifest["runs"]] == [False, True]  # the killed run never finished
