"""Isolation: any exception in one job's training is recorded and the others go on; out of memory is handled."""

from __future__ import annotations

import json

import torch
from timm.utils import decay_batch_step

from gibench import auxiliary_classifier
from gibench.api import registry
from gibench.api.plugin import Evaluator, Metric, Regularizer, TrainingLoss
from gibench.cli import main
from gibench.running.runner import RunOptions, run_suite
from gibench.store.runs import RunStore
from gibench.suites.suite import load_suite
from tests.conftest import write_suite

CPU = RunOptions(device="cpu")


class RaisesInTraining(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        raise ValueError("a plugin bug at the first step")


class OutOfMemoryInTraining(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class NeedsSmallBatches(Evaluator):
    """Runs out of memory above 64 images per batch; otherwise returns the number of test images it saw."""

    metrics = (Metric("images", True, "images seen", headline=True),)
    seen_batch_sizes: list[int] = []

    def evaluate(self, ctx):
        NeedsSmallBatches.seen_batch_sizes.append(ctx.batch_size)
        if ctx.batch_size > 64:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch size {ctx.batch_size}")
        n = sum(len(ctx.data.test.y[i:i + ctx.batch_size]) for i in range(0, len(ctx.data.test), ctx.batch_size))
        return self.result(n)

    @staticmethod
    def result(n):
        from gibench.api.plugin import EvalResult

        return EvalResult({"images": float(n)})


def test_an_exception_in_training_fails_that_job_only(tmp_path, register_plugin, capsys):
    register_plugin(registry.regularizers, "raises", RaisesInTraining)
    suite_file = write_suite(tmp_path, regularizers=["raises", "erm"], evaluators=["accuracy"])
    summary = run_suite(load_suite(suite_file), tmp_path / "runs", CPU)
    broken, erm = summary.jobs
    assert broken.state == "failed" and broken.reason.startswith("ValueError: a plugin bug at the first step")
    assert "--retry-failed" in broken.reason
    assert erm.state == "trained" and [e.state for e in erm.evaluations] == ["ok"]
    status = RunStore(tmp_path / "runs").job(broken.job.hash).status()
    assert status.state == "failed" and "raise ValueError(\"a plugin bug" in status.traceback
    assert summary.failures() == [f"{broken.job.label}: training failed: {broken.reason}"]

    # through the CLI: exit 1, a summary of what failed, and `report` lists the failed job with its reason
    assert main(["run", "--suite", str(suite_file), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "1 failure(s)" in err and "1 of 2 job(s) failed" in err and "a plugin bug" in err
    assert main(["report", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "failed: mnist_subset / gibench_linear / raises / seed 0" in out and "a plugin bug" in out


def test_out_of_memory_in_training_says_what_to_change_and_is_retried(tmp_path, register_plugin):
    register_plugin(registry.regularizers, "oom", OutOfMemoryInTraining)
    suite = load_suite(write_suite(tmp_path, regularizers=["oom", "erm"], evaluators=["accuracy"]))
    oom, erm = run_suite(suite, tmp_path / "runs", CPU).jobs
    assert oom.state == "failed" and erm.state == "trained"
    assert "out of memory while training on cpu with train.batch_size = 128" in oom.reason
    assert "Lower train.batch_size" in oom.reason and "--gpus-per-job" in oom.reason
    again = run_suite(suite, tmp_path / "runs", CPU).jobs[0]  # retried without --retry-failed
    assert again.state == "failed" and "recorded earlier" not in again.reason
    events = RunStore(tmp_path / "runs").job(oom.job.hash).events()
    assert [e["event"] for e in events] == ["failed", "failed"]


def test_out_of_memory_in_evaluation_steps_the_batch_size_down(tmp_path, register_plugin):
    register_plugin(registry.evaluators, "small_batches", NeedsSmallBatches)
    NeedsSmallBatches.seen_batch_sizes = []
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["small_batches", "accuracy"]))
    (job,) = run_suite(suite, tmp_path / "runs", CPU).jobs
    expected, size = [], 256
    while size > 64:  # timm's decay: 256, 192, 128, 96, then 64 fits
        expected.append(size)
        size = decay_batch_step(size)
    assert expected == [256, 192, 128, 96]
    assert NeedsSmallBatches.seen_batch_sizes == [256, 192, 128, 96, 64]
    small, accuracy = job.evaluations
    assert (small.state, small.eval_batch_size, small.oom_steps) == ("ok", 64, expected)
    assert accuracy.eval_batch_size == 256 and accuracy.oom_steps == []  # each evaluation starts at the full size
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("jobs/*/results/small_batches__*.json")]
    assert record["eval_batch_size"] == 64 and record["oom_steps"] == expected
    assert record["scalars"]["images"] == 1000.0  # every test image of the bundled subset was evaluated


def test_out_of_memory_even_at_batch_size_one_fails_the_evaluation(tmp_path, register_plugin):
    class AlwaysOOM(NeedsSmallBatches):
        def evaluate(self, ctx):
            raise torch.OutOfMemoryError("CUDA out of memory")

    register_plugin(registry.evaluators, "always_oom", AlwaysOOM)
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["always_oom", "accuracy"]))
    (job,) = run_suite(suite, tmp_path / "runs", CPU).jobs
    failed, accuracy = job.evaluations
    assert failed.state == "failed" and "even with evaluation batch size 1" in failed.reason
    assert failed.oom_steps[:3] == [256, 192, 128] and failed.oom_steps[-1] == 1
    assert accuracy.state == "ok"


class OutOfMemoryWhenArmed(Regularizer):
    """Cross-entropy, except that it runs out of memory while ``armed`` (counting those calls)."""

    zero_strength = None
    armed, calls = False, 0

    def training_loss(self, model, x, y):
        if OutOfMemoryWhenArmed.armed:
            OutOfMemoryWhenArmed.calls += 1
            raise torch.OutOfMemoryError("CUDA out of memory")
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return TrainingLoss(loss, {})


class Retrains(Evaluator):
    metrics = (Metric("value", True, "retrains the job's model", headline=True),)

    def evaluate(self, ctx):
        OutOfMemoryWhenArmed.armed = True
        job = ctx.job
        try:  # retrain the job's backbone, regularizer and train config on the job's data, as DiffROAR does
            auxiliary_classifier(ctx.aux, "retrained", ctx.data, {"dataset": job.dataset.name}, job.backbone,
                                 job.train, job.seed, job.regularizer)
        finally:
            OutOfMemoryWhenArmed.armed = False
        raise AssertionError("unreachable: the retraining runs out of memory")


def test_out_of_memory_in_a_retraining_fails_the_evaluation_without_batch_size_retries(tmp_path, register_plugin):
    register_plugin(registry.regularizers, "oom_when_armed", OutOfMemoryWhenArmed)
    register_plugin(registry.evaluators, "retrains", Retrains)
    OutOfMemoryWhenArmed.calls = 0
    suite = load_suite(write_suite(tmp_path, regularizers=["oom_when_armed"], evaluators=["retrains", "accuracy"]))
    (job,) = run_suite(suite, tmp_path / "runs", CPU).jobs
    retrains, accuracy = job.evaluations
    assert job.state == "trained" and accuracy.state == "ok"
    assert retrains.state == "failed" and retrains.oom_steps == []  # a smaller evaluation batch would not help
    assert "out of memory while training gibench_linear with oom_when_armed on cpu at train.batch_size = 128" \
        in retrains.reason and "lower train.batch_size" in retrains.reason
    assert OutOfMemoryWhenArmed.calls == 1
