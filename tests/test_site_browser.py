"""The leaderboard site in a real browser (Playwright for Python driving Debian's ``chromium`` from ``file://``).

One tiny real run (three regularizer families and one regularizer that crashes in training, two seeds, a linear
model, one epoch) is packed into submissions: an honest one; a hostile one, whose every free-text field (name,
authors, description, links, a variant label, suite name and description, device name) carries an XSS payload,
written the way a hostile user would (editing submission.json and results.csv and recomputing their hashes), and
which holds only seed 0 and no pixel-perturbation results for one variant; and two that validation rejects (a
``javascript:`` link; a right-to-left override and a NUL in the name), listed as rejected because the site is built
with ``skip_invalid``. Every expected number, order and count is computed here in Python from the submissions' own
results.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gibench.api.plugin import Regularizer
from gibench.core.errors import SubmissionError
from gibench.submissions.build import build_submission, load_submission, validate_submission
from tests.site_helpers import (
    BROWSER_SUITE,
    PageWatcher,
    chromium_path,
    hostile_edit,
    launch,
    local_target,
    run_tiny_suite,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow,  # one tiny real run, then a few seconds per page
              pytest.mark.skipif(chromium_path() is None,
                                 reason="needs the system Chromium: apt-get install -y chromium (.ci/run does this)")]

ACCURACY = ("accuracy", "accuracy")
PIXEL = ("pixel_perturbation", "area_least_salient_normalized")
WIDTH, HEIGHT = 1400, 900
#: Each payload would set window.__xss (or open a dialog) if the site executed it.
XSS = {
    "name": "<script>window.__xss='name'</script>Evil lab",
    "author": "\"><img src=x onerror=\"window.__xss='author'\">",
    "description": "<img src=x onerror=alert('description')> and <b>bold</b>",
    "link": "https://example.org/\"><img/src=x/onerror=window.__xss='link'>",
    "variant": "gradient_norm<svg/onload=window.__xss='variant'>",
    "suite": "tiny<script>window.__xss='suite'</script>",
    "suite description": "</pre><img src=x onerror=\"window.__xss='suite description'\">",
    "device": "<iframe src=\"javascript:window.parent.__xss='device'\"></iframe>",
}
JS_LINK = "javascript:window.__xss='js-link'"
INVISIBLE = "Tiny\u202elab\x00"  # a right-to-left override and a NUL


# ----------------------------------------------------------------------------------------------------------------------
# fixtures


class Crashes(Regularizer):
    """Raises at its first training step (a stand-in for a plugin bug): its variant must keep a row on the site."""

    zero_strength = None

    def training_loss(self, model, x, y):
        raise ValueError("a plugin bug at the first step")


@pytest.fixture(scope="module")
def crashes():
    """The ``crashes`` regularizer, registered in this process for the whole module (the site builder looks it up)."""
    from gibench.api import registry
    from gibench.testing import registered

    with registered(registry.regularizers.kind, "crashes", Crashes):
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, crashes) -> dict:
    from gibench.leaderboard.build import build_site

    root = tmp_path_factory.mktemp("browser")
    runs, summary = run_tiny_suite(root, {**BROWSER_SUITE, "regularizers": [*BROWSER_SUITE["regularizers"], "crashes"]})
    failed = sorted(job.job.regularizer.name for job in summary.jobs if job.state == "failed")
    assert failed == ["crashes", "crashes"] and len(summary.jobs) == 8, [(j.state, j.reason) for j in summary.jobs]
    subs = root / "submissions"
    honest = build_submission(runs, subs, {"name": "Tiny lab", "authors": ["A. Person"],
                                           "description": "A tiny honest run.", "links": ["https://example.org/code"]})
    results = load_submission(honest).results
    partial = results[(results["seed"] == 0)
                      & ~((results["regularizer"] == "gaussian_noise") & (results["evaluator"] == PIXEL[0]))]
    hostile = build_submission(runs, subs, {"name": "placeholder", "authors": ["placeholder"]}, results=partial)
    hostile = hostile_edit(hostile, metadata=_hostile_metadata, results=_hostile_variant,
                           provenance=_hostile_provenance)
    rejected = shutil.copytree(honest, subs / "copy")
    rejected = hostile_edit(rejected, metadata=lambda m: m.update(name="Rejected lab", links=[JS_LINK]))
    invisible = shutil.copytree(honest, subs / "copy")
    invisible = hostile_edit(invisible, metadata=lambda m: m.update(name=INVISIBLE))
    site = root / "site"
    index = build_site(subs, site, skip_invalid=True)
    return {"root": root, "site": site, "index": index, "honest": honest, "hostile": hostile, "rejected": rejected,
            "invisible": invisible}


def _hostile_metadata(meta: dict) -> None:
    meta.update(name=XSS["name"], authors=[XSS["author"]], description=XSS["description"], links=[XSS["link"]])


def _hostile_provenance(provenance: dict) -> None:
    for suite in provenance["suites"]:
        suite["name"] = suite["suite"]["name"] = XSS["suite"]
        suite["suite"]["description"] = XSS["suite description"]
    for run in provenance["runs"]:
        run["suite_name"] = XSS["suite"]
        run["environment"]["device_name"] = XSS["device"]


def _hostile_variant(table):
    table = table.copy()
    table.loc[table["regularizer"] == "gradient_norm", "variant"] = XSS["variant"]
    return table


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def expected(built: dict) -> dict:
    """Per table row (submission id, variant): regularizer, family, submission name, headline means, evaluators."""
    from gibench.api import registry

    rows = {}
    for folder in (built["honest"], built["hostile"]):
        loaded = load_submission(folder)
        for (variant, regularizer), group in loaded.results.groupby(["variant", "regularizer"]):
            ok = group[group["status"] == "ok"]
            means = {key: ok.loc[(ok["evaluator"] == key[0]) & (ok["metric"] == key[1]), "value"].mean()
                     for key in (ACCURACY, PIXEL)}
            rows[(loaded.submission.id, variant)] = {
                "submission": loaded.submission.metadata.name, "variant": variant, "regularizer": regularizer,
                "family": registry.regularizers.get(regularizer).family,
                "means": {k: None if math.isnan(v) else v for k, v in means.items()},
                "evaluators": set(ok["evaluator"])}
    return rows


@pytest.fixture(scope="module")
def table_page(built: dict, browser) -> Path:
    """The one table page the index links to (a.table-page)."""
    page = browser.new_page()
    page.goto(built["index"].as_uri())
    hrefs = page.eval_on_selector_all("a.table-page", "links => links.map(a => a.href)")
    page.close()
    assert len(set(hrefs)) == 1, hrefs  # one dataset × backbone × training config
    return local_target(hrefs[0])[0]


@pytest.fixture(params=["index", "table page"])
def board_page(request, built: dict, table_page: Path) -> Path:
    """A page holding the table's section.board: the index (every table) and the table's own page (same markup)."""
    return built["index"] if request.param == "index" else table_page


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    watcher = PageWatcher().attach(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, watcher


# ----------------------------------------------------------------------------------------------------------------------
# every page


def test_every_page_loads_without_errors_and_every_link_and_image_resolves(built: dict, browser) -> None:
    pages = sorted(built["site"].rglob("*.html"))
    assert len(pages) >= 3  # index, a table page, submission pages (and plugin pages)
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    watcher = PageWatcher().attach(page)
    ids: dict[Path, set[str]] = {}  # element ids of each page, read once
    links = images = 0
    for path in pages:
        watcher.reset()
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        images += check_images(page, path)
        links += check_links(page, path, built["site"], ids)
        assert not watcher.problems(), f"{path.name}: {watcher.problems()}"
    page.close()
    assert links > len(pages) and images > 0


def check_images(page, path: Path) -> int:
    """Every <img> is a local file that decodes to a picture of nonzero width; returns how many there are."""
    loaded = page.evaluate("""() => Promise.all(Array.from(document.images, img => {
        img.loading = 'eager';
        return img.decode().then(() => [img.src, img.naturalWidth], () => [img.src, 0]);
    }))""")
    for src, width in loaded:
        assert local_target(src) is not None, f"{path.name}: image {src} is not a local file"
        assert width > 0, f"{path.name}: image {src} did not load"
    return len(loaded)


def check_links(page, path: Path, site: Path, ids: dict[Path, set[str]]) -> int:
    """Every <a href> is a site file that exists (and holds the #fragment), or an http(s)/mailto address."""
    count = 0
    for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
        target = local_target(href)
        if target is None:
            assert href.startswith(("https://", "http://", "mailto:")), f"{path.name}: link {href}"
            continue
        file, fragment = target
        assert file.is_file(), f"{path.name}: link {href} points to a missing file"
        assert file.resolve().is_relative_to(site.resolve()), f"{path.name}: link {href} leaves the site"
        if fragment and file.suffix == ".html":
            if file not in ids:
                ids[file] = set(re.findall(r'\sid="([^"]+)"', file.read_text(encoding="utf-8")))
            assert fragment in ids[file], f"{path.name}: link {href}: no element #{fragment} there"
        count += 1
    return count


# ----------------------------------------------------------------------------------------------------------------------
# the table page


def visible_rows(page) -> list[dict]:
    """The table's rows a user sees, in order, as their data-* attributes."""
    return page.eval_on_selector_all("section.board table.leaderboard tbody tr.lb-row", """rows => rows
        .filter(r => !r.hidden && r.getClientRects().length > 0)
        .map(r => Object.assign({}, r.dataset))""")


def visible_columns(page) -> list[str]:
    return page.eval_on_selector_all("section.board table.leaderboard thead th[data-column]", """ths => ths
        .filter(th => !th.hidden && th.getClientRects().length > 0).map(th => th.dataset.column)""")


def row_key(row: dict, expected: dict) -> tuple[str, str]:
    """The expected-table key of a DOM row (its data-submission may be the submission's id or its name)."""
    ids = {want["submission"]: sub_id for (sub_id, _), want in expected.items()}
    key = (ids.get(row["submission"], row["submission"]), row["variant"])
    assert key in expected, f"row {key} is not a variant of any submission"
    return key


def row_count(page) -> tuple[int, int]:
    counter = page.locator("section.board .row-count")
    visible, total = int(counter.get_attribute("data-visible")), int(counter.get_attribute("data-total"))
    assert counter.inner_text().strip() == f"{visible} of {total} rows"
    return visible, total


def test_one_row_per_submitted_variant(board_page: Path, browser, expected: dict) -> None:
    page, watcher = open_page(browser, board_page)
    rows = visible_rows(page)
    assert len(rows) == len(expected) == 8  # 4 variants × 2 valid submissions; the rejected ones are not in the table
    assert {row_key(r, expected) for r in rows} == set(expected)
    assert row_count(page) == (8, 8)
    for row in rows:
        want = expected[row_key(row, expected)]
        assert (row["regularizer"], row["family"]) == (want["regularizer"], want["family"])
    # the variant whose training failed keeps its row, and its cells say so instead of holding a number
    failed = page.eval_on_selector_all('section.board tbody tr.lb-row[data-regularizer="crashes"]', """rows => rows
        .map(r => Array.from(r.querySelectorAll('td[data-evaluator], td[data-column*="--"]'),
                             td => [td.hasAttribute('data-value'), td.textContent.trim()]))""")
    assert len(failed) == 2 and all(cells for cells in failed)
    assert all(not valued and text.startswith("training failed") for cells in failed for valued, text in cells)
    assert not watcher.problems()
    page.close()


def metric_header(page, key: tuple[str, str]):
    return page.locator(f'section.board table.leaderboard thead th[data-evaluator="{key[0]}"][data-metric="{key[1]}"]')


def test_sorting_a_metric_column_orders_rows_by_the_mean(board_page: Path, browser, expected: dict) -> None:
    page, watcher = open_page(browser, board_page)
    for metric in (ACCURACY, PIXEL):
        header = metric_header(page, metric)
        assert header.get_attribute("data-best") == "high"  # both headlines: higher is better
        means = {key: row["means"][metric] for key, row in expected.items()}
        known = sorted((v for v in means.values() if v is not None), reverse=True)
        missing = [None] * sum(v is None for v in means.values())
        header.locator("button.sort").click()
        assert header.get_attribute("aria-sort") == "descending"  # first click: best first
        order = [means[row_key(r, expected)] for r in visible_rows(page)]
        assert order[:len(known)] == pytest.approx(known)
        assert order[len(known):] == missing  # rows without a value go last
        header.locator("button.sort").click()
        assert header.get_attribute("aria-sort") == "ascending"
        order = [means[row_key(r, expected)] for r in visible_rows(page)]
        assert order[:len(known)] == pytest.approx(known[::-1])
        assert order[len(known):] == missing
    # without a value: crashes (both submissions) on both metrics, and the hostile gaussian_noise on pixel_perturbation
    assert [sum(row["means"][m] is None for row in expected.values()) for m in (ACCURACY, PIXEL)] == [2, 3]
    assert not watcher.problems()
    page.close()


def test_sorting_the_variant_column_orders_rows_alphabetically(table_page: Path, browser, expected: dict) -> None:
    page, watcher = open_page(browser, table_page)
    header = page.locator('section.board table.leaderboard thead th[data-column="variant"]')
    header.locator("button.sort").click()
    assert header.get_attribute("aria-sort") == "ascending"
    variants = [r["variant"] for r in visible_rows(page)]
    assert [v.lower() for v in variants] == sorted(row["variant"].lower() for row in expected.values())
    assert not watcher.problems()
    page.close()


def matches(row: dict, text: str) -> bool:
    fields = (row["variant"], row["regularizer"], row["family"], row["submission"])
    return any(text.lower() in f.lower() for f in fields)


def test_free_text_filter_hides_the_rows_that_do_not_match(board_page: Path, browser, expected: dict) -> None:
    page, watcher = open_page(browser, board_page)
    box = page.locator("section.board input.filter-text")
    for text, count in (("gaussian", 2), ("TINY", 4), ("noise", 2), ("gradient", 2), ("crash", 2),
                        ("no such variant", 0)):
        box.fill(text)
        want = {key for key, row in expected.items() if matches(row, text)}
        assert len(want) == count
        assert {row_key(r, expected) for r in visible_rows(page)} == want
        assert row_count(page) == (count, len(expected))
    box.fill("")
    assert len(visible_rows(page)) == len(expected)
    assert not watcher.problems()
    page.close()


def test_family_filter_shows_one_family_and_combines_with_the_text_filter(board_page: Path, browser,
                                                                          expected: dict) -> None:
    page, watcher = open_page(browser, board_page)
    select = page.locator("section.board select.filter-family")
    options = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    families = {row["family"] for row in expected.values()}
    assert options[0] == "" and set(options[1:]) == families == {"baseline", "gradient penalty", "noise", "other"}
    for family in families:
        select.select_option(family)
        want = {key for key, row in expected.items() if row["family"] == family}
        assert {row_key(r, expected) for r in visible_rows(page)} == want
        assert row_count(page) == (len(want), len(expected))
    select.select_option("baseline")
    page.locator("section.board input.filter-text").fill("tiny")
    want = {key for key, row in expected.items() if row["family"] == "baseline" and matches(row, "tiny")}
    assert {row_key(r, expected) for r in visible_rows(page)} == want and len(want) == 1
    select.select_option("")
    page.locator("section.board input.filter-text").fill("")
    assert row_count(page) == (len(expected), len(expected))
    assert not watcher.problems()
    page.close()


def test_evaluator_filter_hides_rows_without_its_results_and_other_evaluators_columns(board_page: Path, browser,
                                                                                      expected: dict) -> None:
    page, watcher = open_page(browser, board_page)
    select = page.locator("section.board select.filter-evaluator")
    options = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert options[0] == "" and set(options[1:]) == {"accuracy", "pixel_perturbation"}
    for evaluator in ("pixel_perturbation", "accuracy"):
        select.select_option(evaluator)
        want = {key for key, row in expected.items() if evaluator in row["evaluators"]}
        assert {row_key(r, expected) for r in visible_rows(page)} == want
        assert row_count(page) == (len(want), len(expected))
        shown = page.eval_on_selector_all("section.board table.leaderboard thead th[data-evaluator]", """ths => ths
            .filter(th => !th.hidden && th.getClientRects().length > 0).map(th => th.dataset.evaluator)""")
        assert shown and set(shown) <= {evaluator, "accuracy"}
    # the hostile submission has no pixel-perturbation results for gaussian_noise: that one row is hidden
    select.select_option("pixel_perturbation")
    assert row_count(page) == (5, 8)  # and crashes has no results at all
    select.select_option("accuracy")
    assert row_count(page) == (6, 8)
    select.select_option("")
    assert row_count(page) == (8, 8)
    assert not watcher.problems()
    page.close()


def test_column_chooser_hides_and_shows_a_metric_column(board_page: Path, browser) -> None:
    page, watcher = open_page(browser, board_page)
    column = metric_header(page, PIXEL).get_attribute("data-column")
    assert column in visible_columns(page)
    page.locator("section.board details.column-chooser summary").click()
    box = page.locator(f'section.board details.column-chooser input[type=checkbox][data-column="{column}"]')
    assert box.is_checked()
    box.uncheck()
    assert column not in visible_columns(page)
    cells = page.locator(f'section.board table.leaderboard tbody td[data-column="{column}"]')
    assert cells.count() == 8 and not any(cells.nth(i).is_visible() for i in range(cells.count()))
    box.check()
    assert column in visible_columns(page) and cells.first.is_visible()
    assert not watcher.problems()
    page.close()


def test_page_does_not_scroll_sideways_at_1400_px(board_page: Path, browser) -> None:
    page, watcher = open_page(browser, board_page)
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert page.locator("section.board .fit-note").is_hidden()  # nothing had to be hidden to fit
    assert not watcher.problems()
    page.close()


def test_a_narrow_window_hides_columns_to_fit_and_says_which(table_page: Path, browser) -> None:
    page = browser.new_page(viewport={"width": 800, "height": HEIGHT})
    watcher = PageWatcher().attach(page)
    page.goto(table_page.as_uri())
    note = page.locator("section.board .fit-note")
    hidden = note.get_attribute("data-hidden-columns").split()
    assert note.is_visible() and note.inner_text().startswith(f"{len(hidden)} column(s) hidden")
    assert hidden and "accuracy--accuracy" not in hidden and "accuracy--accuracy" in visible_columns(page)
    assert not set(hidden) & set(visible_columns(page))
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.locator("section.board details.column-chooser summary").click()
    box = page.locator(f'section.board details.column-chooser input[data-column="{hidden[0]}"]')
    assert not box.is_checked()
    box.check()  # the user can still choose it (and then scroll)
    assert hidden[0] in visible_columns(page)
    assert not watcher.problems()
    page.close()


def cells_of(page, column: str) -> list[dict]:
    """For each visible row, in order: its data-* attributes and whether its cell in ``column`` is marked best."""
    return page.eval_on_selector_all("section.board table.leaderboard tbody tr.lb-row", """(rows, column) => rows
        .filter(r => !r.hidden)
        .map(r => {
            const cell = r.querySelector(`[data-column="${column}"]`);
            return Object.assign({best: cell.hasAttribute('data-best-cell') && cell.classList.contains('best')},
                                 r.dataset);
        })""", column)


def test_the_best_mean_of_each_headline_column_is_marked(table_page: Path, browser, expected: dict) -> None:
    page, watcher = open_page(browser, table_page)
    for metric in (ACCURACY, PIXEL):  # both higher-is-better
        column = metric_header(page, metric).get_attribute("data-column")
        means = {key: row["means"][metric] for key, row in expected.items()}
        top = max(v for v in means.values() if v is not None)
        marked = {row_key(c, expected) for c in cells_of(page, column) if c["best"]}
        assert marked == {key for key, v in means.items() if v is not None and v >= top - 1e-12}, metric
    assert not watcher.problems()
    page.close()


def test_secondary_columns_are_hidden_until_chosen(table_page: Path, browser, built: dict) -> None:
    results = load_submission(built["honest"]).results
    metrics = results.loc[results["status"] == "ok", ["evaluator", "metric", "headline"]].drop_duplicates()
    page, watcher = open_page(browser, table_page)
    secondary = page.eval_on_selector_all("section.board table.leaderboard thead th[data-secondary]",
                                          "ths => ths.map(th => [th.dataset.column, th.hidden, th.dataset.evaluator,"
                                          " th.dataset.metric])")
    assert {(e, m) for _, _, e, m in secondary if e} == {
        (e, m) for e, m, headline in metrics.itertuples(index=False) if not headline}  # the non-headline metrics
    assert "family" in {c for c, *_ in secondary} and all(hidden for _, hidden, *_ in secondary)
    shown = visible_columns(page)
    assert not {c for c, *_ in secondary} & set(shown)
    assert shown[:3] == ["variant", "submission", "seeds"] and len(shown) == 5  # + accuracy and the pixel headline
    page.locator("section.board details.column-chooser summary").click()
    page.locator('section.board details.column-chooser input[data-column="family"]').check()
    assert "family" in visible_columns(page)
    families = page.eval_on_selector_all('section.board tbody tr.lb-row td[data-column="family"]',
                                         "tds => tds.map(td => [td.hidden, td.textContent.trim(), "
                                         "td.parentElement.dataset.family])")
    assert len(families) == 8 and all(not hidden and text == family for hidden, text, family in families)
    assert not watcher.problems()
    page.close()


def test_without_javascript_every_row_is_listed(table_page: Path, browser, expected: dict) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.goto(table_page.as_uri())
    rows = page.eval_on_selector_all("section.board table.leaderboard tbody tr.lb-row",
                                     "rows => rows.filter(r => !r.hidden).map(r => Object.assign({}, r.dataset))")
    assert {row_key(r, expected) for r in rows} == set(expected) and len(rows) == 8
    context.close()


def test_table_page_shows_a_saliency_gallery_curves_and_a_scatter(table_page: Path, browser, expected: dict) -> None:
    page, watcher = open_page(browser, table_page)
    gallery = page.eval_on_selector_all("section#gallery figure[data-variant]",
                                        "figs => figs.map(f => [f.dataset.variant, f.querySelectorAll('img').length])")
    with_maps = sorted(row["variant"] for row in expected.values() if PIXEL[0] in row["evaluators"])
    assert sorted(v for v, _ in gallery) == with_maps and len(with_maps) == 5  # one grid per row that has saliency
    assert all(n >= 1 for _, n in gallery)
    curves = page.eval_on_selector_all("section#curves img", "imgs => imgs.map(i => i.getAttribute('src'))")
    assert {Path(c).stem for c in curves} >= {"curve-pixel-perturbation-least-salient-first",
                                                "curve-pixel-perturbation-most-salient-first"}
    assert page.locator("section#scatter img").count() >= 1  # accuracy against the pixel-perturbation headline
    assert not watcher.problems()
    page.close()


def test_index_lists_each_valid_submission_as_unverified(built: dict, browser) -> None:
    page, watcher = open_page(browser, built["index"])
    badges = page.eval_on_selector_all("#submissions span.badge[data-verification]",
                                       "bs => bs.map(b => b.dataset.verification)")
    assert badges == ["unverified", "unverified"]  # neither was re-run with `gibench verify`
    assert not watcher.problems()
    page.close()


# ----------------------------------------------------------------------------------------------------------------------
# hostile input


def test_javascript_link_is_rejected_by_validation_and_listed_as_rejected(built: dict, browser) -> None:
    with pytest.raises(SubmissionError, match="links"):
        validate_submission(built["rejected"])
    page, watcher = open_page(browser, built["index"])
    box = page.locator("#rejected")
    assert built["rejected"].name in box.inner_text()
    assert page.locator('a[href^="javascript:"]').count() == 0
    assert not watcher.problems()
    page.close()


def test_control_characters_are_rejected_and_never_reach_the_pages(built: dict, browser) -> None:
    with pytest.raises(SubmissionError, match="U\\+202E"):
        validate_submission(built["invisible"])
    for path in built["site"].rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert "\u202e" not in text and "\x00" not in text, path
    page, watcher = open_page(browser, built["index"])
    assert built["invisible"].name in page.locator("#rejected").inner_text()
    assert not watcher.problems()
    page.close()


def test_xss_payloads_in_every_free_text_field_stay_inert(built: dict, browser, table_page: Path) -> None:
    sub_id = built["hostile"].name
    assert validate_submission(built["hostile"]).metadata.name == XSS["name"]  # the validator accepts the text
    pages = [built["index"], table_page, built["site"] / "submissions" / f"{sub_id}.html"]
    for path in pages:
        page, watcher = open_page(browser, path)
        assert page.evaluate("typeof window.__xss") == "undefined", f"{path.name}: a payload ran"
        assert not watcher.dialogs and not watcher.failed_requests, f"{path.name}: {watcher.problems()}"
        assert not page.evaluate("""() => Array.from(document.querySelectorAll('*')).some(el =>
            Array.from(el.attributes).some(a => /^on/i.test(a.name)))"""), f"{path.name}: an on* attribute was injected"
        scripts = page.eval_on_selector_all("script", "s => s.map(x => x.textContent)")
        assert not any("__xss" in s for s in scripts), f"{path.name}: a payload became a script"
        text = page.evaluate("document.body.textContent")
        assert XSS["name"] in text, f"{path.name}: the name is not shown as text"
        if path != pages[2]:  # the tables show the variant label
            assert XSS["variant"] in text, f"{path.name}: the variant label is not shown as text"
        assert not watcher.problems()
        page.close()
    page, _ = open_page(browser, pages[2])
    assert XSS["name"] in page.title()  # the title shows the name as text
    text = page.evaluate("document.body.textContent")
    for field in ("author", "description", "suite", "device"):
        assert XSS[field] in text, f"the {field} is not shown as text"
    shown_suites = [json.loads(t) for t in page.eval_on_selector_all("pre", "ps => ps.map(p => p.textContent)")
                    if t.lstrip().startswith("{")]  # each suite as JSON text, <, > and & written as \u escapes
    assert XSS["suite description"] in [suite.get("description") for suite in shown_suites]
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    assert XSS["link"] in hrefs  # the whole payload stayed inside one href attribute
    page.close()


def test_xss_payloads_stay_inert_in_the_figures_opened_on_their_own(built: dict, browser) -> None:
    """An SVG opened as a page runs its scripts and on* handlers; the labels drawn into the figures must not add any."""
    from xml.etree import ElementTree

    figures = sorted(built["site"].rglob("*.svg"))
    assert figures  # the curves and scatter plots
    page = browser.new_page()
    watcher = PageWatcher().attach(page)
    labelled = 0
    for path in figures:
        tree = ElementTree.parse(path)
        tags = {element.tag.rsplit("}", 1)[-1] for element in tree.iter()}
        assert not tags & {"script", "foreignObject", "iframe"}, f"{path.name}: {sorted(tags)}"
        assert not any(name.lower().startswith("on") for element in tree.iter() for name in element.attrib), path.name
        watcher.reset()
        page.goto(path.as_uri())
        assert page.evaluate("typeof window.__xss") == "undefined", f"{path.name}: a payload ran"
        assert not watcher.problems(), f"{path.name}: {watcher.problems()}"
        labelled += "Evil lab" in path.read_text(encoding="utf-8")
    page.close()
    assert labelled  # the hostile submission's name is drawn (as text) into at least one figure


# ----------------------------------------------------------------------------------------------------------------------
# screenshots for the docs


def test_screenshot_script_writes_the_index_and_a_table_page(built: dict, browser, tmp_path: Path) -> None:
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("site_screenshots",
                                                  Path(__file__).parents[1] / "scripts" / "site_screenshots.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.screenshots(built["index"], tmp_path, browser)
    assert [p.name for p in written] == ["index.png", "table.png", "gallery.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.size == (WIDTH, HEIGHT)
            assert len(np.unique(np.asarray(image.convert("L")))) > 10  # not a blank page
        assert path.stat().st_size < 300_000
    assert re.fullmatch(r"tables/[a-z0-9-]+\.html", script.first_table(built["index"]).relative_to(
        built["site"]).as_posix())
