"""The entry-point registry, with fake entry points (and, in test_plugin_install.py, a really installed plugin)."""

from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest

from gibench import registry
from gibench.api import Regularizer
from gibench.errors import ConfigError, PluginLoadError, UnknownPluginError
from gibench.registry import PluginSource, Registry


class Alpha(Regularizer):
    pass


class Beta(Regularizer):
    pass


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
