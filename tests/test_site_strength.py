"""A table page's strength curves (gibench.leaderboard.strength): the selection record of a max_drop suite drawn on
the table that holds its settings, with the chosen value marked, failed values on the axis and the reason; per
evaluator headline and test accuracy against the strength where a table holds several settings of one entry (a
`rule: all` run, or settings listed by hand), the selected one marked; a table without a sweep unchanged."""

from __future__ import annotations

import dataclasses
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gibench.leaderboard.build import _environment, build_site
from gibench.leaderboard.figures import ChartPoint, ChartRule, inline_chart
from gibench.leaderboard.strength import label_matches, strength_sections
from gibench.leaderboard.tables import aggregate, combine, make_tables, metric_info
from gibench.running.selection import read_selections
from gibench.submissions.build import build_submission, load_submission
from tests.site_helpers import submit_rows
from tests.test_selection import SUITE, VALUES  # the tiny selecting suite, run in about a second


def run_and_submit(root: Path, **changes) -> Path:
    """Run the tiny selecting suite (``changes`` replace its keys) on the CPU with one thread and submit it; the
    submission folder."""
    import torch

    from gibench.running.runner import run_suite
    from gibench.suites.suite import parse_suite

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_suite(parse_suite({**SUITE, **changes}), root / "runs", device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert summary.ok, summary.failures()
    return build_submission(root / "runs", root / "subs", {"name": "Tiny sweep", "authors": ["A. Person"]})


class Strength(HTMLParser):
    """The strength section of a table page: its selection charts ({"attrs", "points", "rules", "marks", "reason"})
    and blocks ({"attrs", "panels": [{"attrs", "points", "rules"}]}), each point and rule as its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.section = False
        self.selections: list[dict] = []
        self.blocks: list[dict] = []
        self.current: dict | None = None
        self.capture: tuple[str, str] | None = None  # (tag, key) whose text is being read into self.current

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "section" and attrs.get("id") == "strength":
            self.section = True
        if not self.section:
            return
        kind = attrs.get("class", "")
        if tag == "figure" and "data-selection" in attrs:
            self.current = {"attrs": attrs, "points": [], "rules": [], "marks": [], "reason": ""}
            self.selections.append(self.current)
        elif tag == "div" and kind == "strength-block":
            self.blocks.append({"attrs": attrs, "panels": []})
            self.current = None
        elif tag == "figure" and kind == "strength-panel":
            self.current = {"attrs": attrs, "points": [], "rules": [], "marks": []}
            self.blocks[-1]["panels"].append(self.current)
        elif tag == "g" and "data-point" in attrs:
            self.current["points"].append(attrs)
        elif tag == "g" and "data-rule" in attrs:
            self.current["rules"].append(attrs)
        elif tag == "text" and kind == "mark":
            self.current["marks"].append("")
            self.capture = (tag, "marks")
        elif tag == "span" and "data-reason" in attrs:
            self.capture = (tag, "reason")

    def handle_data(self, data: str) -> None:
        if self.capture is None:
            return
        key = self.capture[1]
        if key == "marks":
            self.current["marks"][-1] += data
        else:
            self.current[key] += data

    def handle_endtag(self, tag: str) -> None:
        if self.capture is not None and tag == self.capture[0]:
            self.capture = None
        if tag == "section":
            self.section = False


def strength_of(html: str) -> Strength:
    parser = Strength()
    parser.feed(html)
    return parser


def table_page(site: Path) -> str:
    [page] = (site / "tables").glob("*.html")
    return page.read_text("utf-8")


@pytest.fixture(scope="module")
def max_drop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("strength-max-drop")
    folder = run_and_submit(root)
    build_site(root / "subs", root / "site")
    [record] = read_selections(root / "runs")
    return {"root": root, "loaded": load_submission(folder), "record": record, "html": table_page(root / "site")}


@pytest.fixture(scope="module")
def rule_all(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("strength-all")
    run_and_submit(root, select={"rule": "all"})
    build_site(root / "subs", root / "site")
    return {"root": root, "html": table_page(root / "site")}


def sections(loaded_submissions: list) -> tuple[list, dict]:
    """The tables and strength sections the site would make of these submissions."""
    summary = aggregate(combine(loaded_submissions), loaded_submissions)
    tables = make_tables(summary, metric_info(loaded_submissions))
    return tables, strength_sections(tables, summary, loaded_submissions)


def render(section) -> str:
    return str(_environment().get_template("_strength.html.j2").module.strength(section))


def with_unit(loaded, **changes):
    """``loaded`` with its one selection unit changed (the record revalidated by the schema)."""
    record = loaded.submission.provenance.suites[0]
    selection = record.selection
    unit = selection.units[0].model_validate({**selection.units[0].model_dump(), **changes})
    suites = [record.model_copy(update={"selection": selection.model_copy(update={"units": [unit]})})]
    provenance = loaded.submission.provenance.model_copy(update={"suites": suites})
    return dataclasses.replace(loaded, submission=loaded.submission.model_copy(update={"provenance": provenance}))


# ----------------------------------------------------------------------------------------------------------------------
# The selection chart


def test_a_max_drop_table_shows_its_selection_curve_with_the_chosen_value_marked(max_drop: dict) -> None:
    [unit] = max_drop["record"]["units"]
    page = strength_of(max_drop["html"])
    [chart] = page.selections
    assert unit["state"] in ("selected", "over_budget") and unit["selected"] in VALUES
    assert chart["attrs"]["data-selected"] == repr(unit["selected"]) and chart["attrs"]["data-state"] == unit["state"]
    assert chart["attrs"]["data-points"] == "3" and chart["attrs"]["data-scale"] == "log"
    assert [p["data-value"] for p in chart["points"]] == [repr(v) for v in VALUES]
    assert [p["data-mean"] for p in chart["points"]] == [repr(p["mean"]) for p in unit["curve"]]
    chosen = [p for p in chart["points"] if p["data-state"] in ("selected", "over-budget")]
    assert [p["data-value"] for p in chosen] == [chart["attrs"]["data-selected"]]
    assert chart["marks"] == [{"selected": "selected", "over_budget": "over budget"}[unit["state"]]]
    rules = {r["data-rule"]: float(r["data-y"]) for r in chart["rules"]}
    assert rules == {"reference": unit["reference"], "budget": pytest.approx(unit["reference"] - 0.05)}
    assert chart["reason"].rstrip(".").lower() == unit["reason"].lower()
    assert "Selection reads the validation split only, never the test split." in max_drop["html"]
    assert 'href="#strength"' in max_drop["html"]  # the jump list names it
    assert page.blocks == []  # one scored setting: nothing to draw against the strength


def test_the_settings_trained_only_for_the_sweep_are_drawn_not_tabled(max_drop: dict) -> None:
    """The table and the index's heatmap hold erm and the selected setting; the table says how many sweep settings it
    leaves out and points to the charts, which draw all three."""
    [unit] = max_drop["record"]["units"]
    selected = f"gradient_norm(weight={unit['selected']:g})"
    html = max_drop["html"]
    assert sorted(set(re.findall(r'<tr class="lb-row[^"]*" data-variant="([^"]+)"', html))) == ["erm", selected]
    assert re.search(r'2 settings trained only for a strength sweep are not rows here: .*'
                     r'<a href="../tables/[^"]+\.html#strength">The selection charts</a> draw them', html)
    index = (max_drop["root"] / "site" / "index.html").read_text("utf-8")
    unselected = [f"gradient_norm(weight={v:g})" for v in VALUES if v != unit["selected"]]
    assert selected in index and not any(label in index for label in unselected)
    assert len(strength_of(html).selections[0]["points"]) == len(VALUES)


def test_the_sweep_point_mask_keeps_scored_settings_and_tables_that_do_not_select() -> None:
    from gibench.results.tables import sweep_point_mask

    def rows(table: str, variant: str, evaluators: list[str]) -> list[dict]:
        return [{"dataset": "d", "backbone": "b", "train_hash": table, "regularizer": variant.split("(")[0],
                 "variant": variant, "evaluator": e, "metric": e} for e in evaluators]

    frame = pd.DataFrame([
        *rows("sel", "erm", ["validation_accuracy", "accuracy"]),
        *rows("sel", "g(w=1)", ["validation_accuracy", "accuracy"]),  # the selected setting
        *rows("sel", "g(w=10)", ["validation_accuracy"]),  # a sweep point
        *rows("sel", "g(w=100)", ["training"]),  # a sweep point whose training failed
        *rows("plain", "g(w=100)", ["training"]),  # a failed job of a suite that does not select: a row
        *rows("plain", "erm", ["accuracy"]),
    ])
    masked = frame[sweep_point_mask(frame)]
    assert sorted(set(zip(masked["train_hash"], masked["variant"]))) == [("sel", "g(w=10)"), ("sel", "g(w=100)")]
    assert not sweep_point_mask(frame.iloc[:0]).any()


def test_over_budget_and_failed_values_are_drawn_as_such(max_drop: dict) -> None:
    curve = [{"value": 0.001, "accuracies": [0.80], "mean": 0.80},
             {"value": 0.1, "accuracies": ["failed"], "mean": None},
             {"value": 10.0, "accuracies": [0.70], "mean": 0.70}]
    loaded = with_unit(max_drop["loaded"], curve=curve, reference=0.9, budget=0.85, selected=0.001,
                       state="over_budget", reason="no weight is within 0.05 of erm's validation accuracy 0.9000")
    tables, found = sections([loaded])
    [section] = found.values()
    [selection] = section.selections
    states = [q.point.state for q in selection.chart.points]
    assert states == ["over-budget", "failed", "below"]
    failed = selection.chart.points[1]
    assert failed.on_axis and failed.cy == selection.chart.bottom
    assert selection.chart.path.count("M") == 0  # no two neighbours with a value: no line through the gap
    page = strength_of(render(section))
    [chart] = page.selections
    assert chart["attrs"]["data-selected"] == "0.001" and chart["marks"] == ["over budget"]
    assert [p["data-state"] for p in chart["points"]] == states
    assert "Over budget: weight = 0.001" in render(section)


def test_a_unit_goes_to_the_table_whose_stored_validation_accuracies_are_its_curve(max_drop: dict) -> None:
    loaded = max_drop["loaded"]
    # the same rows trained another way (another training config), whose validation accuracies differ
    other = loaded.results.copy()
    other["train_hash"], other["train_label"] = "0000beef", "2 ep · sgd · 10 % held out"
    other.loc[other["evaluator"] == "validation_accuracy", "value"] = 0.123
    twice = dataclasses.replace(loaded, results=pd.concat([loaded.results, other], ignore_index=True))
    tables, found = sections([twice])
    homes = {t.train_hash: len(found[t.anchor].selections) for t in tables}
    assert homes == {"0000beef": 0, loaded.results["train_hash"].iloc[0]: 1}

    # with the same numbers both tables could have made the record: it is shown on both, not dropped
    same = loaded.results.assign(train_hash="0000beef", train_label="2 ep · sgd · 10 % held out")
    tables, found = sections([dataclasses.replace(loaded, results=pd.concat([loaded.results, same]))])
    assert [len(found[t.anchor].selections) for t in tables] == [1, 1]


def test_a_unit_of_another_backbone_or_entry_is_not_drawn(max_drop: dict) -> None:
    for changes in ({"backbone": "gibench_linear(bias=false)"}, {"regularizer": "gradient_norm(p=1)"},
                    {"dataset": "gaussian_mixture"}):
        tables, found = sections([with_unit(max_drop["loaded"], **changes)])
        assert all(s.empty for s in found.values()), changes


def test_labels_match_in_any_order_of_their_options() -> None:
    assert label_matches("gibench_cnn(width=8, act=softplus)", "gibench_cnn", {"act": "softplus", "width": 8})
    assert label_matches("pgd(norm=linf, steps=2)", "pgd", {"steps": 2, "norm": "linf"})
    assert label_matches("erm", "erm", {})
    assert not label_matches("gibench_cnn(width=8, act=softplus)", "gibench_cnn", {"act": "softplus", "width": 16})
    assert not label_matches("pgd(norm=linf, steps=2)", "pgd", {"norm": "linf"})
    assert not label_matches("pgd(norm=linf)", "pgd", {"norm": "linf", "steps": 2})
    assert not label_matches("gibench_cnn", "gibench_cnn", {"act": "softplus"})


# ----------------------------------------------------------------------------------------------------------------------
# Each evaluator against the strength


def test_rule_all_draws_every_headline_and_accuracy_with_a_point_per_swept_value(rule_all: dict) -> None:
    page = strength_of(rule_all["html"])
    assert page.selections == []  # `rule: all` chooses nothing and records no selection
    [block] = page.blocks
    assert block["attrs"]["data-regularizer"] == "gradient_norm" and block["attrs"]["data-parameter"] == "weight"
    assert block["attrs"]["data-values"] == "3" and block["attrs"]["data-selected"] == ""
    assert block["attrs"]["data-scale"] == "log"
    panels = {p["attrs"]["data-evaluator"]: p for p in block["panels"]}
    assert set(panels) == {"accuracy", "validation_accuracy"} and "data-accuracy" in panels["accuracy"]["attrs"]
    for panel in panels.values():
        assert panel["attrs"]["data-points"] == str(len(VALUES))
        assert [p["data-value"] for p in panel["points"]] == [repr(v) for v in VALUES]
        assert all(p["data-seeds"] == "2" for p in panel["points"])
        assert [r["data-rule"] for r in panel["rules"]] == ["reference"]  # erm's mean


def test_the_points_are_the_table_means_and_the_selected_setting_is_ringed(max_drop: dict) -> None:
    """A max_drop rerun that scored a second setting (its accuracy rows added by hand): two points per panel, the
    recorded choice ringed, the means those of the summary the table shows."""
    loaded = max_drop["loaded"]
    [unit] = max_drop["record"]["units"]
    chosen, other = unit["selected"], next(v for v in VALUES if v != unit["selected"])
    results = loaded.results
    scored = results[(results["regularizer"] == "gradient_norm") & (results["regularizer_params"]
                                                                    == f'{{"weight": {chosen}}}')]
    added = scored[scored["evaluator"] == "accuracy"].assign(
        regularizer_params=f'{{"weight": {other}}}', variant=f"gradient_norm(weight={other:g})", value=0.5,
        job_hash=lambda f: f["job_hash"].str[::-1])
    rerun = dataclasses.replace(loaded, results=pd.concat([results, added], ignore_index=True))
    tables, found = sections([rerun])
    [section] = found.values()
    [block] = section.blocks
    assert sorted(block.values) == sorted([chosen, other]) and block.selected == chosen
    [panel] = [p for p in block.panels if p.accuracy]
    means = {q.point.x: q.point.y for q in panel.chart.points}
    assert means[other] == 0.5
    summary = aggregate(combine([rerun]), [rerun])
    mine = summary[(summary["evaluator"] == "accuracy") & (summary["variant"] == f"gradient_norm(weight={chosen:g})")]
    assert means[chosen] == pytest.approx(float(mine["mean"].iloc[0]))
    page = strength_of(render(section))
    [drawn] = page.blocks
    assert drawn["attrs"]["data-selected"] == repr(chosen)
    [accuracy] = [p for p in drawn["panels"] if p["attrs"]["data-evaluator"] == "accuracy"]
    assert [p["data-state"] for p in accuracy["points"] if p["data-value"] == repr(chosen)] == [
        unit["state"].replace("_", "-")]
    assert accuracy["marks"] == [{"selected": "selected", "over_budget": "over budget"}[unit["state"]]]


# ----------------------------------------------------------------------------------------------------------------------
# Settings listed by hand, and a table without a sweep


def hand_rows(settings: dict) -> list[dict]:
    """results.csv rows on mnist_subset × gibench_linear: (variant, params JSON) → {metric: values by seed}."""
    from gibench.api import registry

    metrics = {"accuracy": ("accuracy", True), "auc": ("pixel_perturbation", False)}
    rows = []
    for (variant, params), values in settings.items():
        for metric, by_seed in values.items():
            evaluator, higher = metrics[metric]
            for seed, value in enumerate(by_seed):
                rows.append({
                    "job_hash": f"{variant}-{seed}", "dataset": "mnist_subset", "backbone": "gibench_linear",
                    "backbone_params": "{}", "regularizer": variant.split("(")[0], "regularizer_params": params,
                    "variant": variant, "seed": seed, "evaluator": evaluator,
                    "evaluator_version": registry.evaluators.get(evaluator).version, "evaluator_params": "{}",
                    "metric": metric, "value": value, "higher_is_better": higher, "headline": True, "status": "ok",
                    "reason": "", "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
                    "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0"})
    return rows


ERM = {("erm", "{}"): {"accuracy": [0.91, 0.92, 0.90], "auc": [0.30, 0.31, 0.32]}}
BY_HAND = {
    ("gradient_norm(weight=0.001)", '{"weight": 0.001}'): {"accuracy": [0.90, 0.91, 0.90], "auc": [0.29, 0.3, 0.3]},
    ("gradient_norm(weight=0.01)", '{"weight": 0.01}'): {"accuracy": [0.88, 0.89, 0.87], "auc": [0.25, 0.26, 0.24]},
    # collapsed: accuracy far below the floor erm sets
    ("gradient_norm(weight=0.1)", '{"weight": 0.1}'): {"accuracy": [0.20, 0.21, 0.19], "auc": [0.10, 0.11, 0.12]},
}


def build_by_hand(root: Path, settings: dict) -> str:
    submit_rows(root / "runs", root / "subs", {"name": "By hand", "authors": ["A. Person"]}, hand_rows(settings),
                {"name": "by-hand", "seeds": [0, 1, 2]})
    build_site(root / "subs", root / "site")
    return table_page(root / "site")


def test_settings_listed_by_hand_get_a_block_with_intervals_and_collapsed_rows_hollow(tmp_path: Path) -> None:
    html = build_by_hand(tmp_path, {**ERM, **BY_HAND})
    page = strength_of(html)
    assert page.selections == []
    [block] = page.blocks
    assert block["attrs"]["data-values"] == "3" and block["attrs"]["data-parameter"] == "weight"
    panels = {p["attrs"]["data-evaluator"]: p for p in block["panels"]}
    assert set(panels) == {"accuracy", "pixel_perturbation"}
    auc = panels["pixel_perturbation"]["points"]
    expected = [float(np.mean(v["auc"])) for v in BY_HAND.values()]
    assert [float(p["data-mean"]) for p in auc] == pytest.approx(expected)
    assert [p.get("data-collapsed") for p in auc] == [None, None, "true"]
    assert auc[-1]["data-state"] == "collapsed"
    assert html.count('class="whisker"') == 6  # three seeds per setting: every point has its interval


def test_a_regularizer_not_installed_here_is_drawn_against_the_option_its_settings_differ_in(tmp_path: Path) -> None:
    """No declared sweep to ask: the numeric option in which the settings differ, all else equal, is the strength
    (here ``alpha`` at ``mode=a``; the ``mode=b`` setting has no sibling and is no curve)."""
    lab = {(f"lab_penalty(alpha={a}, mode={m})", f'{{"alpha": {a}, "mode": "{m}"}}'): {"accuracy": [acc, acc]}
           for a, m, acc in ((1, "a", 0.9), (2, "a", 0.85), (4, "a", 0.8), (1, "b", 0.7))}
    page = strength_of(build_by_hand(tmp_path, {**ERM, **lab}))
    [block] = page.blocks
    assert block["attrs"]["data-regularizer"] == "lab_penalty" and block["attrs"]["data-parameter"] == "alpha"
    assert block["attrs"]["data-strength"] == "lab_penalty(mode=a)" and block["attrs"]["data-scale"] == "linear"
    [panel] = block["panels"]
    assert [(p["data-value"], p["data-mean"]) for p in panel["points"]] == [("1.0", "0.9"), ("2.0", "0.85"),
                                                                           ("4.0", "0.8")]


def test_the_whisker_is_the_table_interval_cut_at_the_plot_edge_when_it_would_flatten_the_points() -> None:
    points = [ChartPoint(1.0, 0.5, 0.4, 0.6), ChartPoint(2.0, 0.6, -40.0, 41.0), ChartPoint(3.0, None, state="failed")]
    chart = inline_chart(points, [ChartRule(0.55, "erm", "reference")], log_x=False, x_label="w", y_label="")
    near, wide, failed = chart.points
    assert not near.clipped and wide.clipped and failed.on_axis
    assert near.whisker[0] < near.cy < near.whisker[1]  # pixels grow downwards: high above, low below
    assert chart.top <= wide.whisker[0] and wide.whisker[1] <= chart.bottom
    assert chart.top < near.cy < chart.bottom and chart.top < wide.cy < chart.bottom


def test_the_x_axis_is_logarithmic_as_the_sweep_declares_and_linear_with_a_zero() -> None:
    log = inline_chart([ChartPoint(v, 0.5) for v in (0.001, 0.1, 10.0)], log_x=True, x_label="w", y_label="")
    xs = [q.cx for q in log.points]
    assert log.log_x and xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])
    assert [text for _, text in log.x_ticks] == ["0.001", "0.1", "10"] and len(log.y_ticks) >= 3
    linear = inline_chart([ChartPoint(v, 0.5) for v in (0.0, 1.0, 3.0)], log_x=True, x_label="w", y_label="")
    xs = [q.cx for q in linear.points]
    assert not linear.log_x and (xs[2] - xs[1]) == pytest.approx(2 * (xs[1] - xs[0]))
    assert all(math.isfinite(y) for y, _ in linear.y_ticks)


def test_a_table_without_a_sweep_shows_nothing_new(tmp_path: Path) -> None:
    one = {("gradient_norm(weight=0.01)", '{"weight": 0.01}'): BY_HAND[("gradient_norm(weight=0.01)",
                                                                       '{"weight": 0.01}')]}
    html = build_by_hand(tmp_path, {**ERM, **one})
    assert 'id="strength"' not in html and 'href="#strength"' not in html and "<svg" not in html
