"""The static site: tables per dataset × backbone, numbers, Δ vs erm, escaping, downloads, rejected submissions."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gibench.errors import SubmissionError
from gibench.leaderboard.build import build_site, fmt
from gibench.provenance import environment_info, suite_hash
from gibench.submission import build_submission

EVIL = "<script>alert(1)</script>"
LINEAR = "mnist-subset--gibench-linear"
CNN = "mnist-subset--gibench-cnn-act-softplus"
# (variant, regularizer params, seed) -> {(evaluator, metric): value}; NaN = failed
LAB_A = {
    ("erm", "{}"): {"accuracy": [0.90, 0.92, 0.91], "auc": [0.30, 0.32, 0.31], "drop": [0.1, 0.2, 0.3]},
    ("gradient_norm(weight=0.01)", '{"weight": 0.01}'): {"accuracy": [0.88, 0.86, 0.87], "auc": [0.25, 0.27, 0.26],
                                                         "drop": [0.2, 0.2, 0.2]},
}
LAB_B = {
    ("erm", "{}"): {"accuracy": [0.95, 0.97], "auc": [0.40, 0.42], "ratio": [2.0, 4.0]},
    ("anti_score_matching(weight=1.0)", '{"weight": 1.0}'): {"accuracy": [0.93, 0.94], "auc": [0.35, float("nan")]},
}
METRICS = {  # metric -> (evaluator, higher_is_better, headline)
    "accuracy": ("accuracy", True, True), "auc": ("pixel_perturbation", False, True),
    "drop": ("pixel_perturbation", True, False), "ratio": ("density_ratio", True, True),
}


def long_table(spec: dict, backbone: str = "gibench_linear", backbone_params: str = "{}", prefix: str = "") -> list:
    rows = []
    for (variant, params), metrics in spec.items():
        regularizer = variant.split("(")[0]
        for metric, values in metrics.items():
            evaluator, higher, headline = METRICS[metric]
            for seed, value in enumerate(values):
                rows.append({
                    "job_hash": f"{prefix}{backbone}-{variant}-{seed}", "dataset": "mnist_subset", "backbone": backbone,
                    "backbone_params": backbone_params, "regularizer": regularizer, "regularizer_params": params,
                    "variant": variant, "seed": seed, "evaluator": evaluator, "evaluator_version": "1",
                    "evaluator_params": "{}", "metric": metric, "value": value, "higher_is_better": higher,
                    "headline": headline, "status": "failed" if np.isnan(value) else "ok",
                    "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
                    "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0"})
    return rows


def submit(root: Path, name: str, rows: list, description: str = "") -> Path:
    runs_dir = root / f"runs-{len(list(root.glob('runs-*')))}"
    runs_dir.mkdir()
    suite = {"name": "tiny", "seeds": [0, 1, 2]}
    manifest = {"runs": [{
        "suite_name": "tiny", "suite_hash": suite_hash(suite), "suite": suite,
        "jobs": sorted({r["job_hash"] for r in rows}), "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T01:00:00+00:00", "environment": environment_info("cpu"),
        "plugins": {"regularizers": {"erm": {"distribution": "gibench", "version": "0.1.0"}}}}]}
    (runs_dir / "manifest.json").write_text(json.dumps(manifest))
    metadata = {"name": name, "authors": [f"{name} author"], "description": description,
                "links": ["https://example.org/code"]}
    return build_submission(runs_dir, root / "submissions", metadata, results=pd.DataFrame(rows))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lb")
    a = submit(root, "Lab A", long_table(LAB_A))
    cnn = long_table({("erm", "{}"): {"auc": [0.5]}}, "gibench_cnn", '{"act": "softplus"}')
    b = submit(root, EVIL, long_table(LAB_B) + cnn, description=f"desc {EVIL}")
    index = build_site(root / "submissions", root / "site")
    return {"root": root, "index": index, "a": a.name, "b": b.name, "html": index.read_text()}


class Tables(HTMLParser):
    """Header and body cell texts of the first table (and of the agreement table, as ``<id>:agreement``) of every
    <section>, by the section's id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.section, self.part, self.cell, self.key = "", "", None, ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "section":
            self.section = self.key = attrs.get("id", "")
        elif tag == "table":
            self.key = f"{self.section}:agreement" if attrs.get("class") == "agreement" else self.section
            self.tables[self.key] = {"head": [], "rows": [], "values": []}
        elif tag in ("thead", "tbody"):
            self.part = tag
        elif tag == "tr" and self.part == "tbody":
            self.tables[self.key]["rows"].append([])
            self.tables[self.key]["values"].append([])
        elif tag in ("th", "td"):
            self.cell = []
            if self.part == "tbody":
                self.tables[self.key]["values"][-1].append(attrs.get("data-value"))

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self.cell is not None:
            text = " ".join("".join(self.cell).split())
            table = self.tables[self.key]
            table["head"].append(text) if self.part == "thead" else table["rows"][-1].append(text)
            self.cell = None


def parse(html: str) -> dict[str, dict]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def pm(values: list[float]) -> str:
    """mean ± half-width of the 95 % Student-t interval, computed independently with SciPy."""
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return f"{np.mean(values):.4f} ± {(high - low) / 2:.4f}"


def test_one_table_per_dataset_backbone_with_a_row_per_variant_in_order(site: dict) -> None:
    tables = parse(site["html"])
    assert LINEAR in tables and CNN in tables
    linear = tables[LINEAR]
    variants = ["erm", "erm", "anti_score_matching(weight=1.0)", "gradient_norm(weight=0.01)"]
    assert [r[0] for r in linear["rows"]] == variants  # erm first, then by regularizer, then submission name
    assert [r[1] for r in linear["rows"]] == [EVIL, "Lab A", EVIL, "Lab A"]
    assert linear["head"][:3] == ["Regularizer", "Submission", "Seeds"]
    assert linear["head"][3].startswith("accuracy ↑")
    assert linear["head"][4].startswith("density_ratio · ratio ↑")
    assert linear["head"][5].startswith("pixel_perturbation · auc ↓")
    assert not any("drop" in h for h in linear["head"])  # only headline metrics are columns
    assert f'id="{LINEAR}"' in site["html"] and f'href="#{LINEAR}"' in site["html"]  # permalink anchor


def test_cells_show_mean_interval_delta_interval_rank_and_seed_counts(site: dict) -> None:
    rows = {(r[1], r[0]): r for r in parse(site["html"])[LINEAR]["rows"]}
    erm_a, gn = rows[("Lab A", "erm")], rows[("Lab A", "gradient_norm(weight=0.01)")]
    # accuracy means: B erm 0.96, B anti_score_matching 0.935, A erm 0.91, A gradient_norm 0.87; no interval lies
    # entirely above or below another's, so every rank range is 1–4
    assert erm_a[2] == "3" and erm_a[3] == f"{pm(LAB_A[('erm', '{}')]['accuracy'])} baseline rank 3 (1–4)"
    # Δ paired by seed: differences −0.02, −0.06, −0.04 → −0.04 ± t(0.975, 2)·0.02/√3, which contains 0
    assert gn[3] == f"{pm([0.88, 0.86, 0.87])} Δ −0.0400 ± 0.0497 rank 4 (1–4)"
    assert gn[4] == "not evaluated"  # Lab A has no density_ratio
    assert gn[5].startswith(f"{pm([0.25, 0.27, 0.26])} Δ −0.0500 ± 0.0000 rank 1")
    sm = rows[(EVIL, "anti_score_matching(weight=1.0)")]
    assert sm[2] == "2"
    # one ok seed: no interval, no Δ interval (its erm has other seeds), a rank any position could hold
    assert sm[5] == "0.3500 1/2 seeds Δ −0.0600 rank 3 (1–4)"  # against its own erm (0.41), not Lab A's (0.31)
    assert rows[(EVIL, "erm")][4] == f"{pm([2.0, 4.0])} baseline rank 1"
    html = site["html"]
    assert 'class="delta better">Δ −0.0500' in html  # auc is ↓ and the paired interval excludes 0
    assert 'class="delta ">Δ −0.0400' in html  # no verdict: the interval contains 0
    assert 'class="delta ">Δ −0.0600' in html  # no verdict without an interval


def test_number_format() -> None:
    assert fmt(0.91) == "0.9100" and fmt(0.0) == "0.0000" and fmt(-0.04, signed=True) == "−0.0400"
    assert fmt(0.0005, signed=True, scale=0.87) == "+0.0005"  # a Δ on the scale of its mean
    assert fmt(1.234e-5) == "1.23e−05" and fmt(12345.6) == "1.23e+04"


def test_accuracy_column_on_every_table(site: dict) -> None:
    cnn = parse(site["html"])[CNN]
    assert cnn["head"][3].startswith("accuracy ↑") and cnn["rows"][0][3] == "not evaluated"
    assert cnn["rows"][0][4] == "0.5000 baseline rank 1"


def test_submitted_text_is_escaped(site: dict) -> None:
    pages = [site["index"], *(site["index"].parent / "submissions").glob("*.html")]
    assert len(pages) == 3
    for page in pages:
        html = page.read_text()
        assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in site["html"]
    evil_page = (site["index"].parent / "submissions" / f"{site['b']}.html").read_text()
    assert "desc &lt;script&gt;alert(1)&lt;/script&gt;" in evil_page


def test_downloads_hold_every_metric_with_exact_numbers(site: dict) -> None:
    folder = site["index"].parent / "tables"
    expected = sorted(f"{t}.{e}" for t in (LINEAR, CNN) for e in ("csv", "json"))
    assert sorted(p.name for p in folder.iterdir()) == expected
    table = pd.read_csv(folder / f"{LINEAR}.csv")
    assert len(table) == 2 * 3 + 3 + 2  # Lab A: 2 variants × 3 metrics; B: erm 3 metrics, anti_score_matching 2
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


def test_submission_pages_and_static_files(site: dict) -> None:
    out = site["index"].parent
    page = (out / "submissions" / f"{site['a']}.html").read_text()
    env = environment_info("cpu")
    assert "Lab A" in page and env["device_name"] in page and suite_hash({"name": "tiny", "seeds": [0, 1, 2]}) in page
    assert f'href="../index.html#{LINEAR}"' in page and 'href="https://example.org/code"' in page
    assert (out / "submissions" / site["a"] / "results.csv").is_file()
    assert (out / "static" / "style.css").is_file() and (out / "static" / "sort.js").is_file()
    assert json.loads((out / "submission.schema.json").read_text())["title"]
    assert parse(site["html"])[LINEAR]["values"][1][3] == repr(float(np.mean([0.90, 0.92, 0.91])))  # sort key


def test_build_is_deterministic(site: dict, tmp_path: Path) -> None:
    again = build_site(site["root"] / "submissions", tmp_path / "again")
    assert again.read_text() == site["html"]


def test_invalid_submission_refuses_the_build_or_is_listed(site: dict, tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    shutil.copytree(site["root"] / "submissions", subs)
    (subs / site["a"] / "results.csv").write_text("job_hash\nx\n")
    with pytest.raises(SubmissionError, match=f"Refusing to build the site: 1 invalid[\\s\\S]*{site['a']}"):
        build_site(subs, tmp_path / "site")
    html = build_site(subs, tmp_path / "site", skip_invalid=True).read_text()
    assert "Rejected submissions (1)" in html and site["a"] in html and "missing column(s)" in html
    assert [r[1] for r in parse(html)[LINEAR]["rows"]] == [EVIL, EVIL]


def test_empty_submissions_folder_builds_an_empty_site(tmp_path: Path) -> None:
    (tmp_path / "subs").mkdir()
    html = build_site(tmp_path / "subs", tmp_path / "site").read_text()
    assert "No submissions yet" in html and not parse(html)


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
