"""`gibench run --estimate`: jobs counted, work rules applied, calibration cached, done work left out, no training."""

from __future__ import annotations

import json
import math
import tempfile
from types import SimpleNamespace

import pytest
import torch

from gibench.api import registry
from gibench.api.cost import ModelPass, TrainStep
from gibench.api.dataset import DataSizes
from gibench.api.saliency import saliency_for
from gibench.cli import main
from gibench.data.torchvision_sets import SVHN
from gibench.running.estimate import data_sizes, estimate_suite, evaluation_cost
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.jobs import expand
from gibench.suites.suite import PluginSpec, load_suite
from gibench.testing import make_eval_context, tiny_bundle
from gibench.training.models import build_model
from tests.conftest import write_suite

FAST = {"warmup": 1, "timed": 2}
N_TRAIN, N_TEST = 4000, 1000  # mnist_subset
PIXEL_IMAGES, FRACTIONS = 200, 25  # the tiny suite's pixel_perturbation


def _suite(tmp_path, name="suite.yaml", **changes):
    path = write_suite(tmp_path, **changes)
    return load_suite(path.rename(tmp_path / name))


def _entries(cache_path):
    return list(json.loads(cache_path.read_text())["entries"].values())


def _cached(cache_path, kind, **match):
    """The one cached cost whose key has this kind and these fields."""
    hits = [e["seconds"] for e in _entries(cache_path) if e["key"]["kind"] == kind
            and all(e["key"].get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (kind, match, hits)
    return hits[0]


def test_jobs_training_and_evaluation_follow_the_rules(tmp_path):
    suite = _suite(tmp_path, seeds=[0, 1])
    cache = tmp_path / "cache.json"
    est = estimate_suite(suite, tmp_path / "runs", device="cpu", cache_path=cache, **FAST)
    assert est.jobs == est.jobs_left == len(expand(suite)) == 4
    assert [(r.regularizer, r.jobs) for r in est.rows] == [("erm", 2), ("gradient_norm(weight=0.001)", 2)]
    steps = math.ceil(N_TRAIN / 128)  # 1 epoch at batch 128
    forward = _cached(cache, "forward", backbone=["gibench_linear", {}])
    saliency = _cached(cache, "saliency", backbone=["gibench_linear", {}])
    evaluation = forward * (N_TEST + PIXEL_IMAGES * (1 + 2 * FRACTIONS)) + saliency * PIXEL_IMAGES
    for row in est.rows:
        regularizer = row.regularizer.split("(")[0]
        step = next(e["seconds"] for e in _entries(cache) if e["key"]["kind"] == "train_step"
                    and e["key"]["regularizer"][0] == regularizer)
        assert row.train_seconds == pytest.approx(2 * steps * step, rel=1e-12)
        assert row.eval_seconds == pytest.approx(2 * evaluation, rel=1e-12)
    assert est.seconds == pytest.approx(sum(r.seconds for r in est.rows))
    assert est.calibration.measured == 4 and est.auxiliary == []  # 2 training steps, forward, saliency


def test_second_call_uses_the_cache_and_training_scales_with_epochs(tmp_path):
    cache = tmp_path / "cache.json"
    shown = []
    first = estimate_suite(_suite(tmp_path), tmp_path / "runs", device="cpu", cache_path=cache,
                           progress=lambda *call: shown.append(call), **FAST)
    # progress is told before each uncached unit is timed: how many are done, of how many, and which
    assert [call[:2] for call in shown] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert sum("training step" in call[2] for call in shown) == 2
    assert {call[2].split(" pass of")[0] for call in shown if "pass of" in call[2]} == {"a forward", "a saliency"}
    written = cache.read_bytes()
    longer = _suite(tmp_path, name="longer.yaml", train={"epochs": 2, "batch_size": 128, "optimizer": "adam",
                                                          "lr": 1.0e-2})
    shown.clear()
    second = estimate_suite(longer, tmp_path / "runs", device="cpu", cache_path=cache,
                            progress=lambda *call: shown.append(call), **FAST)
    assert shown == []  # everything came from the cache
    assert second.calibration.measured == 0 and second.calibration.reused == first.calibration.measured == 4
    assert cache.read_bytes() == written
    assert second.train_seconds == pytest.approx(2 * first.train_seconds, rel=1e-12)
    assert [r.eval_seconds for r in second.rows] == [r.eval_seconds for r in first.rows]


def test_one_training_step_is_timed_per_regularizer_for_every_nonzero_strength(tmp_path, register_plugin):
    """A penalty weight does not change what a step computes, so gradient_norm at 1e-3 and at 10 share one timed step;
    zero is timed apart, and a sweep that declares changes_step_cost is timed at every strength."""
    from gibench.api.regularizer import Sweep
    from regularizers.gradient_norm import GradientNorm

    counted = type("CountedSteps", (GradientNorm,), {"sweep": Sweep("weight", (1e-3, 10.0), "log",
                                                                        changes_step_cost=True)})
    register_plugin(registry.regularizers, "counted_steps", counted)
    strengths = [{"gradient_norm": {"weight": w}} for w in (1e-3, 10.0, 0.0)]
    counted_strengths = [{"counted_steps": {"weight": w}} for w in (1e-3, 10.0)]
    cache = tmp_path / "cache.json"
    shown = []
    est = estimate_suite(_suite(tmp_path, regularizers=strengths + counted_strengths, evaluators=["accuracy"]),
                         tmp_path / "runs", device="cpu", cache_path=cache, progress=lambda *call: shown.append(call),
                         **FAST)
    steps = [e["key"]["regularizer"] for e in _entries(cache) if e["key"]["kind"] == "train_step"]
    assert sorted(map(json.dumps, steps)) == sorted(map(json.dumps, [
        ["gradient_norm", GradientNorm.version, {**GradientNorm.Config().__dict__, "weight": "nonzero"}],
        ["gradient_norm", GradientNorm.version, {**GradientNorm.Config().__dict__, "weight": 0.0}],
        ["counted_steps", GradientNorm.version, {**GradientNorm.Config().__dict__, "weight": 0.001}],
        ["counted_steps", GradientNorm.version, {**GradientNorm.Config().__dict__, "weight": 10.0}]]))
    assert est.calibration.measured == len(shown) == 5  # the four steps and accuracy's forward
    first, second = est.rows[0], est.rows[1]  # gradient_norm at 1e-3 and at 10: priced by the one timed step
    assert first.train_seconds == second.train_seconds > 0


def test_a_damaged_cache_file_is_ignored_and_rewritten(tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text('{"format": 1, "entries": {"x": ')
    est = estimate_suite(_suite(tmp_path), tmp_path / "runs", device="cpu", cache_path=cache, **FAST)
    assert est.calibration.measured == 4 and "not valid JSON" in est.calibration.cache.problem
    assert len(_entries(cache)) == 4
    cache.write_text('["not", "a", "calibration"]')
    again = estimate_suite(_suite(tmp_path), tmp_path / "runs", device="cpu", cache_path=cache, **FAST)
    assert again.calibration.measured == 4 and "not a gibench calibration file" in again.calibration.cache.problem


def test_completed_work_is_not_estimated(tmp_path):
    suite_file = write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy"])
    runs = tmp_path / "runs"
    run_suite(load_suite(suite_file), runs, RunOptions(device="cpu"))
    cache = tmp_path / "cache.json"
    done = estimate_suite(load_suite(suite_file), runs, device="cpu", cache_path=cache, **FAST)
    assert (done.jobs, done.jobs_left, done.seconds) == (1, 0, 0.0)
    more = write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy", {"density_ratio": {"max_images": 100}}])
    partial = estimate_suite(load_suite(more), runs, device="cpu", cache_path=cache, **FAST)
    forward = _cached(cache, "forward", backbone=["gibench_linear", {}])
    assert partial.jobs_left == 1 and partial.train_seconds == 0.0  # trained already: only density_ratio is left
    assert partial.seconds == pytest.approx(forward * 100 * (1 + 6), rel=1e-12)


def test_missing_datasets_are_sized_by_their_own_declaration_and_nothing_is_downloaded(tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    assert data_sizes(PluginSpec.of("cifar100", {}, {}), data) == DataSizes((3, 32, 32), 100, 50_000, 10_000)
    limited = data_sizes(PluginSpec.of("svhn", {"train_limit": 1000}, {"train_limit": 1000, "test_limit": 0}), data)
    assert (limited.n_train, limited.n_test) == (1000, SVHN.split_sizes[1])
    digits = data_sizes(PluginSpec.of("blockmnist", {"source": "mnist", "classes": [0, 1]},
                                      {"source": "mnist", "classes": [0, 1], "placement_seed": 0}), data)
    assert (digits.shape, digits.num_classes, digits.n_train, digits.n_test) == ((1, 56, 28), 2, 5923 + 6742,
                                                                                  980 + 1135)
    suite = _suite(tmp_path, datasets=["cifar10"], regularizers=["erm"], evaluators=["accuracy"])
    est = estimate_suite(suite, tmp_path / "runs", device="cpu", data_root=data, cache_path=tmp_path / "c.json",
                         **FAST)
    step = _cached(tmp_path / "c.json", "train_step", shape=[3, 32, 32])
    assert est.train_seconds == pytest.approx(math.ceil(50_000 / 128) * step, rel=1e-12)
    assert not any(data.iterdir())


def _job(tmp_path, evaluators):
    return expand(_suite(tmp_path, evaluators=evaluators, regularizers=["erm"]))[0]


def test_the_auxiliary_model_rules(tmp_path):
    data = DataSizes((1, 28, 28), 10, N_TRAIN, N_TEST)
    job = _job(tmp_path, [{"diffroar": {"levels": [0.5], "retrain_seeds": [0, 1], "epochs": 3,
                                        "max_train_images": 500}}])
    work = evaluation_cost(job.evaluators[0], job, data, eval_batch=64)
    retrain = [(u, n) for u, n in work.per_job.items() if isinstance(u, TrainStep)]
    assert len(retrain) == 1 and retrain[0][0].regularizer.name == "erm" and retrain[0][0].train.epochs == 3
    assert retrain[0][1] == 2 * 1 * 2 * 3 * math.ceil(500 / 128)  # sides × levels × seeds × epochs × steps
    saliency = ModelPass("saliency", job.backbone, data.shape, 10, 64)
    assert work.per_job[saliency] == 500 + N_TEST and work.shared == {}

    job = _job(tmp_path, [{"gan_test": {"num_samples": 40, "steps": 10}}])
    work = evaluation_cost(job.evaluators[0], job, data, eval_batch=64)
    assert work.per_job[saliency] == 40 * 10
    (what, shared), = work.shared.values()
    judge_steps = [n for u, n in shared.items() if isinstance(u, TrainStep)]
    assert "judge" in what and judge_steps == [5 * math.ceil(N_TRAIN / 64)]  # 5 epochs at batch 64 (defaults)


def test_cli_estimate_prints_without_training(tmp_path, tiny_suite_file, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(runs), "--device", "cpu",
                 "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "suite tiny: estimated device-hours on cpu" in out and "gradient_norm(weight=0.001)" in out
    assert "2 job(s), 2 not yet complete" in out and "total" in out
    assert not runs.exists()  # nothing trained, nothing written into the runs directory
    assert (tmp_path / "cache" / "gibench" / "calibration.json").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# The metric-family rules count what the evaluators really run


def _counted_passes(name, params, bundle, backbone):
    """Images the evaluator pushes through the model (and its randomized copies): saliency passes (forwards with
    gradients on) and plain forwards (no gradient), counted by a forward hook on the model."""
    counts = {"saliency": 0, "forward": 0}

    def hook(module, inputs, output):
        counts["saliency" if torch.is_grad_enabled() else "forward"] += inputs[0].shape[0]

    model = build_model(backbone.name, backbone.config, bundle)
    model.register_forward_hook(hook)  # deep copies (randomisation's re-initialized models) keep it
    evaluator = registry.evaluators.create(name, **params)
    with tempfile.TemporaryDirectory() as folder:
        ctx = make_eval_context(model, bundle, folder, batch_size=8, saliency=saliency_for(evaluator.config))
        evaluator.evaluate(ctx)
    return counts


METRIC_FAMILY_CASES = [
    ("random_logit", {"max_images": 5}),
    ("complexity", {"max_images": 5}),
    ("sensitivity", {"max_images": 5, "num_samples": 3}),
    ("infidelity", {"max_images": 5, "num_samples": 3}),
    ("randomisation", {"max_images": 5}),
    ("randomisation", {"max_images": 5, "cascade": True}),
    ("road", {"max_images": 5, "fractions": [0.2, 0.5]}),
    ("keep_remove", {"max_images": 5, "fractions": [0.25, 0.5, 1.0]}),
    ("complexity", {"max_images": 5, "saliency": "integrated_gradients", "ig_steps": 3}),
    ("sensitivity", {"max_images": 3, "num_samples": 2, "saliency": "integrated_gradients", "ig_steps": 4}),
    ("road", {"max_images": 5, "fractions": [0.3], "saliency": "x_gradient"}),
]


@pytest.mark.parametrize(("name", "params"), METRIC_FAMILY_CASES, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items() if k != "max_images"))
def test_metric_family_rules_count_the_evaluators_model_passes(name, params):
    bundle = tiny_bundle(image_size=(16, 16), train_size=12, test_size=12)
    backbone = PluginSpec.of("gibench_cnn", {"width": 2}, {})
    data = DataSizes(tuple(bundle.test.x.shape[1:]), bundle.num_classes, len(bundle.train), len(bundle.test))
    job = SimpleNamespace(backbone=backbone)
    work = evaluation_cost(PluginSpec.of(name, params, {}), job, data, eval_batch=8)
    assert work is not None and work.shared == {}
    forward = ModelPass("forward", backbone, data.shape, data.num_classes, 8)
    saliency = ModelPass("saliency", backbone, data.shape, data.num_classes, 8)
    assert set(work.per_job) <= {forward, saliency}
    counted = _counted_passes(name, params, bundle, backbone)
    assert {"saliency": work.per_job.get(saliency, 0), "forward": work.per_job.get(forward, 0)} == counted


@pytest.mark.parametrize("name", sorted(registry.regularizers.names()))
def test_every_builtin_regularizer_s_training_step_can_be_calibrated(name):
    """Calibration trains on random stand-in data: a regularizer that requires training annotations (rrr's
    irrelevant_mask) gets random ones, so its step is timed instead of failing the whole estimate."""
    from gibench.running.calibration import measure
    from gibench.training.specs import TrainConfig

    unit = TrainStep(PluginSpec.of("gibench_mlp", {"hidden": 8}, {"hidden": 8}), PluginSpec(name),
                     TrainConfig(batch_size=4, augment="none"), (1, 12, 12), 3)
    assert measure(unit, torch.device("cpu"), warmup=1, timed=1) > 0


def test_a_job_whose_training_failed_is_no_work_left_unless_retried(tmp_path):
    """The runner does not train a job again whose training failed (a non-finite loss is deterministic), so the
    estimate does not count it either; --retry-failed does, and so does an out-of-memory failure (retryable)."""
    from gibench.running.estimate import plan
    from gibench.store.runs import RunStore

    suite = _suite(tmp_path, regularizers=["erm", "gradient_norm", "score_matching"], evaluators=["accuracy"])
    runs = tmp_path / "runs"
    erm, penalty, score = expand(suite)
    store = RunStore(runs)
    store.job(penalty.hash).save_failed("training failed: non-finite loss at step 3", {})
    store.job(score.hash).save_failed("out of memory", {}, retryable=True)
    counted = plan(suite, runs)
    assert (counted.jobs, counted.jobs_left, counted.failed) == (3, 2, 1)
    assert [row.jobs_left for row in counted.rows] == [1, 0, 1]
    assert counted.rows[1].train_work == {} and counted.rows[1].eval_work == {}
    retried = plan(suite, runs, retry_failed=True)
    assert (retried.jobs, retried.jobs_left, retried.failed) == (3, 3, 0)
    assert retried.rows[1].train_work and retried.rows[1].eval_work  # gradient_norm's training and accuracy


def test_cli_estimate_says_how_many_failed_jobs_it_left_out(tmp_path, capsys):
    from gibench.store.runs import RunStore

    suite = _suite(tmp_path, regularizers=["erm", "gradient_norm"], evaluators=["accuracy"])
    runs = tmp_path / "runs"
    RunStore(runs).job(expand(suite)[1].hash).save_failed("training failed: non-finite loss at step 3", {})
    args = ["run", "--suite", str(tmp_path / "suite.yaml"), "--runs-dir", str(runs), "--estimate",
            "--throughput", "1e6"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 job(s), 1 not yet complete" in out and "(1 whose training failed before are not counted" in out
    assert main([*args, "--retry-failed"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 job(s), 2 not yet complete" in out and "failed before" not in out
