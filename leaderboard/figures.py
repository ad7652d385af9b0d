"""Static pictures made at build time with matplotlib (Agg canvas, no pyplot state, no fonts or files downloaded).

Each row of a table keeps one colour in all its figures.

* :func:`curve_figure`: one line per regularizer variant (the mean over its seeds of the evaluator's curve, e.g.
  pixel-perturbation accuracy against the fraction of pixels removed); the x axis is logarithmic when every x is
  positive and they span at least a factor of 20 (the log-spaced fractions and noise levels of the papers); the y
  axis is symmetric-logarithmic when a few lines would flatten the others (:func:`symlog_threshold`).
* :func:`scatter_figure`: accuracy against one interpretability headline, a point per row with its 95 % intervals as
  error bars (none for one seed), named in the legend, and the Pareto front: the rows no other row beats on both
  axes at once, each axis taken in its own better direction, joined by a line.

Both write an SVG (text as text; no date, fixed ids, so the same numbers give the same bytes), which is
smaller and about a third faster to make than a PNG of the same figure.
"""

from __future__ import annotations

__all__ = [
    "CurveSeries", "ScatterPoint", "curve_figure", "log_axis", "pareto_front", "plain", "scatter_figure",
    "symlog_threshold",
]

import math
from dataclasses import dataclass
from pathlib import Path

DPI = 96
_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class CurveSeries:
    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    color: int = 0  # the row's position in its table: one colour per row in every figure of a table


@dataclass(frozen=True)
class ScatterPoint:
    label: str
    x: float
    y: float
    x_low: float = math.nan  # 95 % interval; NaN with one seed
    x_high: float = math.nan
    y_low: float = math.nan
    y_high: float = math.nan
    color: int = 0


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    """SVG with text kept as text (small, sharp at any zoom) and fixed element ids and no date (same bytes for the
    same numbers)."""
    import matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gibench"}):
        figure.savefig(path, format="svg", dpi=DPI, metadata={"Date": None})
    return path


def _color(i: int):
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def plain(text: str) -> str:
    """``text`` for matplotlib as it is: a ``$`` would otherwise start math text (and an unbalanced one fails the
    whole build); submitted labels are free text."""
    return str(text).replace("$", r"\$")


def log_axis(xs: list[float]) -> bool:
    """True when every x is positive and they span at least a factor of 20."""
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 20


def symlog_threshold(ys: list[float]) -> float | None:
    """The linear range of a symmetric-log y axis when a few lines would flatten the others (the largest |y| is more
    than 100 times the median |y|): the median |y|; None for a linear axis."""
    values = sorted(abs(y) for y in ys if math.isfinite(y))
    if not values:
        return None
    median = values[len(values) // 2]
    return median if median > 0 and values[-1] > 100 * median else None


def curve_figure(path: Path, series: list[CurveSeries], title: str, x_label: str, y_label: str) -> Path:
    """One line per series (colours from tab20, line styles cycling so that 20+ lines stay apart)."""
    figure = _figure(8.0, 4.2)
    ax = figure.add_axes((0.08, 0.13, 0.6, 0.78))
    for s in series:
        ax.plot(s.x, s.y, color=_color(s.color), linestyle=_STYLES[(s.color // 10) % len(_STYLES)], marker=".",
                markersize=4, linewidth=1.4, label=plain(s.label))
    xs = sorted({x for s in series for x in s.x})
    if log_axis(xs):
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

        ax.set_xscale("log")
        if len(xs) <= 8:  # few levels (DiffROAR's k): tick exactly those
            ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.01, not 10^-2 in math text
        ax.xaxis.set_minor_formatter(NullFormatter())
    threshold = symlog_threshold([y for s in series for y in s.y])
    if threshold:
        ax.set_yscale("symlog", linthresh=threshold)
        title += " (symmetric log scale)"
    ax.set_title(plain(title), fontsize=10)
    ax.set_xlabel(plain(x_label), fontsize=9)
    ax.set_ylabel(plain(y_label), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return _save(figure, path)


def pareto_front(points: list[tuple[float, float]], higher_x: bool, higher_y: bool) -> list[int]:
    """Indices of the points that no other point beats on both axes (≥ on both, > on one), sorted by x."""
    sign_x, sign_y = (1 if higher_x else -1), (1 if higher_y else -1)
    aligned = [(sign_x * x, sign_y * y) for x, y in points]
    front = [i for i, (x, y) in enumerate(aligned)
             if not any((ox >= x and oy >= y) and (ox > x or oy > y) for ox, oy in aligned)]
    return sorted(front, key=lambda i: points[i][0])


def scatter_figure(path: Path, points: list[ScatterPoint], x_label: str, higher_x: bool, y_label: str,
                   title: str) -> Path:
    """Accuracy (y, higher is better) against a headline (x, in its direction): a point per row with its intervals,
    named in the legend (in the row's colour, so that crowded points stay readable), and the Pareto front."""
    figure = _figure(8.0, 4.4)
    ax = figure.add_axes((0.08, 0.12, 0.6, 0.8))
    markers = ("o", "s", "^", "D")
    for p in points:
        xerr = None if math.isnan(p.x_low) else [[max(p.x - p.x_low, 0.0)], [max(p.x_high - p.x, 0.0)]]
        yerr = None if math.isnan(p.y_low) else [[max(p.y - p.y_low, 0.0)], [max(p.y_high - p.y, 0.0)]]
        ax.errorbar([p.x], [p.y], xerr=xerr, yerr=yerr, fmt=markers[(p.color // 10) % len(markers)],
                    color=_color(p.color), markersize=5, elinewidth=0.8, capsize=2, label=plain(p.label))
    front = pareto_front([(p.x, p.y) for p in points], higher_x, True)
    if front:
        ax.plot([points[i].x for i in front], [points[i].y for i in front], color="0.35", linewidth=1,
                linestyle="--", label="Pareto front", zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    ax.set_title(plain(title), fontsize=10)
    ax.set_xlabel(plain(f"{x_label} ({'higher' if higher_x else 'lower'} is better)"), fontsize=9)
    ax.set_ylabel(plain(y_label), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    return _save(figure, path)
