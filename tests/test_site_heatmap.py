"""The index's overview (gibench.leaderboard.heatmap): per table, a grid of regularizers × evaluator headlines whose
cells are the Δ against erm, coloured only where its 95 % interval excludes zero, in the metric's direction; erm as
the zero reference; collapsed rows listed apart, never in the grid; a one-seed table uncoloured, and saying why."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gibench.leaderboard.build import build_site
from gibench.leaderboard.heatmap import compact, make_heatmaps
from gibench.leaderboard.tables import MetricInfo, aggregate, make_tables
from tests.site_helpers import PageWatcher, chromium_path, launch, submit_rows

METRICS = {  # metric -> (evaluator, higher_is_better, headline)
    "accuracy": ("accuracy", True, True), "auc": ("pixel_perturbation", False, True),
    "drop": ("pixel_perturbation", True, False), "ratio": ("density_ratio", True, True)}
GN = "gradient_norm(weight=0.01)"
# mnist_subset (10 classes), three seeds, Δ paired by seed. erm's accuracy 0.96 sets the collapse floor at 0.745.
TABLE = {
    ("erm", "{}"): {"accuracy": [0.96, 0.97, 0.95], "auc": [0.30, 0.31, 0.32], "ratio": [0.10, 0.12, 0.11],
                    "drop": [0.1, 0.2, 0.3]},
    # better on both: ratio ↑ by +0.10 (differences 0.10, 0.09, 0.11), auc ↓ by −0.04 (−0.04, −0.05, −0.03)
    (GN, '{"weight": 0.01}'): {"accuracy": [0.95, 0.97, 0.94], "auc": [0.26, 0.26, 0.29],
                               "ratio": [0.20, 0.21, 0.22], "drop": [0.9, 0.9, 0.9]},
    # worse on the lower-is-better auc: +0.10 (0.10, 0.11, 0.09); its ratio change includes zero (0.02, −0.03, 0.02)
    ("pgd", "{}"): {"accuracy": [0.95, 0.96, 0.96], "auc": [0.40, 0.42, 0.41], "ratio": [0.12, 0.09, 0.13],
                    "drop": [0.2, 0.2, 0.2]},
    # every interval includes zero
    ("gaussian_noise", "{}"): {"accuracy": [0.97, 0.95, 0.96], "auc": [0.31, 0.30, 0.32],
                               "ratio": [0.11, 0.10, 0.13], "drop": [0.2, 0.2, 0.2]},
    # collapsed (accuracy 0.223 < 0.745), though it has the best auc and ratio of all by far
    ("sliced_score_matching", "{}"): {"accuracy": [0.20, 0.25, 0.22], "auc": [0.05, 0.06, 0.04],
                                      "ratio": [0.90, 0.95, 0.92], "drop": [0.5, 0.5, 0.5]},
}
# the same regularizers on another backbone, one seed: a Δ but no interval anywhere
ONE_SEED = {("erm", "{}"): {"accuracy": [0.95], "auc": [0.30], "ratio": [0.10]},
            (GN, '{"weight": 0.01}'): {"accuracy": [0.94], "auc": [0.20], "ratio": [0.30]}}
BACKBONE = '{"act": "softplus"}'


def long_rows(spec: dict, backbone_params: str = BACKBONE, evaluator_params: str = "{}") -> list[dict]:
    rows = []
    for (variant, params), metrics in spec.items():
        regularizer = variant.split("(")[0]
        for metric, values in metrics.items():
            evaluator, higher, headline = METRICS[metric]
            for seed, value in enumerate(values):
                rows.append({
                    "job_hash": f"{backbone_params}-{variant}-{seed}", "dataset": "mnist_subset",
                    "backbone": "gibench_cnn", "backbone_params": backbone_params, "regularizer": regularizer,
                    "regularizer_params": params, "variant": variant, "seed": seed, "evaluator": evaluator,
                    "evaluator_version": "1", "evaluator_params": evaluator_params, "metric": metric, "value": value,
                    "higher_is_better": higher, "headline": headline, "status": "ok", "reason": "",
                    "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
                    "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0",
                    "auxiliary": "[]", "train_hash": "48f65c0f", "train_label": "3 ep · adam · lr 0.001"})
    return rows


class Heatmaps(HTMLParser):
    """Every figure.heatmap of a page: its caption text, column labels, grid rows ({"label", "attrs", "cells":
    [{"verdict", "column", "class", "title", "text"}]}) and the collapsed rows listed under it ({label: text})."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: dict[str, dict] = {}
        self.map: dict | None = None
        self.text: list[str] | None = None  # collecting the text of the current element of interest
        self.where = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "figure" and "data-heatmap" in attrs:
            self.map = self.maps.setdefault(attrs["data-heatmap"], {"caption": "", "columns": [], "rows": [],
                                                                    "collapsed": {}, "attrs": attrs})
        elif self.map is None:
            return
        elif tag == "figcaption":
            self.where, self.text = "caption", []
        elif tag == "th" and "hm-col" in (attrs.get("class") or ""):
            self.where, self.text = "column", []
        elif tag == "tr" and "hm-row" in (attrs.get("class") or ""):
            self.map["rows"].append({"label": attrs["data-label"], "attrs": attrs, "cells": []})
        elif tag == "td" and "data-verdict" in attrs:
            self.map["rows"][-1]["cells"].append({"verdict": attrs["data-verdict"], "column": attrs["data-column"],
                                                  "class": attrs["class"].split(), "title": attrs["title"]})
            self.where, self.text = "cell", []
        elif tag == "li" and "data-collapsed" in attrs:
            self.where, self.text = attrs["data-collapsed"], []

    def handle_data(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self.map is None:
            return
        if tag == "figure":
            self.map = None
            return
        closes = {"figcaption": "caption", "th": "column", "td": "cell", "li": None}
        if tag not in closes or self.text is None or (closes[tag] and closes[tag] != self.where):
            return
        text = " ".join("".join(self.text).split())
        if self.where == "caption":
            self.map["caption"] = text
        elif self.where == "column":
            self.map["columns"].append(text)
        elif self.where == "cell":
            self.map["rows"][-1]["cells"][-1]["text"] = text
        else:
            self.map["collapsed"][self.where] = text
        self.text, self.where = None, ""


def heatmaps(html: str) -> dict[str, dict]:
    parser = Heatmaps()
    parser.feed(html)
    return parser.maps


def grid(heat: dict) -> dict[str, dict[str, dict]]:
    """row label -> column id (the table's) -> cell."""
    return {r["label"]: {c["column"]: c for c in r["cells"]} for r in heat["rows"]}


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Δ = mean(a − b) and its 95 % paired-t interval, computed independently with SciPy."""
    diff = np.asarray(a) - np.asarray(b)
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    return float(diff.mean()), float(low), float(high)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("heatmap")
    rows = long_rows(TABLE) + long_rows(ONE_SEED, '{"act": "relu"}')
    submit_rows(root / "runs", root / "submissions", {"name": "Lab", "authors": ["A"], "description": "", "links": []},
                rows, {"name": "tiny", "seeds": [0, 1, 2]})
    index = build_site(root / "submissions", root / "site")
    html = index.read_text(encoding="utf-8")
    maps = heatmaps(html)
    (main,) = [m for anchor, m in maps.items() if "softplus" in anchor]
    (one,) = [m for anchor, m in maps.items() if "relu" in anchor]
    return {"index": index, "html": html, "maps": maps, "main": main, "one": one}


def test_the_index_opens_with_one_heatmap_per_table_grouped_by_dataset(site: dict) -> None:
    html = site["html"]
    assert html.index('<section class="overview"') < html.index('<p class="lead">\n  One table per dataset')
    assert html.index('<section class="overview"') < html.index('<section class="board"')
    assert len(site["maps"]) == 2  # two backbones: two tables, two grids, under one dataset heading
    assert re.findall(r'<div class="hm-dataset" data-dataset="([^"]+)">', html) == ["mnist_subset"]
    for anchor in site["maps"]:  # each grid links to its table on the same page
        assert f'<a href="#{anchor}">' in html and f'<section class="board" id="{anchor}"' in html
    caption = site["main"]["caption"]
    assert "Δ of the headline mean against erm" in caption and "95 % interval over seeds excludes zero" in caption


def test_columns_are_the_headline_metrics_with_the_tables_labels(site: dict) -> None:
    assert site["main"]["columns"] == ["accuracy ↑", "density_ratio: ratio ↑", "pixel_perturbation: auc ↓"]
    # the secondary "drop" is in the table, not in the grid
    assert all(c["column"] != "pixel-perturbation--drop" for r in site["main"]["rows"] for c in r["cells"])


def test_a_cell_is_the_delta_against_erm_coloured_by_its_interval_and_the_metrics_direction(site: dict) -> None:
    cells = grid(site["main"])
    assert list(cells) == ["erm (reference)", "gaussian_noise", GN, "pgd"]  # the table's order, collapsed one apart
    erm = TABLE[("erm", "{}")]
    gn, pgd, noise = TABLE[(GN, '{"weight": 0.01}')], TABLE[("pgd", "{}")], TABLE[("gaussian_noise", "{}")]

    # clearly better on a higher-is-better metric: Δ +0.10, interval excludes zero
    ratio = cells[GN]["density-ratio--ratio"]
    delta, low, high = paired(gn["ratio"], erm["ratio"])
    assert low > 0 and ratio["verdict"] == "better" and "hm-better" in ratio["class"]
    assert ratio["text"] == compact(delta) == "+0.1"
    assert f"[+{low:.4f}, +{high:.4f}] (paired t)" in ratio["title"]
    # better on a lower-is-better metric means a negative Δ
    auc = cells[GN]["pixel-perturbation--auc"]
    delta, low, high = paired(gn["auc"], erm["auc"])
    assert high < 0 and auc["verdict"] == "better" and auc["text"] == "−0.04"
    # clearly worse on the lower-is-better auc: a positive Δ, coloured worse
    worse = cells["pgd"]["pixel-perturbation--auc"]
    delta, low, high = paired(pgd["auc"], erm["auc"])
    assert low > 0 and worse["verdict"] == "worse" and "hm-worse" in worse["class"] and worse["text"] == "+0.1"
    # an interval that includes zero: the Δ is printed, uncoloured
    for label, values, column, metric in ((GN, gn, "accuracy--accuracy", "accuracy"),
                                          ("pgd", pgd, "density-ratio--ratio", "ratio"),
                                          *(("gaussian_noise", noise, c, m) for c, m in (
                                              ("accuracy--accuracy", "accuracy"), ("density-ratio--ratio", "ratio"),
                                              ("pixel-perturbation--auc", "auc")))):
        cell = cells[label][column]
        delta, low, high = paired(values[metric], erm[metric])
        assert low < 0 < high and cell["verdict"] == "includes-zero", (label, metric)
        assert not {"hm-better", "hm-worse"} & set(cell["class"]) and cell["text"] == compact(delta)
        assert "it includes zero" in cell["title"]
    # erm is the zero reference: its mean, never coloured
    reference = site["main"]["rows"][0]
    assert "data-reference" in reference["attrs"]
    assert [c["verdict"] for c in reference["cells"]] == ["reference"] * 3
    assert [c["text"] for c in reference["cells"]] == [f"{np.mean(erm[m]):.4f}" for m in ("accuracy", "ratio", "auc")]
    assert "≥ 2 seeds" not in site["main"]["caption"]  # every Δ here has its interval


def test_a_collapsed_row_is_listed_apart_and_never_coloured(site: dict) -> None:
    heat = site["main"]
    assert "sliced_score_matching" not in grid(heat)  # its auc and ratio Δ would be the "best" of the grid
    assert list(heat["collapsed"]) == ["sliced_score_matching"]
    assert heat["collapsed"]["sliced_score_matching"].startswith(
        "sliced_score_matching: collapsed: accuracy 0.223 vs erm 0.960 (floor 0.745")
    figure = site["html"].split('data-heatmap="mnist-subset--gibench-cnn-act-softplus')[1].split("</figure>")[0]
    apart = figure.split('<div class="hm-collapsed">')[1]
    assert "hm-better" not in apart and "hm-worse" not in apart and "data-verdict" not in apart


def test_a_one_seed_table_is_uncoloured_and_says_intervals_need_two_seeds(site: dict) -> None:
    heat = site["one"]
    cells = grid(heat)[GN]
    assert [c["verdict"] for c in cells.values()] == ["no-interval"] * 3
    assert [c["text"] for c in cells.values()] == ["−0.01", "+0.2", "−0.1"]  # accuracy, ratio, auc
    assert all("no interval: fewer than 2 seeds" in c["title"] for c in cells.values())
    assert "intervals need ≥ 2 seeds (in the row and in erm), so no cell is coloured" in heat["caption"]
    assert not any({"hm-better", "hm-worse"} & set(c["class"]) for r in heat["rows"] for c in r["cells"])


def test_only_better_and_worse_cells_are_tinted() -> None:
    css = (Path(__file__).parents[1] / "leaderboard" / "static" / "style.css").read_text(encoding="utf-8")
    rules = dict(re.findall(r"^([^{}\n]*td\.hm-[^{}\n]*)\{([^}]*)\}", css, re.M))
    tinted = {selector.strip() for selector, body in rules.items() if "background: #" in body}
    assert tinted == {"td.hm-better, .hm-key.hm-better", "td.hm-worse, .hm-key.hm-worse"}


def test_the_index_of_a_site_without_submissions_has_no_heatmap(tmp_path: Path) -> None:
    (tmp_path / "subs").mkdir()
    html = build_site(tmp_path / "subs", tmp_path / "site").read_text(encoding="utf-8")
    assert "No submissions yet" in html and 'class="overview"' not in html and not heatmaps(html)


def test_the_grid_leaves_diagnostic_metrics_out_and_tells_shared_labels_and_submissions_apart() -> None:
    spec = {k: {m: v for m, v in metrics.items() if m != "drop"} for k, metrics in TABLE.items()
            if k[0] in ("erm", "pgd")}
    frame = pd.DataFrame([*long_rows(spec), *(r for r in long_rows(spec, evaluator_params='{"saliency": "x_gradient"}')
                                              if r["metric"] == "auc")])
    both = pd.concat([frame.assign(submission_id="a", submission="A"), frame.assign(submission_id="b", submission="B")])
    summary = aggregate(both)
    info = {("density_ratio", "ratio"): MetricInfo("ratio", diagnostic=True)}
    (heat,) = make_heatmaps(summary, make_tables(summary, info))
    assert [c.label for c in heat.columns] == ["accuracy ↑", "pixel_perturbation: auc ↓ (saliency=x_gradient)",
                                               "pixel_perturbation: auc ↓ (saliency=default)"]  # the table's order
    assert [r.label for r in heat.rows] == ["erm · A (reference)", "erm · B (reference)", "pgd · A", "pgd · B"]
    assert [c.verdict for c in heat.rows[2].cells] == ["includes-zero", "worse", "worse"]  # against A's own erm
    assert heat.counts == {"better": 0, "worse": 4, "includes-zero": 2, "no-interval": 0, "missing": 0}


def test_compact_numbers() -> None:
    assert [compact(x) for x in (0.0, 0.0123, -0.6, 1.44, -0.000431, -101.4, 99.7, -2487.0, 1.2e-5, 123456.0)] == [
        "0", "+0.012", "−0.6", "+1.4", "−0.00043", "−101", "+100", "−2487", "+1.2e−05", "+1.2e+05"]
    assert compact((0.1 + 0.2 + 0.3) / 3 - 0.2, scale=0.2) == "0"  # float rounding of equal means (2.8e−17)
    assert compact(1e-6, scale=0.96) == "+1e−06"


@pytest.mark.browser
def test_in_the_browser_the_tints_follow_the_verdicts_and_the_page_does_not_scroll_sideways(site: dict) -> None:
    if chromium_path() is None:
        pytest.skip("needs the system Chromium: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        watcher = PageWatcher().attach(page)
        page.goto(site["index"].as_uri())
        colours = page.eval_on_selector_all("td.hm-cell", """cells => cells.map(c => [c.dataset.verdict,
            getComputedStyle(c).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number)])""")
        by: dict[str, set] = {}
        for verdict, rgb in colours:
            by.setdefault(verdict, set()).add(tuple(rgb))
        (green,), (red,) = by["better"], by["worse"]
        assert green[1] > green[0] and red[0] > red[1]
        assert by["includes-zero"] == by["no-interval"] and not by["includes-zero"] & {green, red}
        overview, board = page.locator("section.overview"), page.locator("section.board").first
        assert overview.bounding_box()["y"] < board.bounding_box()["y"]
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400
        assert not watcher.problems()
        browser.close()
