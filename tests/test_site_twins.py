"""A ReLU table and its X-DNN twin (the same backbone with ``bias: false``) are linked both ways and shown
side by side: the table model, the numbers of the section, the rendered pages and, in a real browser, the section.

One hand-written submission (no training) holds three tables of ``gibench_cnn`` on mnist_subset: ReLU, its X-DNN
twin, and softplus (no twin). Every expected number is computed here from :data:`VALUES` (means, the Student-t
interval from SciPy), independently of the site's code.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from gibench.api import registry
from gibench.leaderboard.tables import aggregate, make_tables, metric_info
from gibench.leaderboard.twins import twin_section
from gibench.submissions.build import load_submission
from tests.site_helpers import PageWatcher, chromium_path, launch, submit_rows

RELU, XDNN, SOFTPLUS = '{"act": "relu"}', '{"act": "relu", "bias": false}', '{"act": "softplus"}'
ACCURACY = ("accuracy", "accuracy")
AREA = ("pixel_perturbation", "area_least_salient_normalized")  # the headline
SECONDARY = ("pixel_perturbation", "area_most_salient")  # not a headline: not in the section
#: backbone_params -> variant -> (evaluator, metric) -> value by seed. gradient_norm's X-DNN has one seed;
#: gaussian_noise was trained on the biased net only.
VALUES = {
    RELU: {"erm": {ACCURACY: [0.91, 0.93], AREA: [0.60, 0.64], SECONDARY: [0.20, 0.22]},
           "gradient_norm": {ACCURACY: [0.88, 0.90], AREA: [0.70, 0.72], SECONDARY: [0.18, 0.19]},
           "gaussian_noise": {ACCURACY: [0.90, 0.92], AREA: [0.61, 0.65], SECONDARY: [0.21, 0.21]}},
    XDNN: {"erm": {ACCURACY: [0.89, 0.90], AREA: [0.66, 0.70], SECONDARY: [0.25, 0.27]},
           "gradient_norm": {ACCURACY: [0.85], AREA: [0.75], SECONDARY: [0.2]}},
    SOFTPLUS: {"erm": {ACCURACY: [0.92, 0.94], AREA: [0.58, 0.60], SECONDARY: [0.2, 0.2]}},
}
VARIANT = {"erm": "erm", "gradient_norm": "gradient_norm(weight=0.01)", "gaussian_noise": "gaussian_noise(sigma=0.1)"}


def result_rows() -> list[dict]:
    """results.csv rows of :data:`VALUES`, with the installed evaluators' declarations."""
    rows = []
    for backbone_params, variants in VALUES.items():
        for variant, metrics in variants.items():
            params = {"erm": "{}", "gradient_norm": '{"weight": 0.01}', "gaussian_noise": '{"sigma": 0.1}'}[variant]
            for (evaluator, metric), by_seed in metrics.items():
                declared = next(m for m in registry.evaluators.get(evaluator).metrics if m.name == metric)
                for seed, value in enumerate(by_seed):
                    rows.append({
                        "job_hash": f"{backbone_params}-{variant}-{seed}", "dataset": "mnist_subset",
                        "backbone": "gibench_cnn", "backbone_params": backbone_params, "regularizer": variant,
                        "regularizer_params": params, "variant": VARIANT[variant], "seed": seed,
                        "evaluator": evaluator, "evaluator_version": registry.evaluators.get(evaluator).version,
                        "evaluator_params": "{}", "metric": metric, "value": value,
                        "higher_is_better": declared.higher_is_better, "headline": declared.headline,
                        "status": "ok", "reason": "", "regularizer_distribution": "gibench",
                        "regularizer_plugin_version": "0.1.0", "evaluator_distribution": "gibench",
                        "evaluator_plugin_version": "0.1.0"})
    return rows


def submit(root: Path, rows: list[dict]) -> Path:
    return submit_rows(root / "runs", root / "submissions", {"name": "Twins", "authors": ["A. Person"]}, rows,
                       {"name": "twins", "seeds": [0, 1]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return submit(tmp_path_factory.mktemp("twins"), result_rows())


@pytest.fixture(scope="module")
def tables(folder: Path) -> dict:
    loaded = load_submission(folder)
    frame = loaded.results.assign(submission_id=loaded.submission.id, submission=loaded.submission.metadata.name)
    found = make_tables(aggregate(frame), metric_info([loaded]), {"erm": "baseline"})
    return {"all": found, **{t.backbone_params: t for t in found}}


def mean(params: str, variant: str, key: tuple[str, str]) -> float:
    return statistics.mean(VALUES[params][variant][key])


def half_width(values: list[float]) -> float:
    return stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "−")


# ----------------------------------------------------------------------------------------------------------------------
# the table model


def test_the_twin_relation_is_recorded_both_ways(tables: dict) -> None:
    relu, xdnn, softplus = tables[RELU], tables[XDNN], tables[SOFTPLUS]
    assert (relu.twin, xdnn.twin, softplus.twin) == (xdnn.anchor, relu.anchor, "")
    assert (relu.xdnn, xdnn.xdnn, softplus.xdnn) == (False, True, False)


def test_bias_true_pairs_too_and_other_options_must_match(tmp_path: Path) -> None:
    rows = [r | {"backbone_params": {RELU: '{"act": "relu", "bias": true}', XDNN: XDNN,
                                     SOFTPLUS: '{"act": "softplus", "bias": false}'}[r["backbone_params"]]}
            for r in result_rows()]
    loaded = load_submission(submit(tmp_path, rows))
    frame = loaded.results.assign(submission_id=loaded.submission.id, submission=loaded.submission.metadata.name)
    by = {t.backbone_params: t for t in make_tables(aggregate(frame), metric_info([loaded]))}
    assert by['{"act": "relu", "bias": true}'].twin == by[XDNN].anchor
    assert by[XDNN].twin == by['{"act": "relu", "bias": true}'].anchor
    # an X-DNN softplus net has no biased softplus table here (act differs from the ReLU one): no twin
    assert by['{"act": "softplus", "bias": false}'].xdnn and by['{"act": "softplus", "bias": false}'].twin == ""


def test_the_section_has_the_shared_variants_and_exact_differences(tables: dict) -> None:
    section = twin_section(tables[RELU], tables["all"])
    assert section is not None and section.heading == "Beside its X-DNN twin"
    assert (section.twin_anchor, section.twin_is_xdnn) == (tables[XDNN].anchor, True)
    assert [m.label for m in section.metrics] == ["accuracy", "pixel_perturbation · area_least_salient_normalized"]
    assert [r.variant for r in section.rows] == ["erm", "gradient_norm(weight=0.01)"]  # gaussian_noise: biased only
    assert (section.only_here, section.only_there) == (1, 0)
    for row, variant in zip(section.rows, ("erm", "gradient_norm")):
        for cell, key in zip(row.cells, (ACCURACY, AREA)):
            difference = mean(XDNN, variant, key) - mean(RELU, variant, key)
            assert cell.delta_value == pytest.approx(difference, abs=1e-12)
            assert cell.delta == signed(difference)
    erm_accuracy, gn_accuracy = section.rows[0].cells[0], section.rows[1].cells[0]
    assert (erm_accuracy.delta, gn_accuracy.delta) == ("−0.0250", "−0.0400")  # 0.895 − 0.92, 0.85 − 0.89
    biased = VALUES[RELU]["erm"][ACCURACY]
    assert erm_accuracy.biased == f"{statistics.mean(biased):.4f} ± {half_width(biased):.4f}" == "0.9200 ± 0.1271"
    assert not erm_accuracy.biased_one_seed and not erm_accuracy.xdnn_one_seed
    assert gn_accuracy.xdnn == "0.8500" and gn_accuracy.xdnn_one_seed and not gn_accuracy.biased_one_seed
    assert not section.one_seed_everywhere


def test_the_x_dnn_side_mirrors_it_and_a_table_without_twin_has_none(tables: dict) -> None:
    mirror = twin_section(tables[XDNN], tables["all"])
    direct = twin_section(tables[RELU], tables["all"])
    assert mirror.heading == "Beside its biased twin" and mirror.twin_anchor == tables[RELU].anchor
    assert not mirror.twin_is_xdnn and (mirror.only_here, mirror.only_there) == (0, 1)
    assert mirror.rows == direct.rows and mirror.metrics == direct.metrics  # biased first, X-DNN second, both sides
    assert twin_section(tables[SOFTPLUS], tables["all"]) is None


# ----------------------------------------------------------------------------------------------------------------------
# the pages


@pytest.fixture(scope="module")
def site(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gibench.leaderboard.build import build_site

    return build_site(folder.parent, tmp_path_factory.mktemp("site") / "site").parent


def test_the_pages_link_the_twins_and_show_the_section(site: Path, tables: dict) -> None:
    relu, xdnn, softplus = tables[RELU], tables[XDNN], tables[SOFTPLUS]
    index = (site / "index.html").read_text(encoding="utf-8")
    assert (f'<a class="twin-link" data-twin="{xdnn.anchor}" href="tables/{xdnn.anchor}.html#twin">X-DNN twin →</a>'
            in index)
    assert (f'<a class="twin-link" data-twin="{relu.anchor}" href="tables/{relu.anchor}.html#twin">biased twin →</a>'
            in index)
    assert index.count('class="twin-link"') == 2
    page = (site / "tables" / f"{relu.anchor}.html").read_text(encoding="utf-8")
    assert f'<section id="twin" class="twins" data-twin="{xdnn.anchor}" data-twin-role="xdnn">' in page
    assert "<h2>Beside its X-DNN twin</h2>" in page and "every bias removed and no BatchNorm" in page
    assert f'<a class="twin-page" data-twin="{xdnn.anchor}" href="{xdnn.anchor}.html">{xdnn.title}</a>' in page
    assert page.count('<tr class="twin-row"') == 2
    assert '<td class="num delta" data-column="accuracy--accuracy" data-net="delta" data-value="' in page
    assert ">−0.0250</td>" in page and ">−0.0400</td>" in page
    assert page.count("one seed: no interval</span>") == 2  # gradient_norm's X-DNN accuracy and area
    assert "Left out: 1\n    variant(s) only this table has, 0 only its twin has." in page
    other = (site / "tables" / f"{xdnn.anchor}.html").read_text(encoding="utf-8")
    assert "<h2>Beside its biased twin</h2>" in other and f'href="{relu.anchor}.html"' in other
    alone = (site / "tables" / f"{softplus.anchor}.html").read_text(encoding="utf-8")
    assert 'id="twin"' not in alone and "Beside its" not in alone


# ----------------------------------------------------------------------------------------------------------------------
# in a browser


@pytest.mark.browser
def test_a_table_page_shows_its_twin_section_and_leads_to_the_twin(site: Path, tables: dict) -> None:
    if chromium_path() is None:
        pytest.skip("needs the system Chromium: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    relu, xdnn = tables[RELU], tables[XDNN]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        watcher = PageWatcher().attach(page)
        page.goto(site.joinpath("index.html").as_uri())
        page.locator(f'a.twin-link[data-twin="{xdnn.anchor}"]').click()
        assert page.url.endswith(f"tables/{xdnn.anchor}.html#twin")
        section = page.locator("section#twin")
        assert section.is_visible() and section.get_attribute("data-twin") == relu.anchor
        assert section.locator("h2").inner_text() == "Beside its biased twin"
        assert section.locator("tr.twin-row").count() == 2
        assert section.locator("tr.twin-row").first.get_attribute("data-variant") == "erm"
        assert section.locator('tr.twin-row >> nth=0 >> td[data-column="accuracy--accuracy"][data-net="delta"]'
                               ).inner_text() == "−0.0250"
        section.locator("a.twin-page").click()
        assert page.url.endswith(f"tables/{relu.anchor}.html")
        assert page.locator("section#twin tr.twin-row").count() == 2
        assert page.locator("section#twin h2").inner_text() == "Beside its X-DNN twin"
        assert not watcher.problems()
        browser.close()


def test_the_downloads_and_boards_name_the_twin(site: Path, tables: dict) -> None:
    relu, xdnn, softplus = tables[RELU], tables[XDNN], tables[SOFTPLUS]
    for table, twin, is_x in ((relu, xdnn.anchor, False), (xdnn, relu.anchor, True), (softplus, "", False)):
        download = json.loads((site / "tables" / f"{table.anchor}.json").read_text(encoding="utf-8"))
        assert (download["twin"], download["xdnn"]) == (twin, is_x)
    index = (site / "index.html").read_text(encoding="utf-8")
    assert f'data-table="{relu.anchor}" data-twin="{xdnn.anchor}" data-xdnn="false">' in index
    assert f'data-table="{xdnn.anchor}" data-twin="{relu.anchor}" data-xdnn="true">' in index
    assert f'data-table="{softplus.anchor}">' in index


@pytest.mark.slow
def test_the_standard_reference_shows_each_relu_table_beside_its_x_dnn_twin() -> None:
    """The shipped standard reference (ReLU gibench_cnn and its X-DNN under the same regularizers) pairs
    the two tables of mnist_subset, blockmnist and gaussian_mixture, with every shared variant in the section."""
    check_reference_twins(Path(__file__).parents[1] / "submissions")


def check_reference_twins(submissions: Path) -> None:
    from gibench.leaderboard.build import _families
    from gibench.leaderboard.tables import combine

    loaded = [load_submission(f) for f in sorted(submissions.iterdir()) if (f / "submission.json").is_file()]
    standard = [s for s in loaded if {r.suite_name for r in s.submission.provenance.runs} == {"standard"}]
    if not standard or not (standard[0].results["backbone_params"] == XDNN).any():
        pytest.skip("the shipped standard reference predates the X-DNN backbones")
    found = make_tables(aggregate(combine(standard)), metric_info(standard), _families())
    for dataset in ("mnist_subset", "blockmnist", "gaussian_mixture"):
        relu = next(t for t in found if t.dataset == dataset and t.backbone_params == RELU)
        section = twin_section(relu, found)
        assert section is not None and section.heading == "Beside its X-DNN twin"
        x_table = next(t for t in found if t.anchor == relu.twin)
        assert x_table.backbone_params == XDNN and x_table.twin == relu.anchor
        shared = {r.variant for r in relu.rows} & {r.variant for r in x_table.rows}
        assert {r.variant for r in section.rows} == shared and "erm" in shared
        assert section.metrics[0].label == "accuracy"
        for row in section.rows:
            biased = next(r for r in relu.rows if r.variant == row.variant).cells[0].sort_value
            xdnn = next(r for r in x_table.rows if r.variant == row.variant).cells[0].sort_value
            assert row.cells[0].delta_value == pytest.approx(xdnn - biased, abs=1e-12)
