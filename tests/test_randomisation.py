"""eMPRT / MPRT (evaluators/randomisation.py): the entropy against numpy + scipy and Quantus 0.6.0, the
re-initialization (complete, seeded, BatchNorm reset, the trained model untouched), the evaluator against an
independent computation, eMPRT against Quantus' EfficientMPRT on the same random model, the diagnostic MPRT left out of
the sanity gate, and the erm vs fooled ordering on a trained pair."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from gibench.api import registry
from gibench.api.plugin import EvalResult, Evaluator, Metric
from gibench.api.saliency import input_gradient, pixel_scores
from gibench.evaluators.randomisation import (
    SEED_OFFSET,
    Randomisation,
    emprt,
    histogram_entropy,
    randomised_copy,
    resettable_modules,
)
from gibench.results.tables import sanity_table
from gibench.testing import make_eval_context, tiny_bundle, tiny_model
from tests.test_rank_ties import numpy_tie_spearman


def _numpy_entropy(a: np.ndarray, bins: int = 100) -> float:
    counts, _ = np.histogram(a.ravel(), bins=bins)
    return float(scipy.stats.entropy(counts))


def test_histogram_entropy_matches_numpy_histogram_and_scipy_entropy():
    rng = np.random.default_rng(0)
    maps = np.concatenate([rng.random((3, 8, 8)), rng.exponential(size=(3, 8, 8)) ** 3])
    ours = histogram_entropy(torch.from_numpy(maps), bins=100)
    for i in range(len(maps)):
        assert float(ours[i]) == pytest.approx(_numpy_entropy(maps[i]), abs=1e-12)
    assert float(histogram_entropy(torch.from_numpy(maps), bins=7)[0]) == pytest.approx(_numpy_entropy(maps[0], 7))


def test_histogram_entropy_matches_quantus_discrete_entropy():
    complexity = pytest.importorskip("quantus.functions.complexity_func")
    maps = np.random.default_rng(1).normal(size=(4, 12, 12))
    ours = histogram_entropy(torch.from_numpy(maps), bins=100)
    for i in range(4):
        assert float(ours[i]) == pytest.approx(complexity.discrete_entropy(a=maps[i], x=maps[i], n_bins=100))


def test_entropy_of_a_constant_map_is_zero_and_its_emprt_undefined():
    h = histogram_entropy(torch.full((2, 4, 4), 0.3))
    assert h.tolist() == [0.0, 0.0]
    assert math.isnan(float(emprt(h, torch.tensor([1.0, 2.0]))[0]))
    assert float(emprt(torch.tensor([2.0]), torch.tensor([3.0]))[0]) == pytest.approx(0.5)
    uniform = torch.arange(100.0).view(1, 10, 10)  # one value per bin: the maximum, ln 100
    assert float(histogram_entropy(uniform)) == pytest.approx(math.log(100))


def _bn_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Softplus(10), nn.Flatten(), nn.Linear(3 * 16, 4),
                        nn.LayerNorm(4))
    with torch.no_grad():  # a "trained" state: non-trivial BatchNorm statistics and affine parameters
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 2)
        net[1].bias.uniform_(-1, 1)
    return net.eval()


def test_randomised_copy_reinitializes_every_layer_from_one_seeded_stream_and_leaves_the_model_alone():
    net = _bn_net()
    before = copy.deepcopy(net.state_dict())
    state = torch.random.get_rng_state()
    rand = randomised_copy(net, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key  # the trained model is untouched
    expected = copy.deepcopy(net)  # the rule, written out: one manual_seed, reset_parameters bottom-up
    torch.manual_seed(11)
    for module in (expected[0], expected[1], expected[4], expected[5]):
        module.reset_parameters()
    for key, value in rand.state_dict().items():
        assert torch.equal(value, expected.state_dict()[key]), key
    bn = rand[1]
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))
    assert not rand.training and not torch.equal(rand[0].weight, net[0].weight)
    assert [name for name, _ in resettable_modules(net)] == ["0", "1", "4", "5"]
    for key, value in randomised_copy(net, seed=11).state_dict().items():
        assert torch.equal(value, rand.state_dict()[key])  # deterministic


def test_a_model_without_resettable_layers_and_one_bin_are_user_errors():
    from gibench.core.errors import ConfigError, GibenchError

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return (self.w * x).flatten(1)[:, :3]

    with pytest.raises(GibenchError, match="no module with reset_parameters"):
        randomised_copy(Scale(), seed=0)
    with pytest.raises(ConfigError, match="bins"):
        registry.evaluators.create("randomisation", bins=1)


def test_top_k_copies_cascade_from_the_output():
    net = _bn_net()
    top1, top2 = randomised_copy(net, 5, top=1), randomised_copy(net, 5, top=2)
    assert torch.equal(top1[4].weight, net[4].weight) and torch.equal(top1[0].weight, net[0].weight)
    assert torch.equal(top1[5].weight, torch.ones(4))  # the LayerNorm on top is reset
    assert not torch.equal(top2[4].weight, net[4].weight) and torch.equal(top2[1].weight, net[1].weight)


def _quantus_random_model(model: nn.Module, seed: int) -> nn.Module:
    """Quantus 0.6.0's bottom-up full randomization, written out: torch.manual_seed(seed + 1) before every layer."""
    clone = copy.deepcopy(model)
    for _, module in resettable_modules(clone):
        torch.manual_seed(seed + 1)
        module.reset_parameters()
    return clone.eval()


def _pixel_map_explainer(model, inputs, targets, **kwargs):
    x, y = torch.as_tensor(inputs), torch.as_tensor(targets)
    return pixel_scores(input_gradient(model, x, y)).unsqueeze(1).numpy()


def test_emprt_matches_quantus_efficient_mprt_on_the_same_random_model():
    quantus = pytest.importorskip("quantus")
    bundle = tiny_bundle(channels=3)
    model = tiny_model(bundle, seed=2).eval()
    x, y = bundle.test.x[:20], bundle.test.y[:20]
    metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 100}, layer_order="bottom_up", seed=4,
                                   disable_warnings=True)
    with torch.random.fork_rng(devices=[]):
        reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                           explain_func=_pixel_map_explainer, device="cpu", batch_size=8)
        random_model = _quantus_random_model(model, seed=4)
    maps = pixel_scores(input_gradient(model, x, y))
    ours = emprt(histogram_entropy(maps), histogram_entropy(pixel_scores(input_gradient(random_model, x, y))))
    np.testing.assert_allclose(ours.numpy(), np.asarray(reference, dtype=np.float64), rtol=1e-6, atol=1e-9)


def test_evaluator_matches_an_independent_computation(tmp_path):
    bundle = tiny_bundle(channels=3)
    model = tiny_model(bundle, seed=1).eval()
    ctx = make_eval_context(model, bundle, tmp_path, batch_size=7, seed=2)
    result = registry.evaluators.create("randomisation", max_images=16, cascade=True).evaluate(ctx)
    x, y = bundle.test.x[:16], bundle.test.y[:16]

    def reset(top=None):  # the documented rule, written out independently
        clone = copy.deepcopy(model)
        modules = [m for m in clone.modules() if hasattr(m, "reset_parameters")]
        torch.manual_seed(2 + SEED_OFFSET)
        for m in (modules if top is None else modules[::-1][:top]):
            m.reset_parameters()
        return clone.eval()

    def grad_map(m):
        return pixel_scores(input_gradient(m, x, y)).flatten(1).double().numpy()

    maps, full, top = grad_map(model), grad_map(reset()), grad_map(reset(1))
    h0 = np.array([_numpy_entropy(m) for m in maps])
    h1 = np.array([_numpy_entropy(m) for m in full])
    # Spearman with gibench's tie rule written out independently (random layers give pixel scores tied within 1e-4)
    spearman = lambda a, b: np.mean([numpy_tie_spearman(u, v) for u, v in zip(a, b)])  # noqa: E731
    assert result.scalars["emprt"] == pytest.approx(np.mean((h1 - h0) / h0), rel=1e-9)
    assert result.scalars["entropy_original"] == pytest.approx(h0.mean(), rel=1e-9)
    assert result.scalars["entropy_randomised"] == pytest.approx(h1.mean(), rel=1e-9)
    assert result.scalars["mprt_spearman_full"] == pytest.approx(spearman(maps, full), rel=1e-9)
    assert result.scalars["mprt_spearman_top"] == pytest.approx(spearman(maps, top), rel=1e-9)
    cascade = [spearman(maps, grad_map(reset(k))) for k in (1, 2, 3)]
    np.testing.assert_allclose(result.curves["mprt_cascade"].y, cascade, rtol=1e-9)
    assert not model.training


def test_plain_mprt_is_declared_diagnostic_and_emprt_is_the_gated_headline():
    metrics = {m.name: m for m in Randomisation.metrics}
    assert Randomisation.headline().name == "emprt" and not metrics["emprt"].diagnostic
    assert metrics["mprt_spearman_full"].diagnostic and metrics["mprt_spearman_top"].diagnostic


class _PlainMPRT(Evaluator):
    """A plain-MPRT evaluator whose headline is diagnostic (as a user might register it)."""

    metrics = (Metric("mprt", False, "Spearman after re-initialization", headline=True, bounds=(-1.0, 1.0),
                      diagnostic=True),)

    def evaluate(self, ctx):
        return EvalResult({"mprt": 0.0})


def _frame(values: dict[str, dict[str, list[float]]], higher: dict[str, bool]) -> pd.DataFrame:
    rows = []
    for variant, metrics in values.items():
        for metric, seeds in metrics.items():
            for seed, value in enumerate(seeds):
                rows.append({"job_hash": f"{variant}-{seed}", "dataset": "d", "backbone": "b", "variant": variant,
                             "regularizer": variant, "seed": seed, "evaluator": metric, "evaluator_version": "1",
                             "metric": {"plain_mprt": "mprt"}.get(metric, metric), "value": value,
                             "higher_is_better": higher[metric], "headline": True, "status": "ok"})
    return pd.DataFrame(rows)


def test_sanity_gate_leaves_out_a_diagnostic_headline(register_plugin):
    register_plugin(registry.evaluators, "plain_mprt", _PlainMPRT)
    frame = _frame({"erm": {"plain_mprt": [0.6, 0.62], "pixel_perturbation": [0.9, 0.91]},
                    "fooled": {"plain_mprt": [0.1, 0.12], "pixel_perturbation": [0.7, 0.72]}},
                   {"plain_mprt": False, "pixel_perturbation": True})
    table = sanity_table(frame)
    assert table["evaluator"].tolist() == ["pixel_perturbation"] and table["passes"].all()
    assert sanity_table(frame[frame["evaluator"] == "plain_mprt"]).empty  # nothing left to gate, no error


@pytest.mark.slow
def test_sanity_report_gates_emprt_and_road_and_mprt_calls_fooled_better(tmp_path, one_thread, monkeypatch):
    """A suite on mnist_subset (4,000 digits), gibench_cnn (softplus), erm and fooled, 1 epoch (Adam 1e-3, batch 64,
    seed 0); both evaluators on the first 200 test images (ROAD at 10/30/50/70/90 %). Observed: eMPRT erm 0.345 vs
    fooled −0.144 (fooled's own map already has the higher entropy, 3.98 vs 2.56 nats; the re-initialized model, the
    same for both, 3.41); ROAD LeRF − MoRF erm 0.707 vs fooled −0.018; plain MPRT (full re-initialization) erm 0.62
    vs fooled 0.19, i.e. MPRT calls fooled's map the better one, which is why it is a diagnostic and left out of the
    gate."""
    import io

    import yaml
    from rich.console import Console

    from gibench import cli, load_suite, run_suite
    from gibench.results.tables import collect_results

    suite = {"name": "randomisation_road_sanity", "description": "erm vs fooled", "datasets": ["mnist_subset"],
             "backbones": [{"gibench_cnn": {"act": "softplus"}}], "regularizers": ["erm", "fooled"],
             "evaluators": [{"randomisation": {"max_images": 200}},
                            {"road": {"max_images": 200, "fractions": [0.1, 0.3, 0.5, 0.7, 0.9]}}],
             "seeds": [0], "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-3}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    runs = tmp_path / "runs"
    run_suite(load_suite(str(path)), runs, device="cpu")
    frame = collect_results(runs)
    value = frame.set_index(["regularizer", "metric"])["value"]
    assert value["erm", "emprt"] > 0.1 and value["fooled", "emprt"] < value["erm", "emprt"] - 0.2, value
    assert value["fooled", "entropy_original"] > value["erm", "entropy_original"], value
    assert value["fooled", "gap_lerf_morf"] < value["erm", "gap_lerf_morf"] - 0.3, value
    assert value["fooled", "mprt_spearman_full"] < value["erm", "mprt_spearman_full"], value  # MPRT is fooled
    assert value["fooled", "entropy_randomised"] == value["erm", "entropy_randomised"]  # one random model for both
    table = sanity_table(frame)
    assert sorted(table["metric"]) == ["emprt", "gap_lerf_morf"] and table["passes"].all(), table
    buffer = io.StringIO()
    monkeypatch.setattr(cli._shared, "stdout", Console(file=buffer, width=200, color_system=None))
    assert cli.main(["report", "--runs-dir", str(runs), "--sanity"]) == 0
    out = buffer.getvalue()
    assert "randomisation: emprt" in out and "road: gap_lerf_morf" in out and "mprt_spearman" not in out
