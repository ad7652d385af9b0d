"""The static site: tables, numbers, Δ vs erm, best marks, columns, escaping, downloads, rejected submissions (from
hand-made results tables), and pictures, plugin pages, the sanity view and badges (from a tiny real run)."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from gibench.core.errors import SubmissionError
from gibench.leaderboard.build import build_site, fmt
from gibench.leaderboard.figures import CurveSeries, curve_figure, log_axis, pareto_front, symlog_threshold
from gibench.leaderboard.pages import COST_FILE, load_costs
from gibench.leaderboard.pictures import _mean_curve, _same_inputs
from gibench.leaderboard.tables import MetricInfo, aggregate, make_tables
from gibench.store.provenance import environment_info, suite_hash
from gibench.submissions.build import build_submission
from tests.site_helpers import submit_rows

EVIL = "<script>alert(1)</script>"
LINEAR = "mnist-subset--gibench-linear"
CNN = "mnist-subset--gibench-cnn-act-softplus"
SKIP_REASON = "dataset 'mnist_subset' lacks the capabilities ['signal_mask'] that 'blockmnist' requires"
# (variant, regularizer params) -> {metric: values by seed}; NaN = failed (or skipped, for "share")
LAB_A = {
    ("erm", "{}"): {"accuracy": [0.90, 0.92, 0.91], "auc": [0.30, 0.32, 0.31], "drop": [0.1, 0.2, 0.3],
                    "share": [float("nan")] * 3},
    ("gradient_norm(weight=0.01)", '{"weight": 0.01}'): {"accuracy": [0.88, 0.86, 0.87], "auc": [0.25, 0.27, 0.26],
                                                         "drop": [0.2, 0.2, 0.2], "share": [float("nan")] * 3},
}
LAB_B = {
    ("erm", "{}"): {"accuracy": [0.95, 0.97], "auc": [0.40, 0.42], "ratio": [2.0, 4.0]},
    ("anti_score_matching(weight=1.0)", '{"weight": 1.0}'): {"accuracy": [0.93, 0.94], "auc": [0.35, float("nan")]},
}
METRICS = {  # metric -> (evaluator, higher_is_better, headline)
    "accuracy": ("accuracy", True, True), "auc": ("pixel_perturbation", False, True),
    "drop": ("pixel_perturbation", True, False), "ratio": ("density_ratio", True, True),
    "share": ("blockmnist", True, True),
}


def _installed_version(evaluator: str) -> str:
    """The installed version of a built-in evaluator (what a fresh run records), "1" for a name no plugin has."""
    from gibench.api import registry

    return registry.evaluators.get(evaluator).version if evaluator in registry.evaluators.names() else "1"


def long_table(spec: dict, backbone: str = "gibench_linear", backbone_params: str = "{}", prefix: str = "") -> list:
    rows = []
    for (variant, params), metrics in spec.items():
        regularizer = variant.split("(")[0]
        for metric, values in metrics.items():
            evaluator, higher, headline = METRICS[metric]
            for seed, value in enumerate(values):
                status = "ok" if not np.isnan(value) else "skipped" if metric == "share" else "failed"
                rows.append({
                    "job_hash": f"{prefix}{backbone}-{variant}-{seed}", "dataset": "mnist_subset", "backbone": backbone,
                    "backbone_params": backbone_params, "regularizer": regularizer, "regularizer_params": params,
                    "variant": variant, "seed": seed, "evaluator": evaluator,
                    "evaluator_version": _installed_version(evaluator),
                    "evaluator_params": "{}", "metric": metric, "value": value, "higher_is_better": higher,
                    "headline": headline, "status": status, "reason": SKIP_REASON if status == "skipped" else "",
                    "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
                    "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0"})
    return rows


def submit(root: Path, name: str, rows: list, description: str = "") -> Path:
    metadata = {"name": name, "authors": [f"{name} author"], "description": description,
                "links": ["https://example.org/code"]}
    return submit_rows(root / f"runs-{len(list(root.glob('runs-*')))}", root / "submissions", metadata, rows,
                       {"name": "tiny", "seeds": [0, 1, 2]})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lb")
    a = submit(root, "Lab A", long_table(LAB_A))
    cnn = long_table({("erm", "{}"): {"auc": [0.5]}}, "gibench_cnn", '{"act": "softplus"}')
    b = submit(root, EVIL, long_table(LAB_B) + cnn, description=f"desc {EVIL}")
    index = build_site(root / "submissions", root / "site")
    return {"root": root, "index": index, "a": a.name, "b": b.name, "html": index.read_text()}


class Boards(HTMLParser):
    """Every section.board: its header cells ({data-column, text, attributes}) and rows (tr.lb-row, ranked and
    collapsed: {column id: text}, with the row's attributes under "@" and the cells' data-value and attributes under
    "@value" / "@cells")."""

    def __init__(self) -> None:
        super().__init__()
        self.boards: dict[str, dict] = {}
        self.board: dict | None = None
        self.part, self.cell, self.in_leaderboard = "", None, False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "section" and "board" in (attrs.get("class") or "").split():
            self.board = self.boards.setdefault(attrs["id"], {"head": [], "rows": [], "attrs": attrs})
        elif tag == "table" and self.board is not None:
            self.in_leaderboard = "leaderboard" in (attrs.get("class") or "").split()
        elif tag in ("thead", "tbody"):
            self.part = tag
        elif self.in_leaderboard and tag == "tr" and self.part == "tbody" and "lb-row" in attrs.get("class", ""):
            self.board["rows"].append({"@": attrs, "@value": {}, "@cells": {}})
        elif self.in_leaderboard and tag in ("th", "td") and "data-column" in attrs:
            self.cell = (attrs, [])

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_leaderboard = False
        elif tag == "section":
            self.board = None
        elif tag in ("th", "td") and self.cell is not None:
            attrs, parts = self.cell
            text = " ".join("".join(parts).split())
            if self.part == "thead":
                self.board["head"].append({"id": attrs["data-column"], "text": text, "attrs": attrs})
            else:
                row = self.board["rows"][-1]
                row[attrs["data-column"]] = text
                row["@value"][attrs["data-column"]] = attrs.get("data-value")
                row["@cells"][attrs["data-column"]] = attrs
            self.cell = None


def parse(html: str) -> dict[str, dict]:
    parser = Boards()
    parser.feed(html)
    return parser.boards


def pm(values: list[float]) -> str:
    """mean ± half-width of the 95 % Student-t interval, computed independently with SciPy."""
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return f"{np.mean(values):.4f} ± {(high - low) / 2:.4f}"


def test_one_table_per_dataset_backbone_with_a_row_per_variant_in_order(site: dict) -> None:
    boards = parse(site["html"])
    assert set(boards) == {LINEAR, CNN}
    linear = boards[LINEAR]
    variants = ["erm", "erm", "anti_score_matching(weight=1.0)", "gradient_norm(weight=0.01)"]
    assert [r["@"]["data-variant"] for r in linear["rows"]] == variants  # erm first, then by name, submission
    assert [r["submission"] for r in linear["rows"]] == [EVIL, "Lab A", EVIL, "Lab A"]
    assert [h["id"] for h in linear["head"]] == [
        "variant", "family", "submission", "seeds", "accuracy--accuracy", "density-ratio--ratio",
        "pixel-perturbation--auc", "pixel-perturbation--drop"]  # headlines first; blockmnist (all skipped) left out
    assert linear["head"][4]["text"].startswith("accuracy ↑")
    assert linear["head"][6]["text"].startswith("pixel_perturbation auc ↓")
    assert f'id="{LINEAR}"' in site["html"] and f'href="tables/{LINEAR}.html"' in site["html"]


def test_secondary_columns_are_hidden_and_skipped_evaluators_are_left_out_with_their_reason(site: dict) -> None:
    linear = parse(site["html"])[LINEAR]
    head = {h["id"]: h["attrs"] for h in linear["head"]}
    assert "data-secondary" in head["pixel-perturbation--drop"] and "hidden" in head["pixel-perturbation--drop"]
    assert "data-secondary" not in head["pixel-perturbation--auc"] and "hidden" not in head["pixel-perturbation--auc"]
    assert all("hidden" in r["@cells"]["pixel-perturbation--drop"] for r in linear["rows"])
    assert not any("blockmnist" in h["id"] for h in linear["head"])
    section = site["html"].split(f'id="{LINEAR}"')[1].split("</section>")[0]
    assert "skipped on every row" in section and "<code>blockmnist</code>" in section
    assert SKIP_REASON.replace("'", "&#39;") in section
    # and per row in the list of skipped and failed evaluations, which is open because one evaluation failed
    assert f"skipped</span>: blockmnist on erm (Lab A): {SKIP_REASON}".replace("'", "&#39;") in section
    assert '<details class="problems" open>' in section and "failed</span>: pixel_perturbation on anti_score" in section


def test_cells_show_mean_interval_delta_interval_rank_and_seed_counts(site: dict) -> None:
    rows = {(r["submission"], r["@"]["data-variant"]): r for r in parse(site["html"])[LINEAR]["rows"]}
    erm_a, gn = rows[("Lab A", "erm")], rows[("Lab A", "gradient_norm(weight=0.01)")]
    # accuracy means: B erm 0.96, B anti_score_matching 0.935, A erm 0.91, A gradient_norm 0.87; no interval lies
    # entirely above or below another's, so every rank range is 1–4
    assert erm_a["seeds"] == "3"
    assert erm_a["accuracy--accuracy"] == f"{pm(LAB_A[('erm', '{}')]['accuracy'])} baseline rank 3 (1–4)"
    # Δ paired by seed: differences −0.02, −0.06, −0.04 → −0.04 ± t(0.975, 2)·0.02/√3, which contains 0
    assert gn["accuracy--accuracy"] == f"{pm([0.88, 0.86, 0.87])} Δ −0.0400 ± 0.0497 rank 4 (1–4)"
    assert gn["density-ratio--ratio"] == "not evaluated"  # Lab A has no density_ratio
    assert gn["pixel-perturbation--auc"].startswith(f"{pm([0.25, 0.27, 0.26])} Δ −0.0500 ± 0.0000 rank 1")
    sm = rows[(EVIL, "anti_score_matching(weight=1.0)")]
    assert sm["seeds"] == "2"
    # one ok seed: no interval, no Δ interval (its erm has other seeds), a rank any position could hold
    assert sm["pixel-perturbation--auc"] == "0.3500 1/2 seeds Δ −0.0600 rank 3 (1–4)"  # its own erm (0.41)
    assert rows[(EVIL, "erm")]["density-ratio--ratio"] == f"{pm([2.0, 4.0])} baseline rank 1"
    html = site["html"]
    assert 'class="delta better">Δ −0.0500' in html  # auc is ↓ and the paired interval excludes 0
    assert 'class="delta ">Δ −0.0400' in html  # no verdict: the interval contains 0
    assert 'class="delta ">Δ −0.0600' in html  # no verdict without an interval


def test_best_value_per_column_is_marked(site: dict) -> None:
    rows = parse(site["html"])[LINEAR]["rows"]

    def best(column: str) -> list[tuple[str, str]]:
        return [(r["submission"], r["@"]["data-variant"]) for r in rows if "data-best-cell" in r["@cells"][column]]

    assert best("accuracy--accuracy") == [(EVIL, "erm")]  # the highest mean, 0.96
    assert best("pixel-perturbation--auc") == [("Lab A", "gradient_norm(weight=0.01)")]  # ↓: the lowest, 0.26
    assert best("pixel-perturbation--drop") == [("Lab A", "erm"), ("Lab A", "gradient_norm(weight=0.01)")]  # tie
    assert best("density-ratio--ratio") == []  # one row has a value: nothing to compare


def test_diagnostic_metrics_are_shown_but_never_ranked_or_marked() -> None:
    frame = pd.DataFrame(long_table(LAB_A)).assign(submission_id="a", submission="A")
    info = {("pixel_perturbation", "auc"): MetricInfo("area", (0.0, 1.0), diagnostic=True)}
    (table,) = make_tables(aggregate(frame), info, {"erm": "baseline", "gradient_norm": "gradient penalty"})
    i = next(i for i, c in enumerate(table.columns) if c.metric == "auc")
    assert table.columns[i].diagnostic and table.columns[i].headline
    cells = [r.cells[i] for r in table.rows]
    assert [c.text for c in cells] == [pm([0.30, 0.32, 0.31]), pm([0.25, 0.27, 0.26])]
    assert not any(c.best or c.rank for c in cells)
    j = next(i for i, c in enumerate(table.columns) if c.metric == "accuracy")
    assert table.rows[0].cells[j].best and table.rows[0].cells[j].rank  # other columns still ranked
    assert not any("auc" in a.metric_a + a.metric_b for a in table.agreement)
    assert [r.family for r in table.rows] == ["baseline", "gradient penalty"]


def test_rows_carry_the_filter_hooks(site: dict) -> None:
    rows = parse(site["html"])[LINEAR]["rows"]
    by = {(r["submission"], r["@"]["data-variant"]): r["@"] for r in rows}
    assert by[("Lab A", "erm")]["data-evaluators"] == "accuracy pixel_perturbation"  # blockmnist: skipped only
    assert by[(EVIL, "erm")]["data-evaluators"] == "accuracy density_ratio pixel_perturbation"
    assert by[("Lab A", "gradient_norm(weight=0.01)")]["data-regularizer"] == "gradient_norm"
    assert by[("Lab A", "gradient_norm(weight=0.01)")]["data-family"] == "gradient penalty"
    section = site["html"].split(f'id="{LINEAR}"')[1].split("</section>")[0]
    for hook in ('class="filter-text"', 'class="filter-family"', 'class="filter-evaluator"', 'class="row-count"',
                 'class="column-chooser"', 'data-visible="4" data-total="4"'):
        assert hook in section
    assert re.findall(r'<option value="([^"]*)">', section) == [
        "", "baseline", "control", "gradient penalty", "", "accuracy", "density_ratio", "pixel_perturbation"]


def test_number_format() -> None:
    assert fmt(0.91) == "0.9100" and fmt(0.0) == "0.0000" and fmt(-0.04, signed=True) == "−0.0400"
    assert fmt(0.0005, signed=True, scale=0.87) == "+0.0005"  # a Δ on the scale of its mean
    assert fmt(1.234e-5) == "1.23e−05" and fmt(12345.6) == "1.23e+04"


def test_accuracy_column_on_every_table(site: dict) -> None:
    cnn = parse(site["html"])[CNN]
    assert cnn["head"][4]["text"].startswith("accuracy ↑") and cnn["rows"][0]["accuracy--accuracy"] == "not evaluated"
    assert cnn["rows"][0]["pixel-perturbation--auc"] == "0.5000 baseline rank 1"


def test_submitted_text_is_escaped(site: dict) -> None:
    out = site["index"].parent
    pages = [site["index"], *(out / "submissions").glob("*.html"), *(out / "tables").glob("*.html"),
             out / "sanity.html", *(out / "regularizers").glob("*.html")]
    assert len(pages) >= 6
    for page in pages:
        assert "<script>alert" not in page.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in site["html"]
    evil_page = (out / "submissions" / f"{site['b']}.html").read_text()
    assert "desc &lt;script&gt;alert(1)&lt;/script&gt;" in evil_page


def test_downloads_hold_every_metric_with_exact_numbers(site: dict) -> None:
    folder = site["index"].parent / "tables"
    expected = sorted(f"{t}.{e}" for t in (LINEAR, CNN) for e in ("csv", "json", "html"))
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == expected
    table = pd.read_csv(folder / f"{LINEAR}.csv")
    assert len(table) == 2 * 4 + 3 + 2  # Lab A: 2 variants × 4 metrics; B: erm 3 metrics, anti_score_matching 2
    lab_a_gn = table[(table["submission"] == "Lab A") & (table["regularizer"] == "gradient_norm")]
    row = lab_a_gn[lab_a_gn["metric"] == "drop"]
    assert row["mean"].item() == pytest.approx(0.2, abs=1e-15) and row["std"].item() == pytest.approx(0.0, abs=1e-15)
    assert row["delta_vs_erm"].item() == pytest.approx(0.0, abs=1e-15) and row["n_ok"].item() == 3
    acc = lab_a_gn[lab_a_gn["metric"] == "accuracy"]
    assert acc["mean"].item() == pytest.approx(np.mean([0.88, 0.86, 0.87]), abs=1e-15)
    assert acc["std"].item() == pytest.approx(np.std([0.88, 0.86, 0.87], ddof=1), abs=1e-15)
    payload = json.loads((folder / f"{LINEAR}.json").read_text())
    failed = [r for r in payload["rows"] if r["regularizer"] == "anti_score_matching" and r["metric"] == "auc"][0]
    assert failed["std"] is None and failed["n_ok"] == 1 and failed["n_seeds"] == 2 and failed["statuses"] == "failed"
    assert payload["omitted"] == [{"evaluator": "blockmnist", "reasons": SKIP_REASON}]


def test_submission_pages_and_static_files(site: dict) -> None:
    out = site["index"].parent
    page = (out / "submissions" / f"{site['a']}.html").read_text()
    env = environment_info("cpu")
    assert "Lab A" in page and env["device_name"] in page and suite_hash({"name": "tiny", "seeds": [0, 1, 2]}) in page
    assert f'href="../index.html#{LINEAR}"' in page and 'href="https://example.org/code"' in page
    assert 'data-verification="unverified"' in page
    assert (out / "submissions" / site["a"] / "results.csv").is_file()
    assert sorted(p.name for p in (out / "static").iterdir()) == ["leaderboard.js", "style.css"]
    assert json.loads((out / "submission.schema.json").read_text())["title"]
    rows = parse(site["html"])[LINEAR]["rows"]
    assert rows[1]["@value"]["accuracy--accuracy"] == repr(float(np.mean([0.90, 0.92, 0.91])))  # the sort key


def test_no_request_leaves_the_site(site: dict) -> None:
    out = site["index"].parent
    for page in out.rglob("*.html"):
        html = page.read_text()
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html), page
        for target in re.findall(r'(?:href|src)="([^"#]+)(?:#[^"]*)?"', html):
            if not target.startswith(("https://", "http://")):
                assert (page.parent / target).resolve().is_file(), (page, target)


def test_build_is_deterministic(site: dict, tmp_path: Path) -> None:
    again = build_site(site["root"] / "submissions", tmp_path / "again")
    assert again.read_text() == site["html"]


def test_invalid_submission_refuses_the_build_or_is_listed(site: dict, tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    shutil.copytree(site["root"] / "submissions", subs)
    (subs / site["a"] / "results.csv").write_text("job_hash\nx\n")
    with pytest.raises(SubmissionError, match=f"Refusing to build the site: 1 invalid[\\s\\S]*--skip-invalid"
                                              f"[\\s\\S]*{site['a']}"):
        build_site(subs, tmp_path / "site")
    html = build_site(subs, tmp_path / "site", skip_invalid=True).read_text()
    assert "Rejected submissions (1)" in html and site["a"] in html and "missing column(s)" in html
    assert [r["submission"] for r in parse(html)[LINEAR]["rows"]] == [EVIL, EVIL]


def test_empty_submissions_folder_builds_an_empty_site(tmp_path: Path) -> None:
    (tmp_path / "subs").mkdir()
    out = tmp_path / "site"
    html = build_site(tmp_path / "subs", out).read_text()
    assert "No submissions yet" in html and not parse(html)
    assert "No submission has both" in (out / "sanity.html").read_text()
    assert (out / "regularizers" / "erm.html").is_file()  # every installed plugin has its page


def test_site_folder_may_hold_its_own_submissions(site: dict, tmp_path: Path) -> None:
    out = tmp_path / "site"
    shutil.copytree(site["root"] / "submissions", out / "submissions")
    (out / "submissions" / "stale-page.html").write_text("old")
    for _ in range(2):  # rebuilding in place keeps the submission folders and regenerates the pages
        html = build_site(out / "submissions", out).read_text()
    assert html == site["html"]
    pages = sorted(p.name for p in (out / "submissions").glob("*.html"))
    assert pages == sorted(f"{name}.html" for name in (site["a"], site["b"]))
    with pytest.raises(SubmissionError, match="inside the submissions folder"):
        build_site(out / "submissions", out / "submissions" / "site")
    shutil.copytree(site["root"] / "submissions", tmp_path / "other" / "tables" / "subs")
    with pytest.raises(SubmissionError, match="which the site build replaces"):
        build_site(tmp_path / "other" / "tables" / "subs", tmp_path / "other")
    assert (tmp_path / "other" / "tables" / "subs" / site["a"] / "results.csv").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# Pictures: the pieces


def test_pareto_front_keeps_exactly_the_undominated_points() -> None:
    points = [(0.1, 0.9), (0.5, 0.8), (0.4, 0.7), (0.9, 0.2), (0.9, 0.1), (0.2, 0.95)]
    # higher x and higher y better: (0.4, 0.7) is beaten by (0.5, 0.8); (0.9, 0.1) by (0.9, 0.2); (0.1, 0.9) by
    # (0.2, 0.95)
    assert pareto_front(points, True, True) == [5, 1, 3]
    # lower x better: (0.1, 0.9) and (0.2, 0.95) survive; every other point has a smaller-x point above it
    assert pareto_front(points, False, True) == [0, 5]


def test_axis_scales_follow_the_data() -> None:
    assert log_axis([0.01, 0.1, 1.0]) and log_axis([0.02, 0.1, 0.5]) and not log_axis([0.1, 0.5, 1.0])
    assert not log_axis([0.0, 0.5, 1.0])  # zero cannot go on a log axis
    # density-ratio log ratios of the standard run: two regularizers reach −8000 while the rest stay near 0
    assert symlog_threshold([-0.01, -0.02, 0.1, -0.5, -7900.0]) == 0.1  # the median |y|
    assert symlog_threshold([0.2, 0.5, 0.9, 0.95]) is None and symlog_threshold([0.0, 0.0, 5.0]) is None


def test_figure_text_is_plain_and_escaped(tmp_path: Path) -> None:
    label = "<script>alert(1)</script> costs $5 and $x"  # a submitted variant label: markup and an unbalanced $
    path = curve_figure(tmp_path / "c.svg", [CurveSeries(label, (0.1, 1.0), (0.2, 0.3))], "t", "x", "y")
    svg = path.read_text()
    assert "<script>" not in svg and ">&lt;script&gt;alert(1)&lt;/script&gt; costs $5 and $x<" in svg
    assert path.read_bytes() == curve_figure(tmp_path / "d.svg", [CurveSeries(label, (0.1, 1.0), (0.2, 0.3))], "t",
                                             "x", "y").read_bytes()  # no date, fixed ids: the same bytes


def test_mean_curve_averages_seeds_with_the_same_x() -> None:
    x = (0.1, 0.5, 1.0)
    runs = [(x, (0.9, 0.5, 0.1)), (x, (0.7, 0.3, None)), ((0.2, 0.5, 1.0), (5.0, 5.0, 5.0))]
    assert _mean_curve(runs) == (x, (pytest.approx(0.8), pytest.approx(0.4), pytest.approx(0.1)))
    gap = _mean_curve([(x, (0.9, None, 0.1)), (x, (0.7, None, 0.3))])[1]
    assert gap[0] == pytest.approx(0.8) and np.isnan(gap[1])  # missing in every seed: a gap, not an error


def test_curve_files_in_another_format_are_ignored(tmp_path: Path) -> None:
    from gibench.leaderboard.pictures import _read_curves

    (tmp_path / "c.json").write_text(json.dumps({
        "good": {"x": [0.1, 1.0], "y": [0.5, None]}, "good_std": {"x": [0.1], "y": [0.0]},
        "words": {"x": ["a", "b"], "y": [1, 2]}, "ragged": {"x": [1, 2], "y": [1]}, "flag": {"x": [True], "y": [1]}}))
    assert list(_read_curves(tmp_path / "c.json")) == ["good"]
    (tmp_path / "bad.json").write_text("{")
    assert _read_curves(tmp_path / "bad.json") == {}


def test_same_inputs_compares_the_input_row_of_the_grids(tmp_path: Path) -> None:
    base = np.zeros((80, 40, 3), dtype=np.uint8)
    base[:10] = 200  # the top eighth: the input row
    other = base.copy()
    other[40:] = 255  # a different saliency row
    changed = base.copy()
    changed[3, 5] = 0  # one pixel of the input row
    paths = []
    for name, pixels in (("a", base), ("b", other), ("c", changed)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    assert _same_inputs(paths[:2]) is True
    assert _same_inputs([paths[0], paths[2]]) is False
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert _same_inputs([paths[0], tmp_path / "broken.png"]) is None


def test_cost_file_names_its_device_and_command() -> None:
    device, command, rows = load_costs(COST_FILE)
    assert device.startswith("cpu: ") and command.startswith("python benchmarks/regularizer_step_cost.py")
    erm = [r for r in rows if r["regularizer"] == "erm"]
    assert {r["backbone"] for r in erm} == {"gibench_cnn", "resnet18"} and all(r["time_vs_erm"] == 1.0 for r in erm)
    for r in rows:  # every ratio is the step time over erm's on the same backbone (both rounded to 0.1 ms)
        base = next(e for e in erm if e["backbone"] == r["backbone"])
        assert r["time_vs_erm"] == pytest.approx(r["median_step_ms"] / base["median_step_ms"], rel=0.01)


def test_regularizer_pages_state_the_declared_passes_per_step() -> None:
    from gibench.leaderboard.pages import declared_passes

    assert declared_passes("erm") == "1 forward and 1 backward passes per image (3 forward-equivalents, 1× erm's)"
    assert declared_passes("gradient_norm").startswith("1 forward and 3 backward passes per image (7 ")
    assert declared_passes("jem").startswith("22 forward and 22 backward passes per image (66 forward-equivalents, "
                                             "22×")
    assert declared_passes("no_such_regularizer") == ""


def _history_table(page: str) -> list[tuple[str, ...]]:
    """(version, what changed, rows, status) of each row of an evaluator page's version table, tags stripped."""
    table = re.search(r'<table class="plain history">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r'<tr data-version="[^"]*">(.*?)</tr>', table, re.S)
    return [tuple(unescape(" ".join(re.sub(r"<[^>]+>", "", c).split()))
                  for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S))
            for r in rows]


def test_evaluator_pages_show_the_declared_history_with_installed_and_stale_versions(site: dict,
                                                                                     tmp_path: Path) -> None:
    from gibench import Evaluator
    from gibench.api import registry
    from gibench.leaderboard.pages import HistoryRow, history_rows

    installed = registry.evaluators.get("pixel_perturbation")
    line = installed.history[installed.version]
    assert installed.version == "2" and installed.history["1"].startswith("first version: ") and len(line) > 60
    out = site["index"].parent
    page = (out / "evaluators" / "pixel_perturbation.html").read_text()
    n = sum(1 for r in long_table(LAB_A) + long_table(LAB_B) + long_table({("erm", "{}"): {"auc": [0.5]}})
            if r["evaluator"] == "pixel_perturbation")  # the rows the site fixture submitted, the installed version
    assert _history_table(page) == [("1", installed.history["1"], "0", "earlier version, no results here"),
                                    ("2", line, str(n), "installed, in the submissions")]
    regularizer = registry.regularizers.get("gradient_norm")
    gn = (out / "regularizers" / "gradient_norm.html").read_text()
    # regularizer pages show their declared history too (no result rows column)
    assert _history_table(gn) == [(regularizer.version, regularizer.history[regularizer.version], "installed")]
    # a submission of an older version: its row comes after the declared history and is marked stale
    rows = [{**r, "evaluator_version": "0"} if r["evaluator"] == "pixel_perturbation" else r for r in long_table(LAB_A)]
    submit(tmp_path, "Old lab", rows)
    old = (build_site(tmp_path / "submissions", tmp_path / "site").parent / "evaluators" / "pixel_perturbation.html")
    stale = sum(1 for r in rows if r["evaluator"] == "pixel_perturbation")
    assert _history_table(old.read_text()) == [
        ("1", installed.history["1"], "0", "earlier version, no results here"),
        ("2", line, "0", "installed"),
        ("0", "not in the installed plugin's history", str(stale),
         "stale: differs from the installed version, not comparable with new runs")]
    # a third-party plugin without a history: only the versions seen, no line of what changed
    assert history_rows(Evaluator, "1", {"1": 4, "2": 1}) == [HistoryRow("1", "", True, 4, False),
                                                              HistoryRow("2", "", False, 1, True)]


# ----------------------------------------------------------------------------------------------------------------------
# A tiny real run: erm and fooled, two seeds, a linear model on the bundled digits

REAL_SUITE = {
    "name": "lbtiny",
    "datasets": ["mnist_subset"],
    "backbones": ["gibench_linear"],
    "regularizers": ["erm", "fooled"],
    "evaluators": ["accuracy", {"pixel_perturbation": {"max_images": 100}}, {"density_ratio": {"max_images": 100}}],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2},
}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch
    import yaml

    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite

    root = tmp_path_factory.mktemp("real")
    (root / "suite.yaml").write_text(yaml.safe_dump(REAL_SUITE, sort_keys=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_suite(load_suite(root / "suite.yaml"), root / "runs", RunOptions(device="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert summary.ok, summary.failures()
    folder = build_submission(root / "runs", root / "subs", {"name": "Tiny real", "authors": ["A. Person"]})
    index = build_site(root / "subs", root / "site")
    (table,) = [p for p in (root / "site" / "tables").glob("*.html")]
    return {"root": root, "sub": folder, "index": index, "table": table, "page": table.read_text(),
            "results": pd.read_csv(folder / "results.csv")}


@pytest.mark.slow
def test_real_table_has_a_row_per_variant_and_its_pictures(real: dict) -> None:
    (board,) = parse(real["index"].read_text()).values()
    assert [r["@"]["data-variant"] for r in board["rows"]] == ["erm", "fooled"]
    assert [r["seeds"] for r in board["rows"]] == ["2", "2"]
    assert parse(real["page"]) == parse(real["index"].read_text())  # the table page repeats the same table
    folder = real["table"].with_suffix("")
    record = json.loads((real["sub"] / "submission.json").read_text())["artifacts"]["files"]
    seeds = real["results"].drop_duplicates("job_hash").set_index("job_hash")
    for i, variant in enumerate(["erm", "fooled"], start=1):
        # the gallery shows each row's seed-0 pixel_perturbation grid, byte for byte
        job = seeds[(seeds["variant"] == variant) & (seeds["seed"] == 0)].index.item()
        (grid,) = [f for f in record if f["job_hash"] == job and f["evaluator"] == "pixel_perturbation"
                   and f["name"] == "saliency_grid"]
        assert (folder / f"saliency-{i:02d}.png").read_bytes() == (real["sub"] / grid["path"]).read_bytes()
        assert f'<figure data-variant="{variant}">' in real["page"]
    assert "the input row of all 2 grids is pixel-identical" in real["page"]
    curves = sorted(p.name for p in folder.glob("curve-*.svg"))
    assert curves == ["curve-density-ratio-mean-log-ratio.svg", "curve-pixel-perturbation-least-salient-first.svg",
                      "curve-pixel-perturbation-most-salient-first.svg"]
    svg = (folder / "curve-pixel-perturbation-least-salient-first.svg").read_text()
    assert ">erm<" in svg and ">fooled<" in svg  # one legend entry (a line) per row
    heads = real["results"][real["results"]["headline"] & (real["results"]["evaluator"] != "accuracy")]
    expected = sorted(f"scatter-{e.replace('_', '-')}--{m.replace('_', '-')}.svg"
                      for e, m in heads[["evaluator", "metric"]].drop_duplicates().itertuples(index=False))
    assert sorted(p.name for p in folder.glob("scatter-*.svg")) == expected
    assert "<section id=\"samples\">" not in real["page"]  # no gan_test in this suite


@pytest.mark.slow
def test_real_site_links_and_images_resolve(real: dict, tmp_path: Path) -> None:
    out = real["index"].parent
    from gibench.submissions.build import load_submission

    copy = load_submission(out / "submissions" / real["sub"].name)  # the site's copy is a valid submission
    assert (len(copy.artifact_files)
            == len(json.loads((real["sub"] / "submission.json").read_text())["artifacts"]["files"]))
    shutil.copytree(out, tmp_path / "site")
    assert build_site(tmp_path / "site" / "submissions", tmp_path / "site").read_text() == real["index"].read_text()
    for page in out.rglob("*.html"):
        html = page.read_text()
        for target in re.findall(r'(?:href|src)="([^"#]+)(?:#[^"]*)?"', html):
            if not target.startswith(("https://", "http://")):
                assert (page.parent / target).resolve().is_file(), (page, target)
        for anchor in re.findall(r'href="(?:\.\./)?index\.html#([^"]+)"', html):
            assert f'id="{anchor}"' in real["index"].read_text()


@pytest.mark.slow
def test_real_sanity_view_and_plugin_pages(real: dict) -> None:
    out = real["index"].parent
    sanity = out / "sanity.html"
    rows = re.findall(r"<tr data-passes=\"(true|false)\"><td>[^<]*</td><td>Tiny real</td><td><a href=\"evaluators/"
                      r"[^\"]+\">([a-z_]+)</a> · ([a-z_]+) [↑↓]</td>\s*<td class=\"num\">([^<]+)</td>"
                      r"<td class=\"num\">([^<]+)</td>", sanity.read_text())
    results = real["results"]
    heads = results[results["headline"] & results["evaluator"].isin(["pixel_perturbation", "density_ratio"])]
    assert sorted((r[1], r[2]) for r in rows) == sorted(set(zip(heads["evaluator"], heads["metric"])))
    for passes, evaluator, metric, erm, fooled in rows:
        values = heads[(heads["evaluator"] == evaluator) & (heads["metric"] == metric)]
        means = values.groupby("regularizer")["value"].mean()  # two seeds each, computed here from results.csv
        assert (erm, fooled) == (fmt(means["erm"]), fmt(means["fooled"]))
        higher = bool(values["higher_is_better"].iloc[0])
        assert (passes == "true") == ((means["erm"] - means["fooled"]) * (1 if higher else -1) > 0)
    fooled = (out / "regularizers" / "fooled.html").read_text()
    from gibench.api import registry
    from gibench.core.params import describe_config

    for param in describe_config(registry.regularizers.get("fooled").Config):
        assert f"<code>{param.name}</code>" in fooled and f"<code>{param.default}</code>" in fooled
    _, _, costs = load_costs()
    for cost in (c for c in costs if c["regularizer"] == "fooled"):
        assert f"{cost['time_vs_erm']:.2f}×" in fooled and f"{cost['memory_vs_erm']:.2f}×" in fooled
    assert "Srinivas" in fooled or "shift" in fooled  # the module docstring: paper and method
    assert "``" not in fooled and ":mod:`" not in fooled  # shown as plain text
    pp = (out / "evaluators" / "pixel_perturbation.html").read_text()
    installed = registry.evaluators.get("pixel_perturbation").version
    assert f"Installed version: <strong>{installed}</strong>" in pp and "[0, 1]" in pp
    assert 'data-verification="unverified"' in real["index"].read_text()


@pytest.mark.slow
def test_verification_badges_follow_gibench_verify(real: dict, tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    shutil.copytree(real["sub"], subs / real["sub"].name)
    meta = json.loads((real["sub"] / "submission.json").read_text())
    versions = dict(zip(real["results"]["evaluator"], real["results"]["evaluator_version"].astype(str)))
    record = {"status": "verified", "date": "2026-12-01T10:00:00+00:00", "tolerance": {"absolute": 1e-6},
              "jobs": [{"job_hash": "a"}, {"job_hash": "b"}], "evaluator_versions": versions,
              "results_sha256": meta["results"]["sha256"], "metrics": [{"evaluator": "accuracy", "outcome": "agrees"}]}
    badges = []
    for change in ({}, {"evaluator_versions": {**versions, "pixel_perturbation": "0"}}, {"status": "disagrees"},
                   {"results_sha256": "0" * 64}):
        (subs / real["sub"].name / "verification.json").write_text(json.dumps({**record, **change}))
        html = build_site(subs, tmp_path / "site").read_text()
        badges.append(re.search(r'data-verification="(\w+)" title="([^"]*)">([^<]*)<', html).groups())
    assert [b[0] for b in badges] == ["verified", "stale", "disagrees", "unverified"]
    assert badges[0][2] == "verified 2026-12-01, |Δ| ≤ 1e-06" and "re-evaluated 2 jobs on 2026-12-01" in badges[0][1]
    assert f"pixel_perturbation v0 → v{versions['pixel_perturbation']}" in badges[1][1]


@pytest.mark.slow
def test_artifacts_left_out_by_the_size_limit_are_counted_on_the_table_page(real: dict, tmp_path: Path) -> None:
    folder = build_submission(real["root"] / "runs", tmp_path / "subs", {"name": "small", "authors": ["A"]},
                              max_artifact_mb=0.05)
    left_out = json.loads((folder / "submission.json").read_text())["artifacts"]["left_out"]
    assert left_out  # 50 kB holds the curves but not every grid
    build_site(tmp_path / "subs", tmp_path / "site")
    (page,) = (tmp_path / "site" / "tables").glob("*.html")
    assert f"{len(left_out)} artifact(s) were left out by the submissions' size limit" in page.read_text()
