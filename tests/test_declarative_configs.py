"""Declarative plugin configs: frozen pydantic dataclasses with shared annotated types (gibench.core.config_types), the
error messages build_config makes of pydantic's errors, describe_config, plain-dataclass plugins, and the identities
(job hashes, evaluator config hashes) that must not move when a Config changes how it is declared."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import pydantic
import pytest
from pydantic import Field
from pydantic.dataclasses import is_pydantic_dataclass

from gibench.api import registry
from gibench.api.denoiser import DenoiserTraining
from gibench.core.config_types import Rule, Weight, plugin_config
from gibench.core.errors import ConfigError
from gibench.core.identity import identity_hash
from gibench.core.params import ParamInfo, build_config, check, describe_config
from gibench.data.blockmnist import BlockMNISTConfig
from gibench.data.bundled import MNISTSubsetConfig
from gibench.data.gaussian_mixture import GaussianMixtureConfig
from gibench.evaluators.blockmnist import BlockMNISTLeakageConfig
from gibench.evaluators.density_ratio import DensityRatioConfig
from gibench.evaluators.diffroar import DiffROARConfig
from gibench.evaluators.gan_test import GANTestConfig
from gibench.evaluators.pixel_perturbation import PixelPerturbationConfig
from gibench.evaluators.score_alignment import ScoreAlignmentConfig
from gibench.regularizers.gaussian_noise import GaussianNoiseConfig
from gibench.regularizers.gradient_norm import GradientNormConfig
from gibench.regularizers.pgd import PGDConfig
from gibench.regularizers.score_matching import ScoreMatchingConfig
from gibench.regularizers.score_matching_antithetic import AntitheticScoreMatchingConfig
from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite

WHERE = "suite.yaml: regularizers[1].x"


def builtin_configs() -> set[type]:
    """Every Config class of the built-in plugins that has parameters, plus the denoiser's training recipe."""
    configs = {DenoiserTraining}
    for reg in (registry.regularizers, registry.evaluators, registry.datasets):
        for name in reg.names():
            if reg.source(name).distribution == "gibench":
                configs.add(reg.get(name).Config)
    return {c for c in configs if dataclasses.fields(c)}


# ----------------------------------------------------------------------------------------------------------------------
# Every built-in Config is declarative


def test_every_builtin_config_is_a_frozen_pydantic_dataclass():
    configs = builtin_configs()
    # 15 regularizers (erm has none), 15 evaluators (validation_accuracy has none), 5 datasets, the denoiser's recipe
    assert len(configs) == 36
    for config_cls in configs:
        assert is_pydantic_dataclass(config_cls) and dataclasses.is_dataclass(config_cls), config_cls
        config = config_cls()
        first = dataclasses.fields(config_cls)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, first, getattr(config, first))
        with pytest.raises(pydantic.ValidationError, match="not_a_parameter"):
            config_cls(not_a_parameter=1)  # unknown keywords stay errors, as for a stdlib dataclass
        assert dataclasses.asdict(config) == {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def test_every_builtin_parameter_has_a_description_and_defaults_are_valid():
    for config_cls in builtin_configs():
        for param in describe_config(config_cls):
            assert param.help, f"{config_cls.__name__}.{param.name} has no attribute docstring"
        config = config_cls()
        # the defaults pass their own declared constraints (pydantic does not re-validate defaults)
        assert build_config(config_cls, dataclasses.asdict(config), "defaults") == config


# ----------------------------------------------------------------------------------------------------------------------
# Each shared type rejects a bad value with place, key, value and range


@pytest.mark.parametrize(
    ("config_cls", "params", "expected"),
    [
        (GradientNormConfig, {"weight": -0.5}, "weight must be >= 0, got -0.5"),  # Weight
        (ScoreMatchingConfig, {"sigma": 0.0}, "sigma must be > 0, got 0.0"),  # Sigma
        (GaussianNoiseConfig, {"sigma": -0.1}, "sigma must be >= 0, got -0.1"),  # NoiseStd
        (ScoreMatchingConfig, {"num_samples": 0}, "num_samples must be >= 1, got 0"),  # NumSamples
        (ScoreMatchingConfig, {"noisy_bn": "frozen"},
         "noisy_bn must be one of 'train', 'batch', 'eval', got 'frozen'"),  # BNMode
        (MNISTSubsetConfig, {"test_fraction": 1.0}, "test_fraction must be in (0, 1), got 1.0"),  # Fraction
        (BlockMNISTLeakageConfig, {"top_k_fraction": 0.0},
         "top_k_fraction must be in (0, 1], got 0.0"),  # FractionOrAll
        (PixelPerturbationConfig, {"fractions": [0.5, 0.2]},
         "fractions must be strictly increasing, got [0.5, 0.2]"),  # IncreasingFractions: the rule
        (PixelPerturbationConfig, {"fractions": [0.5, 1.5]},
         "fractions[1] must be in (0, 1], got 1.5"),  # IncreasingFractions: an element
        (DensityRatioConfig, {"sigmas": [0.1, 0.1]}, "sigmas must be strictly increasing, got [0.1, 0.1]"),
        (DiffROARConfig, {"levels": [0.5, 0.5]},
         "levels must be distinct (no value repeated), got [0.5, 0.5]"),  # DistinctFractions
        (DiffROARConfig, {"retrain_seeds": []}, "retrain_seeds must hold at least 1 value, got []"),  # Seeds
        (MNISTSubsetConfig, {"split_seed": -1}, "split_seed must be >= 0, got -1"),  # Seed
        (PixelPerturbationConfig, {"max_images": -1}, "max_images must be >= 0, got -1"),  # Limit
        (PixelPerturbationConfig, {"fill_value": 1.5}, "fill_value must be in [0, 1], got 1.5"),  # PixelValue
        (GANTestConfig, {"judge_min_accuracy": 1.2},
         "judge_min_accuracy must be in [0, 1], got 1.2"),  # Probability
        (GANTestConfig, {"judge_lr": 0}, "judge_lr must be > 0, got 0"),  # PositiveFloat
        (GANTestConfig, {"judge_epochs": 0}, "judge_epochs must be >= 1, got 0"),  # PositiveInt
        (GANTestConfig, {"steps": -1}, "steps must be >= 0, got -1"),  # NonNegativeInt
        (PGDConfig, {"epsilon": -1.0}, "epsilon must be >= 0, got -1.0"),  # NonNegativeFloat
        (PGDConfig, {"step_size": -0.1}, "step_size must be >= 0, got -0.1"),  # NonNegativeFloat | None
        (GANTestConfig, {"judge_backbone": ""}, "judge_backbone must not be empty, got ''"),  # NonEmptyStr
        (ScoreAlignmentConfig, {"denoiser_width": 12}, "denoiser_width must be a multiple of 8, got 12"),
        (BlockMNISTConfig, {"classes": [3]}, "classes must be empty (all 10) or at least two digits, got [3]"),
        (BlockMNISTConfig, {"classes": [3, 12]}, "classes[1] must be in [0, 9], got 12"),
    ],
)
def test_shared_types_reject_bad_values_naming_place_key_value_and_range(config_cls, params, expected):
    with pytest.raises(ConfigError) as caught:
        build_config(config_cls, params, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: {expected}")
    key = next(iter(params))
    help_ = next(p.help for p in describe_config(config_cls) if p.name == key)
    assert f"({key}: {help_.rstrip('.')})" in message  # the field's meaning, from its docstring
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no pydantic traceback attached
    assert "validation error" not in message and "errors.pydantic.dev" not in message


def test_a_bad_choice_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"pixel_reduction must be one of 'abs_sum', 'channel_std', got 'abs'\. "
                                          r"Did you mean 'abs_sum'\?"):
        build_config(PixelPerturbationConfig, {"pixel_reduction": "abs"}, WHERE)


def test_wrong_type_names_the_value_and_the_expected_type():
    with pytest.raises(ConfigError, match=r"^suite.yaml: regularizers\[1\].x: parameter 'weight' = 'heavy' has the "
                                          r"wrong type \(Input should be a valid number.*\); expected float"):
        build_config(GradientNormConfig, {"weight": "heavy"}, WHERE)
    with pytest.raises(ConfigError, match=r"parameter 'fractions' = \[0.5, 'half'\] has the wrong type "
                                          r"\(fractions\[1\]: Input should be a valid number.*expected tuple\[float"):
        build_config(PixelPerturbationConfig, {"fractions": [0.5, "half"]}, WHERE)


def test_every_bad_field_is_reported_in_one_error():
    with pytest.raises(ConfigError) as caught:
        build_config(ScoreMatchingConfig, {"weight": -1.0, "sigma": 0.0, "mu": 1e-3}, WHERE)
    message = str(caught.value)
    assert "weight must be >= 0, got -1.0" in message and "sigma must be > 0, got 0.0" in message
    assert message.count(WHERE) == 1


def test_unknown_key_gets_did_you_mean_and_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown parameter 'sigam'\. Did you mean 'sigma'\? Valid parameters: "
                                          r"mu, noisy_bn, num_samples, sigma, weight\."):
        build_config(ScoreMatchingConfig, {"sigam": 0.1}, WHERE)


def test_yaml_strings_still_coerce():
    config = build_config(ScoreMatchingConfig, {"weight": "1e-3", "sigma": "2e-2", "num_samples": "3"}, WHERE)
    assert (config.weight, config.sigma, config.num_samples) == (0.001, 0.02, 3)
    assert type(config.weight) is float and type(config.num_samples) is int
    fractions = build_config(PixelPerturbationConfig, {"fractions": ["1e-2", "0.5", "1"]}, WHERE).fractions
    assert fractions == (0.01, 0.5, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Cross-field rules stay validators


@pytest.mark.parametrize(
    ("config_cls", "params", "expected"),
    [
        (DensityRatioConfig, {"reference_sigma": 0.3}, "reference_sigma must be one of sigmas"),
        (GaussianMixtureConfig, {"sigma_min": 0.06, "sigma_max": 0.05}, "need sigma_min <= sigma_max"),
        (GaussianMixtureConfig, {"mean_spread": 0.4}, "sigma_max=0.05 is too large for mean_spread=0.4"),
        (DiffROARConfig, {"backbone_options": {"act": "relu"}}, "need a `backbone` to apply to"),
        (DiffROARConfig, {"train": {"lr": -1.0}}, "diffroar: train: lr must be > 0"),
    ],
)
def test_cross_field_rules_still_fire(config_cls, params, expected):
    with pytest.raises(ConfigError) as caught:
        build_config(config_cls, params, WHERE)
    assert str(caught.value).startswith(f"{WHERE}: ") and expected in str(caught.value)


def test_direct_construction_still_raises_value_error():
    with pytest.raises(ValueError, match="sigma_min"):  # pydantic.ValidationError is a ValueError
        GaussianMixtureConfig(sigma_min=0.2)
    assert DensityRatioConfig(sigmas=[0.1, 0.3], reference_sigma=0.3).sigmas == (0.1, 0.3)


# ----------------------------------------------------------------------------------------------------------------------
# describe_config


def test_describe_config_of_score_matching():
    by_name = {p.name: p for p in describe_config(ScoreMatchingConfig)}
    assert list(by_name) == ["weight", "sigma", "mu", "num_samples", "noisy_bn"]
    sigma = by_name["sigma"]
    assert (sigma.type, sigma.default, sigma.range, sigma.required) == ("float", 0.01, "> 0", False)
    assert "pixel units" in sigma.help
    assert by_name["noisy_bn"].choices == ("train", "batch", "eval")
    assert by_name["noisy_bn"].range == "one of 'train', 'batch', 'eval'"
    assert describe_config(AntitheticScoreMatchingConfig) == describe_config(ScoreMatchingConfig)  # inherited help


def test_describe_config_of_sequences_unions_and_rules():
    fractions = {p.name: p for p in describe_config(PixelPerturbationConfig)}["fractions"]
    assert fractions.type == "tuple[float, ...]" and len(fractions.default) == 25
    assert fractions.range == "each in (0, 1]; non-empty; strictly increasing"
    step_size = {p.name: p for p in describe_config(PGDConfig)}["step_size"]
    assert (step_size.type, step_size.range, step_size.default) == ("float | None", ">= 0, or None", None)
    width = {p.name: p for p in describe_config(ScoreAlignmentConfig)}["denoiser_width"]
    assert width.range == ">= 8; multiple of 8"
    options = {p.name: p for p in describe_config(GANTestConfig)}["judge_backbone_options"]
    assert (options.type, options.default, options.range) == ("dict[str, Any]", {}, "")


# ----------------------------------------------------------------------------------------------------------------------
# Third-party plugins: plain stdlib dataclasses keep working, and may be pydantic too


@dataclasses.dataclass(frozen=True)
class LegacyConfig:
    """A third-party Config as plugins wrote them before gibench.core.config_types (the example plugin's, up to
    0.1.0)."""

    weight: float = 1e-3

    def __post_init__(self) -> None:
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")


def test_a_plain_dataclass_config_with_check_works_as_before():
    assert not is_pydantic_dataclass(LegacyConfig)
    assert build_config(LegacyConfig, {"weight": "1e-2"}, WHERE).weight == 0.01  # coerced, as before
    with pytest.raises(ConfigError, match=r"^suite.yaml: regularizers\[1\].x: weight must be >= 0, got -1.0$"):
        build_config(LegacyConfig, {"weight": -1}, WHERE)  # its own check() message, prefixed with the place
    with pytest.raises(ConfigError, match=r"parameter 'weight' = 'x' has the wrong type .*; expected float\.$"):
        build_config(LegacyConfig, {"weight": "x"}, WHERE)
    with pytest.raises(ConfigError, match=r"unknown parameter 'wieght'\. Did you mean 'weight'\?"):
        build_config(LegacyConfig, {"wieght": 1.0}, WHERE)
    assert describe_config(LegacyConfig) == [ParamInfo(name="weight", type="float", default=1e-3)]


@dataclasses.dataclass(frozen=True)
class PlainConfig:
    mode: Literal["fast", "exact"] = "fast"
    scale: Annotated[float, Field(gt=0)] = 2.0
    taps: tuple[int, ...] = dataclasses.field(default=(1, 2), metadata={"help": "filter taps"})
    name: str = dataclasses.field(default="", metadata={"help": "a label"})

    def __post_init__(self) -> None:
        check(self.scale < 10, f"scale must be < 10, got {self.scale}")


def test_describe_and_build_a_plain_dataclass_with_literals_and_help_metadata():
    by_name = {p.name: p for p in describe_config(PlainConfig)}
    assert by_name["mode"] == ParamInfo("mode", "str", "fast", range="one of 'fast', 'exact'",
                                        choices=("fast", "exact"))
    assert (by_name["scale"].range, by_name["taps"].help, by_name["taps"].default) == ("> 0", "filter taps", (1, 2))
    assert build_config(PlainConfig, {"taps": ["3"]}, WHERE).taps == (3,)
    with pytest.raises(ConfigError, match=r"parameter 'mode' = 'slow' has the wrong type"):
        build_config(PlainConfig, {"mode": "slow"}, WHERE)
    with pytest.raises(ConfigError, match=r"scale must be < 10, got 20.0"):
        build_config(PlainConfig, {"scale": 20}, WHERE)


@plugin_config
class ThirdPartyConfig:
    strength: Weight = 0.5
    """How hard to push."""
    order: Annotated[int, Rule("odd", lambda n: n % 2 == 1)] = 1
    """An odd order."""


def test_a_third_party_config_can_use_the_shared_types():
    assert build_config(ThirdPartyConfig, {"order": "3"}, WHERE).order == 3
    with pytest.raises(ConfigError, match=r"order must be odd, got 4 \(order: An odd order\)"):
        build_config(ThirdPartyConfig, {"order": 4}, WHERE)
    assert [(p.name, p.range, p.help) for p in describe_config(ThirdPartyConfig)] == [
        ("strength", ">= 0", "How hard to push."), ("order", "odd", "An odd order.")]


# ----------------------------------------------------------------------------------------------------------------------
# Identities: declaring a Config differently must not retrain or re-evaluate anything

# computed with the stdlib-dataclass configs (commit caee555), before the configs became pydantic dataclasses
SMOKE_JOB_HASHES = [
    "44adb0a033ba9763", "971e167235c24a9b", "f1d673f28529d0eb", "f83fb2fbe8303b6c", "18675531bd16de7b",
    "e7ebb759ed2699ed",
]
SMOKE_CONFIG_HASHES = {  # identity_hash of each plugin spec's resolved config: the evaluator results' key
    "accuracy": "47c0a37e46311b51", "pixel_perturbation": "80aafb702d023403", "density_ratio": "72c24869a0f9eeaa",
    "blockmnist": "b981bcbe5cc0e2f7", "score_alignment": "30b94d6b73dfae4d", "gan_test": "9f2bbf6420456f63",
    "diffroar": "fa47dc3cb9eab9f8", "mnist_subset": "7991e12281e4696c", "blockmnist_dataset": "0f65557fb57f66a5",
    "gaussian_mixture": "925ae1a2038a7020", "erm": "44136fa355b3678a", "gradient_norm": "7f46d6c9d5166f5f",
}


def test_smoke_suite_identities_are_unchanged():
    suite = load_suite("smoke")
    config_hashes = {spec.name: identity_hash(spec.config) for spec in suite.evaluators + suite.regularizers}
    config_hashes.update({("blockmnist_dataset" if s.name == "blockmnist" else s.name): identity_hash(s.config)
                          for s in suite.datasets})
    assert config_hashes == SMOKE_CONFIG_HASHES
    assert [job.hash for job in expand(suite)] == SMOKE_JOB_HASHES
