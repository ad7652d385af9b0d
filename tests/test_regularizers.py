"""Hyper-parameter validation of every registered regularizer (parametrized over the registry: a new plugin is tested
with no new code): bad values of the shared hyper-parameters are ConfigErrors naming the parameter.

The contract of ``training_loss`` (finite scalar total with gradients on the parameters, detached parts, modes
restored, no host synchronization, zero strength equals ``erm``, config round trip) is checked for every registered
regularizer by ``gibench.testing.check_regularizer`` in tests/test_conformance.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from gibench.api import registry
from gibench.core.errors import ConfigError

NAMES = registry.regularizers.names()


def fields(name: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(registry.regularizers.get(name).Config)}


BAD_VALUES = {  # field -> a value every regularizer having that field must reject
    "weight": -1.0,
    "sigma": -1.0,
    "mu": -1.0,
    "num_samples": 0,
    "clamp": -1.0,
    "epsilon": -1.0,
    "steps": 0,
    "step_size": -1.0,
    "norm": "l3",
    "noisy_bn": "frozen",
    "projection": "uniform",
    "attack_mode": "test",
}


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [(n, f, v) for n in NAMES for f, v in BAD_VALUES.items() if f in fields(n)],
)
def test_bad_hyper_parameter_is_a_config_error_naming_it(name: str, field: str, value) -> None:
    with pytest.raises(ConfigError, match=field):
        registry.regularizers.create(name, **{field: value})


def test_every_shared_bad_value_is_exercised() -> None:
    used = {f for n in NAMES for f in fields(n)}
    assert {"weight", "sigma", "mu", "num_samples", "clamp", "epsilon", "steps", "norm", "noisy_bn"} <= used


def test_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sigm"):
        registry.regularizers.create("score_matching", sigm=0.1)
