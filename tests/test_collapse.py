"""Collapsed models (gibench.results.collapse): the rule and its reason, the floor a suite declares, and where a
collapsed row acts: no rank, never marked best (report and site), left out of evaluator agreement and of the sanity
gate, shown apart; and the rows it flags in the reference ``standard`` submission."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from scipy import stats as scipy_stats

from gibench.cli import _shared
from gibench.cli.report import _print_ranks, print_frame
from gibench.core.errors import ConfigError
from gibench.leaderboard.build import build_site
from gibench.leaderboard.tables import aggregate, make_tables
from gibench.results.collapse import (
    COLLAPSED,
    CollapseRule,
    collapse_verdicts,
    judged_summary,
    rule_of,
    sanity_gate,
)
from gibench.results.tables import agreement_table, summarize
from gibench.submissions.build import load_submission
from gibench.suites.suite import parse_suite
from tests.site_helpers import PageWatcher, chromium_path, launch, submit_rows
from tests.test_leaderboard import parse

REPO = Path(__file__).resolve().parents[1]
STANDARD = next((REPO / "submissions").glob("gibench-reference-standard-*"))
SMOKE = next((REPO / "submissions").glob("gibench-reference-smoke-*"))

METRICS = {  # metric -> (evaluator, higher_is_better)
    "accuracy": ("accuracy", True), "auc": ("pixel_perturbation", False), "ratio": ("density_ratio", True)}
# mnist_subset (10 classes: chance 0.1), three seeds. erm: accuracy 0.96 → floor 0.1 + 0.75 × 0.86 = 0.745.
# sliced_score_matching collapsed (0.223) yet has the best (lowest) auc; gradient_norm is three points below erm.
TABLE = {
    "erm": {"accuracy": [0.96, 0.97, 0.95], "auc": [0.30, 0.31, 0.32], "ratio": [0.10, 0.12, 0.11]},
    "gradient_norm": {"accuracy": [0.93, 0.94, 0.92], "auc": [0.27, 0.28, 0.26], "ratio": [0.20, 0.21, 0.22]},
    "gaussian_noise": {"accuracy": [0.95, 0.96, 0.94], "auc": [0.29, 0.28, 0.30], "ratio": [0.15, 0.16, 0.14]},
    "pgd": {"accuracy": [0.94, 0.95, 0.96], "auc": [0.33, 0.34, 0.35], "ratio": [0.05, 0.04, 0.06]},
    "sliced_score_matching": {"accuracy": [0.20, 0.25, 0.22], "auc": [0.05, 0.06, 0.04], "ratio": [0.90, 0.95, 0.92]},
}
SLICED_REASON = "collapsed: accuracy 0.223 vs erm 0.960 (floor 0.745: chance 0.100 + 0.75 × (erm − chance))"


def long_rows(spec: dict, dataset: str = "mnist_subset", backbone_params: str = '{"act": "softplus"}') -> list[dict]:
    rows = []
    for regularizer, metrics in spec.items():
        for metric, values in metrics.items():
            evaluator, higher = METRICS[metric]
            for seed, value in enumerate(values):
                rows.append({
                    "job_hash": f"{dataset}-{backbone_params}-{regularizer}-{seed}", "dataset": dataset,
                    "backbone": "gibench_cnn", "backbone_params": backbone_params, "regularizer": regularizer,
                    "regularizer_params": "{}", "variant": regularizer, "seed": seed, "evaluator": evaluator,
                    "evaluator_version": "1", "evaluator_params": "{}", "metric": metric, "value": value,
                    "higher_is_better": higher, "headline": True, "status": "ok", "reason": "",
                    "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
                    "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0",
                    "auxiliary": "[]", "train_hash": "48f65c0f", "train_label": "3 ep · adam · lr 0.001"})
    return rows


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame(long_rows(TABLE))


def verdicts_of(frame: pd.DataFrame, classes=None, rule=None) -> dict[str, pd.Series]:
    found = collapse_verdicts(summarize(frame), classes or {"mnist_subset": 10}, rule)
    return {r["variant"]: r for _, r in found.iterrows()}


# ----------------------------------------------------------------------------------------------------------------------
# The rule


def test_a_collapsed_row_is_flagged_with_its_reason_and_one_slightly_below_erm_is_not(frame: pd.DataFrame) -> None:
    verdicts = verdicts_of(frame)
    sliced, gn = verdicts["sliced_score_matching"], verdicts["gradient_norm"]
    assert sliced["collapse"] == "collapsed" and sliced["collapse_reason"] == SLICED_REASON
    assert math.isclose(sliced["collapse_accuracy"], 0.67 / 3) and math.isclose(sliced["collapse_erm_accuracy"], 0.96)
    assert math.isclose(sliced["collapse_chance"], 0.1) and math.isclose(sliced["collapse_floor"], 0.745)
    assert sliced["collapse_keep_fraction"] == 0.75
    assert gn["collapse"] == "kept" and gn["collapse_reason"] == "kept: accuracy 0.930 vs erm 0.960 (floor 0.745)"
    assert verdicts["erm"]["collapse"] == "baseline" and math.isnan(verdicts["erm"]["collapse_floor"])
    assert {v: r["collapse"] for v, r in verdicts.items()} == {
        "erm": "baseline", "gradient_norm": "kept", "gaussian_noise": "kept", "pgd": "kept",
        "sliced_score_matching": "collapsed"}


def test_the_floor_follows_the_declared_fraction(frame: pd.DataFrame) -> None:
    # keep_fraction 0.97: floor 0.1 + 0.97 × 0.86 = 0.9342, so gradient_norm (0.93) collapses and pgd (0.95) does not
    verdicts = verdicts_of(frame, rule=CollapseRule(0.97, "suite strict"))
    assert verdicts["gradient_norm"]["collapse_reason"] == (
        "collapsed: accuracy 0.930 vs erm 0.960 (floor 0.934: chance 0.100 + 0.97 × (erm − chance))")
    assert verdicts["pgd"]["collapse"] == "kept"
    # keep_fraction 0: only a row below chance collapses
    assert verdicts_of(frame, rule=CollapseRule(0.0))["sliced_score_matching"]["collapse"] == "kept"
    with pytest.raises(ValueError, match=r"keep_fraction must lie in \[0, 1\), got 1.0"):
        CollapseRule(1.0)


def test_rows_that_cannot_be_judged_say_why(frame: pd.DataFrame) -> None:
    no_erm = frame[frame["regularizer"] != "erm"]
    assert verdicts_of(no_erm)["sliced_score_matching"]["collapse_reason"] == (
        "not judged: no single erm row with an accuracy result in this table")
    unknown = verdicts_of(frame, classes={"mnist_subset": None})["sliced_score_matching"]
    assert (unknown["collapse"], unknown["collapse_reason"]) == (
        "not judged", "not judged: the number of classes of mnist_subset is unknown here")
    no_accuracy = frame[~((frame["regularizer"] == "pgd") & (frame["evaluator"] == "accuracy"))]
    assert verdicts_of(no_accuracy)["pgd"]["collapse_reason"] == "not judged: no accuracy result"
    # erm below chance on a 2-class problem: it learned nothing a row could keep a share of
    guessing = frame.assign(value=frame["value"].where(~((frame["regularizer"] == "erm")
                                                         & (frame["metric"] == "accuracy")), 0.4))
    assert verdicts_of(guessing, classes={"mnist_subset": 2})["pgd"]["collapse_reason"] == (
        "not judged: erm's accuracy 0.400 is not above chance 0.500")
    # a not-judged row is still ranked
    stats = judged_summary(no_erm, classes={"mnist_subset": 10})
    assert stats.loc[stats["variant"] == "sliced_score_matching", "rank"].notna().all()


def test_the_floor_is_declared_in_the_suite_file_and_validated() -> None:
    base = {"name": "s", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"], "regularizers": ["erm"],
            "evaluators": ["accuracy"]}
    assert parse_suite(base).collapse_keep_fraction is None
    suite = parse_suite({**base, "collapse": {"keep_fraction": 0.5}})
    assert suite.collapse_keep_fraction == 0.5 and suite.hash != parse_suite(base).hash
    with pytest.raises(ConfigError, match=r"^s.yaml: collapse.keep_fraction: expected a number in \[0, 1\) \(the share "
                                          r"of erm's accuracy above chance a row must keep\), got 1.5.$"):
        parse_suite({**base, "collapse": {"keep_fraction": 1.5}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"s.yaml: collapse: unknown key 'keep_fractoin'. Did you mean "
                                          r"'keep_fraction'\? Valid keys: keep_fraction."):
        parse_suite({**base, "collapse": {"keep_fractoin": 0.5}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"s.yaml: collapse: expected a mapping"):
        parse_suite({**base, "collapse": 0.5}, source="s.yaml")
    # neither the shipped standard suite nor the one its reference submission recorded uses the key
    recorded = [s.suite for s in load_submission(STANDARD).submission.provenance.suites]
    assert recorded and all("collapse" not in suite for suite in recorded)
    from gibench.suites.suite import load_suite
    assert load_suite("standard").collapse_keep_fraction is None


def test_the_floor_of_recorded_suites() -> None:
    assert rule_of([]) == CollapseRule(0.75, "default") and rule_of([{"name": "a"}]) == CollapseRule(0.75, "default")
    assert rule_of([{"name": "a", "collapse": {"keep_fraction": 0.5}}]) == CollapseRule(0.5, "suite a")
    mixed = rule_of([{"name": "a", "collapse": {"keep_fraction": 0.5}}, {"name": "b"}])
    assert mixed == CollapseRule(0.75, "default; the strictest of the suites' 0.5, 0.75")
    assert mixed.text == ("accuracy floor: chance + 0.75 × (erm − chance) (default; the strictest of the suites' "
                          "0.5, 0.75)")
    with pytest.raises(ConfigError, match=r"suite 'c': collapse.keep_fraction: expected a number"):
        rule_of([{"name": "c", "collapse": {"keep_fraction": "high"}}])


# ----------------------------------------------------------------------------------------------------------------------
# Ranks, agreement, the sanity gate


def test_a_collapsed_row_holds_no_rank_and_takes_none(frame: pd.DataFrame) -> None:
    stats = judged_summary(frame, classes={"mnist_subset": 10})
    auc = stats[stats["metric"] == "auc"].set_index("variant")
    assert pd.isna(auc.loc["sliced_score_matching", "rank"])  # the lowest auc (0.05), yet no rank
    # the others rank among themselves: gradient_norm 0.27 < gaussian_noise 0.29 < erm 0.31 < pgd 0.34
    assert [int(auc.loc[v, "rank"]) for v in ("gradient_norm", "gaussian_noise", "erm", "pgd")] == [1, 2, 3, 4]
    assert int(summarize(frame).set_index(["variant", "metric"]).loc[("gradient_norm", "auc"), "rank"]) == 2
    assert (stats.loc[stats["variant"] == "sliced_score_matching", "collapse"] == COLLAPSED).all()


def test_evaluator_agreement_leaves_collapsed_rows_out(frame: pd.DataFrame) -> None:
    judged = agreement_table(judged_summary(frame, classes={"mnist_subset": 10}))
    pair = judged[(judged["metric_a"] == "density_ratio: ratio ↑") & (judged["metric_b"] == "pixel_perturbation: "
                                                                                         "auc ↓")].iloc[0]
    assert pair["n_variants"] == 4  # erm, gradient_norm, gaussian_noise, pgd
    means = summarize(frame).pivot_table(index="variant", columns="metric", values="mean")
    kept = means.drop("sliced_score_matching")
    assert math.isclose(pair["rho"], scipy_stats.spearmanr(kept["ratio"], -kept["auc"]).statistic)
    everyone = agreement_table(summarize(frame))
    assert everyone["n_variants"].max() == 5  # without the verdict it would have counted


def test_the_sanity_gate_leaves_a_collapsed_control_out() -> None:
    # two tables: fooled collapsed with softplus (accuracy 0.15), fooled kept with relu (accuracy 0.94)
    spec = {"erm": {"accuracy": [0.96, 0.97], "auc": [0.30, 0.31]},
            "fooled": {"accuracy": [0.15, 0.16], "auc": [0.60, 0.62]}}
    relu = {"erm": {"accuracy": [0.96, 0.97], "auc": [0.30, 0.31]},
            "fooled": {"accuracy": [0.94, 0.95], "auc": [0.50, 0.52]}}
    frame = pd.DataFrame(long_rows(spec) + long_rows(relu, backbone_params='{"act": "relu"}'))
    table, collapsed = sanity_gate(frame, {"mnist_subset": 10})
    assert list(table["backbone_params"]) == ['{"act": "relu"}'] and bool(table["passes"].iloc[0])
    assert list(collapsed["backbone_params"]) == ['{"act": "softplus"}']
    assert collapsed["collapse_reason"].iloc[0] == (
        "collapsed: accuracy 0.155 vs erm 0.965 (floor 0.749: chance 0.100 + 0.75 × (erm − chance))")


# ----------------------------------------------------------------------------------------------------------------------
# The report


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(_shared, "stdout", Console(file=buffer, width=80, color_system=None))
    return buffer


def test_the_report_shows_collapsed_rows_apart_with_their_reason_and_never_ranks_them(
        frame: pd.DataFrame, terminal: io.StringIO) -> None:
    print_frame(frame, all_metrics=False)
    text = terminal.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    body = flat.split("collapsed (not ranked)")
    assert len(body) == 2  # one section of collapsed variants, after the others
    assert "sliced_score_matching" in body[1] and "sliced_score_matching" not in body[0]
    assert all(v in body[0] for v in ("erm", "gradient_norm", "gaussian_noise", "pgd"))
    assert f"sliced_score_matching {SLICED_REASON} accuracy ↑ 0.2233 ± 0.0625 3/3 -0.7367 ± 0.0517" in body[1]
    assert "collapse: accuracy floor: chance + 0.75 × (erm − chance) (default)." in flat
    terminal.truncate(0), terminal.seek(0)
    _print_ranks(judged_summary(frame))
    ranks = " ".join(terminal.getvalue().split())
    assert f"not ranked: sliced_score_matching: {' '.join(SLICED_REASON.split())}" in ranks
    assert "of 4" in ranks and "of 5" not in ranks  # ranks among the four that did not collapse


def test_the_report_says_which_rows_it_could_not_judge(frame: pd.DataFrame, terminal: io.StringIO) -> None:
    print_frame(frame[frame["regularizer"] != "erm"], all_metrics=False)
    flat = " ".join(terminal.getvalue().split())
    assert ("not judged: no single erm row with an accuracy result in this table: mnist_subset × "
            "gibench_cnn(act=softplus) · 3 ep · adam · lr 0.001 (train config 48f65c0f) / gaussian_noise, "
            "gradient_norm, pgd, sliced_score_matching") in flat
    assert "collapsed (not ranked)" not in flat


def test_gibench_report_sanity_names_the_control_it_leaves_out(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    from gibench import cli
    from gibench.results import tables

    terminal = io.StringIO()
    monkeypatch.setattr(_shared, "stdout", Console(file=terminal, width=200, color_system=None))

    collapsed = {"erm": {"accuracy": [0.96, 0.97], "auc": [0.30, 0.31]},
                 "fooled": {"accuracy": [0.15, 0.16], "auc": [0.60, 0.62]}}
    kept = {"erm": {"accuracy": [0.96, 0.97], "auc": [0.30, 0.31]},
            "fooled": {"accuracy": [0.94, 0.95], "auc": [0.50, 0.52]}}
    both = pd.DataFrame(long_rows(collapsed) + long_rows(kept, backbone_params='{"act": "relu"}'))
    monkeypatch.setattr(tables, "collect_results", lambda runs_dir, *a, **k: both)
    assert cli.main(["report", "--sanity", "--runs-dir", str(tmp_path)]) == 0  # the relu table passes
    flat = " ".join(terminal.getvalue().split())
    assert ("not gated: fooled on mnist_subset × gibench_cnn(act=softplus) · 3 ep · adam · lr 0.001 (train config "
            "48f65c0f): collapsed: accuracy 0.155 vs erm 0.965 (floor 0.749: chance 0.100 + 0.75 × (erm − chance)); "
            "a collapsed control is left out of the sanity gate") in flat
    gate = flat.split("sanity: the fooled control")[1]
    assert "gibench_cnn(act=relu)" in gate and "act=softplus" not in gate and "FAILS" not in gate
    errors = io.StringIO()
    monkeypatch.setattr(_shared, "stderr", Console(file=errors, width=200, color_system=None))
    monkeypatch.setattr(tables, "collect_results", lambda runs_dir, *a, **k: pd.DataFrame(long_rows(collapsed)))
    assert cli.main(["report", "--sanity", "--runs-dir", str(tmp_path)]) == 2
    assert "error: the `fooled` control collapsed in every table under" in errors.getvalue()


# ----------------------------------------------------------------------------------------------------------------------
# The site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("collapse")
    metadata = {"name": "Lab", "authors": ["A"], "description": "", "links": []}
    submit_rows(root / "runs", root / "submissions", metadata, frame.to_dict("records"),
                {"name": "tiny", "seeds": [0, 1, 2]})
    return build_site(root / "submissions", root / "site")


def test_the_site_never_marks_a_collapsed_row_best(frame: pd.DataFrame) -> None:
    summary = aggregate(frame.assign(submission_id="lab", submission="Lab"))
    (table,) = make_tables(summary)
    assert [r.variant for r in table.collapsed_rows] == ["sliced_score_matching"]
    assert [r.variant for r in table.ranked_rows] == ["erm", "gaussian_noise", "gradient_norm", "pgd"]
    sliced = table.collapsed_rows[0]
    assert sliced.collapse_reason == SLICED_REASON
    auc = next(i for i, c in enumerate(table.columns) if c.metric == "auc")
    ratio = next(i for i, c in enumerate(table.columns) if c.metric == "ratio")
    # it has the best mean of both auc (0.05, lower is better) and ratio (0.923), yet is marked in neither
    assert sliced.cells[auc].sort_value == min(r.cells[auc].sort_value for r in table.rows)
    assert sliced.cells[ratio].sort_value == max(r.cells[ratio].sort_value for r in table.rows)
    assert not any(c.best or c.rank for c in sliced.cells)
    assert [r.variant for r in table.rows if r.cells[auc].best] == ["gradient_norm"]
    assert [r.variant for r in table.rows if r.cells[ratio].best] == ["gradient_norm"]
    assert all(a.n_variants == 4 for a in table.agreement)


def test_the_site_shows_collapsed_rows_apart_with_their_reason(site: Path) -> None:
    html = site.read_text()
    (board,) = parse(html).values()
    rows = {r["@"]["data-variant"]: r for r in board["rows"]}
    assert "collapsed" in rows["sliced_score_matching"]["@"]["class"].split()
    assert SLICED_REASON in rows["sliced_score_matching"]["variant"]
    assert not any("data-best-cell" in cell for cell in rows["sliced_score_matching"]["@cells"].values())
    assert "data-best-cell" in rows["gradient_norm"]["@cells"]["pixel-perturbation--auc"]
    assert "rank" not in rows["sliced_score_matching"]["pixel-perturbation--auc"]
    ranked, apart = html.split('<tbody class="collapsed-rows">')
    assert 'data-variant="sliced_score_matching"' in apart.split("</tbody>")[0]
    assert 'data-variant="sliced_score_matching"' not in ranked
    assert ("a row is collapsed when its accuracy falls below the accuracy floor: chance + 0.75 × (erm − chance) "
            "(default)") in html
    download = json.loads(next((site.parent / "tables").glob("*.json")).read_text())
    reasons = {r["variant"]: r["collapse_reason"] for r in download["rows"] if r["metric"] == "accuracy"}
    assert reasons["sliced_score_matching"] == SLICED_REASON
    assert reasons["gradient_norm"] == "kept: accuracy 0.930 vs erm 0.960 (floor 0.745)"


def test_the_site_sanity_view_leaves_a_collapsed_control_out(tmp_path: Path) -> None:
    collapsed = {"erm": {"accuracy": [0.96, 0.97], "auc": [0.30, 0.31]},
                 "fooled": {"accuracy": [0.15, 0.16], "auc": [0.60, 0.62]}}
    kept = {"erm": {"accuracy": [0.96, 0.97], "auc": [0.30, 0.31]},
            "fooled": {"accuracy": [0.94, 0.95], "auc": [0.50, 0.52]}}
    rows = long_rows(collapsed) + long_rows(kept, backbone_params='{"act": "relu"}')
    submit_rows(tmp_path / "runs", tmp_path / "submissions", {"name": "Lab", "authors": ["A"], "description": "",
                                                              "links": []}, rows, {"name": "tiny", "seeds": [0, 1]})
    page = (build_site(tmp_path / "submissions", tmp_path / "site").parent / "sanity.html").read_text()
    assert ("<li>Not gated: <code>fooled</code> in mnist_subset × gibench_cnn(act=softplus) · 3 ep · adam · lr 0.001 "
            "(Lab): collapsed: accuracy 0.155 vs erm 0.965 (floor 0.749: chance 0.100 + 0.75 × (erm − chance)); "
            "accuracy floor: chance + 0.75 × (erm − chance) (default).</li>") in page
    gated = page.split("<tbody>")[1].split("</tbody>")[0]
    assert gated.count("<tr ") == 1 and "act=relu" in gated and "act=softplus" not in gated


# ----------------------------------------------------------------------------------------------------------------------
# The reference submissions

#: Rows of the reference ``standard`` submission that collapsed before the defaults were fixed (sliced and
#: denoising score matching at their papers' strengths, PGD at the digits' radii on the 3-class Gaussian mixture), with
#: the accuracy each now reaches; the floor of each table is chance + 0.75 × (erm − chance).
ONCE_COLLAPSED = {
    ("mnist_subset", "sliced_score_matching"): 0.968, ("mnist_subset", "denoising_score_matching"): 0.969,
    ("blockmnist", "denoising_score_matching"): 0.888, ("gaussian_mixture", "pgd(norm=l2, epsilon=0.5)"): 1.0,
    ("gaussian_mixture", "pgd(norm=linf, epsilon=0.05)"): 1.0,
}


def reference_verdicts(folder: Path) -> pd.DataFrame:
    loaded = load_submission(folder)
    suites = [s.suite for s in loaded.submission.provenance.suites]
    results = loaded.results[loaded.results["evaluator"] == "accuracy"]
    return collapse_verdicts(summarize(results), judged_classes(results, suites), rule_of(suites))


def judged_classes(results: pd.DataFrame, suites: list) -> dict:
    from gibench.results.collapse import dataset_classes

    classes = dataset_classes(results["dataset"].astype(str), suites)
    expected = {"blockmnist": 10, "gaussian_mixture": 3, "mnist_subset": 10}
    assert classes in (expected, {**expected, "decoy_mnist": 10})  # smoke; standard
    return classes


def test_no_default_of_the_reference_standard_submission_collapses() -> None:
    verdicts = reference_verdicts(STANDARD)
    assert set(verdicts["collapse"]) == {"kept", "baseline"}, verdicts[verdicts["collapse"] == COLLAPSED]
    kept = verdicts.set_index(["dataset", "variant"])
    for (dataset, variant), accuracy in ONCE_COLLAPSED.items():
        found = kept.loc[(dataset, variant), "collapse_accuracy"]
        assert found == pytest.approx(accuracy, abs=5e-4), (dataset, variant, found)


def test_the_reference_smoke_submission_flags_nothing() -> None:
    verdicts = reference_verdicts(SMOKE)
    assert set(verdicts["collapse"]) == {"kept", "baseline"}


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="needs the system Chromium: apt-get install -y chromium")
def test_in_the_browser_collapsed_rows_stay_apart_when_sorted_and_follow_columns_and_filters(site: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        watcher = PageWatcher().attach(page)
        page.goto(site.as_uri())
        page.wait_for_load_state("load")

        def order() -> list[str]:
            return page.eval_on_selector_all("section.board tbody tr.lb-row:not([hidden])",
                                             "rows => rows.map(r => r.getAttribute('data-variant'))")

        header = page.locator('section.board thead th[data-column="pixel-perturbation--auc"]')
        header.locator("button.sort").click()  # lower is better: best first, the collapsed row (0.05) still last
        assert header.get_attribute("aria-sort") == "ascending"
        assert order() == ["gradient_norm", "gaussian_noise", "erm", "pgd", "sliced_score_matching"]
        header.locator("button.sort").click()
        assert order() == ["pgd", "erm", "gaussian_noise", "gradient_norm", "sliced_score_matching"]
        page.locator("section.board details.column-chooser summary").click()
        page.locator('section.board details.column-chooser input[data-column="pixel-perturbation--auc"]').uncheck()
        cell = page.locator('tr.collapsed td[data-column="pixel-perturbation--auc"]')
        assert cell.count() == 1 and not cell.is_visible()
        page.locator("section.board input.filter-text").fill("sliced")
        assert order() == ["sliced_score_matching"]
        assert page.locator("section.board .row-count").text_content() == "1 of 5 rows"
        assert page.locator("tr.collapsed-head").is_visible()
        page.locator("section.board input.filter-text").fill("gradient")
        assert order() == ["gradient_norm"] and not page.locator("tr.collapsed-head").is_visible()
        assert not watcher.problems()
        browser.close()
