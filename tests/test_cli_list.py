"""`gibench list regularizers|evaluators|datasets`: every plugin with its parameters (type, default, allowed values),
`--verbose` its docstring's first paragraph, and plugins that failed to load listed with the reason."""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import io
import sys
import types

import pytest
from rich.console import Console

from gibench import cli
from gibench.api import registry
from gibench.api.plugin import Regularizer, Sweep
from gibench.api.registry import PluginSource, Registry
from gibench.cli import list_plugins
from gibench.core.config_types import Sigma, plugin_config
from gibench.core.params import ParamInfo, describe_config
from gibench.regularizers.score_matching import ScoreMatching

WIDTH = 100


def run_list(monkeypatch, *argv: str) -> tuple[int, list[str]]:
    """``gibench list ...`` on a 100-column console; the exit status and the output lines."""
    out = io.StringIO()
    monkeypatch.setattr(cli._shared, "stdout", Console(file=out, width=WIDTH, color_system=None))
    status = cli.main(["list", *argv])
    return status, out.getvalue().splitlines()


def plugin_block(lines: list[str], name: str) -> list[str]:
    """The lines of one plugin: its header line and the indented lines under it."""
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def test_regularizers_are_listed_with_their_parameters(monkeypatch):
    status, lines = run_list(monkeypatch, "regularizers")
    assert status == 0
    block = plugin_block(lines, "score_matching")
    assert block[0].split() == ["score_matching", "gibench", md.version("gibench"), "ok"]
    sigma = next(line for line in block if line.strip().startswith("sigma:"))
    assert sigma.strip() == "sigma: float = 0.01  allowed: > 0"
    assert "  noisy_bn: str = 'train'  allowed: one of 'train', 'batch', 'eval'" in block
    help_ = {p.name: p.help for p in describe_config(ScoreMatching.Config)}["sigma"]
    assert block[block.index(sigma) + 1].strip() == help_  # the description, indented under its parameter
    assert plugin_block(lines, "erm")[1:] == ["  sweep: none (no strength knob)", "  (no parameters)"]
    assert all(len(line) <= WIDTH for line in lines)
    names = [line.split()[0] for line in lines if line and not line.startswith(" ")][1:]
    assert names == registry.regularizers.names()


def test_each_regularizer_shows_its_sweep_with_the_default_marked(monkeypatch):
    _, lines = run_list(monkeypatch, "regularizers")
    sweeps = {name: next(line for line in plugin_block(lines, name) if line.startswith("  sweep"))
              for name in registry.regularizers.names()}
    assert sweeps["gradient_norm"] == "  sweep weight: 1e-4, 1e-3*, 1e-2, 1e-1, 1, 10, 100 (log; * = default)"
    assert sweeps["score_matching"] == "  sweep weight: 1e-5, 1e-4, 1e-3*, 1e-2, 1e-1 (log; * = default)"
    assert sweeps["anti_score_matching"] == "  sweep weight: 1e-6, 1e-5, 1e-4*, 1e-3, 1e-2 (log; * = default)"
    assert sweeps["gaussian_noise"] == "  sweep sigma: 0.03, 0.06, 0.12, 0.25*, 0.5, 1 (log; * = default)"
    assert sweeps["pgd"] == "  sweep epsilon: 0.1, 0.25, 0.5, 1*, 2, 4 (log; * = default)"
    assert sweeps["attribution_prior"] == "  sweep weight: 0.01, 0.1, 1*, 10, 100 (log; * = default)"  # None → 1
    assert sweeps["erm"] == sweeps["fooled"] == "  sweep: none (no strength knob)"
    assert all(line.split(" (")[0].count("*") == 1 for line in sweeps.values() if "none" not in line)
    block = plugin_block(lines, "score_matching")
    assert block.index(sweeps["score_matching"]) == 1  # right under the header, above the parameters


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ((1e-4, 3e-4, 1e-3, 3e-3, 1e-2), ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]),
        ((0.03, 0.12, 0.25, 1.0, 100.0), ["0.03", "0.12", "0.25", "1", "100"]),
        ((2.5e-4, 0.25, 2.5, 2.5e4), ["2.5e-4", "2.5e-1", "2.5", "2.5e4"]),
        ((1, 2, 4), ["1", "2", "4"]),
    ],
)
def test_sweep_values_are_short_and_alike(values, shown):
    assert list_plugins._sweep_values(values) == shown


def test_evaluators_and_datasets_show_sequences_and_choices(monkeypatch):
    status, lines = run_list(monkeypatch, "evaluators")
    assert status == 0
    pixel = plugin_block(lines, "pixel_perturbation")
    first = next(i for i, line in enumerate(pixel) if line.startswith("  fractions:"))
    assert pixel[first:first + 2] == [  # too long for one line: wrapped with a hanging indent
        "  fractions: tuple[float, ...] = (0.01, 0.0121153, 0.014678, … 25 values)  allowed: each in (0, 1];",
        "    non-empty; strictly increasing"]
    assert "  blur_sigma: float = 0.183036  allowed: > 0" in pixel
    _, lines = run_list(monkeypatch, "datasets")
    block = plugin_block(lines, "gaussian_mixture")
    assert "  covariance: str = 'diagonal'  allowed: one of 'diagonal', 'isotropic'" in block
    assert "  sigma_max: float = 0.05  allowed: > 0" in block


def test_verbose_adds_the_first_paragraph_of_the_docstring(monkeypatch):
    _, quiet = run_list(monkeypatch, "regularizers")
    _, verbose = run_list(monkeypatch, "regularizers", "--verbose")
    summary = ScoreMatching.__doc__.strip().split("\n\n")[0]
    block = plugin_block(verbose, "score_matching")
    assert block[1].strip() == summary
    assert summary not in "\n".join(plugin_block(quiet, "score_matching"))
    # a class without its own docstring shows its module's first paragraph
    assert cli.plugin_summary(Undocumented) == " ".join(__doc__.strip().split("\n\n")[0].split())


class Undocumented(Regularizer):
    zero_strength = None


@dataclasses.dataclass(frozen=True)
class PlainConfig:
    strength: float = dataclasses.field(default=0.5, metadata={"help": "how hard to push"})


class PlainPlugin(Regularizer):
    """A plugin whose Config is a stdlib dataclass."""

    Config = PlainConfig
    zero_strength = {"strength": 0.0}
    sweep = Sweep("strength", (0.1, 0.5, 0.9), "linear")


@plugin_config
class DeclaredConfig:
    noise: Sigma = 0.2
    """Noise std in pixel units."""


class DeclaredPlugin(Regularizer):
    """A plugin whose Config uses gibench's shared types."""

    Config = DeclaredConfig
    zero_strength = None
    sweep = None


@dataclasses.dataclass(frozen=True)
class UnresolvableConfig:
    level: UndefinedType = None  # type: ignore[name-defined]  # noqa: F821


class UnresolvablePlugin(Regularizer):
    """A plugin whose Config's annotation names a type its module lacks."""

    Config = UnresolvableConfig
    zero_strength = None


@pytest.fixture
def fake_regularizers(monkeypatch):
    module = types.ModuleType("fake_list_plugins")
    for cls in (PlainPlugin, DeclaredPlugin, UnresolvablePlugin):
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "fake_list_plugins", module)
    entries = [("plain", "fake_list_plugins:PlainPlugin"), ("declared", "fake_list_plugins:DeclaredPlugin"),
               ("broken", "no_such_plugin_module:Thing"), ("unresolvable", "fake_list_plugins:UnresolvablePlugin")]

    def entry_points():
        for name, target in entries:
            yield md.EntryPoint(name=name, value=target, group="test.group"), PluginSource(name, target, "acme", "2.0")

    monkeypatch.setattr(registry, "regularizers", Registry("test.group", Regularizer, "regularizer", entry_points))


def test_third_party_plugins_and_a_broken_one(monkeypatch, fake_regularizers):
    status, lines = run_list(monkeypatch, "regularizers", "-v")
    assert status == 1  # a plugin failed to load
    broken = plugin_block(lines, "broken")
    assert broken[0].split() == ["broken", "acme", "2.0", "error"]
    assert any("No module named 'no_such_plugin_module'" in line for line in broken)
    assert plugin_block(lines, "plain") == ["plain  acme 2.0  ok", "  A plugin whose Config is a stdlib dataclass.",
                                            "  sweep strength: 0.1, 0.5*, 0.9 (linear; * = default)",
                                            "  strength: float = 0.5", "      how hard to push"]
    declared = plugin_block(lines, "declared")
    assert declared[2:] == ["  sweep: none (no strength knob)", "  noise: float = 0.2  allowed: > 0",
                            "      Noise std in pixel units."]
    unresolvable = plugin_block(lines, "unresolvable")
    assert unresolvable[2] == "  sweep: not declared"  # it inherits Regularizer's default
    assert unresolvable[3] == ("  its Config's parameters cannot be read: NameError: name 'UndefinedType' is not "
                               "defined")


@pytest.mark.parametrize(
    ("param", "text"),
    [
        (ParamInfo("n", "int", required=True), "(required)"),
        (ParamInfo("x", "float", 1e-5), "1e-05"),
        (ParamInfo("x", "float", 41 / 224), "0.183036"),
        (ParamInfo("x", "float", 1000.0), "1000.0"),
        (ParamInfo("s", "str", ""), "''"),
        (ParamInfo("t", "tuple[float, ...]", (0.5, 0.25)), "(0.5, 0.25)"),
        (ParamInfo("t", "list[int]", [1, 2, 3, 4, 5]), "[1, 2, 3, … 5 values]"),
    ],
)
def test_default_text(param, text):
    assert cli.default_text(param) == text
