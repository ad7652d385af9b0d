"""``gibench list {regularizers,evaluators,datasets,backbones,suites} [--pattern P] [--verbose]``: the installed plugins
with their parameters and defaults, the backbones, or the shipped suites."""

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

__all__ = ["cmd_list", "default_text", "plugin_summary"]


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
    from gibench.suites.jobs import expand

    for name in shipped_suites():
        suite = load_suite(name)
        table.add_row(name, str(len(expand(suite))), suite.description)
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

