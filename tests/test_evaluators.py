"""The model-only built-in evaluators on the datasets they were designed for: declarations, artifacts, determinism,
independence from the batch size, validated configs.

The Evaluator contract itself is checked for every registered evaluator, on the tiny synthetic bundle, by
``gibench.testing.check_evaluator`` in tests/test_conformance.py; here the same checks run on real data.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from PIL import Image
from torch import nn

import gibench
from gibench.api import registry
from gibench.api.plugin import SIGNAL_MASK, EvalContext
from gibench.core.errors import ConfigError
from gibench.evaluators.density_ratio import DensityRatio
from gibench.evaluators.pixel_perturbation import DEFAULT_FRACTIONS, PixelPerturbation
from gibench.testing import check_evaluator, make_eval_context
from gibench.testing import tiny_model as conv_model

#: the dataset each model-only built-in evaluator was designed for
HOME_DATASET = {"pixel_perturbation": "mnist_subset", "density_ratio": "mnist_subset", "blockmnist": "blockmnist",
                "score_alignment": "gaussian_mixture"}
BUILTIN_EVALUATORS = [n for n in registry.evaluators.names() if registry.evaluators.source(n).distribution == "gibench"]


@pytest.fixture(scope="module")
def bundles():
    return {name: gibench.load_dataset(name) for name in ("mnist_subset", "blockmnist", "gaussian_mixture")}


def tiny_model(bundle, seed=0) -> nn.Module:
    return conv_model(bundle, batch_norm=False, seed=seed).eval()


def context(model, bundle, tmp_path: Path, batch_size=64, seed=0) -> EvalContext:
    return make_eval_context(model, bundle, tmp_path, batch_size=batch_size, seed=seed)


@pytest.mark.parametrize("name", [n for n in BUILTIN_EVALUATORS if registry.evaluators.get(n).judges_saliency])
def test_builtin_modules_document_the_paper_and_their_choices(name):
    cls = registry.evaluators.get(name)
    assert cls.__doc__ and len(importlib.import_module(cls.__module__).__doc__) > 500


def test_only_blockmnist_requires_a_capability_by_default():
    requires = {name: registry.evaluators.get(name).requires for name in HOME_DATASET}
    assert requires == {"blockmnist": frozenset({SIGNAL_MASK}), "pixel_perturbation": frozenset(),
                        "density_ratio": frozenset(), "score_alignment": frozenset()}


@pytest.mark.parametrize("name", sorted(HOME_DATASET))
def test_conforms_on_its_home_dataset(name, bundles, tmp_path):
    bundle = bundles[HOME_DATASET[name]]
    result = check_evaluator(name, params={"max_images": 20}, bundle=bundle, model=tiny_model(bundle),
                             artifact_dir=tmp_path, batch_size=10)  # grids show the first batch's 8 images
    assert result.artifacts
    for filename in result.artifacts.values():
        path = tmp_path / "first" / filename
        if filename.endswith(".png"):
            with Image.open(path) as image:
                assert image.width >= 8 * 56 and image.height >= 2 * 56  # 8 images per row, upscaled tiles
        else:
            stored = json.loads(path.read_text())
            assert set(stored) == set(result.curves)
            for key, curve in result.curves.items():
                assert stored[key]["x"] == list(curve.x) and stored[key]["y"] == list(curve.y)


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
