"""Conformance of every registered regularizer (parametrized over the registry: a new plugin is tested with no new code).

Contract (gibench.api.Regularizer, DESIGN §3): ``training_loss(model, x, y)`` returns a finite scalar total with
gradients on the parameters and detached 0-dim parts; the model's train/eval flags are left as they arrived; a step
never reads a tensor value on the host; the zero-strength setting (class attribute ``zero_strength``, or
``weight=0``) reproduces the ``erm`` loss exactly; bad hyper-parameters are ConfigErrors naming the parameter.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from gibench import registry
from gibench.errors import ConfigError

NAMES = registry.regularizers.names()


def tiny_model() -> nn.Module:
    """Conv + BatchNorm + softplus: exercises the BatchNorm handling of extra forward passes."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(beta=10),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 6, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def fields(name: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(registry.regularizers.get(name).Config)}


def zero_strength(name: str) -> dict | None:
    """Parameters that turn ``name`` into erm (``Regularizer.zero_strength``; None = the plugin has none)."""
    declared = getattr(registry.regularizers.get(name), "zero_strength", {"weight": 0.0})
    if declared is None:
        return None
    unknown = set(declared) - set(fields(name))
    assert not unknown, f"{name}: zero_strength names {unknown}, which its Config lacks; override zero_strength"
    return dict(declared)


def run(name: str, model: nn.Module, seed: int = 0, **params):
    torch.manual_seed(seed)
    x, y = batch()
    return registry.regularizers.create(name, **params).training_loss(model, x, y)


@pytest.mark.parametrize("name", NAMES)
def test_total_is_a_finite_scalar_with_gradients_on_every_parameter(name: str) -> None:
    model = tiny_model().train()
    loss = run(name, model)
    assert loss.total.dim() == 0 and torch.isfinite(loss.total)
    loss.total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient on {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient on {pname}"
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_parts_are_detached_finite_scalars_on_the_device(name: str) -> None:
    loss = run(name, tiny_model().train())
    assert loss.parts, f"{name} logs no parts"
    for key, value in loss.parts.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, f"{name}: part {key!r} is not a 0-dim tensor"
        assert not value.requires_grad, f"{name}: part {key!r} is not detached"
        assert torch.isfinite(value), f"{name}: part {key!r} = {value}"


@pytest.mark.parametrize("name", NAMES)
def test_module_modes_are_restored(name: str) -> None:
    model = tiny_model().train()
    model[1].eval()  # a frozen BatchNorm inside a training model must stay frozen
    before = [m.training for m in model.modules()]
    tracking = [m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    run(name, model)
    assert [m.training for m in model.modules()] == before
    assert [m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == tracking


@pytest.mark.parametrize("name", NAMES)
def test_zero_strength_gives_exactly_the_erm_loss(name: str) -> None:
    params = zero_strength(name)
    if params is None:
        pytest.skip(f"{name} declares zero_strength = None")
    model = tiny_model().train()
    erm = run("erm", model)
    erm.total.backward()
    erm_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    loss = run(name, model, **params)
    assert torch.equal(loss.total.detach(), erm.total.detach()), f"{name}{params}: {loss.total} != erm {erm.total}"
    loss.total.backward()
    for g, p in zip(erm_grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_no_host_synchronization_inside_training_loss(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model().train()
    x, y = batch()
    regularizer = registry.regularizers.create(name)
    regularizer.training_loss(model, x, y)  # first call may build caches (fooled's target map)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"{name}: training_loss reads a tensor value on the host")

    for method in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, method, forbidden)
    loss = regularizer.training_loss(model, x, y)
    monkeypatch.undo()
    assert torch.isfinite(loss.total)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_the_registry(name: str) -> None:
    regularizer = registry.regularizers.create(name)
    config = regularizer.config_dict()
    json.dumps(config)  # JSON-able, for job hashes
    assert registry.regularizers.create(name, **config).config == regularizer.config


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
