"""The model-only evaluators honour the Evaluator contract: declared metrics, capabilities, validated configs,
artifacts on disk, determinism, and independence from the batch size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import gibench
from gibench.api import SIGNAL_MASK, EvalContext, Evaluator
from gibench.errors import ConfigError
from gibench.evaluators.blockmnist import BlockMNISTLeakage
from gibench.evaluators.density_ratio import DensityRatio
from gibench.evaluators.pixel_perturbation import DEFAULT_FRACTIONS, PixelPerturbation
from gibench.evaluators.score_alignment import ScoreAlignment
from gibench.saliency import input_gradient

EVALUATORS = {
    "pixel_perturbation": (PixelPerturbation, "mnist_subset", frozenset()),
    "density_ratio": (DensityRatio, "mnist_subset", frozenset()),
    "blockmnist": (BlockMNISTLeakage, "blockmnist", frozenset({SIGNAL_MASK})),
    "score_alignment": (ScoreAlignment, "gaussian_mixture", frozenset()),
}


@pytest.fixture(scope="module")
def bundles():
    return {name: gibench.load_dataset(name) for name in ("mnist_subset", "blockmnist", "gaussian_mixture")}


def tiny_model(bundle, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    c, (h, w) = bundle.in_chans, bundle.image_size
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.Softplus(beta=5), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * (h // 2) * (w // 2), bundle.num_classes),
    ).eval()


def context(model, bundle, tmp_path: Path, batch_size=64, seed=0) -> EvalContext:
    return EvalContext(model=model, data=bundle, saliency=input_gradient, device=torch.device("cpu"), seed=seed,
                       artifact_dir=tmp_path, batch_size=batch_size)


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_declarations(name):
    cls, _, requires = EVALUATORS[name]
    assert gibench.create_evaluator(name).__class__ is cls  # the entry point resolves to the class
    assert issubclass(cls, Evaluator) and isinstance(cls.version, str) and cls.version
    assert sum(m.headline for m in cls.metrics) == 1
    assert len({m.name for m in cls.metrics}) == len(cls.metrics)
    assert cls.requires == requires
    assert cls.__doc__ and len(__import__(cls.__module__, fromlist=["_"]).__doc__) > 500  # cites paper and choices


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_evaluate_returns_declared_metrics_and_artifacts(name, bundles, tmp_path):
    cls, dataset, _ = EVALUATORS[name]
    bundle = bundles[dataset]
    result = gibench.create_evaluator(name, max_images=24).evaluate(context(tiny_model(bundle), bundle, tmp_path, 10))
    assert set(result.scalars) == {m.name for m in cls.metrics}
    assert all(isinstance(v, float) for v in result.scalars.values())
    assert result.artifacts
    for filename in result.artifacts.values():
        path = tmp_path / filename
        assert path.is_file() and path.stat().st_size > 0
        if filename.endswith(".png"):
            with Image.open(path) as image:
                assert image.width >= 8 * 56 and image.height >= 2 * 56  # 8 images per row, upscaled tiles
        else:
            stored = json.loads(path.read_text())
            assert set(stored) == set(result.curves)
            for key, curve in result.curves.items():
                assert stored[key]["x"] == list(curve.x) and stored[key]["y"] == list(curve.y)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pixel_perturbation_result_structure(bundles, tmp_path):
    bundle = bundles["mnist_subset"]
    result = PixelPerturbation(PixelPerturbation.Config(max_images=30)).evaluate(
        context(tiny_model(bundle), bundle, tmp_path))
    assert len(DEFAULT_FRACTIONS) == 25 and DEFAULT_FRACTIONS[0] == pytest.approx(0.01) and DEFAULT_FRACTIONS[-1] == 1.0
    for order in ("least_salient_first", "most_salient_first"):
        curve = result.curves[order]
        assert curve.x == DEFAULT_FRACTIONS and len(curve.y) == 25
        assert all(0.0 <= a <= 1.0 for a in curve.y)
    # at fraction 1 every pixel is replaced in both orders: the same images
    assert result.curves["least_salient_first"].y[-1] == result.curves["most_salient_first"].y[-1]
    s = result.scalars
    assert s["area_least_salient_normalized"] == pytest.approx(s["area_least_salient"] / s["clean_accuracy"])


@pytest.mark.parametrize("name", ["pixel_perturbation", "density_ratio", "blockmnist", "score_alignment"])
def test_results_do_not_depend_on_batch_size(name, bundles, tmp_path):
    _, dataset, _ = EVALUATORS[name]
    bundle = bundles[dataset]
    model = tiny_model(bundle)
    evaluator = gibench.create_evaluator(name, max_images=20)
    a = evaluator.evaluate(context(model, bundle, tmp_path / "a", batch_size=20))
    b = evaluator.evaluate(context(model, bundle, tmp_path / "b", batch_size=7))
    for key, value in a.scalars.items():
        assert b.scalars[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_density_ratio_is_deterministic_given_the_seed(bundles, tmp_path):
    bundle = bundles["mnist_subset"]
    model = tiny_model(bundle)
    evaluator = DensityRatio(DensityRatio.Config(max_images=16))
    runs = [evaluator.evaluate(context(model, bundle, tmp_path, seed=s)).scalars for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0]["mean_log_ratio_at_ref"] != runs[2]["mean_log_ratio_at_ref"]
    result = evaluator.evaluate(context(model, bundle, tmp_path, seed=1))
    i = list(DensityRatio.Config().sigmas).index(0.1)
    assert result.scalars["mean_log_ratio_at_ref"] == result.curves["mean_log_ratio"].y[i]
    assert result.curves["mean_ratio"].x == (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def test_max_images_limits_the_evaluated_images(bundles, tmp_path):
    bundle = bundles["mnist_subset"]
    model = tiny_model(bundle)
    first = PixelPerturbation(PixelPerturbation.Config(max_images=10, fractions=(0.5,)))
    result = first.evaluate(context(model, bundle, tmp_path))
    # accuracies over 10 images are multiples of 1/10
    assert all(abs(a * 10 - round(a * 10)) < 1e-9 for a in result.curves["least_salient_first"].y)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("pixel_perturbation", {"fractions": [0.5, 0.1]}, "increasing"),
        ("pixel_perturbation", {"fractions": [0.0, 0.5]}, "fractions"),
        ("pixel_perturbation", {"fill": "zeros"}, "fill"),
        ("pixel_perturbation", {"fill_value": 2.0}, "fill_value"),
        ("pixel_perturbation", {"pixel_reduction": "abs"}, "pixel_reduction"),
        ("pixel_perturbation", {"area_axis": "sqrt"}, "area_axis"),
        ("density_ratio", {"reference_sigma": 0.3}, "reference_sigma"),
        ("density_ratio", {"sigmas": [0.1, -0.2]}, "sigmas"),
        ("density_ratio", {"num_draws": 0}, "num_draws"),
        ("blockmnist", {"top_k_fraction": 0.0}, "top_k_fraction"),
        ("score_alignment", {"max_images": -1}, "max_images"),
    ],
)
def test_bad_configs_are_config_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        gibench.create_evaluator(name, **params)


def test_yaml_style_values_are_coerced():
    evaluator = gibench.create_evaluator("pixel_perturbation", fractions=["1e-2", "0.5", "1"], fill="constant")
    assert evaluator.config.fractions == (0.01, 0.5, 1.0)
    evaluator = gibench.create_evaluator("density_ratio", sigmas=[0.1, 0.2], reference_sigma="0.2")
    assert evaluator.config.reference_sigma == 0.2
