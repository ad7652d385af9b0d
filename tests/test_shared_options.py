"""Options that several plugins share are declared once: the saliency options (``gibench.api.saliency.SaliencyOptions``)
and the learned score's denoiser recipe (``gibench.api.denoiser``), and the evaluators import only the public API."""

from __future__ import annotations

import ast
import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from gibench.api import registry
from gibench.api.denoiser import OPTION_NAMES, DenoiserOptions, DenoiserTraining
from gibench.api.saliency import (
    SaliencyOptions,
    input_gradient,
    integrated_gradients,
    saliency_for,
    saliency_options,
    x_gradient,
)
from gibench.core.config_types import plugin_config
from gibench.core.errors import ConfigError
from gibench.core.params import build_config, describe_config
from gibench.evaluators.score_alignment import ScoreAlignmentConfig
from gibench.testing import tiny_bundle, tiny_model

ROOT = Path(__file__).resolve().parents[1]

#: the built-in evaluators that explain a saliency map
SALIENCY_EVALUATORS = {"blockmnist", "complexity", "decoy_reliance", "diffroar", "infidelity", "keep_remove",
                       "pixel_perturbation", "random_logit", "randomisation", "road", "score_alignment", "sensitivity"}


def builtin_evaluator_configs() -> dict[str, type]:
    return {name: registry.evaluators.get(name).Config for name in registry.evaluators.names()
            if registry.evaluators.source(name).distribution == "gibench"}


# ----------------------------------------------------------------------------------------------------------------------
# The saliency options


def test_every_evaluator_with_a_saliency_option_takes_it_from_the_one_declaration():
    configs = builtin_evaluator_configs()
    with_option = {name for name, config in configs.items() if "saliency" in config.__dataclass_fields__}
    assert with_option == SALIENCY_EVALUATORS
    shared = SaliencyOptions.__dataclass_fields__
    for name in with_option:
        config = configs[name]
        assert issubclass(config, SaliencyOptions), name
        for field in ("saliency", "ig_steps"):
            assert config.__dataclass_fields__[field] is shared[field], (name, field)  # the field object itself
            assert field not in vars(config).get("__annotations__", {}), (name, field)  # not declared again
        described = {p.name: p for p in describe_config(config)}
        assert described["saliency"].help == ("The saliency map explained: input_gradient, x_gradient or "
                                              "integrated_gradients (gibench.api.saliency).")
        assert described["ig_steps"].help == ("Integration steps of saliency=integrated_gradients (captum, "
                                              "Gauss-Legendre).")
        assert (described["ig_steps"].default, described["ig_steps"].range) == (32, ">= 1")
        assert described["saliency"].choices == ("input_gradient", "x_gradient", "integrated_gradients")
    for name in set(configs) - with_option:
        assert not issubclass(configs[name], SaliencyOptions), name


def test_the_shared_options_validate_as_before():
    with pytest.raises(ConfigError, match=r"^here: ig_steps must be >= 1, got 0 \(ig_steps: Integration steps"):
        build_config(builtin_evaluator_configs()["road"], {"ig_steps": 0}, "here")
    with pytest.raises(ConfigError, match=r"saliency must be one of 'input_gradient', 'x_gradient', "
                                          r"'integrated_gradients', got 'smoothgrad'"):
        build_config(builtin_evaluator_configs()["complexity"], {"saliency": "smoothgrad"}, "here")


def test_the_options_are_keyword_only_so_an_evaluators_own_fields_keep_their_positions():
    config = builtin_evaluator_configs()["blockmnist"](0.2, "channel_std", 7, saliency="x_gradient")
    assert (config.top_k_fraction, config.pixel_reduction, config.max_images) == (0.2, "channel_std", 7)
    assert config.saliency == "x_gradient"

    @plugin_config
    class NeedsAValue(SaliencyOptions):  # a field without a default after the inherited defaults
        name: str
        """A name."""

    assert NeedsAValue("a").name == "a" and NeedsAValue("a", ig_steps=3).ig_steps == 3


def test_the_saliency_function_of_each_method():
    assert SaliencyOptions().saliency_function() is input_gradient
    assert SaliencyOptions(saliency="x_gradient").saliency_function() is x_gradient
    ig = SaliencyOptions(saliency="integrated_gradients", ig_steps=6).saliency_function()
    assert ig.func is integrated_gradients and ig.keywords == {"steps": 6}
    config = builtin_evaluator_configs()["keep_remove"](saliency="integrated_gradients", ig_steps=4)
    assert saliency_options(config) is config and saliency_for(config).keywords == {"steps": 4}
    assert saliency_options(builtin_evaluator_configs()["accuracy"]()) == SaliencyOptions()  # no option: the default


@pytest.mark.parametrize(("method", "steps", "passes"), [("input_gradient", 9, 1), ("x_gradient", 9, 1),
                                                         ("integrated_gradients", 5, 5),
                                                         ("integrated_gradients", 1, 1)])
def test_input_gradients_per_map_is_the_number_of_gradient_passes_a_map_takes(method, steps, passes):
    options = SaliencyOptions(saliency=method, ig_steps=steps)
    assert options.input_gradients_per_map == passes
    bundle = tiny_bundle()
    model = tiny_model(bundle).eval()
    seen: list[tuple[int, bool]] = []
    model.register_forward_hook(lambda module, inputs, out: seen.append((inputs[0].shape[0], torch.is_grad_enabled())))
    x, y = bundle.test.x[:3], bundle.test.y[:3]
    saliency = options.saliency_map(model, x, y)
    assert seen == [(3, True)] * passes  # each pass: a forward of the whole batch with gradients, then its backward
    assert saliency.shape == x.shape and not saliency.requires_grad
    torch.testing.assert_close(saliency, options.saliency_function()(model, x, y))


@plugin_config
class SelfDeclaredConfig:
    """A Config written before SaliencyOptions existed: it declares the option itself."""

    saliency: str = "input_gradient"
    """The map."""
    ig_steps: int = 32
    """IG steps."""


def test_a_config_that_declares_the_option_itself_still_works_for_one_release_with_a_warning():
    with pytest.warns(DeprecationWarning, match="SelfDeclaredConfig declares the saliency option itself; inherit "
                                                "gibench.api.saliency.SaliencyOptions"):
        chosen = saliency_for(SelfDeclaredConfig(saliency="integrated_gradients", ig_steps=3))
    assert chosen.func is integrated_gradients and chosen.keywords == {"steps": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert saliency_for(object()) is input_gradient  # nothing declared: the default, and no warning


# ----------------------------------------------------------------------------------------------------------------------
# The denoiser's recipe


#: a value other than the default for every field of DenoiserTraining
NON_DEFAULT = {"sigma": 0.4, "width": 24, "epochs": 3, "lr": 5e-4, "batch_size": 17, "uncond_prob": 0.35,
               "max_train": 123, "seed": 9}


def test_score_alignments_denoiser_options_and_the_recipe_cannot_drift():
    recipe = [f.name for f in dataclasses.fields(DenoiserTraining)]
    assert sorted(NON_DEFAULT) == sorted(recipe)
    assert all(NON_DEFAULT[f.name] != f.default for f in dataclasses.fields(DenoiserTraining))
    assert OPTION_NAMES == {"sigma": "sigma", "width": "denoiser_width", "epochs": "denoiser_epochs",
                            "lr": "denoiser_lr", "batch_size": "denoiser_batch_size",
                            "uncond_prob": "denoiser_uncond_prob", "max_train": "denoiser_max_train",
                            "seed": "denoiser_seed"}
    assert issubclass(ScoreAlignmentConfig, DenoiserOptions)
    config = build_config(ScoreAlignmentConfig, {OPTION_NAMES[k]: v for k, v in NON_DEFAULT.items()}, "here")
    assert config.denoiser_training() == DenoiserTraining(**NON_DEFAULT)
    assert dataclasses.asdict(config.denoiser_training()) == NON_DEFAULT
    assert ScoreAlignmentConfig().denoiser_training() == DenoiserTraining()
    # each option has the recipe field's type, default, range and help text
    options = {p.name: p for p in describe_config(ScoreAlignmentConfig)}
    for field in describe_config(DenoiserTraining):
        option = options[OPTION_NAMES[field.name]]
        assert dataclasses.replace(option, name=field.name) == field, field.name
    assert options["denoiser_width"].range == ">= 8; multiple of 8"
    assert options["denoiser_lr"].help == "Denoiser learning rate." and options["sigma"].default == 0.25


def test_a_bad_denoiser_option_is_rejected_as_the_recipe_rejects_it():
    with pytest.raises(ConfigError, match=r"^here: denoiser_width must be a multiple of 8, got 12 "
                                          r"\(denoiser_width: U-Net block_out_channels"):
        build_config(ScoreAlignmentConfig, {"denoiser_width": 12}, "here")
    with pytest.raises(ConfigError, match=r"^here: width must be a multiple of 8, got 12"):
        build_config(DenoiserTraining, {"width": 12}, "here")
    with pytest.raises(ConfigError, match=r"denoiser_uncond_prob must be in \(0, 1\), got 1.0"):
        build_config(ScoreAlignmentConfig, {"denoiser_uncond_prob": 1.0}, "here")


# ----------------------------------------------------------------------------------------------------------------------
# The evaluators import only the public API


def gibench_imports(path: Path) -> set[str]:
    """Every gibench module a source file names in an import, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names |= {f"{node.module}.{alias.name}" if node.module == "gibench.api" else node.module
                      for alias in node.names}
    return {name for name in names if name == "gibench" or name.startswith("gibench.")}


def test_evaluator_modules_import_only_gibench_and_its_public_api():
    files = sorted((ROOT / "evaluators").glob("*.py"))
    assert [f.name for f in files if f.name.startswith("_") and f.name != "__init__.py"] == []  # no private helpers
    for path in files:
        for name in gibench_imports(path):
            allowed = name == "gibench" or name.startswith(("gibench.api.", "gibench.core."))
            assert allowed and "._" not in name, f"{path.name} imports {name}"
