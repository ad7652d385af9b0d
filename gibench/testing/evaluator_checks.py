"""The conformance checks of an evaluator (the ``gibench.Evaluator`` contract), run on the CPU on
:func:`gibench.testing.tiny_model` and :func:`gibench.testing.tiny_bundle`; what they check is listed in the docstring
of :mod:`gibench.testing`."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gibench.api import Curve, DatasetBundle, EvalContext, EvalResult, Evaluator, registry
from gibench.api.plugin_base import VALIDATION_SPLIT
from gibench.api.saliency import saliency_for
from gibench.core.errors import GibenchError
from gibench.core.params import build_config
from gibench.data.validation import hold_out_validation
from gibench.testing.conformance import Checks, assert_declarations, resolve_plugin
from gibench.testing.fixtures import make_eval_context, tiny_bundle, tiny_model

__all__ = ["check_evaluator"]


def check_evaluator(
    evaluator: str | type[Evaluator], *, params: Mapping[str, Any] | None = None, bundle: DatasetBundle | None = None,
    model: nn.Module | None = None, artifact_dir: str | Path | None = None, batch_size: int = 16,
) -> EvalResult | None:
    """Run gibench's evaluator conformance checks (listed in :mod:`gibench.testing`) on one evaluator.

    Args:
        evaluator: a registered name, or a :class:`gibench.Evaluator` subclass (registered or not).
        params: the evaluator's hyper-parameters (default: the Config's defaults). Keep it cheap: it runs three
            times (the determinism and batch-size checks).
        bundle: the dataset (default :func:`tiny_bundle`, which has every capability).
        model: the model to evaluate (default :func:`tiny_model` for the bundle).
        artifact_dir: where the evaluations write, in the subfolders ``first``, ``again`` and ``other`` (default: a
            temporary folder, removed afterwards).
        batch_size: the evaluation batch size; the batch-size check also runs at ``batch_size // 2 + 1``.

    Returns:
        The result of the first evaluation (its artifacts lie in ``artifact_dir / "first"``), when every check passes.

    Raises:
        ConformanceError: listing every failed check.

    Example:
        >>> check_evaluator("accuracy").scalars["accuracy"] <= 1.0
        True
    """
    plugin, cls = resolve_plugin("evaluator", evaluator)
    checks = Checks(plugin)
    checks.run("declarations", lambda: assert_declarations(cls))
    checks.run("docstring", lambda: _assert(bool((cls.__doc__ or "").strip()), "the class has no docstring"))
    checks.run("companions", lambda: _companions(cls))
    if bundle is None:  # the tiny bundle, with a validation split held out for an evaluator that reads one
        bundle = tiny_bundle()
        if VALIDATION_SPLIT in getattr(cls, "requires", frozenset()):
            bundle = hold_out_validation(bundle, 0.25, seed=0)
    model = model if model is not None else tiny_model(bundle)
    instance: list[Evaluator] = []
    if not checks.run("construction", lambda: instance.append(cls(build_config(cls.Config, dict(params or {}),
                                                                                  plugin)))):
        checks.finish()
    instance_ = instance[0]
    missing = sorted(set(instance_.requires) - bundle.capabilities)
    if missing:
        checks.failures.append(f"capabilities: the dataset lacks {missing}, which the evaluator requires; pass a "
                               "bundle that has them")
        checks.finish()
    with contextlib.ExitStack() as stack:
        if artifact_dir is None:
            artifact_dir = stack.enter_context(tempfile.TemporaryDirectory())
        root = Path(artifact_dir)
        result = _evaluate_checks(checks, instance_, model, bundle, root, batch_size)
    checks.finish()
    return result


def _companions(cls: type[Evaluator]) -> None:
    """Each ``read_beside`` names a registered evaluator's headline metric, which reads beside nothing itself."""
    problems = []
    for metric in cls.metrics:
        if not metric.read_beside or metric.read_beside.count(".") != 1:
            continue  # none, or a malformed one (the declarations check reports it)
        evaluator, name = metric.read_beside.split(".")
        try:
            companion = next((m for m in registry.evaluators.get(evaluator).metrics if m.name == name), None)
        except GibenchError as error:  # an unknown or broken evaluator: say which and why
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, but evaluator "
                            f"{evaluator!r} cannot be loaded: {str(error).splitlines()[0]}")
            continue
        if companion is None:
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, but evaluator "
                            f"{evaluator!r} declares no metric {name!r}")
        elif companion.read_beside:
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, which itself reads beside "
                            f"{companion.read_beside!r}; name a metric that stands on its own")
        elif not companion.headline:
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, which is not the headline "
                            f"of {evaluator!r} (the site hides secondary columns until chosen, and this one with "
                            "them); name the headline")
    assert not problems, "; ".join(problems)


def _assert(condition: bool, message: str) -> None:
    assert condition, message


def _evaluate_checks(checks: Checks, evaluator: Evaluator, model: nn.Module, bundle: DatasetBundle, root: Path,
                     batch_size: int) -> EvalResult | None:
    saliency = saliency_for(evaluator.config)  # the evaluator's `saliency` option, as the runner wires it
    first = make_eval_context(model, bundle, root / "first", batch_size=batch_size, saliency=saliency)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results: dict[str, EvalResult] = {}

    def evaluate(label: str, ctx: EvalContext) -> None:
        result = evaluator.evaluate(ctx)
        assert isinstance(result, EvalResult), f"evaluate returned {type(result).__name__}, not EvalResult"
        results[label] = result

    if not checks.run("evaluate", lambda: evaluate("first", first)):
        return None
    result = results["first"]
    checks.run("declared metrics returned as finite floats", lambda: _metrics_returned(evaluator, result))
    checks.run("curves", lambda: _curves_valid(result))
    checks.run("artifacts written where declared", lambda: _artifacts_written(result, first.artifact_dir))
    checks.run("model left in eval mode and unchanged", lambda: _model_unchanged(model, state))
    again = make_eval_context(model, bundle, root / "again", batch_size=batch_size, aux=first.aux, saliency=saliency)
    other = make_eval_context(model, bundle, root / "other", batch_size=batch_size // 2 + 1, aux=first.aux,
                              saliency=saliency)
    if checks.run("evaluate again with the same seed", lambda: evaluate("again", again)):
        checks.run("same seed, same numbers", lambda: _same_scalars(result, results["again"], 0.0))
    if checks.run(f"evaluate at batch size {other.batch_size}", lambda: evaluate("other", other)):
        checks.run("independent of the batch size", lambda: _same_scalars(result, results["other"], 1e-5))
    return result


def _metrics_returned(evaluator: Evaluator, result: EvalResult) -> None:
    declared = {m.name for m in evaluator.metrics}
    returned = set(result.scalars)
    assert returned == declared, (f"scalars {sorted(returned)} differ from the declared metrics {sorted(declared)} "
                                  f"(missing {sorted(declared - returned)}, undeclared {sorted(returned - declared)})")
    for metric in evaluator.metrics:
        assert isinstance(metric.higher_is_better, bool), f"metric {metric.name!r}: higher_is_better is not a bool"
        value = result.scalars[metric.name]
        assert type(value) is float, f"metric {metric.name!r} is a {type(value).__name__}, not a float"
        assert math.isfinite(value), f"metric {metric.name!r} = {value}"


def _curves_valid(result: EvalResult) -> None:
    for name, curve in result.curves.items():
        assert isinstance(curve, Curve), f"curve {name!r} is a {type(curve).__name__}, not a gibench.Curve"
        assert len(curve.x) == len(curve.y) > 0, f"curve {name!r}: {len(curve.x)} x values, {len(curve.y)} y values"
        assert all(isinstance(v, float) for v in (*curve.x, *curve.y)), f"curve {name!r} holds non-float values"


def _artifacts_written(result: EvalResult, folder: Path) -> None:
    for name, filename in result.artifacts.items():
        path = (folder / filename).resolve()
        assert path.parent == folder.resolve(), f"artifact {name!r} ({filename!r}) is not a file name inside " \
                                                "ctx.artifact_dir"
        assert path.is_file() and path.stat().st_size > 0, f"artifact {name!r}: {filename!r} is missing or empty"
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    leftovers = sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".tmp"))
    assert not leftovers, f"temporary files left in the artifact folder: {leftovers}"


def _model_unchanged(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    assert not any(m.training for m in model.modules()), "the model was left in train mode"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert not changed, f"evaluate changed the model's {changed}"


def _same_scalars(a: EvalResult, b: EvalResult, rel: float) -> None:
    """Every scalar of ``b`` equals that of ``a`` (exactly for ``rel=0``, else to ``rel`` relative, 1e-6 absolute)."""
    differ = {}
    for key, value in a.scalars.items():
        other = b.scalars.get(key, math.nan)
        if not (other == value or (rel > 0 and math.isclose(value, other, rel_tol=rel, abs_tol=1e-6))):
            differ[key] = (value, other)
    assert not differ, f"metric (first, second) values differ: {differ}"
