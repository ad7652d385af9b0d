"""A metric declared with ``read_beside`` (sensitivity, which a constant map wins) is shown only beside its companion
(infidelity): the declaration is checked, recorded in the submission, and honoured by the table model, the rendered
page and, in a real browser, the column chooser, the evaluator filter and the narrow-window fit.

The submissions are written by hand (no training): two variants × two seeds of accuracy, infidelity and sensitivity
results, packed with ``build_submission`` so their metric records come from the installed evaluators. Every expected
order, best mark and note is derived here from those numbers and declarations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gibench.api import registry
from gibench.api.plugin import Metric
from gibench.evaluators.sensitivity import CAVEAT, COMPANION, Sensitivity
from gibench.leaderboard.tables import aggregate, make_tables, metric_info
from gibench.submissions.build import load_submission
from gibench.submissions.schema import MetricInfo as RecordedMetric
from tests.site_helpers import PageWatcher, chromium_path, launch, submit_rows

INFIDELITY = ("infidelity", "relative_infidelity_gaussian")
NARROW = 420  # px: too narrow for either: the fit hides max_sensitivity, then infidelity
MAX_SENS = ("sensitivity", "max_sensitivity")
AVG_SENS = ("sensitivity", "avg_sensitivity")
#: variant -> (evaluator, metric) -> value by seed. gradient_norm has the lower (better) sensitivity.
VALUES = {
    "erm": {("accuracy", "accuracy"): [0.91, 0.93], INFIDELITY: [0.40, 0.44], ("infidelity", "infidelity_gaussian"):
            [2.0, 2.2], MAX_SENS: [0.30, 0.34], AVG_SENS: [0.10, 0.12], ("sensitivity", "prediction_flip_share"):
            [0.0, 0.05]},
    "gradient_norm": {("accuracy", "accuracy"): [0.88, 0.90], INFIDELITY: [0.50, 0.52],
                      ("infidelity", "infidelity_gaussian"): [2.5, 2.4], MAX_SENS: [0.20, 0.22],
                      AVG_SENS: [0.07, 0.09], ("sensitivity", "prediction_flip_share"): [0.0, 0.0]},
}


def long_rows(values: dict = VALUES, drop: str = "", backbone: str = "gibench_linear",
              versions: dict[str, str] | None = None) -> list[dict]:
    """results.csv rows of ``values`` (leaving out evaluator ``drop``), with the installed declarations."""
    rows = []
    for variant, metrics in values.items():
        params = "{}" if variant == "erm" else '{"weight": 0.01}'
        for (evaluator, metric), by_seed in metrics.items():
            if evaluator == drop:
                continue
            declared = next(m for m in registry.evaluators.get(evaluator).metrics if m.name == metric)
            for seed, value in enumerate(by_seed):
                rows.append({
                    "job_hash": f"{variant}-{seed}", "dataset": "mnist_subset", "backbone": backbone,
                    "backbone_params": "{}", "regularizer": variant, "regularizer_params": params,
                    "variant": variant if variant == "erm" else f"{variant}(weight=0.01)", "seed": seed,
                    "evaluator": evaluator,
                    "evaluator_version": (versions or {}).get(evaluator, registry.evaluators.get(evaluator).version),
                    "evaluator_params": "{}", "metric": metric, "value": value,
                    "higher_is_better": declared.higher_is_better, "headline": declared.headline, "status": "ok",
                    "reason": "", "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
                    "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0"})
    return rows


def submit(root: Path, name: str, rows: list[dict]) -> Path:
    return submit_rows(root / f"runs-{name}", root / "submissions", {"name": name, "authors": ["A. Person"]}, rows,
                       {"name": "tiny", "seeds": [0, 1]})


def tables_of(*folders: Path):
    loaded = [load_submission(f) for f in folders]
    frame = pd.concat([s.results.assign(submission_id=s.submission.id, submission=s.submission.metadata.name)
                       for s in loaded], ignore_index=True)
    return make_tables(aggregate(frame), metric_info(loaded), {"erm": "baseline"})


@pytest.fixture(scope="module")
def subs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("companions")
    return {"root": root, "both": submit(root, "With infidelity", long_rows()),
            "alone": submit(root, "Without infidelity", long_rows(drop="infidelity", backbone="gibench_cnn"))}


# ----------------------------------------------------------------------------------------------------------------------
# the declaration


def test_sensitivity_declares_infidelity_as_its_companion() -> None:
    metrics = {m.name: m for m in registry.evaluators.get("sensitivity").metrics}
    assert COMPANION == ".".join(INFIDELITY) and CAVEAT.startswith("a constant map scores 0")
    assert (metrics["max_sensitivity"].read_beside, metrics["max_sensitivity"].caveat) == (COMPANION, CAVEAT)
    assert (metrics["avg_sensitivity"].read_beside, metrics["avg_sensitivity"].caveat) == (COMPANION, CAVEAT)
    assert metrics["prediction_flip_share"].read_beside == ""
    companion = next(m for m in registry.evaluators.get("infidelity").metrics if m.name == INFIDELITY[1])
    assert companion.headline and not companion.read_beside


@pytest.mark.parametrize(("read_beside", "caveat", "problem"), [
    ("infidelity", "why", "is not of the form 'evaluator.metric'"),
    ("infidelity.a.b", "why", "is not of the form 'evaluator.metric'"),
    ("infidelity .x", "why", "is not of the form 'evaluator.metric'"),
    (".x", "why", "is not of the form 'evaluator.metric'"),
    ("infidelity.x", "  ", "without a caveat"),
])
def test_a_malformed_companion_is_a_declaration_problem_naming_the_metric(read_beside: str, caveat: str,
                                                                           problem: str) -> None:
    class Broken(Sensitivity):
        """Sensitivity with one bad declaration."""

        metrics = (Metric("m", False, "d", headline=True, read_beside=read_beside, caveat=caveat),)

    (found,) = registry.declaration_problems(Broken)
    assert found.startswith("metric 'm': ") and problem in found


def test_conformance_checks_that_the_companion_exists() -> None:
    from gibench.testing.evaluator_checks import _companions

    _companions(Sensitivity)  # the real declaration passes
    for read_beside, problem in (("infidelity.no_such_metric", "declares no metric 'no_such_metric'"),
                                 ("no_such_evaluator.x", "evaluator 'no_such_evaluator' cannot be loaded"),
                                 ("sensitivity.max_sensitivity", "which itself reads beside"),
                                 ("infidelity.infidelity_gaussian", "which is not the headline of 'infidelity'")):
        class Dangling(Sensitivity):
            """Sensitivity reading beside something that is not a standalone metric."""

            metrics = (Metric("m", False, "d", headline=True, read_beside=read_beside, caveat="why"),)

        with pytest.raises(AssertionError, match=problem):
            _companions(Dangling)


# ----------------------------------------------------------------------------------------------------------------------
# the submission


def test_the_submission_records_and_round_trips_the_companion(subs: dict) -> None:
    loaded = load_submission(subs["both"])
    records = {(m.evaluator, m.metric): m for m in loaded.submission.metrics}
    assert (records[MAX_SENS].read_beside, records[MAX_SENS].caveat) == (COMPANION, CAVEAT)
    assert (records[AVG_SENS].read_beside, records[AVG_SENS].caveat) == (COMPANION, CAVEAT)
    assert (records[INFIDELITY].read_beside, records[INFIDELITY].caveat) == ("", "")
    written = json.loads((subs["both"] / "submission.json").read_text(encoding="utf-8"))
    on_disk = {(m["evaluator"], m["metric"]): m for m in written["metrics"]}
    assert on_disk[MAX_SENS]["read_beside"] == COMPANION and on_disk[MAX_SENS]["caveat"] == CAVEAT
    again = type(loaded.submission).model_validate_json(loaded.submission.model_dump_json())
    assert again == loaded.submission
    info = metric_info([loaded])
    assert info[MAX_SENS].companion == INFIDELITY and info[MAX_SENS].caveat == CAVEAT


def test_a_record_made_before_the_fields_loads_with_them_empty() -> None:
    old = {"evaluator": "sensitivity", "version": "1", "metric": "max_sensitivity", "description": "d",
           "higher_is_better": False, "headline": True, "bounds": [0.0, None], "diagnostic": False}
    record = RecordedMetric.model_validate(old)
    assert (record.read_beside, record.caveat) == ("", "")
    with pytest.raises(ValueError, match="read_beside"):
        RecordedMetric.model_validate(old | {"read_beside": "infidelity"})


def test_validate_refuses_a_companion_that_differs_from_the_installed_evaluator(subs: dict, tmp_path: Path) -> None:
    """A hand-edited submission that drops sensitivity's companion would have the site show it alone."""
    import shutil

    from gibench.core.errors import SubmissionError
    from gibench.submissions.build import validate_submission

    folder = Path(shutil.copytree(subs["both"], tmp_path / subs["both"].name))
    assert validate_submission(folder).id == folder.name
    data = json.loads((folder / "submission.json").read_text(encoding="utf-8"))
    index = next(i for i, m in enumerate(data["metrics"]) if (m["evaluator"], m["metric"]) == MAX_SENS)
    data["metrics"][index]["read_beside"] = ""
    (folder / "submission.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SubmissionError) as info:
        validate_submission(folder)
    assert (f"field 'metrics.{index}.read_beside' is '' for sensitivity (version 1) metric 'max_sensitivity', but "
            f"the installed evaluator of that version declares {COMPANION!r}") in str(info.value)


# ----------------------------------------------------------------------------------------------------------------------
# the table model


def mean(key: tuple[str, str], variant: str) -> float:
    return sum(VALUES[variant][key]) / len(VALUES[variant][key])


def test_sensitivity_columns_follow_the_infidelity_headline(subs: dict) -> None:
    (table,) = tables_of(subs["both"])
    ids = [c.id for c in table.columns]
    # accuracy first, then headlines, then secondaries (each sorted); max and avg sensitivity moved to just after
    # the infidelity headline, prediction_flip_share (reads beside nothing) left where it sorts
    assert ids == ["accuracy--accuracy", "infidelity--relative-infidelity-gaussian", "sensitivity--max-sensitivity",
                   "sensitivity--avg-sensitivity", "infidelity--infidelity-gaussian",
                   "sensitivity--prediction-flip-share"]
    by_id = {c.id: c for c in table.columns}
    for column in ("sensitivity--max-sensitivity", "sensitivity--avg-sensitivity"):
        assert by_id[column].companion == "infidelity--relative-infidelity-gaussian"
        assert (by_id[column].read_beside, by_id[column].caveat) == (COMPANION, CAVEAT)
    assert [c.id for c in table.caveats] == ["sensitivity--max-sensitivity", "sensitivity--avg-sensitivity"]
    assert table.held_back == []
    # the best mean of max_sensitivity (lower is better) is marked: gradient_norm's
    i = ids.index("sensitivity--max-sensitivity")
    best = {r.regularizer for r in table.rows if r.cells[i].best}
    assert best == {min(VALUES, key=lambda v: mean(MAX_SENS, v))} == {"gradient_norm"}
    assert [r.cells[i].sort_value for r in table.rows] == pytest.approx([mean(MAX_SENS, "erm"),
                                                                        mean(MAX_SENS, "gradient_norm")])
    assert any("max_sensitivity" in a.metric_a + a.metric_b for a in table.agreement)


def test_a_table_without_infidelity_leaves_sensitivity_out_and_says_why(subs: dict) -> None:
    (table,) = tables_of(subs["alone"])
    ids = [c.id for c in table.columns]
    assert ids == ["accuracy--accuracy", "sensitivity--prediction-flip-share"]
    assert [(h.metric, h.read_beside, h.caveat) for h in table.held_back] == [
        ("max_sensitivity", COMPANION, CAVEAT), ("avg_sensitivity", COMPANION, CAVEAT)]
    assert table.held_back[0].note == ("max_sensitivity is shown only beside infidelity · "
                                       "relative_infidelity_gaussian, which this table lacks: " + CAVEAT)
    assert not any("sensitivity" in a.metric_a + a.metric_b and "flip" not in a.metric_a + a.metric_b
                   for a in table.agreement)
    assert all(len(r.cells) == 2 for r in table.rows)


def test_each_version_of_sensitivity_follows_infidelity_and_is_held_back_once(tmp_path: Path) -> None:
    # version "0" is not installed: its records carry no read_beside, the installed version's do (and win)
    both = long_rows() + [r for r in long_rows(versions={"sensitivity": "0"}) if r["evaluator"] == "sensitivity"]
    (table,) = tables_of(submit(tmp_path, "Two versions", both))
    labels = [(c.id, c.version) for c in table.columns]
    assert labels[1:6] == [("infidelity--relative-infidelity-gaussian", "1"), ("sensitivity--max-sensitivity", "0"),
                           ("sensitivity--max-sensitivity-2", "1"), ("sensitivity--avg-sensitivity", "0"),
                           ("sensitivity--avg-sensitivity-2", "1")]
    assert {c.companion for c in table.columns if c.read_beside} == {"infidelity--relative-infidelity-gaussian"}
    alone = [r for r in both if r["evaluator"] != "infidelity"]
    (table,) = tables_of(submit(tmp_path, "Two versions alone", alone))
    assert [h.metric for h in table.held_back] == ["max_sensitivity", "avg_sensitivity"]
    assert not any(c.evaluator == "sensitivity" and c.metric != "prediction_flip_share" for c in table.columns)


def test_a_companion_skipped_on_every_row_holds_sensitivity_back_too(tmp_path: Path) -> None:
    rows = long_rows()
    for row in rows:
        if row["evaluator"] == "infidelity":
            row.update(value=float("nan"), status="skipped", reason="does not apply")
    (table,) = tables_of(submit(tmp_path, "Skipped infidelity", rows))
    assert not any(c.evaluator in ("infidelity",) or c.read_beside for c in table.columns)
    assert [h.metric for h in table.held_back] == ["max_sensitivity", "avg_sensitivity"]
    assert [o.evaluator for o in table.omitted] == ["infidelity"]


def test_the_page_carries_the_caveat_and_the_note(subs: dict, tmp_path: Path) -> None:
    from gibench.leaderboard.build import build_site

    html = build_site(subs["root"] / "submissions", tmp_path / "site").read_text(encoding="utf-8")
    assert html.count('data-read-beside="infidelity--relative-infidelity-gaussian"') == 2  # max and avg, one table
    assert 'data-caveat="a constant map scores 0 here: read it beside infidelity"' in html
    assert html.count('<sup class="caveat-mark"') == 2
    assert html.count('<ul class="caveats">') == 1
    assert "<strong>sensitivity · max_sensitivity</strong>: A constant map scores 0 here: read it beside infidelity." \
        in html
    assert html.count('<p class="held-back" data-metric=') == 2  # the table without infidelity
    assert ("Not shown: max_sensitivity is shown only beside infidelity · relative_infidelity_gaussian, which this "
            "table lacks: a constant map scores 0 here: read it beside infidelity.") in html
    assert html.count("(shown beside infidelity · relative_infidelity_gaussian)</small>") == 2  # column chooser
    downloads = {json.loads(f.read_text(encoding="utf-8"))["backbone"]: json.loads(f.read_text(encoding="utf-8"))
                 for f in (tmp_path / "site" / "tables").glob("*.json")}
    assert [h["metric"] for h in downloads["gibench_cnn"]["held_back"]] == ["max_sensitivity", "avg_sensitivity"]
    assert downloads["gibench_linear"]["held_back"] == []
    # the downloads keep every metric, held back or not
    assert {r["metric"] for r in downloads["gibench_cnn"]["rows"]} >= {"max_sensitivity", "avg_sensitivity"}
    page = (tmp_path / "site" / "evaluators" / "sensitivity.html").read_text(encoding="utf-8")
    assert page.count("Shown only beside <code>infidelity.relative_infidelity_gaussian</code>: " + CAVEAT) == 2


# ----------------------------------------------------------------------------------------------------------------------
# in a browser


@pytest.fixture(scope="module")
def site(subs: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gibench.leaderboard.build import build_site

    return build_site(subs["root"] / "submissions", tmp_path_factory.mktemp("site") / "site")


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.skip("needs the system Chromium: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


def board_with_infidelity(page):
    return page.locator("section.board", has=page.locator('th[data-column="infidelity--relative-infidelity-gaussian"]'))


def shown(board, column: str) -> bool:
    """The header and every cell of ``column`` are visible (False when all are hidden; mixed fails)."""
    states = board.locator(f'table.leaderboard [data-column="{column}"]').evaluate_all(
        "els => els.map(e => !e.hidden && e.getClientRects().length > 0)")
    assert len(states) == 3 and len(set(states)) == 1, states  # header + 2 rows
    return states[0]


@pytest.mark.browser
def test_hiding_infidelity_hides_sensitivity_and_shows_the_note(site: Path, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    watcher = PageWatcher().attach(page)
    page.goto(site.as_uri())
    board = board_with_infidelity(page)
    note = board.locator(".beside-note")
    assert shown(board, "infidelity--relative-infidelity-gaussian") and shown(board, "sensitivity--max-sensitivity")
    assert not shown(board, "sensitivity--avg-sensitivity")  # secondary: hidden until chosen
    assert note.is_hidden() and board.locator("ul.caveats").is_visible()
    best = board.locator('td[data-column="sensitivity--max-sensitivity"][data-best-cell]')
    assert best.count() == 1 and best.is_visible()
    assert best.locator("xpath=..").get_attribute("data-regularizer") == "gradient_norm"
    board.locator("details.column-chooser summary").click()
    board.locator('details.column-chooser input[data-column="sensitivity--avg-sensitivity"]').check()
    assert shown(board, "sensitivity--avg-sensitivity")
    board.locator('details.column-chooser input[data-column="infidelity--relative-infidelity-gaussian"]').uncheck()
    assert not shown(board, "sensitivity--max-sensitivity") and not shown(board, "sensitivity--avg-sensitivity")
    assert not best.is_visible()  # the best mark is never seen without the companion
    assert board.locator('details.column-chooser input[data-column="sensitivity--max-sensitivity"]').is_checked()
    assert note.is_visible()
    assert note.get_attribute("data-hidden-columns").split() == ["sensitivity--max-sensitivity",
                                                                 "sensitivity--avg-sensitivity"]
    assert note.inner_text().startswith("max_sensitivity is shown only beside infidelity · "
                                        "relative_infidelity_gaussian, which is hidden: a constant map scores 0")
    board.locator('details.column-chooser input[data-column="infidelity--relative-infidelity-gaussian"]').check()
    assert shown(board, "sensitivity--max-sensitivity") and best.is_visible() and note.is_hidden()
    assert not watcher.problems()
    page.close()


@pytest.mark.browser
def test_the_sensitivity_filter_shows_its_companion(site: Path, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(site.as_uri())
    board = board_with_infidelity(page)
    board.locator("select.filter-evaluator").select_option("sensitivity")
    assert shown(board, "sensitivity--max-sensitivity") and shown(board, "infidelity--relative-infidelity-gaussian")
    assert not shown(board, "infidelity--infidelity-gaussian")  # only the companion, not the whole evaluator
    board.locator("select.filter-evaluator").select_option("accuracy")
    assert not shown(board, "sensitivity--max-sensitivity") and board.locator(".beside-note").is_hidden()
    page.close()


@pytest.mark.browser
def test_a_narrow_window_that_hides_infidelity_keeps_sensitivity_hidden(site: Path, browser) -> None:
    page = browser.new_page(viewport={"width": NARROW, "height": 900})
    watcher = PageWatcher().attach(page)
    page.goto(site.as_uri())
    board = board_with_infidelity(page)
    fit = board.locator(".fit-note").get_attribute("data-hidden-columns").split()
    assert fit == ["sensitivity--max-sensitivity", "infidelity--relative-infidelity-gaussian"]  # last shown first
    board.locator("details.column-chooser summary").click()
    board.locator('details.column-chooser input[data-column="sensitivity--max-sensitivity"]').check()
    assert not shown(board, "sensitivity--max-sensitivity")  # chosen, but its companion is still hidden
    note = board.locator(".beside-note")
    assert note.is_visible() and note.get_attribute("data-hidden-columns") == "sensitivity--max-sensitivity"
    board.locator('details.column-chooser input[data-column="infidelity--relative-infidelity-gaussian"]').check()
    assert shown(board, "sensitivity--max-sensitivity") and note.is_hidden()
    assert not watcher.problems()
    page.close()
