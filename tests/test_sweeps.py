"""Each regularizer declares its strength knob and the settings to compare it at (``Regularizer.sweep``, a
``gibench.Sweep``): every built-in declares one (or ``None``, on purpose), each declared sweep is a valid one with
the default among its values, and a wrongly declared sweep makes the plugin fail to load with a message naming the
parameter and the fix."""

from __future__ import annotations

import dataclasses
import importlib
import sys

import pytest

import gibench
from gibench.api import registry
from gibench.api.regularizer import Sweep, declares_sweep
from gibench.core.config_types import Weight, plugin_config
from gibench.core.errors import PluginLoadError
from gibench.core.params import build_config
from gibench.testing import registered

#: Every built-in's declared sweep: (parameter, values), or None for no strength knob. A change here is a change of
#: the operating points the benchmark compares; say why in the plugin's docstring.
BUILTIN_SWEEPS = {
    "anti_score_matching": ("weight", (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)),
    "attribution_prior": ("weight", (0.01, 0.1, 1.0, 10.0, 100.0)),
    "denoising_score_matching": ("weight", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),
    "erm": None,
    "fooled": None,
    "gaussian_noise": ("sigma", (0.03, 0.06, 0.12, 0.25, 0.5, 1.0)),
    "gradient_norm": ("weight", (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)),
    "jem": ("weight", (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)),
    "noise_consistency": ("weight", (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)),
    "pgd": ("epsilon", (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)),
    "rrr": ("weight", (1.5e-4, 1.5e-3, 1.5e-2, 1.5e-1, 1.5)),
    "score_matching": ("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)),
    "score_matching_antithetic": ("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)),
    "score_matching_hutchinson": ("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)),
    "sliced_score_matching": ("weight", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),
    "trades": ("beta", (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),
}


def _builtins() -> list[str]:
    return [name for name in registry.regularizers.names()
            if registry.regularizers.source(name).distribution == registry.BUILTIN_DISTRIBUTION]


def test_the_table_covers_every_builtin():
    assert sorted(BUILTIN_SWEEPS) == _builtins()


@pytest.mark.parametrize("name", sorted(BUILTIN_SWEEPS))
def test_every_builtin_declares_its_sweep_in_its_own_class(name):
    cls = registry.regularizers.get(name)
    assert "sweep" in vars(cls), f"{name} inherits Regularizer.sweep: assign a Sweep, or None, in its class body"
    assert declares_sweep(cls)
    expected = BUILTIN_SWEEPS[name]
    if expected is None:
        assert cls.sweep is None
        return
    sweep = cls.sweep
    assert (sweep.parameter, sweep.values) == expected
    assert sweep.scale == "log" and sweep.note.strip()
    assert len(sweep.values) >= 5
    default = getattr(build_config(cls.Config, {}, name), sweep.parameter)
    assert default in sweep.values  # the default is a point of the sweep, written exactly
    assert sweep.values[0] < default < sweep.values[-1]  # with weaker and stronger settings on either side
    assert "Sweep:" in sys.modules[cls.__module__].__doc__  # the docstring says where the values come from
    assert registry.sweep_problems(cls) == []


def test_defaults_are_unchanged_so_no_job_hash_moves():
    """The sweeps are class attributes: the Config, and so every job hash, is what it was before they existed."""
    defaults = {name: dataclasses.asdict(build_config(registry.regularizers.get(name).Config, {}, name))
                for name in BUILTIN_SWEEPS}
    assert defaults["gradient_norm"] == {"weight": 1e-3}
    assert defaults["gaussian_noise"] == {"sigma": 0.25, "num_samples": 1, "clip": False}
    assert defaults["pgd"]["epsilon"] == 1.0 and defaults["pgd"]["step_size"] is None
    assert defaults["attribution_prior"]["weight"] == 1.0 and defaults["noise_consistency"]["weight"] == 1.0
    assert defaults["anti_score_matching"]["weight"] == 1e-4
    assert all("sweep" not in config for config in defaults.values())


def test_sweep_is_public_and_stores_its_values_as_a_tuple():
    sweep = gibench.Sweep("weight", [1e-3, 1e-2], "log")
    assert gibench.Sweep is Sweep and importlib.import_module("gibench.api.plugin").Sweep is Sweep
    assert sweep.values == (1e-3, 1e-2) and sweep.note == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.values = (1.0,)  # type: ignore[misc]


def test_declared_none_differs_from_not_declared():
    plain = type("Plain", (gibench.Regularizer,), {"zero_strength": None})
    knobless = type("Knobless", (gibench.Regularizer,), {"zero_strength": None, "sweep": None})
    assert plain.sweep is None and not declares_sweep(plain)
    assert knobless.sweep is None and declares_sweep(knobless)
    child = type("Child", (registry.regularizers.get("gradient_norm"),), {})
    assert declares_sweep(child) and child.sweep.parameter == "weight"  # a subclass inherits its base's sweep


# ----------------------------------------------------------------------------------------------------------------------
# Checked when the plugin loads: one wrongly declared sweep per rule


@plugin_config
class PenaltyConfig:
    weight: Weight = 1e-3
    """λ."""


class Penalty(gibench.Regularizer):
    Config = PenaltyConfig
    sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log", "decades around the default")


def _with(sweep: object) -> type[gibench.Regularizer]:
    return type("BadSweep", (Penalty,), {"sweep": sweep})


BAD_SWEEPS = {
    "default_missing": (Sweep("weight", (1e-2, 1e-1, 1.0), "log"),
                        "its sweep of 'weight' does not contain the Config's default 0.001; add the default to the "
                        "values, so that the default is a point of the sweep"),
    "unknown_parameter": (Sweep("wieght", (1e-4, 1e-3), "log"),
                          "its sweep varies 'wieght', which its Config lacks. Did you mean 'weight'? Config fields: "
                          "weight. Name the parameter that sets its strength, or declare sweep = None if it has none"),
    "not_increasing": (Sweep("weight", (1e-2, 1e-3, 1e-4), "log"),
                       "its sweep of 'weight' has the values (0.01, 0.001, 0.0001), which are not strictly "
                       "increasing; list each setting once, from the weakest to the strongest"),
    "repeated_value": (Sweep("weight", (1e-4, 1e-3, 1e-3), "log"), "which are not strictly increasing"),
    "log_with_zero": (Sweep("weight", (0.0, 1e-3, 1e-2), "log"),
                      "its sweep of 'weight' is on a log scale but holds the value(s) 0.0; drop them (zero_strength "
                      "declares the setting that is erm) or declare scale='linear'"),
    "out_of_range": (Sweep("weight", (-1e-3, 1e-3, 1e-2), "linear"),
                     "its sweep's value -0.001 of 'weight': weight must be >= 0, got -0.001"),
    "unknown_scale": (Sweep("weight", (1e-4, 1e-3), "logarithmic"),  # type: ignore[arg-type]
                      "its sweep of 'weight' has the scale 'logarithmic'; use 'log' (values spaced by factors) or "
                      "'linear'"),
    "one_value": (Sweep("weight", (1e-3,), "log"),
                  "its sweep of 'weight' must list at least two finite numbers, got (0.001,); list the settings from "
                  "the weakest to the strongest"),
    "not_numbers": (Sweep("weight", ("1e-3", "1e-2"), "log"),  # type: ignore[arg-type]
                    "its sweep of 'weight' must list at least two finite numbers, got ('1e-3', '1e-2')"),
    "step_cost_not_a_bool": (Sweep("weight", (1e-4, 1e-3), "log", changes_step_cost="no"),  # type: ignore[arg-type]
                             "its sweep of 'weight' has changes_step_cost='no'; use True (the strength changes the "
                             "work of a training step) or False"),
    "not_a_sweep": ({"weight": (1e-3, 1e-2)},
                    "its sweep must be a gibench.Sweep or None, got {'weight': (0.001, 0.01)}; declare sweep = "
                    "Sweep(parameter, values, scale), or sweep = None if it has no strength knob"),
}


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_a_wrongly_declared_sweep_fails_to_load_with_the_reason(case):
    sweep, reason = BAD_SWEEPS[case]
    name = f"bad_sweep_{case}"
    with registered("regularizer", name, _with(sweep)):
        with pytest.raises(PluginLoadError) as caught:
            registry.regularizers.get(name)
        message = str(caught.value)
        assert "is declared wrongly: " in message and reason in message, message
        infos = {info.name: info for info in registry.regularizers.infos()}
        assert reason in infos[name].error  # what `gibench list` shows
        assert infos["gradient_norm"].error is None  # the others still load


def test_a_well_declared_sweep_loads_and_values_equal_to_the_default_within_the_hash_rounding_count():
    with registered("regularizer", "penalty", Penalty):
        assert registry.regularizers.get("penalty") is Penalty
    near = _with(Sweep("weight", (1e-4, 0.0010000000000000002, 1e-2), "log"))  # what numpy.logspace(-4, -2, 3) gives
    assert registry.sweep_problems(near) == []
    assert registry.sweep_problems(_with(None)) == []


def test_a_config_that_raises_on_a_sweep_value_is_reported_not_raised():
    @dataclasses.dataclass(frozen=True)
    class Picky:
        weight: float = 1e-3

        def __post_init__(self):
            if self.weight > 0.05:
                raise RuntimeError("weight above 0.05 is not supported")

    cls = type("PickyPenalty", (Penalty,), {"Config": Picky})
    assert registry.sweep_problems(cls) == [
        "building its Config raised RuntimeError: weight above 0.05 is not supported; keep every value of the sweep "
        "inside the parameter's allowed range"]


def test_every_swept_entry_of_a_shipped_suite_has_its_default_among_its_values():
    """The fair protocol compares each regularizer over a range that holds its default: an entry whose default is
    not swept (total_variation's λ = 1e-3 under the Gini prior's grid 0.01 … 100) would be scored only at settings
    its paper never used."""
    import math

    from gibench.suites.jobs import selection_units, swept_values
    from gibench.suites.suite import load_suite, shipped_suites

    checked = 0
    for name in shipped_suites():
        suite = load_suite(name)
        if suite.selection is None:
            continue
        for _grid, dataset, backbone, regularizer in selection_units(suite).values():
            parameter, values = swept_values(suite, regularizer)
            if regularizer.name == "pgd" and regularizer.config["norm"] == "linf":
                continue  # the default ε = 1.0 is an L2 radius; the suites list the L∞ literature's radii instead
            default = regularizer.config[parameter]
            assert any(math.isclose(default, v, rel_tol=1e-9) for v in values), (
                name, dataset.label, backbone.label, regularizer.label, default, values)
            checked += 1
    assert checked > 50  # tuned's and full's entries
