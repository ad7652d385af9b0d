"""The saliency methods of gibench.api.saliency: X-Gradient, its baseline, Integrated Gradients and the method
option."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from gibench.api.plugin import EvalResult, Evaluator, Metric
from gibench.api.saliency import (
    SaliencyOptions,
    attribution_baseline,
    input_gradient,
    integrated_gradients,
    saliency_for,
    x_gradient,
)
from gibench.core.config_types import plugin_config
from gibench.training.models import Normalize


def _normalized_mlp(bias: bool) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias))
    return nn.Sequential(OrderedDict(normalize=Normalize([0.2, 0.5, 0.7], [0.3, 0.2, 0.25]), backbone=net)).double()


def test_baseline_is_the_mean_colour_and_zero_without_normalize() -> None:
    model = _normalized_mlp(bias=False)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    base = attribution_baseline(model, x)
    assert base.shape == (1, 3, 1, 1) and base.dtype == torch.float64
    torch.testing.assert_close(base.flatten(), torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64))
    # zero in normalized space
    torch.testing.assert_close(model.normalize(base.expand_as(x)), torch.zeros_like(x))
    bare = model.backbone
    torch.testing.assert_close(attribution_baseline(bare, x), torch.zeros(1, 3, 1, 1, dtype=torch.float64))


def test_x_gradient_is_offset_times_input_gradient() -> None:
    model = _normalized_mlp(bias=True)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    mean = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64).view(1, 3, 1, 1)
    expected = (x - mean) * input_gradient(model, x, y)
    torch.testing.assert_close(x_gradient(model, x, y), expected)
    assert not x_gradient(model, x, y).requires_grad


def test_x_gradient_completeness_on_a_homogeneous_backbone() -> None:
    """On a bias-free ReLU backbone, Σ X-Gradient = f_y(x) - f_y(baseline) = f_y(x) (Hesse et al.)."""
    model = _normalized_mlp(bias=False)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    total = x_gradient(model, x, y).flatten(1).sum(1)
    logit = model(x).gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(total, logit, rtol=1e-12, atol=1e-12)


def test_x_gradient_create_graph_reaches_parameters() -> None:
    model = _normalized_mlp(bias=False)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    attribution = x_gradient(model, x, y, create_graph=True)
    (attribution.abs().sum()).backward()
    weight = model.backbone[1].weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------------
# Integrated Gradients and the method option


def _digit_model(bias: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 gibench_cnn (width 4) on 16×16 three-channel images with Normalize first; weights redrawn at a scale
    where the logits are O(1)."""
    from gibench.data.tensors import make_bundle
    from gibench.training.models import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    bundle = make_bundle("toy16", x, y, x, y, num_classes=3)
    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"bias": bias, "width": 4, "hidden": 8}, bundle).double().eval()
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            scale = 0.1 if name.endswith("bias") else 1.0 / max(1, p[0].numel()) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale * 1.5)
    return model, x.double(), y


def _relative_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Hesse et al.'s ``--compare_attribution`` distance: Σ|a − b| / Σ|b|."""
    return ((a - b).abs().sum() / b.abs().sum()).item()


def test_x_gradient_equals_integrated_gradients_on_an_x_dnn() -> None:
    model, x, y = _digit_model(bias=False)
    ig = integrated_gradients(model, x, y, steps=32)
    xg = x_gradient(model, x, y)
    assert ig.abs().sum() > 0
    assert _relative_l1(xg, ig) < 1e-5
    torch.testing.assert_close(xg, ig, rtol=1e-5, atol=1e-5 * ig.abs().max().item())


def test_x_gradient_differs_from_integrated_gradients_with_biases() -> None:
    model, x, y = _digit_model(bias=True)
    ig = integrated_gradients(model, x, y, steps=32)
    assert _relative_l1(x_gradient(model, x, y), ig) >= 0.1


def test_integrated_gradients_matches_a_hand_gauss_legendre_sum() -> None:
    """Independent of captum: Σ_i w_i ∇f_y(b + t_i(x − b)) ⊙ (x − b) with numpy's Gauss-Legendre nodes on [0, 1]."""
    import numpy as np

    model, x, y = _digit_model(bias=True)
    steps = 16
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    base = attribution_baseline(model, x)
    expected = torch.zeros_like(x)
    for t, w in zip((nodes + 1) / 2, weights / 2):
        expected += w * input_gradient(model, base + float(t) * (x - base), y)
    expected *= x - base
    # captum multiplies the gradients by its quadrature weights as a float32 tensor, hence ~1e-6, not 1e-12
    ig = integrated_gradients(model, x, y, steps=steps)
    torch.testing.assert_close(ig, expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())
    assert _relative_l1(ig, expected) < 1e-6


def test_saliency_function_resolves_each_method() -> None:
    import functools

    from gibench.api.saliency import SALIENCY_METHODS, saliency_function
    from gibench.core.errors import ConfigError

    assert saliency_function() is input_gradient and saliency_function("input_gradient") is input_gradient
    assert saliency_function("x_gradient") is x_gradient
    ig = saliency_function("integrated_gradients", ig_steps=8)
    assert isinstance(ig, functools.partial) and ig.func is integrated_gradients and ig.keywords == {"steps": 8}
    assert SALIENCY_METHODS == ("input_gradient", "x_gradient", "integrated_gradients")
    try:
        saliency_function("smoothgrad")
    except ValueError as exc:
        assert "smoothgrad" in str(exc) and "x_gradient" in str(exc)
    else:
        raise AssertionError("an unknown method was accepted")
    from gibench import create_evaluator

    assert saliency_for(create_evaluator("blockmnist").config) is input_gradient
    chosen = saliency_for(create_evaluator("blockmnist", saliency="integrated_gradients", ig_steps=4).config)
    assert chosen.keywords == {"steps": 4}
    assert saliency_for(object()) is input_gradient  # a config without the field
    try:
        create_evaluator("blockmnist", saliency="smoothgrad")
    except ConfigError as exc:
        assert "saliency" in str(exc) and "x_gradient" in str(exc)
    else:
        raise AssertionError("an unknown method was accepted by the Config")


def test_make_eval_context_takes_a_method_name() -> None:
    from gibench.testing import make_eval_context, tiny_bundle, tiny_model

    bundle = tiny_bundle()
    import tempfile

    ctx = make_eval_context(tiny_model(bundle), bundle, tempfile.mkdtemp(), saliency="x_gradient")
    assert ctx.saliency is x_gradient


# ----------------------------------------------------------------------------------------------------------------------
# Identity: hashes, result rows


SALIENCY_EVALUATORS = ("blockmnist", "complexity", "decoy_reliance", "diffroar", "infidelity", "keep_remove",
                       "pixel_perturbation", "random_logit", "randomisation", "road", "score_alignment", "sensitivity")


def _evaluator_specs(*entries):
    from gibench.suites.suite import parse_suite

    suite = parse_suite({"name": "t", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"],
                         "regularizers": ["erm"], "evaluators": list(entries)})
    return suite.evaluators


def test_default_saliency_keeps_the_stored_result_hash() -> None:
    """blockmnist's default config hash before the saliency option existed (the key of the results in a stored
    standard run, e.g. jobs/<hash>/results/blockmnist__v1__b981bcbe5cc0e2f7.json)."""
    from gibench.core.identity import identity_hash

    default, explicit, xgrad, ig = _evaluator_specs(
        "blockmnist", {"blockmnist": {"saliency": "input_gradient", "ig_steps": 32}},
        {"blockmnist": {"saliency": "x_gradient"}}, {"blockmnist": {"saliency": "integrated_gradients"}})
    assert identity_hash(default.config) == identity_hash(explicit.config) == "b981bcbe5cc0e2f7"
    assert "saliency" not in default.config and "ig_steps" not in default.config
    assert xgrad.config["saliency"] == "x_gradient" and identity_hash(xgrad.config) != "b981bcbe5cc0e2f7"
    assert len({identity_hash(s.config) for s in (default, xgrad, ig)}) == 3
    assert xgrad.params == {"saliency": "x_gradient"} and xgrad.label == "blockmnist(saliency=x_gradient)"


def test_every_saliency_evaluator_offers_the_option() -> None:
    from gibench.api import registry
    from gibench.core.params import config_fields

    for name in SALIENCY_EVALUATORS:
        fields = config_fields(registry.evaluators.get(name).Config)
        assert "saliency" in fields and "ig_steps" in fields, name
    for name in ("accuracy", "density_ratio", "gan_test"):  # these read no saliency map
        assert "saliency" not in config_fields(registry.evaluators.get(name).Config), name


@plugin_config
class ProbeConfig(SaliencyOptions):
    """A third-party evaluator's Config: the saliency options inherited from the one declaration."""


class SaliencyProbe(Evaluator):
    """Reports the mean of ctx.saliency on 8 test images, and whether it is the function the option names."""

    Config = ProbeConfig
    metrics = (Metric("mean_map", True, "mean of the map", headline=True),
               Metric("wired", True, "1 when ctx.saliency is the configured function", bounds=(0, 1)))

    def evaluate(self, ctx):
        x, y = ctx.data.test.x[:8].to(ctx.device), ctx.data.test.y[:8].to(ctx.device)
        return EvalResult({"mean_map": float(ctx.saliency(ctx.model, x, y).double().mean()),
                           "wired": float(ctx.saliency is saliency_for(self.config))})


def test_the_runner_explains_with_the_evaluators_saliency_option(tmp_path, register_plugin) -> None:
    """One evaluator listed twice (default and x_gradient): two results, each computed with its own map."""
    from gibench.api import registry
    from gibench.results.tables import collect_results
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite
    from tests.conftest import write_suite

    register_plugin(registry.evaluators, "saliency_probe", SaliencyProbe)
    suite = load_suite(write_suite(tmp_path, regularizers=["erm"],
                                   evaluators=["saliency_probe", {"saliency_probe": {"saliency": "x_gradient"}}]))
    runs = tmp_path / "runs"
    run_suite(suite, runs, RunOptions(device="cpu"))
    frame = collect_results(runs)
    rows = frame[frame.evaluator == "saliency_probe"]
    wired = rows[rows.metric == "wired"]
    assert sorted(wired.evaluator_params) == ['{"saliency": "x_gradient"}', "{}"] and (wired.value == 1).all()
    means = rows[rows.metric == "mean_map"].set_index("evaluator_params").value
    assert means["{}"] != means['{"saliency": "x_gradient"}']


@pytest.mark.parametrize("method", ["x_gradient", "integrated_gradients"])
@pytest.mark.parametrize("name", ["blockmnist", "complexity", "pixel_perturbation"])
def test_evaluators_pass_conformance_with_each_saliency_method(name: str, method: str) -> None:
    from gibench.testing import check_evaluator

    result = check_evaluator(name, params={"saliency": method, "ig_steps": 4, "max_images": 24})
    default = check_evaluator(name, params={"max_images": 24})
    assert result is not None and default is not None
    changed = {"blockmnist": "signal_mass_share", "complexity": "gini"}  # the option changes the map they read
    if name in changed:
        assert result.scalars[changed[name]] != default.scalars[changed[name]]
