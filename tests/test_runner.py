"""The runner: caching, resume semantics, failures that do not stop the other jobs, skipped evaluators."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from gibench.api import registry
from gibench.api.plugin import Evaluator, Metric, Regularizer, TrainingLoss
from gibench.core.errors import ConfigError
from gibench.results.tables import collect_results
from gibench.running.runner import RunObserver, RunOptions, run_suite
from gibench.store.runs import RunStore
from gibench.suites.suite import load_suite
from tests.conftest import write_suite


def test_second_run_recomputes_nothing(tiny_suite_file, tmp_path):
    runs = tmp_path / "runs"
    first = run_suite(load_suite(tiny_suite_file), runs, RunOptions(device="cpu"))
    assert [r.state for r in first.jobs] == ["trained", "trained"]
    checkpoints = sorted(runs.glob("jobs/*/checkpoint.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    results_before = collect_results(runs)

    second = run_suite(load_suite(tiny_suite_file), runs, RunOptions(device="cpu"))
    assert [r.state for r in second.jobs] == ["cached", "cached"]
    assert {e.state for r in second.jobs for e in r.evaluations} == {"cached"}
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    assert collect_results(runs).equals(results_before)
    assert len(json.loads((runs / "manifest.json").read_text())["runs"]) == 2


def test_adding_an_evaluator_reuses_the_trained_models(tiny_suite_file, tmp_path):
    runs = tmp_path / "runs"
    run_suite(load_suite(write_suite(tmp_path, evaluators=["accuracy"])), runs, RunOptions(device="cpu"))
    again = run_suite(load_suite(tiny_suite_file), runs, RunOptions(device="cpu"))
    assert [r.state for r in again.jobs] == ["cached", "cached"]
    assert [[e.state for e in r.evaluations] for r in again.jobs] == [["cached", "ok"], ["cached", "ok"]]


class ExplodingLoss(Regularizer):
    zero_strength = {}

    def training_loss(self, model, x, y):
        loss = model(x).sum() * float("inf")
        return TrainingLoss(loss, {})


class NeedsMask(Evaluator):
    requires = frozenset({"signal_mask"})
    metrics = (Metric("share", True, "needs a mask", headline=True),)

    def evaluate(self, ctx):
        raise AssertionError("must not run without the capability")


class Crashes(Evaluator):
    metrics = (Metric("value", True, "crashes", headline=True),)

    def evaluate(self, ctx):
        raise RuntimeError("evaluator bug")


def test_failures_are_recorded_and_the_other_jobs_go_on(tmp_path, register_plugin):
    register_plugin(registry.regularizers, "exploding", ExplodingLoss)
    register_plugin(registry.evaluators, "needs_mask", NeedsMask)
    register_plugin(registry.evaluators, "crashes", Crashes)
    suite = load_suite(write_suite(tmp_path, regularizers=["exploding", "erm"],
                                   evaluators=["accuracy", "needs_mask", "crashes"]))
    summary = run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"))
    exploding, erm = summary.jobs
    assert exploding.state == "failed" and exploding.reason.startswith("non-finite loss at step 1")
    assert erm.state == "trained"
    assert [(e.evaluator, e.state) for e in erm.evaluations] == [
        ("accuracy", "ok"), ("needs_mask", "skipped"), ("crashes", "failed")]
    assert "lacks the capabilities ['signal_mask']" in erm.evaluations[1].reason
    assert "RuntimeError: evaluator bug" in erm.evaluations[2].reason

    frame = collect_results(tmp_path / "runs")
    assert set(frame["status"]) == {"ok", "skipped", "failed"}
    assert frame.loc[frame["evaluator"] == "accuracy", "value"].item() > 0.7

    again = run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"))
    assert again.jobs[0].state == "failed" and "--retry-failed" in again.jobs[0].reason
    assert [e.state for e in again.jobs[1].evaluations] == ["cached", "cached", "failed"]  # failures are retried


def test_dry_run_lists_jobs_without_training(tiny_suite_file, tmp_path):
    summary = run_suite(load_suite(tiny_suite_file), tmp_path / "runs", dry_run=True)
    assert [r.state for r in summary.jobs] == ["planned", "planned"]
    assert not (tmp_path / "runs").exists()


def test_results_table_shape(tiny_suite_file, tmp_path):
    run_suite(load_suite(tiny_suite_file), tmp_path / "runs", RunOptions(device="cpu"))
    frame = collect_results(tmp_path / "runs")
    accuracy = frame[frame["metric"] == "accuracy"]
    assert sorted(accuracy["variant"]) == ["erm", "gradient_norm(weight=0.001)"]
    row = accuracy[accuracy["regularizer"] == "gradient_norm"].iloc[0]
    assert json.loads(row["regularizer_params"]) == {"weight": 0.001}
    assert row["regularizer_distribution"] == "gibench" and row["higher_is_better"] and row["headline"]
    assert row["seed"] == 0 and row["evaluator_version"] == registry.evaluators.get("accuracy").version
    # the stored checkpoint reproduces the stored accuracy
    from gibench import load_dataset
    from gibench.training.models import build_model
    bundle = load_dataset("mnist_subset")
    folder = RunStore(tmp_path / "runs").job(row["job_hash"])
    model = folder.load_weights(build_model("gibench_linear", {}, bundle)).eval()
    with torch.no_grad():
        accuracy_now = (model(bundle.test.x).argmax(1) == bundle.test.y).sum().item() / len(bundle.test.y)
    assert accuracy_now == row["value"]


def test_sanity_table_flags_an_evaluator_that_misses_the_fooling():
    import pandas as pd

    from gibench.results.tables import sanity_table

    def rows(variant, seed, pp, dr, acc):
        base = {"dataset": "d", "backbone": "b", "variant": variant, "seed": seed, "status": "ok", "headline": True}
        return [{**base, "evaluator": "pixel_perturbation", "metric": "area", "value": pp, "higher_is_better": True},
                {**base, "evaluator": "density_ratio", "metric": "log_ratio", "value": dr, "higher_is_better": False},
                {**base, "evaluator": "accuracy", "metric": "accuracy", "value": acc, "higher_is_better": True}]

    frame = pd.DataFrame(rows("erm", 0, 0.9, -1.0, 0.95) + rows("erm", 1, 0.8, -2.0, 0.95)
                         + rows("fooled(weight=1)", 0, 0.5, -3.0, 0.94))
    table = sanity_table(frame).set_index("evaluator")
    assert "accuracy" not in table.index  # not a saliency evaluator
    assert table.loc["pixel_perturbation", "erm"] == pytest.approx(0.85)
    assert table.loc["pixel_perturbation", "passes"]  # 0.5 < 0.85 on a higher-is-better metric
    assert not table.loc["density_ratio", "passes"]  # -3.0 < -1.5 is *better* on a lower-is-better metric


def test_sanity_table_leaves_out_an_evaluator_skipped_on_every_seed():
    """blockmnist on a dataset without a signal mask is skipped for erm and fooled alike: it measured nothing, so it
    must neither pass nor fail the sanity check (it was listed as "FAILS" with NaN means)."""
    import pandas as pd

    from gibench.results.tables import sanity_table

    def rows(variant, pp):
        base = {"dataset": "d", "backbone": "b", "variant": variant, "seed": 0, "headline": True,
                "higher_is_better": True}
        return [{**base, "evaluator": "pixel_perturbation", "metric": "area", "value": pp, "status": "ok"},
                {**base, "evaluator": "blockmnist", "metric": "signal_mass_share", "value": float("nan"),
                 "status": "skipped", "reason": "dataset has no signal_mask"}]

    table = sanity_table(pd.DataFrame(rows("erm", 0.9) + rows("fooled", 0.5)))
    assert list(table["evaluator"]) == ["pixel_perturbation"] and table["passes"].all()


def test_accuracy_saves_per_class_accuracy_that_averages_to_the_headline(tiny_suite_file, tmp_path):
    run_suite(load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"])), tmp_path / "r",
              device="cpu")
    (result_file,) = (tmp_path / "r").glob("jobs/*/results/accuracy__*.json")
    record = json.loads(result_file.read_text())
    per_class = record["curves"]["per_class_accuracy"]["y"]
    assert len(per_class) == 10
    # the bundled test split has 100 images per class, so the mean of the per-class accuracies is the accuracy
    assert sum(per_class) / 10 == pytest.approx(record["scalars"]["accuracy"], abs=1e-12)
    artifact = result_file.parents[1] / record["artifacts"]["per_class_accuracy"]
    assert json.loads(artifact.read_text())["per_class_accuracy"]["y"] == per_class


class Recorder(RunObserver):
    def __init__(self):
        self.events = []

    def suite_started(self, suite, jobs):
        self.events.append(("suite_started", len(jobs)))

    def job_started(self, job, number, total):
        self.events.append(("job_started", number, total))

    def job_step(self, job, done, total):
        self.events.append(("job_step", done, total))

    def job_phase(self, job, phase):
        self.events.append(("job_phase", phase))

    def job_finished(self, report):
        self.events.append(("job_finished", report.state))

    def suite_finished(self, summary):
        self.events.append(("suite_finished", len(summary.jobs)))


def test_the_observer_sees_every_event_in_order(tiny_suite_file, tmp_path):
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"]))
    recorder = Recorder()
    run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"), observer=recorder)
    steps = math.ceil(4000 / 128)  # the bundled subset's 4,000 training digits in batches of 128, one epoch
    assert recorder.events == [("suite_started", 1), ("job_started", 1, 1), ("job_phase", "training"),
                               *[("job_step", i, steps) for i in range(1, steps + 1)],
                               ("job_phase", "evaluating accuracy"), ("job_finished", "trained"),
                               ("suite_finished", 1)]


def test_a_rerun_has_no_phase_for_stored_work(tiny_suite_file, tmp_path):
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"]))
    run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"))
    recorder = Recorder()
    run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"), observer=recorder)
    assert recorder.events == [("suite_started", 1), ("job_started", 1, 1), ("job_finished", "cached"),
                               ("suite_finished", 1)]


def _logged_run(suite, runs: Path, *, terminal: bool) -> list[str]:
    """The lines a run prints through the progress display on a console that is (or is not) a terminal."""
    import io

    from rich.console import Console

    from gibench.running.progress import RichProgress

    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, color_system=None, width=300)
    with RichProgress(console) as display:
        run_suite(suite, runs, RunOptions(device="cpu"), observer=display)
    return [line for line in out.getvalue().splitlines() if line.strip()]


def test_a_log_file_shows_each_phase_of_a_job_as_it_starts(tiny_suite_file, tmp_path):
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"]))
    label = "[1/1] mnist_subset / gibench_linear / erm / seed 0"
    lines = _logged_run(suite, tmp_path / "runs", terminal=False)
    phase = r" \(\d\d:\d\d:\d\d, \d+ s into the job\)"
    assert len(lines) == 3, lines
    assert re.fullmatch(re.escape(f"{label}: training") + phase, lines[0])
    assert re.fullmatch(re.escape(f"{label}: evaluating accuracy") + phase, lines[1])
    assert re.fullmatch(re.escape(f"{label}: trained in ") + r"[\d.]+s; accuracy done", lines[2])
    # a rerun does no work: one line, no phase
    assert _logged_run(suite, tmp_path / "runs", terminal=False) == [f"{label}: cached; accuracy cached"]


def test_a_terminal_shows_phases_on_the_bar_not_as_lines(tiny_suite_file, tmp_path):
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"]))
    printed = "\n".join(_logged_run(suite, tmp_path / "runs", terminal=True))
    assert "into the job" not in printed and "trained in" in printed


def test_run_options_are_picklable_and_validated():
    options = RunOptions(device="cpu", data_root="/data", eval_batch_size=32)
    assert pickle.loads(pickle.dumps(options)) == options and options.data_root == Path("/data")
    with pytest.raises(ConfigError, match="--eval-batch-size must be a positive integer"):
        dataclasses.replace(options, eval_batch_size=0)


def test_run_job_leaves_a_job_that_another_worker_holds(tiny_suite_file, tmp_path):
    from gibench.core.fsio import Claim
    from gibench.running.runner import run_job
    from gibench.suites.jobs import expand

    job = expand(load_suite(tiny_suite_file))[0]
    runs = tmp_path / "runs"
    other = Claim(RunStore(runs).claim_path(job.hash), 300, 30)
    assert other.try_acquire()
    busy = run_job(job, runs, RunOptions(device="cpu"))
    assert busy.state == "busy" and busy.reason.startswith(f"claimed by pid {os.getpid()} on ")
    assert not (runs / "jobs" / job.hash).exists()  # nothing was done
    other.release()
    assert run_job(job, runs, RunOptions(device="cpu")).state == "trained"
    assert run_job(job, runs, RunOptions(device="cpu")).state == "cached"


def test_the_ray_executor_without_ray_says_how_to_install_it(tiny_suite_file, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'gibench\[ray\]'"):
        run_suite(load_suite(tiny_suite_file), tmp_path / "runs", RunOptions(device="cpu"), executor="ray")
    assert not (tmp_path / "runs" / "jobs").exists()


def test_the_progress_bar_s_total_grows_as_scored_jobs_join_the_run():
    """A suite that selects adds each decided unit's scored jobs to the run: the suite bar's total follows."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from gibench.running.progress import RichProgress

    console = Console(file=io.StringIO(), force_terminal=False, width=120)
    with RichProgress(console) as display:
        display.suite_started(SimpleNamespace(name="s"), [object()] * 4)
        display.jobs_added([object()] * 3)
        [task] = [t for t in display.progress.tasks if t.id == display._overall]
        assert task.total == 7
