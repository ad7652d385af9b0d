"""An evaluation whose metric comes out NaN or infinite is recorded as failed with the metric named, never as an ok
score (``gibench validate`` refuses an ok row without a finite value, so it could not be submitted anyway)."""

from __future__ import annotations

import math

from gibench.api import registry
from gibench.api.plugin import EvalResult, Evaluator, Metric
from gibench.results.tables import collect_results
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.suite import load_suite
from tests.conftest import write_suite


class Undefined(Evaluator):
    """A headline that is finite, and a secondary metric that is undefined for this model."""

    metrics = (Metric("defined", True, "a finite number", headline=True), Metric("ratio", True, "0 / 0"))

    def evaluate(self, ctx):
        return EvalResult(scalars={"defined": 0.5, "ratio": math.nan})


def test_a_nan_metric_fails_the_evaluation_with_the_metric_named(tmp_path, register_plugin):
    register_plugin(registry.evaluators, "undefined", Undefined)
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy", "undefined"]))
    [job] = run_suite(suite, tmp_path / "runs", RunOptions(device="cpu")).jobs
    accuracy, undefined = job.evaluations
    assert accuracy.state == "ok" and undefined.state == "failed"
    assert "returned non-finite values {'ratio': nan}" in undefined.reason
    frame = collect_results(tmp_path / "runs")
    assert set(frame.loc[frame["evaluator"] == "undefined", "status"]) == {"failed"}
