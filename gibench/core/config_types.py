"""Declarative hyper-parameters: the shared field types of plugin ``Config`` classes, each stated once.

A plugin's ``Config`` is a frozen pydantic dataclass (:func:`plugin_config`) whose fields carry their type, range and
default in the annotation, so that one declaration serves validation (:func:`gibench.core.params.build_config`, which
turns pydantic's errors into gibench's messages), documentation (:func:`gibench.core.params.describe_config`) and
``gibench list``. A field's help text is the string literal written under it (an attribute docstring)::

    @plugin_config
    class MyConfig:
        weight: Weight = 1e-3
        \"\"\"λ, the weight of the penalty.\"\"\"
        noisy_bn: BNMode = "train"
        \"\"\"BatchNorm mode of the noisy pass.\"\"\"

        def __post_init__(self) -> None:  # rules that involve several fields stay here
            check(...)

Ranges are pydantic constraints (``Field(ge=0)``, ``Field(gt=0, le=1)``); rules that are not a bound are a
:class:`Rule`, which validates and describes itself with the same text. Noise levels, radii and fill values are in
pixel units (images in [0, 1], docs/architecture.md, "Pixel space").
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import ConfigDict, Field
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "BNMode", "ChannelReduction", "DistinctFractions", "Distinct", "Fraction", "FractionOrAll", "Increasing",
    "IncreasingFractions", "IncreasingSigmas", "Limit", "NoiseStd", "NonEmpty", "NonEmptyStr", "NonNegativeFloat",
    "IDENTITY_UNLESS_DEFAULT", "IGSteps", "NonNegativeInt", "NumSamples", "PLUGIN_CONFIG", "PixelValue",
    "PositiveFloat", "PositiveInt", "Probability", "Rule", "SaliencyMethod", "Seed", "Seeds", "Sigma", "Weight",
    "plugin_config",
]

RULE_ERROR = "gibench_rule"  # the pydantic error type of a failed Rule


@dataclasses.dataclass(frozen=True)
class Rule:
    """A named constraint for ``Annotated`` metadata: ``test(value)`` must hold; ``text`` completes "must be …".

    It runs after the type's own validation (so ``test`` sees the coerced value, e.g. a tuple of floats) and is shown
    verbatim by ``gibench list``.
    """

    text: str
    test: Callable[[Any], bool] = dataclasses.field(compare=False, repr=False)

    def __get_pydantic_core_schema__(self, source: Any, handler: pydantic.GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def _validate(self, value: Any) -> Any:
        if not self.test(value):
            raise PydanticCustomError(RULE_ERROR, "must be {rule}", {"rule": self.text})
        return value


def _increasing(values: Sequence[Any]) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


def _distinct(values: Sequence[Any]) -> bool:
    return len(set(values)) == len(values)


Increasing = Rule("strictly increasing", _increasing)
Distinct = Rule("distinct (no value repeated)", _distinct)
NonEmpty = Field(min_length=1)

# ----------------------------------------------------------------------------------------------------------------------
# Numbers

Weight = Annotated[float, Field(ge=0)]
"""A loss weight (λ on a penalty, μ on a stability term, a pull strength), ≥ 0; 0 switches the term off."""

Sigma = Annotated[float, Field(gt=0)]
"""The standard deviation of Gaussian noise in pixel units, > 0: for methods that divide by it (Taylor estimates,
denoising targets) or whose noise level defines what is measured."""

NoiseStd = Annotated[float, Field(ge=0)]
"""The standard deviation of Gaussian noise in pixel units, ≥ 0, where 0 means no noise (and so the plain model)."""

NumSamples = Annotated[int, Field(ge=1)]
"""How many random draws (noise samples, probe vectors, generated images) a step or a measurement averages, ≥ 1."""

PositiveInt = Annotated[int, Field(ge=1)]
"""A count that must be at least 1 (steps, epochs, batch sizes, grid sides)."""

NonNegativeInt = Annotated[int, Field(ge=0)]
"""A count that may be 0 (its field says what 0 means)."""

Limit = Annotated[int, Field(ge=0)]
"""Use only the first N items (images, samples) of a split, ≥ 0, where 0 means all of them."""

Seed = Annotated[int, Field(ge=0)]
"""A random seed, ≥ 0 (numpy's generators refuse negative seeds)."""

PositiveFloat = Annotated[float, Field(gt=0)]
"""A real number > 0 (learning rates, step sizes, clamps)."""

NonNegativeFloat = Annotated[float, Field(ge=0)]
"""A real number ≥ 0 (radii, scales, temperatures), where 0 switches the effect off."""

Fraction = Annotated[float, Field(gt=0, lt=1)]
"""A proper fraction in the open interval (0, 1): neither nothing nor everything."""

FractionOrAll = Annotated[float, Field(gt=0, le=1)]
"""A fraction in (0, 1], where 1 means all."""

Probability = Annotated[float, Field(ge=0, le=1)]
"""A probability or an accuracy, in [0, 1]."""

PixelValue = Annotated[float, Field(ge=0, le=1)]
"""An intensity in pixel units, in [0, 1] (fill values, start means)."""

# ----------------------------------------------------------------------------------------------------------------------
# Sequences (a YAML list for one of these fields is one value, not a grid)

IncreasingFractions = Annotated[tuple[FractionOrAll, ...], NonEmpty, Increasing]
"""Fractions in (0, 1], at least one, strictly increasing (the removal fractions of a perturbation curve)."""

IncreasingSigmas = Annotated[tuple[Sigma, ...], NonEmpty, Increasing]
"""Noise standard deviations in pixel units, each > 0, at least one, strictly increasing (a noise-level grid)."""

DistinctFractions = Annotated[tuple[Fraction, ...], NonEmpty, Distinct]
"""Proper fractions in (0, 1), at least one, none repeated, in any order (the kept fractions of DiffROAR)."""

Seeds = Annotated[tuple[Seed, ...], NonEmpty, Distinct]
"""Random seeds, each ≥ 0, at least one, none repeated."""

# ----------------------------------------------------------------------------------------------------------------------
# Choices

BNMode = Literal["train", "batch", "eval"]
"""The BatchNorm mode of an extra forward pass (``noisy_bn``): ``train`` (batch statistics, running statistics updated:
the reference code), ``batch`` (batch statistics, running statistics untouched), ``eval`` (running statistics); see
:mod:`gibench.api.passes`."""

ChannelReduction = Literal["abs_sum", "channel_std"]
"""How a gradient's channels become one score per pixel: Σ_c |g_c| (``abs_sum``) or the channel standard deviation
(``channel_std``, Srinivas & Fleuret on RGB); see :func:`gibench.api.saliency.pixel_scores`."""

NonEmptyStr = Annotated[str, Field(min_length=1)]
"""A name that must not be empty."""

SaliencyMethod = Literal["input_gradient", "x_gradient", "integrated_gradients"]
"""The saliency map an evaluator explains with (``ctx.saliency``; :func:`gibench.api.saliency.saliency_function`):
the input-gradient of the label logit (``input_gradient``, the default everywhere), Hesse et al.'s X-Gradient
(x − baseline) ⊙ ∇x f_y (``x_gradient``), or captum's Integrated Gradients from the same baseline
(``integrated_gradients``, ``ig_steps`` Gauss-Legendre nodes). The baseline is zero in normalized space, the dataset's
mean colour (:func:`gibench.api.saliency.attribution_baseline`)."""

IGSteps = Annotated[int, Field(ge=1)]
"""Integration steps of ``integrated_gradients`` (≥ 1; ignored by the other saliency methods)."""

IDENTITY_UNLESS_DEFAULT: tuple[str, ...] = ("saliency", "ig_steps")
"""Plugin Config fields added after results were first stored: :mod:`gibench.suites.suite` leaves them out of a plugin's
identity (its config hash, and so its result key) while they keep their default, so results stored before they
existed keep their keys; any other value is part of the identity."""

# ----------------------------------------------------------------------------------------------------------------------
# The decorator

PLUGIN_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)
"""Pydantic settings of every plugin Config: unknown keyword arguments are errors (as for a stdlib dataclass), and
the string literal under a field is its description. Defaults are not re-validated, so a default's JSON (and with it
every job hash) is exactly what the class states."""

ConfigT = TypeVar("ConfigT", bound=type)


@typing.overload
def plugin_config(cls: ConfigT, *, kw_only: bool = False) -> ConfigT: ...
@typing.overload
def plugin_config(cls: None = None, *, kw_only: bool = False) -> Callable[[ConfigT], ConfigT]: ...


@typing.dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def plugin_config(cls: ConfigT | None = None, *, kw_only: bool = False) -> Any:
    """Make ``cls`` a frozen pydantic dataclass with :data:`PLUGIN_CONFIG`: validated on construction, and still a
    dataclass for ``dataclasses.fields``/``asdict``/``replace`` (configs are hashed through ``asdict``).

    ``@plugin_config(kw_only=True)`` makes the class's own fields keyword-only. Bases of options that many Configs
    inherit (:class:`gibench.api.saliency.SaliencyOptions`) use it: a dataclass lists its bases' fields first, so
    without it every field of a subclass would need a default and the subclass's positional arguments would start
    with the inherited options; keyword-only, the subclass's own fields keep their positions.
    """
    def wrap(klass: ConfigT) -> ConfigT:
        return pydantic.dataclasses.dataclass(frozen=True, config=PLUGIN_CONFIG, kw_only=kw_only)(klass)

    return wrap if cls is None else wrap(cls)
