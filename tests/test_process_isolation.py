"""Process isolation of the local executor (gibench.running.isolation): a job that kills its process, segfaults, hangs
or raises fails alone, with its reason; the good job beside it finishes; a rerun trains nothing that finished; a
killed run leaves no orphan worker and no stale claim.

These tests run real worker processes (``isolation="process"``; the other tests run in-process, tests/conftest.py).
The plugins below are registered in the test's process and sent to the worker by reference, so they live at the top
level of this importable module. A worker's start (a fresh interpreter importing torch) takes seconds, so each test
puts several faults in one run.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.nn.functional as F
from rich.console import Console

from gibench.api import registry
from gibench.api.plugin import Evaluator, Metric, Regularizer, TrainingLoss
from gibench.cli import _shared, main
from gibench.core.fsio import Claim, pid_alive
from gibench.running.runner import run_suite
from gibench.store.runs import RunStore
from gibench.suites.suite import load_suite
from tests.conftest import write_suite


class Exits(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        print("exits: giving up now", file=sys.stderr, flush=True)
        os._exit(3)


class Segfaults(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        return ctypes.string_at(0)


class Sleeps(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        time.sleep(3600)


class Raises(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        raise RuntimeError("raises: a bug in the plugin")


class DiesOrHangs(Evaluator):
    """Ends its process on the ``erm`` job's model, hangs on any other."""

    metrics = (Metric("value", True, "never returned", headline=True),)

    def evaluate(self, ctx):
        if ctx.job.regularizer.name == "erm":
            os._exit(5)
        time.sleep(3600)


class Plain(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        loss = F.cross_entropy(model(x), y)
        return TrainingLoss(loss, {"cross_entropy": loss.detach()})


@pytest.fixture
def stderr_text(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(_shared, "stderr", Console(file=buffer, width=100_000, color_system=None, highlight=False))
    return buffer


def _reasons(runs: Path, suite) -> dict[str, tuple[str, str, bool]]:
    """regularizer name -> (state, reason, retryable) as status.json records it."""
    store = RunStore(runs)
    out = {}
    from gibench.suites.jobs import expand

    for job in expand(suite):
        status = store.job(job.hash).status()
        out[job.regularizer.name] = (status.state, status.reason or "", status.retryable)
    return out


def test_a_job_that_exits_segfaults_hangs_or_raises_fails_alone(tmp_path, register_plugin, stderr_text, one_thread):
    for name, cls in [("exits", Exits), ("segfaults", Segfaults), ("sleeps", Sleeps), ("raises", Raises)]:
        register_plugin(registry.regularizers, name, cls)
    path = write_suite(tmp_path, regularizers=["erm", "exits", "segfaults", "sleeps", "raises"],
                       evaluators=["accuracy"])
    runs = tmp_path / "runs"

    code = main(["run", "--suite", str(path), "--runs-dir", str(runs), "--device", "cpu", "--isolation", "process",
                 "--job-timeout", "20"])

    printed = stderr_text.getvalue()
    assert code == 1 and "Traceback" not in printed
    assert "4 of 5 job(s) failed" in printed
    suite = load_suite(path)
    recorded = _reasons(runs, suite)
    assert recorded["erm"][0] == "trained"
    state, reason, retryable = recorded["exits"]
    assert (state, retryable) == ("failed", False)
    assert "exited with code 3 in training" in reason and "exits: giving up now" in reason
    state, reason, retryable = recorded["segfaults"]
    assert (state, retryable) == ("failed", True) and "killed by SIGSEGV in training" in reason
    assert "training_loss" in RunStore(runs).job(_hash(suite, "segfaults")).status().traceback  # faulthandler's stack
    state, reason, retryable = recorded["sleeps"]
    assert (state, retryable) == ("failed", False)
    assert "timed out in training" in reason and "--job-timeout 20" in reason
    state, reason, retryable = recorded["raises"]
    assert (state, retryable) == ("failed", False) and "RuntimeError: raises: a bug in the plugin" in reason
    erm = RunStore(runs).job(_hash(suite, "erm"))
    assert [r.status for r in erm.results()] == ["ok"]
    assert not list((runs / "claims").glob("*.owner.json"))  # every claim released, the dead workers' too

    summary = run_suite(suite, runs, device="cpu", isolation="process", job_timeout_s=20.0)
    states = {r.job.regularizer.name: r.state for r in summary.jobs}
    assert states == {"erm": "cached", "exits": "failed", "segfaults": "failed", "sleeps": "failed",
                      "raises": "failed"}
    trained = [e for job in expand_hashes(suite) for e in RunStore(runs).job(job).events() if e["event"] == "trained"]
    assert len(trained) == 1  # the rerun trained nothing that finished
    reasons = {r.job.regularizer.name: r.reason for r in summary.jobs}
    assert "recorded earlier" in reasons["exits"] and "recorded earlier" in reasons["sleeps"]
    assert "killed by SIGSEGV" in reasons["segfaults"] and "recorded earlier" not in reasons["segfaults"]  # retried


def test_an_evaluation_that_dies_or_hangs_keeps_the_training_and_the_finished_evaluations(tmp_path, register_plugin,
                                                                                          one_thread):
    register_plugin(registry.evaluators, "dies_or_hangs", DiesOrHangs)
    register_plugin(registry.regularizers, "plain", Plain)
    suite = load_suite(write_suite(tmp_path, regularizers=["erm", "plain"], evaluators=["accuracy", "dies_or_hangs"]))
    runs = tmp_path / "runs"

    summary = run_suite(suite, runs, device="cpu", isolation="process", eval_timeout_s=5.0)

    reports = {r.job.regularizer.name: r for r in summary.jobs}
    assert [r.state for r in summary.jobs] == ["trained", "trained"] and not summary.ok
    for name, expected in [("erm", "exited with code 5 in evaluation dies_or_hangs"),
                           ("plain", "timed out in evaluation dies_or_hangs")]:
        report = reports[name]
        assert [(e.evaluator, e.state) for e in report.evaluations] == [("accuracy", "ok"), ("dies_or_hangs", "failed")]
        assert expected in report.evaluations[1].reason
        folder = RunStore(runs).job(report.job.hash)
        assert folder.status().state == "trained"
        results = {r.evaluator: r for r in folder.results()}
        assert results["accuracy"].status == "ok" and results["dies_or_hangs"].status == "failed"
        assert expected in results["dies_or_hangs"].reason
    assert "--eval-timeout 5" in reports["plain"].evaluations[1].reason
    assert not list((runs / "claims").glob("*.owner.json"))


def test_a_cached_rerun_starts_no_worker(tmp_path, monkeypatch, one_thread):
    from gibench.running.isolation import Supervisor

    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"]))
    runs = tmp_path / "runs"
    assert run_suite(suite, runs, device="cpu", isolation="process").ok

    def no_worker(self):
        raise AssertionError("a worker was started for a job the store already holds")

    monkeypatch.setattr(Supervisor, "_start", no_worker)
    again = run_suite(suite, runs, device="cpu", isolation="process")
    assert [(r.state, [e.state for e in r.evaluations]) for r in again.jobs] == [("cached", ["cached"])]


def _hash(suite, regularizer: str) -> str:
    from gibench.suites.jobs import expand

    return next(job.hash for job in expand(suite) if job.regularizer.name == regularizer)


def expand_hashes(suite) -> list[str]:
    from gibench.suites.jobs import expand

    return [job.hash for job in expand(suite)]


def test_a_killed_run_leaves_no_orphan_worker_and_no_stale_claim(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    path = write_suite(tmp_path, regularizers=["gate"], evaluators=["accuracy"])
    runs = tmp_path / "runs"
    env = {**os.environ, "GIBENCH_TEST_GATE": str(gate), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "tests.runner_plugins", "run", "--suite", str(path), "--runs-dir",
                            str(runs), "--device", "cpu", "--isolation", "process"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 240
        while not (gate / "started").exists():
            assert run.poll() is None, run.stderr.read().decode()
            assert time.monotonic() < deadline, "the gated job never started"
            time.sleep(0.1)
        [owner_file] = (runs / "claims").glob("*.owner.json")
        worker = json.loads(owner_file.read_text())["pid"]
        assert worker != run.pid and pid_alive(worker)  # the job trains in a worker process, which holds the claim

        run.send_signal(signal.SIGKILL)
        run.wait()

        deadline = time.monotonic() + 10
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(worker), "the worker outlived its run"
        claim = Claim(owner_file.with_suffix("").with_suffix(".lock"), 120.0, 30.0)
        assert claim.try_acquire()  # the dead worker's claim is taken over at once
        claim.release()
    finally:
        if run.poll() is None:
            run.kill()
        (gate / "open").touch()


def _running(pid: int) -> bool:
    """Any thread of the process is still alive. A killed process's first thread shows as a zombie while its other
    threads are still exiting, and the open files (the claim's lock) close only when the last thread is gone; its
    parent's ``wait`` returns only then, but this test is not the worker's parent and reads ``/proc`` instead."""
    if not pid_alive(pid):
        return False
    try:
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                  for task in Path(f"/proc/{pid}/task").iterdir()]
    except (OSError, IndexError):
        return pid_alive(pid)
    return any(state not in ("Z", "X") for state in states)
