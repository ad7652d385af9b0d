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

* :func:`inline_chart`: the layout of a small chart drawn inline in the page (``templates/_strength.html.j2`` turns
  it into ``<svg>`` elements): points with optional whiskers and per-seed dots, a line through them, horizontal
  reference lines. No matplotlib: a few dozen elements per chart, each point an element of its own that carries its
  numbers as data attributes and a tooltip, and text escaped by the template like every other submitted label. The
  x axis is logarithmic when asked (and every x is positive), with the values themselves as ticks when there are at
  most six; the y axis is linear with 1-2-5 ticks, padded so that no point sits on the frame, and fits the values and
  the lines: a whisker widens it by at most the values' own span (a 95 % interval from two seeds is 12.7 standard
  errors wide and would flatten every point), and one longer than that is cut at the plot's edge, drawn without its
  cap. A point without a value (a failed training) is drawn on the x axis.
"""

from __future__ import annotations

__all__ = [
    "ChartPoint", "ChartRule", "CurveSeries", "InlineChart", "PlacedPoint", "PlacedRule", "ScatterPoint",
    "curve_figure", "inline_chart", "log_axis", "nice_ticks", "pareto_front", "plain", "scatter_figure",
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


# ----------------------------------------------------------------------------------------------------------------------
# Inline charts: laid out here, drawn as <svg> by the page's template


@dataclass(frozen=True)
class ChartPoint:
    """One point of an inline chart, in data units; ``y`` None for a point without a value (drawn on the x axis)."""

    x: float
    y: float | None
    low: float = math.nan  # the 95 % interval (a whisker); NaN for none
    high: float = math.nan
    state: str = "value"  # the point's kind: its CSS class and data-state on the page
    title: str = ""  # the tooltip
    seeds: tuple[float, ...] = ()  # per-seed values, drawn as small dots
    mark: str = ""  # a word written above the point ("selected"); "" for none
    attrs: tuple[tuple[str, str], ...] = ()  # data attributes of the point: (name without "data-", value)


@dataclass(frozen=True)
class ChartRule:
    """A horizontal line across the plot at ``y`` (``kind``: its CSS class), labelled at its right end."""

    y: float
    label: str
    kind: str


@dataclass(frozen=True)
class PlacedPoint:
    point: ChartPoint
    cx: float
    cy: float
    whisker: tuple[float, float] | None  # (top, bottom) in pixels
    seeds: tuple[float, ...]  # the y of each seed dot in pixels
    on_axis: bool  # no value: drawn on the x axis
    clipped: bool = False  # the whisker runs past the plot and is cut at its edge (drawn without caps)


@dataclass(frozen=True)
class PlacedRule:
    rule: ChartRule
    y: float
    label_y: float  # moved apart from the other rules' labels when they would overlap


@dataclass(frozen=True)
class InlineChart:
    """A chart laid out in pixels (the ``viewBox`` is ``0 0 width height``; the plot is the box from ``left, top``
    to ``right, bottom``)."""

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    path: str  # the line through the points with a value, in x order, broken at those without one ("" for none)
    points: tuple[PlacedPoint, ...]
    rules: tuple[PlacedRule, ...]
    x_label: str
    y_label: str
    log_x: bool


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values (steps of 1, 2 or 5 × 10^k) within [low, high], and never fewer than three."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    steps = [m * power for m in (10, 5, 2, 1, 0.5, 0.2, 0.1)]
    ticks: list[float] = []
    for step in steps[steps.index(next(s for s in reversed(steps) if s >= raw)):]:
        first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
        ticks = [round(k * step, 12) + 0.0 for k in range(first, last + 1)]
        if len(ticks) >= 3:
            break
    return ticks


def _tick(value: float) -> str:
    return f"{value:g}".replace("-", "−")


def inline_chart(points: list[ChartPoint], rules: list[ChartRule] | None = None, *, log_x: bool, x_label: str,
                 y_label: str, width: int = 300, height: int = 190, right_margin: int = 12) -> InlineChart:
    """Lay out ``points`` and ``rules`` in a ``width`` × ``height`` chart (see the module docstring).

    ``log_x`` is honoured only when every x is positive (a log axis cannot place 0). ``right_margin`` leaves room
    for the rules' labels, written to the right of the plot.
    """
    rules = list(rules or [])
    log_x = log_x and all(p.x > 0 for p in points)
    left, top, right, bottom = 46.0, 16.0, float(width - right_margin), float(height - 34)

    def t(x: float) -> float:
        return math.log10(x) if log_x else x

    xs = sorted({t(p.x) for p in points})
    if not xs:
        x0, x1 = 0.0, 1.0
    elif xs[0] == xs[-1]:
        x0, x1 = xs[0] - 0.5, xs[0] + 0.5
    else:
        pad = 0.07 * (xs[-1] - xs[0])
        x0, x1 = xs[0] - pad, xs[-1] + pad

    def px(x: float) -> float:
        return round(left + (t(x) - x0) / (x1 - x0) * (right - left), 2)

    ys = [v for p in points for v in (p.y, *p.seeds) if v is not None and math.isfinite(v)]
    ys += [r.y for r in rules if math.isfinite(r.y)]
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    span = (y1 - y0) or max(abs(y1) * 0.1, 0.01)  # equal values: a range around them
    ends = [v for p in points if p.y is not None for v in (p.low, p.high) if math.isfinite(v)]
    y0 = max(min([y0, *ends]), y0 - span)  # whiskers widen the axis by at most the values' own span
    y1 = min(max([y1, *ends]), y1 + span)
    span = (y1 - y0) or span
    y0, y1 = (y0, y1) if y1 > y0 else (y0 - span / 2, y1 + span / 2)
    y0, y1 = y0 - 0.08 * span, y1 + 0.08 * span

    def py(y: float) -> float:
        return round(bottom - (y - y0) / (y1 - y0) * (bottom - top), 2)

    values = sorted({p.x for p in points})
    if len(values) <= 6:
        x_ticks = values
    elif log_x:
        x_ticks = [10.0 ** k for k in range(math.ceil(x0 - 1e-9), math.floor(x1 + 1e-9) + 1)] or values[::2]
    else:
        x_ticks = nice_ticks(x0, x1, 5)
    placed = []
    for p in sorted(points, key=lambda p: p.x):
        whisker = None if p.y is None or math.isnan(p.low) else (py(min(p.high, y1)), py(max(p.low, y0)))
        clipped = whisker is not None and (p.high > y1 or p.low < y0)
        placed.append(PlacedPoint(p, px(p.x), bottom if p.y is None else py(p.y), whisker,
                                  tuple(py(s) for s in p.seeds if math.isfinite(s)), p.y is None, clipped))
    segments, current = [], []
    for q in placed:
        if q.on_axis:
            segments, current = segments + [current], []
        else:
            current.append(q)
    path = " ".join("M" + " L".join(f"{q.cx},{q.cy}" for q in run) for run in [*segments, current] if len(run) > 1)
    return InlineChart(width, height, left, top, right, bottom, tuple((px(x), _tick(x)) for x in x_ticks),
                       tuple((py(y), _tick(y)) for y in nice_ticks(y0, y1)), path, tuple(placed),
                       _place_rules([(r, py(r.y)) for r in rules if math.isfinite(r.y)]), x_label, y_label, log_x)


def _place_rules(rules: list[tuple[ChartRule, float]], gap: float = 11.0) -> tuple[PlacedRule, ...]:
    """Each rule with its label's y: its own line's, pushed down (in order of height) until it is ``gap`` pixels
    below the label above it, so that two close lines (erm and a small budget below it) keep readable labels."""
    out, last = [], -math.inf
    for rule, y in sorted(rules, key=lambda item: item[1]):
        label_y = max(y, last + gap)
        out.append(PlacedRule(rule, y, round(label_y, 2)))
        last = label_y
    return tuple(out)
