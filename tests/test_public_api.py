"""The declared public surface: ``gibench.__all__`` is pinned, every name is importable and documented, the contract
methods document their arguments, returns and an example, implementation modules declare ``__all__``, the package
ships ``py.typed``, and ``run_suite`` spells out its options."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gibench
from gibench.running.runner import RunOptions, RunSummary

EXPORTED = [
    "ANALYTIC_SCORE", "AuxModel", "BNMode", "CAPABILITIES", "ChannelReduction", "ConfigError", "CostContext", "Curve",
    "DECOY_SHORTCUT", "DataError", "DataSizes", "Dataset", "DatasetBundle", "Distinct", "DistinctFractions",
    "EvalContext", "EvalResult", "EvaluationCost", "Evaluator", "Fraction", "FractionOrAll", "GRID_IMAGES",
    "GibenchError", "IGSteps", "IRRELEVANT_MASK", "Increasing", "IncreasingFractions", "IncreasingSigmas", "Limit",
    "Metric", "NoiseStd", "NonEmpty", "NonEmptyStr", "NonNegativeFloat", "NonNegativeInt", "NumSamples", "Passes",
    "PixelValue", "PluginLoadError", "PluginSpec", "PositiveFloat", "PositiveInt", "PreflightError", "Probability",
    "Regularizer", "Rule", "RunObserver", "RunSummary", "SIGNAL_MASK", "SaliencyMethod", "SaliencyOptions", "Seed",
    "Seeds", "Sigma", "Split", "SubmissionError", "Suite", "Sweep", "TRAINING_ANNOTATIONS", "TrainConfig",
    "TrainingError", "TrainingLoss", "UnknownPluginError", "Weight", "__version__", "attribution_baseline",
    "auxiliary_classifier", "batches", "build_model", "check", "collect_results", "create_backbone", "create_evaluator",
    "create_regularizer", "did_you_mean", "eval_subset", "input_gradient", "integrated_gradients", "label_logit",
    "leaf_logits_and_input_gradient", "list_datasets", "list_evaluators", "list_regularizers", "load_dataset",
    "load_model", "load_suite", "logits_and_input_gradient", "make_bundle", "pixel_scores", "plugin_config",
    "rankdata_average", "require_quality", "run_suite", "saliency_function", "save_curves", "save_grid",
    "save_saliency_grid", "spearman", "tensors_sha256", "to_unit", "x_gradient",
]

#: the command line is not an import API; __main__ only calls it
NOT_AN_IMPORT_API = {"gibench.cli", "gibench.__main__"}
#: dataset plugin modules: their public names are the registered classes
PLUGIN_MODULES = {"gibench.data.blockmnist", "gibench.data.bundled", "gibench.data.decoy_mnist",
                  "gibench.data.gaussian_mixture", "gibench.data.torchvision_sets"}


def test_exported_names_are_pinned():
    assert sorted(gibench.__all__) == EXPORTED
    assert len(set(gibench.__all__)) == len(gibench.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_importable_and_documented(name):
    value = getattr(importlib.import_module("gibench"), name)
    assert name == "__version__" or f"``{name}``" in gibench.__doc__, f"{name} is missing from gibench's index"
    if inspect.isclass(value) or inspect.isfunction(value):
        doc = inspect.getdoc(value) or ""
        assert doc and not doc.startswith(f"{value.__name__}("), f"{name} has no docstring of its own"


def test_the_plugin_kit_in_the_readme_uses_only_public_names():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    guide = readme[readme.index("## Writing a plugin"):readme.index("## Submitting results")]
    imports = [line.strip() for line in guide.splitlines() if re.match(r"\s*(from|import) gibench[.\s]", line)]
    assert len(imports) >= 2 and all(line.startswith(("from gibench import ", "from gibench.testing import "))
                                     for line in imports), imports


CONTRACT_METHODS = [gibench.Regularizer.training_loss, gibench.Evaluator.evaluate, gibench.Dataset.load,
                    gibench.Dataset.sizes, gibench.Evaluator.cost, gibench.Evaluator.time_work,
                    gibench.api.AuxCache.get_or_create, gibench.testing.check_regularizer,
                    gibench.testing.check_evaluator, gibench.testing.make_eval_context, gibench.testing.tiny_bundle,
                    gibench.testing.tiny_model, gibench.testing.trained_model, gibench.testing.registered,
                    gibench.run_suite,
                    gibench.create_regularizer, gibench.load_dataset, gibench.create_backbone]


@pytest.mark.parametrize("method", CONTRACT_METHODS, ids=lambda m: m.__qualname__)
def test_contract_methods_document_arguments_returns_and_an_example(method):
    doc = inspect.getdoc(method)
    for section in ("Args:", "Returns:", "Example:"):
        assert f"\n{section}\n" in doc, f"{method.__qualname__} lacks a {section} section"
    documented = doc[doc.index("Args:"):doc.index("Returns:")]
    for parameter in inspect.signature(method).parameters:
        if parameter not in ("self", "cls"):
            assert parameter in documented, f"{method.__qualname__}: argument {parameter!r} is not documented"


@pytest.mark.parametrize("module", ["gibench", "gibench.api.regularizer", "gibench.api.dataset",
                                    "gibench.api.evaluator", "gibench.api.cost", "gibench.testing"])
def test_the_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _implementation_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(gibench.__path__, "gibench.")]
    return sorted(n for n in names if n not in NOT_AN_IMPORT_API | PLUGIN_MODULES and not n.startswith(
        ("gibench.regularizers", "gibench.evaluators", "gibench.leaderboard", "gibench.suites"))
        and "._" not in n) + ["gibench.data"]


@pytest.mark.parametrize("module", _implementation_modules())
def test_implementation_modules_declare_their_public_names(module):
    mod = importlib.import_module(module)
    assert isinstance(getattr(mod, "__all__", None), list), f"{module} declares no __all__"
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names {missing}, which it does not define"


def test_run_suite_spells_out_every_run_option_with_the_same_defaults():
    signature = inspect.signature(gibench.run_suite)
    parameters = signature.parameters
    assert list(parameters)[:2] == ["suite", "runs_dir"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(parameters.values())[2:])
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for f in dataclasses.fields(RunOptions):
        assert f.name in parameters, f"run_suite lacks RunOptions.{f.name}"
        assert parameters[f.name].default == f.default, f.name
    assert {"executor", "executor_options", "observer", "dry_run"} <= set(parameters)
    assert signature.return_annotation == "RunSummary" and gibench.RunSummary is RunSummary


def test_run_suite_takes_a_path_and_its_options(tiny_suite_file, tmp_path):
    runs = tmp_path / "runs"
    summary = gibench.run_suite(str(tiny_suite_file), runs, device="cpu", eval_batch_size=64, dry_run=True)
    assert isinstance(summary, RunSummary) and summary.dry_run
    assert [r.state for r in summary.jobs] == ["planned", "planned"] and not runs.exists()
    with pytest.raises(gibench.ConfigError, match="--eval-batch-size must be a positive integer"):
        gibench.run_suite(gibench.load_suite(tiny_suite_file), runs, eval_batch_size=0)
    with pytest.raises(gibench.ConfigError, match="heartbeat_s .* must be shorter than claim_timeout_s"):
        gibench.run_suite(tiny_suite_file, runs, heartbeat_s=5.0, claim_timeout_s=1.0)


def test_importing_gibench_imports_neither_timm_nor_the_runner():
    code = "import sys, gibench; print('timm' in sys.modules, 'gibench.running.runner' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_py_typed_ships_in_the_wheel(tmp_path):
    root = Path(__file__).resolve().parents[1]
    assert (root / "gibench" / "py.typed").is_file()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(tmp_path), str(root)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("gibench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gibench/py.typed" in names and "gibench/testing/__init__.py" in names


def test_every_subpackage_is_listed_for_packaging():
    """setuptools' explicit package list must name every folder of gibench/ (a stale build/ folder can hide one)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "gibench").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
