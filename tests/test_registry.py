"""The entry-point registry, with fake entry points (and, in test_plugin_install.py, a really installed plugin), and
the declarations it checks when a plugin class loads."""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import sys
import types

import pydantic
import pytest
import torch.nn.functional as F

from gibench.api import registry
from gibench.api.plugin import Evaluator, Metric, Regularizer, TrainingLoss
from gibench.api.registry import PluginSource, Registry
from gibench.cli import main
from gibench.core.errors import ConfigError, PluginLoadError, UnknownPluginError
from gibench.running.preflight import PreflightError
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.suite import load_suite
from gibench.testing import registered
from tests.conftest import write_suite


class Alpha(Regularizer):
    zero_strength = None


class Beta(Regularizer):
    zero_strength = None


class NotARegularizer:
    pass


@pytest.fixture
def fake_module(monkeypatch):
    module = types.ModuleType("fake_plugins")
    module.Alpha, module.Beta, module.NotARegularizer = Alpha, Beta, NotARegularizer
    monkeypatch.setitem(sys.modules, "fake_plugins", module)
    return module


def _registry(*entries: tuple[str, str, str]) -> Registry:
    """A registry over fake entry points (name, "module:attr", distribution)."""
    def entry_points():
        for name, target, dist in entries:
            ep = md.EntryPoint(name=name, value=target, group="test.group")
            yield ep, PluginSource(name, target, dist, "1.2.3")
    return Registry("test.group", Regularizer, "regularizer", entry_points)


def test_lazy_loading_and_provenance(fake_module):
    reg = _registry(("alpha", "fake_plugins:Alpha", "gibench"), ("broken", "no_such_module:X", "other-dist"))
    assert reg.names() == ["alpha", "broken"]  # discovery imports nothing
    assert reg.get("alpha") is Alpha and Alpha.name == "alpha"
    assert reg.source("alpha").distribution == "gibench" and reg.source("alpha").version == "1.2.3"


def test_identical_duplicates_merge(fake_module):
    reg = _registry(("alpha", "fake_plugins:Alpha", "gibench"), ("alpha", "fake_plugins:Alpha", "gibench"))
    assert reg.get("alpha") is Alpha
    assert len(reg.info("alpha").sources) == 1


def test_name_claimed_by_two_distributions_is_an_error_naming_both(fake_module):
    reg = _registry(("alpha", "fake_plugins:Alpha", "dist-one"), ("alpha", "fake_plugins:Beta", "dist-two"),
                    ("beta", "fake_plugins:Beta", "dist-two"))
    with pytest.raises(PluginLoadError, match=r"'alpha' is claimed by more than one distribution: dist-one 1\.2\.3 "
                                              r"\(fake_plugins:Alpha\) and dist-two 1\.2\.3 \(fake_plugins:Beta\)"):
        reg.get("alpha")
    assert reg.get("beta") is Beta  # the others are unaffected


def test_import_failure_is_reported_with_traceback_and_isolated(fake_module):
    reg = _registry(("alpha", "fake_plugins:Alpha", "gibench"), ("broken", "no_such_module:X", "other-dist"))
    with pytest.raises(PluginLoadError, match=r"(?s)'broken' from other-dist 1\.2\.3.*failed to import.*"
                                              r"Traceback.*No module named 'no_such_module'"):
        reg.get("broken")
    infos = {info.name: info for info in reg.infos()}
    assert infos["alpha"].error is None
    assert "No module named 'no_such_module'" in infos["broken"].error


def test_wrong_base_class_is_a_load_error(fake_module):
    reg = _registry(("odd", "fake_plugins:NotARegularizer", "x"))
    with pytest.raises(PluginLoadError, match="not a subclass of gibench.Regularizer"):
        reg.get("odd")


def test_unknown_name_gets_did_you_mean(fake_module):
    reg = _registry(("alpha", "fake_plugins:Alpha", "gibench"))
    with pytest.raises(UnknownPluginError, match=r"unknown regularizer 'alpah'\. Did you mean 'alpha'\?"):
        reg.get("alpah")


def test_disable_autoload_keeps_only_builtins(fake_module, monkeypatch):
    monkeypatch.setenv("GIBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = _registry(("alpha", "fake_plugins:Alpha", "gibench"), ("beta", "fake_plugins:Beta", "third-party"))
    assert reg.names() == ["alpha"]


def test_builtins_are_registered_through_entry_points():
    for name in ("erm", "gradient_norm"):
        assert registry.regularizers.source(name).distribution == "gibench"
    for name in ("accuracy", "pixel_perturbation"):
        assert registry.evaluators.source(name).distribution == "gibench"
    assert registry.datasets.source("mnist_subset").distribution == "gibench"


def test_create_validates_parameters():
    assert registry.regularizers.create("gradient_norm", weight=0.5).config.weight == 0.5
    with pytest.raises(ConfigError, match="unknown parameter 'sigma'"):
        registry.regularizers.create("gradient_norm", sigma=0.1)


def test_register_and_unregister_restore_what_the_entry_points_provide():
    reg = _registry(("alpha", f"{Alpha.__module__}:Alpha", "gibench"))
    reg.register("alpha", Alpha)  # the same class: allowed, now from "<in-process>"
    reg.register("gamma", Beta)
    assert reg.source("alpha").distribution == "<in-process>" and reg.get("gamma") is Beta
    reg.unregister("alpha")
    reg.unregister("gamma")
    assert reg.names() == ["alpha"] and reg.source("alpha").distribution == "gibench"
    with pytest.raises(KeyError, match="'gamma' was not registered in-process"):
        reg.unregister("gamma")


def test_registered_removes_the_plugin_even_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"), registered("regularizers", "alpha_probe", Alpha):
        assert registry.regularizers.get("alpha_probe") is Alpha
        raise RuntimeError("boom")
    assert "alpha_probe" not in registry.regularizers.names()
    with pytest.raises(ValueError, match="kind must be one of regularizer, evaluator, dataset, got 'backbone'"):
        with registered("backbone", "x", Alpha):
            pass


# ----------------------------------------------------------------------------------------------------------------------
# Declarations checked at load time: one bad plugin per violation


def _metrics(*specs: tuple[str, bool]) -> tuple[Metric, ...]:
    return tuple(Metric(name, True, f"the {name}", headline=headline) for name, headline in specs)


def _evaluator(**attributes) -> type[Evaluator]:
    return type("BadEvaluator", (Evaluator,), {"__doc__": "A wrongly declared evaluator.", **attributes})


class PlainConfig:  # not a dataclass
    weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class WeightConfig:
    weight: float = 0.0


class CrossEntropy(Regularizer):
    Config = WeightConfig

    def training_loss(self, model, x, y):
        ce = F.cross_entropy(model(x), y)
        return TrainingLoss(ce, {"cross_entropy": ce.detach()})


BAD_PLUGINS = {
    "no_headline": ("evaluator", _evaluator(metrics=_metrics(("a", False), ("b", False))),
                    "it declares no headline metric; mark exactly one Metric with headline=True"),
    "no_metrics": ("evaluator", _evaluator(metrics=()), "it declares no metrics"),
    "two_headlines": ("evaluator", _evaluator(metrics=_metrics(("a", True), ("b", True))),
                      "it declares 2 headline metrics ('a', 'b'); exactly one Metric may have headline=True"),
    "duplicate_metric": ("evaluator", _evaluator(metrics=_metrics(("a", True), ("b", False), ("b", False))),
                         "it declares the metric name(s) 'b' more than once; metric names must be unique"),
    "unknown_capability": ("evaluator", _evaluator(metrics=_metrics(("a", True)), requires=frozenset({"signal_msk"})),
                           "it requires the unknown capability 'signal_msk'. Did you mean 'signal_mask'? Known "
                           "capabilities: analytic_score, decoy_shortcut, irrelevant_mask, signal_mask, "
                           "validation_split (gibench.CAPABILITIES)"),
    "regularizer_requires_a_test_capability": (
        "regularizer", type("NeedsSignal", (CrossEntropy,), {"requires": frozenset({"signal_mask"})}),
        "it requires the capability 'signal_mask', which it cannot: it may require only irrelevant_mask "
        "(gibench.TRAINING_ANNOTATIONS)"),
    "config_not_dataclass": ("regularizer", type("BadConfig", (CrossEntropy,), {"Config": PlainConfig}),
                             "its Config ('PlainConfig') is not a dataclass; declare it with "
                             "@dataclasses.dataclass(frozen=True) or @pydantic.dataclasses.dataclass(frozen=True)"),
    "zero_strength_typo": ("regularizer", type("Typo", (CrossEntropy,), {"zero_strength": {"wieght": 0.0}}),
                           "its zero_strength names 'wieght', which its Config lacks. Did you mean 'weight'? Config "
                           "fields: weight. Name the parameters that turn it into erm, or declare zero_strength = "
                           "None if no setting does"),
    "inherited_zero_strength": ("regularizer", type("NoWeight", (Regularizer,), {}),
                                "its zero_strength names 'weight', which its Config lacks."),
    "empty_version": ("evaluator", _evaluator(metrics=_metrics(("a", True)), version=""),
                      "its version must be a non-empty string"),
    "history_without_version": ("evaluator", _evaluator(metrics=_metrics(("a", True)), version="2",
                                                        history={"1": "first version"}),
                                "its history ('1') lacks its current version '2'; add history['2'] = "
                                "'<what version 2 changed>' (or leave history empty)"),
    "history_not_lines": ("evaluator", _evaluator(metrics=_metrics(("a", True)), history={"1": ""}),
                          "its history must map version strings to a non-empty line saying what that version "
                          "changed"),
}


@pytest.mark.parametrize("name", sorted(BAD_PLUGINS))
def test_a_wrongly_declared_plugin_fails_to_load_with_the_reason(name):
    kind, cls, reason = BAD_PLUGINS[name]
    reg = getattr(registry, f"{kind}s")
    with registered(kind, name, cls):
        with pytest.raises(PluginLoadError) as caught:
            reg.get(name)
        message = str(caught.value)
        assert message.startswith(f"{kind} {name!r} from <in-process>")
        assert "is declared wrongly: " in message and reason in message and "Traceback" not in message
        infos = {info.name: info for info in reg.infos()}
        assert reason in infos[name].error  # what `gibench list` shows
        assert all(info.error is None for other, info in infos.items() if other != name)  # the others still load
    assert name not in reg.names()


def test_well_declared_plugins_load_pydantic_configs_included():
    @pydantic.dataclasses.dataclass(frozen=True)
    class PydanticConfig:
        weight: float = 0.0

    good = type("Good", (CrossEntropy,), {"Config": PydanticConfig})
    with registered("regularizer", "good_pydantic", good), registered("regularizer", "good_plain", CrossEntropy):
        assert registry.regularizers.get("good_pydantic") is good
        assert registry.regularizers.create("good_plain", weight="0.5").config.weight == 0.5
    assert registry.declaration_problems(_evaluator(metrics=_metrics(("a", True), ("b", False)),
                                                    requires=frozenset({"signal_mask", "analytic_score"}))) == []
    assert registry.declaration_problems(_evaluator(metrics=_metrics(("a", True)), version="2",
                                                    history={"1": "first", "2": "second"})) == []


def test_gibench_list_shows_the_reason_and_exits_non_zero(capsys):
    _, cls, reason = BAD_PLUGINS["two_headlines"]
    with registered("evaluator", "two_headlines", cls):
        assert main(["list", "evaluators"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # the table wraps long cells
    assert "two_headlines" in out and "error" in out and "exactly one Metric may have headline=True" in out
    assert "accuracy" in out and "Traceback" not in out


def test_a_suite_using_a_wrongly_declared_plugin_fails_with_the_reason(tmp_path, capsys):
    _, cls, reason = BAD_PLUGINS["zero_strength_typo"]
    suite_file = write_suite(tmp_path, regularizers=["erm", {"typo": {"weight": 0.1}}])
    with registered("regularizer", "typo", cls):
        with pytest.raises(PluginLoadError, match=r"regularizers\[1\]: regularizer 'typo' .* is declared wrongly"):
            load_suite(suite_file)
        code = main(["run", "--suite", str(suite_file), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "its zero_strength names 'wieght'" in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_running_a_suite_built_before_the_plugin_broke_fails_before_anything_is_written(tmp_path):
    """A Suite built while the plugin was fine is stopped when its jobs are expanded, before the preflight trains
    or writes anything (the job hash needs the plugin's version, so the class must load)."""
    suite_file = write_suite(tmp_path, regularizers=[{"typo": {"weight": 0.1}}], evaluators=["accuracy"])
    with registered("regularizer", "typo", CrossEntropy):
        suite = load_suite(suite_file)
    _, cls, reason = BAD_PLUGINS["zero_strength_typo"]
    with registered("regularizer", "typo", cls), pytest.raises(PluginLoadError) as caught:
        run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"))
    assert "regularizer 'typo' from <in-process>" in str(caught.value) and reason in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_the_preflight_stops_a_suite_whose_evaluator_broke_after_it_was_built(tmp_path):
    suite_file = write_suite(tmp_path, regularizers=["erm"], evaluators=["accuracy", "probe"])
    with registered("evaluator", "probe", _evaluator(metrics=_metrics(("a", True)))):
        suite = load_suite(suite_file)
    _, cls, reason = BAD_PLUGINS["two_headlines"]
    with registered("evaluator", "probe", cls), pytest.raises(PreflightError) as caught:
        run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"))
    message = " ".join(str(caught.value).split())
    assert "found 1 problem(s); nothing was trained" in message
    assert "evaluator probe cannot be constructed: PluginLoadError: evaluator 'probe' from <in-process>" in message
    assert reason in message and not (tmp_path / "runs" / "jobs").exists()
