"""Every evaluator declares its own cost and every dataset its own sizes; the estimate is calibration plus a sum, and
its calibrations are keyed by the code on the unit's path (gibench.api.cost, gibench.running.calibration)."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from types import SimpleNamespace

import pytest

from gibench.api import registry
from gibench.api.cost import CostContext, EvaluationCost, ModelPass, PluginWork, work
from gibench.api.dataset import DataSizes
from gibench.api.plugin import Dataset, EvalResult, Evaluator, Metric
from gibench.core import source_identity as source
from gibench.core.errors import GibenchError
from gibench.running.estimate import estimate_suite
from gibench.suites.suite import PluginSpec, load_suite
from tests.conftest import write_suite

FAST = {"warmup": 1, "timed": 2}
N_TEST = 1000  # mnist_subset's test split


class Costed(Evaluator):
    """A third-party evaluator that declares its cost: 3 saliency passes per image and 2 steps of its own work."""

    metrics = (Metric("value", True, "a constant", headline=True),)

    def evaluate(self, ctx):
        return EvalResult({"value": 1.0})

    def cost(self, ctx):
        own = ctx.plugin_work(self.name, "own_step", {"size": 7}, batch_size=4, per="step")
        return EvaluationCost(work((ctx.saliency(), 3 * ctx.images(100)), (own, 2)))

    @classmethod
    def time_work(cls, unit, timer):
        assert unit.options() == {"size": 7} and unit.per == "step"
        bundle = timer.random_bundle(unit.shape, unit.num_classes, unit.batch_size)
        return timer.seconds_per_call(lambda: bundle.train.x.sum())


class Silent(Evaluator):
    """A third-party evaluator without a cost hook."""

    metrics = (Metric("value", True, "a constant", headline=True),)

    def evaluate(self, ctx):
        return EvalResult({"value": 1.0})


class Broken(Silent):
    def cost(self, ctx):
        raise KeyError("max_images")


def _suite(tmp_path, evaluators):
    return load_suite(write_suite(tmp_path, regularizers=["erm"], evaluators=evaluators))


def test_a_third_party_evaluator_is_estimated_from_its_own_hook(tmp_path, register_plugin):
    register_plugin(registry.evaluators, "costed", Costed)
    register_plugin(registry.evaluators, "silent", Silent)
    cache = tmp_path / "cache.json"
    est = estimate_suite(_suite(tmp_path, ["costed", "silent"]), tmp_path / "runs", device="cpu", cache_path=cache,
                         **FAST)
    assert est.not_estimated == ["silent"]  # listed by name, not silently dropped
    entries = [e for e in json.loads(cache.read_text())["entries"].values()]
    saliency = next(e["seconds"] for e in entries if e["key"]["kind"] == "saliency")
    own = next(e for e in entries if e["key"]["kind"] == "plugin_work")
    assert own["key"]["owner"] == ["costed", "1"] and own["key"]["work"] == "own_step"
    (row,) = est.rows
    assert row.eval_seconds == pytest.approx(3 * 100 * saliency + 2 * own["seconds"], rel=1e-12)


def test_a_failing_cost_hook_is_a_clear_error(tmp_path, register_plugin):
    register_plugin(registry.evaluators, "broken", Broken)
    with pytest.raises(GibenchError, match=r"evaluator broken's cost hook failed on .*KeyError: 'max_images'"):
        estimate_suite(_suite(tmp_path, ["broken"]), tmp_path / "runs", device="cpu",
                       cache_path=tmp_path / "c.json", **FAST)


def test_cost_context_counts_images_and_steps():
    job = SimpleNamespace(backbone=PluginSpec.of("gibench_linear", {}, {}), dataset=PluginSpec.of("mnist_subset", {},
                                                                                                   {}))
    ctx = CostContext(job, DataSizes((1, 28, 28), 10, 4000, N_TEST), batch_size=64)
    assert (ctx.images(0), ctx.images(200), ctx.images(5000)) == (N_TEST, 200, N_TEST)
    assert ctx.saliency() == ModelPass("saliency", job.backbone, (1, 28, 28), 10, 64)
    assert CostContext.training_steps(SimpleNamespace(epochs=3, batch_size=128), 4000) == 3 * math.ceil(4000 / 128)
    unit = ctx.plugin_work("x", "step", {"b": 1, "a": 2.5}, per="step")
    assert unit == PluginWork("x", "step", '{"a":2.5,"b":1}', (1, 28, 28), 10, 64, "step")
    assert ctx.shared_key({"judge": 1}) == ctx.shared_key({"judge": 1}) != ctx.shared_key({"judge": 2})


@pytest.mark.parametrize(("name", "params"), [
    ("mnist_subset", {}), ("mnist_subset", {"test_fraction": 0.3}), ("blockmnist", {}),
    ("blockmnist", {"classes": [3, 5, 8]}), ("blockmnist_top", {"classes": [0, 1]}), ("gaussian_mixture", {}),
    ("gaussian_mixture", {"num_classes": 4, "channels": 3, "height": 8, "width": 12, "train_size": 50,
                          "test_size": 20}),
])
def test_datasets_declare_the_sizes_they_load(name, params):
    dataset = registry.datasets.create(name, **params)
    assert dataset.sizes() == DataSizes.of(dataset.load(None))


def test_the_bundled_digits_are_500_per_class():
    from gibench.data.bundled import DIGITS_PER_CLASS, _decoded_mnist_subset

    _, y = _decoded_mnist_subset()
    assert [int((y == d).sum()) for d in range(10)] == [DIGITS_PER_CLASS] * 10


def test_a_dataset_without_sizes_is_loaded_to_size_it(tmp_path, register_plugin):
    from gibench.data.tensors import make_bundle
    from gibench.running.estimate import data_sizes

    class Tiny(Dataset):
        def load(self, data_root, download=False):
            import torch

            x = torch.rand(30, 1, 6, 6)
            return make_bundle("tiny", x[:20], torch.arange(20) % 2, x[20:], torch.arange(10) % 2, num_classes=2)

    register_plugin(registry.datasets, "tiny_unsized", Tiny)
    assert Tiny().sizes() is None
    assert data_sizes(PluginSpec.of("tiny_unsized", {}, {})) == DataSizes((1, 6, 6), 2, 20, 10)


# ----------------------------------------------------------------------------------------------------------------------
# The code on a unit's path


def _clear():
    source.source_identity.cache_clear()
    source._source_file.cache_clear()


@pytest.fixture
def local_package(tmp_path, monkeypatch):
    """A package no distribution provides: ``step`` imports ``helper`` inside a function; ``cli`` is off the path."""
    package = tmp_path / "costpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "step.py").write_text(textwrap.dedent("""
        import math

        def run():
            from . import helper
            return helper.value() + math.pi
    """))
    (package / "helper.py").write_text("import numpy\n\ndef value():\n    return 1\n")
    (package / "cli.py").write_text("from costpkg import step\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _clear()
    yield package
    for name in [m for m in sys.modules if m.startswith("costpkg")]:
        del sys.modules[name]
    _clear()


def test_the_code_identity_follows_imports_inside_functions(local_package):
    modules, third_party = source.code_closure("costpkg.step")
    assert modules == {"costpkg.step", "costpkg.helper"}  # not cli, which imports step but is not imported by it
    assert any(entry.startswith("numpy numpy==") for entry in third_party) and not any("math" in e for e in
                                                                                       third_party)
    before = source.source_identity("costpkg.step")
    (local_package / "cli.py").write_text("from costpkg import step  # edited\n")
    _clear()
    assert source.source_identity("costpkg.step") == before  # code off the path keeps the calibrations
    (local_package / "helper.py").write_text("import numpy\n\ndef value():\n    return 2\n")
    _clear()
    assert source.source_identity("costpkg.step") != before  # code on the path recalibrates


def test_the_training_step_is_keyed_by_the_training_path_not_the_command_line():
    modules, third_party = source.code_closure("gibench.training.train")
    assert {"gibench.training.train", "gibench.api.passes", "gibench.training.models"} <= modules
    assert not any(m.startswith(("gibench.cli", "gibench.running", "gibench.store", "gibench.results"))
                   for m in modules)
    assert any(entry.startswith("torch ") for entry in third_party)
    # the regularizers and the loop import the contracts they use, not the evaluator's: editing the evaluator
    # contract keeps every training step's calibration
    for name in ("gibench.training.train", "gibench.regularizers.score_matching", "gibench.regularizers.pgd"):
        assert not source.code_closure(name)[0] & {"gibench.api.evaluator", "gibench.api.cost", "gibench.api.plugin"}


def test_the_learned_score_denoiser_is_timed_by_its_evaluator_and_counted_once(tmp_path):
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"], seeds=[0, 1], evaluators=[
        {"score_alignment": {"max_images": 10, "denoiser_epochs": 2, "denoiser_batch_size": 8,
                             "denoiser_width": 8}}]))
    cache = tmp_path / "cache.json"
    est = estimate_suite(suite, tmp_path / "runs", device="cpu", cache_path=cache, **FAST)
    entries = json.loads(cache.read_text())["entries"].values()
    own = {e["key"]["work"]: e for e in entries if e["key"]["kind"] == "plugin_work"}
    assert set(own) == {"denoiser_step", "denoiser_forward"}
    assert own["denoiser_step"]["key"]["batch_size"] == 8 and own["denoiser_step"]["key"]["per"] == "step"
    step, forward = own["denoiser_step"]["seconds"], own["denoiser_forward"]["seconds"]
    (aux,) = est.auxiliary  # one denoiser for both seeds' jobs
    assert aux.regularizer == "score_alignment denoiser (σ = 0.25)"
    assert aux.eval_seconds == pytest.approx(2 * math.ceil(4000 / 8) * step + 2 * N_TEST * forward, rel=1e-12)
    saliency = next(e["seconds"] for e in entries if e["key"]["kind"] == "saliency")
    (row,) = est.rows
    assert row.eval_seconds == pytest.approx(2 * (2 * 10 * saliency + 2 * 10 * forward), rel=1e-12)
