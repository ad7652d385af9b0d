"""``gibench list {regularizers,evaluators,datasets,backbones,suites} [--pattern P] [--verbose]``: the installed plugins
with their parameters and defaults (a regularizer also with its declared sweep), the backbones, or the shipped
suites."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from gibench.cli import _shared

if TYPE_CHECKING:
    from gibench.api.registry import PluginInfo, Registry
    from gibench.core.params import ParamInfo

__all__ = ["cmd_list", "default_text", "plugin_summary", "sweep_text"]


def cmd_list(args: argparse.Namespace) -> int:
    if args.kind == "suites":
        return _list_suites()
    if args.kind == "backbones":
        return _list_backbones(args.pattern)
    from gibench.api import registry

    reg = getattr(registry, args.kind)
    infos = reg.infos()
    _shared.stdout.print(f"[bold]{args.kind}[/] (entry points {reg.group}): {len(infos)} installed")
    for info in infos:
        _print_plugin(reg, info, args.verbose)
    return 1 if any(info.error is not None for info in infos) else 0


def _print_plugin(reg: Registry, info: PluginInfo, verbose: bool) -> None:
    """One plugin: a line with name, distribution, version and status, then its parameters (or why it failed)."""
    dists = " + ".join(s.distribution for s in info.sources)
    status = "[green]ok[/]" if info.error is None else "[red]error[/]"
    _shared.stdout.print(f"\n[bold cyan]{escape(info.name)}[/]  {escape(dists)} {escape(info.version)}  {status}")
    if info.error is not None:
        for line in info.error.strip().splitlines():  # a traceback: kept as it is, not re-wrapped
            _shared.stdout.print(f"  {escape(line)}", soft_wrap=True, highlight=False)
        return
    cls = reg.get(info.name)
    if verbose and (summary := plugin_summary(cls)):
        _print_wrapped(summary, indent=2, hanging=2)
    from gibench.api.regularizer import Regularizer

    if issubclass(cls, Regularizer):
        _print_wrapped(sweep_text(cls), indent=2, hanging=4)
    from gibench.core.params import describe_config

    try:
        params = describe_config(cls.Config)
    except Exception as exc:  # e.g. an annotation naming a type its module does not import
        _shared.stdout.print(f"  [red]its Config's parameters cannot be read[/]: {escape(type(exc).__name__)}: "
                             f"{escape(str(exc))}", highlight=False)
        return
    if not params:
        _shared.stdout.print("  (no parameters)")
    for param in params:
        allowed = f"  allowed: {param.range}" if param.range else ""
        _print_wrapped(f"{param.name}: {param.type} = {default_text(param)}{allowed}", indent=2, hanging=4,
                       bold=param.name)
        if param.help:
            _print_wrapped(param.help, indent=6, hanging=6)


def sweep_text(cls: type) -> str:
    """A regularizer's declared sweep on one line, e.g. ``sweep weight: 1e-4, 1e-3*, 1e-2 (log; * = default)``;
    ``sweep: none (no strength knob)`` for ``sweep = None``, ``sweep: not declared`` when only the base class's
    default applies (:func:`gibench.api.regularizer.declares_sweep`)."""
    from gibench.api.regularizer import declares_sweep
    from gibench.core.identity import canonical_float
    from gibench.core.params import build_config

    sweep = cls.sweep
    if sweep is None:
        return "sweep: none (no strength knob)" if declares_sweep(cls) else "sweep: not declared"
    try:
        default = canonical_float(getattr(build_config(cls.Config, {}, cls.name), sweep.parameter))
    except Exception:  # the registry reports a Config whose defaults do not build; here the sweep is shown unmarked
        default = None
    shown = [text + ("*" if canonical_float(v) == default else "") for v, text in zip(sweep.values,
                                                                                     _sweep_values(sweep.values))]
    return f"sweep {sweep.parameter}: {', '.join(shown)} ({sweep.scale}; * = default)"


def _sweep_values(values: tuple[float, ...]) -> list[str]:
    """A sweep's values, short and alike: when one of them is below 1e-3 or from 1e4 on, every value below 1 (and from
    1e4 on) in exponent form (``1e-5, 1e-4, 1e-3, 1e-2, 1e-1``), else plainly (``0.03, 0.12, 0.25, 1, 100``);
    exponents without a plus sign or leading zeros, whole numbers without a decimal point."""
    exponent = any(v != 0 and not 1e-3 <= abs(v) < 1e4 for v in values)

    def text(value: float) -> str:
        if exponent and value != 0 and not 1 <= abs(value) < 1e4:
            mantissa, power = f"{value:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(power)}"
        if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e4):
            return str(int(value))
        return f"{value:.6g}"

    return [text(v) for v in values]


def _print_wrapped(text: str, indent: int, hanging: int, bold: str = "") -> None:
    """``text`` wrapped at the console's width with ``indent`` spaces (``hanging`` on continuation lines);
    ``bold`` is a prefix of the first line to emphasize."""
    lines = textwrap.wrap(text, width=max(_shared.stdout.width, 40), initial_indent=" " * indent,
                          subsequent_indent=" " * hanging, break_on_hyphens=False)
    for i, line in enumerate(lines):
        if i == 0 and bold and line[indent:].startswith(bold):
            markup = f"{line[:indent]}[bold]{escape(bold)}[/]{escape(line[indent + len(bold):])}"
        else:
            markup = escape(line)
        _shared.stdout.print(markup, soft_wrap=True, highlight=False)


def default_text(param: ParamInfo) -> str:
    """A parameter's default as the user would write it; long sequences shortened."""
    if param.required:
        return "(required)"
    value = param.default
    if isinstance(value, (tuple, list)):
        items = [_scalar_text(v) for v in value]
        shown = items if len(items) <= 4 else [*items[:3], f"… {len(items)} values"]
        return f"({', '.join(shown)})" if isinstance(value, tuple) else f"[{', '.join(shown)}]"
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 8 else f"{value:g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def plugin_summary(cls: type) -> str:
    """The first paragraph of a plugin class's own docstring (else its module's), on one line; '' if neither."""
    import inspect

    doc = cls.__dict__.get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    first = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(first.split())


def _list_suites() -> int:
    from gibench.suites.suite import load_suite, shipped_suites

    table = Table("name", "jobs", "description", title="shipped suites")
    from gibench.suites.jobs import planned_jobs

    for name in shipped_suites():
        suite = load_suite(name)
        table.add_row(name, str(len(planned_jobs(suite))), suite.description)
    _shared.stdout.print(table)
    return 0


def _list_backbones(pattern: str | None) -> int:
    import timm

    from gibench.training.models import in_tree_backbones

    _shared.stdout.print("gibench's own, registered with timm (small CPU nets and the seed papers' CIFAR ResNet-18 / "
                         "VGG-11): " + ", ".join(in_tree_backbones()))
    if pattern:
        _shared.stdout.print(f"timm models matching {pattern!r}: " + ", ".join(timm.list_models(pattern)))
    else:
        _shared.stdout.print(f"and any of timm's {len(timm.list_models())} models by name "
                             "(`gibench list backbones --pattern 'resnet*'` to search); weights are never downloaded.")
    return 0

