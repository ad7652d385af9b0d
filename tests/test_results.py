"""The results table's rows, intervals, Δ intervals, rank ranges and evaluator agreement, and the report printing them.

Two pooling bugs of the results tables are reproduced on real runs: two suites on one runs directory that differ only in
the number of epochs, and a backbone grid over its activation, each must give separate rows, never "more seeds".
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console
from scipy import stats as sps

from gibench import cli
from gibench.api import registry
from gibench.api.plugin import Regularizer
from gibench.results.stats import difference_interval, mean_interval, rank_ranges, t_quantile
from gibench.results.tables import agreement_table, collect_results, summarize
from gibench.running.runner import run_suite
from gibench.suites.suite import load_suite
from tests.conftest import TINY_SUITE

GN = "gradient_norm(weight=0.001)"


def _suite(tmp_path: Path, name: str, **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "name": name, **changes}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def two_budgets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs directory: erm and gradient_norm for 1 epoch (seeds 0, 1) and for 2 epochs (seed 0)."""
    root = tmp_path_factory.mktemp("budgets")
    runs = root / "runs"
    evaluators = ["accuracy", "blockmnist"]  # blockmnist is skipped: mnist_subset has no signal mask
    one = _suite(root, "one_epoch", evaluators=evaluators, seeds=[0, 1])
    two = _suite(root, "two_epochs", evaluators=evaluators, seeds=[0],
                 train={**TINY_SUITE["train"], "epochs": 2})
    for path in (one, two):
        run_suite(load_suite(path), runs, device="cpu")
    return runs


def test_training_configs_are_separate_rows_not_seeds(two_budgets: Path) -> None:
    frame = collect_results(two_budgets)
    acc = summarize(frame).query("metric == 'accuracy'")
    assert set(acc["train_label"]) == {"1 ep · adam · lr 0.01", "2 ep · adam · lr 0.01"}
    erm = acc[acc["variant"] == "erm"].set_index("train_label")
    assert erm.loc["1 ep · adam · lr 0.01", "n_ok"] == 2 and erm.loc["2 ep · adam · lr 0.01", "n_ok"] == 1
    assert erm["train_hash"].nunique() == 2
    # Δ of the 2-epoch gradient_norm row is against the 2-epoch erm alone (its own seed 0), not a pooled mean
    raw = frame[(frame["metric"] == "accuracy")].set_index(["train_label", "variant", "seed"])["value"]
    gn2 = acc[(acc["variant"] == GN) & (acc["train_label"] == "2 ep · adam · lr 0.01")].iloc[0]
    assert gn2["delta_vs_erm"] == raw[("2 ep · adam · lr 0.01", GN, 0)] - raw[("2 ep · adam · lr 0.01", "erm", 0)]
    assert math.isnan(gn2["delta_low"]) and gn2["verdict"] == ""  # one seed: no interval, no verdict
    gn1 = acc[(acc["variant"] == GN) & (acc["train_label"] == "1 ep · adam · lr 0.01")].iloc[0]
    diffs = [raw[("1 ep · adam · lr 0.01", GN, s)] - raw[("1 ep · adam · lr 0.01", "erm", s)] for s in (0, 1)]
    low, high = sps.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert gn1["delta_method"] == "paired t"
    assert (gn1["delta_low"], gn1["delta_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_backbone_options_are_separate_rows(tmp_path: Path) -> None:
    path = _suite(tmp_path, "acts", backbones=[{"gibench_mlp": {"act": ["relu", "softplus"], "hidden": 16}}],
                  evaluators=["accuracy"])
    run_suite(load_suite(path), tmp_path / "runs", device="cpu")
    frame = collect_results(tmp_path / "runs")
    acc = summarize(frame).query("metric == 'accuracy'")
    assert len(acc) == 4 and set(acc["n_ok"]) == {1}  # 2 activations × 2 variants, one seed each
    assert set(acc["backbone_params"]) == {'{"act": "relu", "hidden": 16}', '{"act": "softplus", "hidden": 16}'}
    raw = frame.set_index(["backbone_params", "variant"])["value"]
    for r in acc[acc["variant"] == GN].itertuples():
        assert r.delta_vs_erm == raw[(r.backbone_params, GN)] - raw[(r.backbone_params, "erm")]


def test_mean_interval_equals_scipy_t_interval() -> None:
    for values in ([0.9, 0.92, 0.91], [1.0, 2.0], [0.3, 0.1, 0.7, 0.2, 0.25]):
        got = mean_interval(values)
        low, high = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
        assert (got.low, got.high) == (pytest.approx(low, abs=1e-10), pytest.approx(high, abs=1e-10))
    one = mean_interval([0.5])
    assert one.estimate == 0.5 and not one.exists  # one seed: no interval, never ± 0
    assert t_quantile(0.975, 2) == pytest.approx(4.302652729911275)  # the tabulated value for 3 seeds
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, 0)  # one seed: callers must not ask for an interval


def test_difference_interval_is_paired_by_seed_or_welch() -> None:
    a, b = {0: 0.80, 1: 0.86, 2: 0.83}, {0: 0.90, 1: 0.91, 2: 0.95}
    paired = difference_interval(a, b)
    low, high = sps.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert paired.method == "paired t" and paired.estimate == pytest.approx(-0.09, abs=1e-12)
    assert (paired.low, paired.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    c = {3: 0.70, 4: 0.74, 5: 0.79, 6: 0.72}  # other seeds: unpaired
    welch = difference_interval(c, b)
    low, high = sps.ttest_ind(list(c.values()), list(b.values()), equal_var=False).confidence_interval(0.95)
    assert welch.method == "Welch t"
    assert (welch.low, welch.high) == (pytest.approx(low, abs=1e-10), pytest.approx(high, abs=1e-10))
    assert not difference_interval({0: 0.5}, b).exists


def long_frame(values: dict[str, dict[str, list[float]]], higher: dict[str, bool]) -> pd.DataFrame:
    """A long results table of one dataset × backbone: variant → metric → values per seed (one evaluator each)."""
    rows = []
    for variant, metrics in values.items():
        for metric, seeds in metrics.items():
            for seed, value in enumerate(seeds):
                rows.append({"job_hash": f"{variant}-{seed}", "dataset": "d", "backbone": "b", "variant": variant,
                             "regularizer": variant.split("(")[0], "seed": seed, "evaluator": metric,
                             "evaluator_version": "1", "metric": metric, "value": value,
                             "higher_is_better": higher[metric], "headline": True, "status": "ok"})
    return pd.DataFrame(rows)


def test_rank_ranges_follow_the_intervals() -> None:
    frame = long_frame({"erm": {"acc": [0.90, 0.91, 0.92]}, "b": {"acc": [0.80, 0.81, 0.82]},
                        "c": {"acc": [0.85, 0.95, 0.75]}, "d": {"acc": [0.5]}}, {"acc": True})
    ranks = summarize(frame).set_index("variant")
    # erm [0.885, 0.935] lies entirely above b [0.785, 0.835]; c's interval is wide; d has one seed (no interval)
    assert ranks.loc["erm", ["rank", "rank_best", "rank_worst"]].tolist() == [1, 1, 3]
    assert ranks.loc["c", ["rank", "rank_best", "rank_worst"]].tolist() == [2, 1, 4]
    assert ranks.loc["b", ["rank", "rank_best", "rank_worst"]].tolist() == [3, 2, 4]
    assert ranks.loc["d", ["rank", "rank_best", "rank_worst"]].tolist() == [4, 1, 4]
    # lower is better: the order and the ranges flip
    flipped = rank_ranges([0.91, 0.81], [0.885, 0.785], [0.935, 0.835], higher_is_better=False)
    assert [(r.rank, r.best, r.worst) for r in flipped] == [(2, 2, 2), (1, 1, 1)]


def test_agreement_is_spearman_of_direction_aligned_means() -> None:
    acc = {"erm": 0.9, "a": 0.8, "b": 0.85, "c": 0.7, "e": 0.95}
    loss = {"erm": 0.3, "a": 0.1, "b": 0.4, "c": 0.2, "e": 0.5}  # lower is better
    frame = long_frame({v: {"acc": [acc[v], acc[v] + 0.01], "loss": [loss[v]]} for v in acc},
                       {"acc": True, "loss": False})
    table = agreement_table(summarize(frame))
    assert len(table) == 1 and table.iloc[0]["n_variants"] == 5
    means = [acc[v] + 0.005 for v in acc]
    expected = sps.spearmanr(means, [-loss[v] for v in acc]).statistic
    assert table.iloc[0]["rho"] == pytest.approx(expected, abs=1e-12)
    assert {table.iloc[0]["metric_a"], table.iloc[0]["metric_b"]} == {"acc ↑", "loss ↓"}


def test_agreement_with_a_constant_metric_is_undefined_without_a_warning() -> None:
    """Every variant at accuracy 1.000 (the Gaussian mixture) ranks nothing: ρ is NaN, and SciPy is not asked."""
    loss = {"erm": 0.3, "a": 0.1, "b": 0.4, "c": 0.2}
    frame = long_frame({v: {"acc": [1.0], "loss": [loss[v]]} for v in loss}, {"acc": True, "loss": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = agreement_table(summarize(frame))
    assert len(table) == 1 and table.iloc[0]["n_variants"] == 4 and math.isnan(table.iloc[0]["rho"])


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The CLI's stdout as an 80-column terminal."""
    buffer = io.StringIO()
    monkeypatch.setattr(cli._shared, "stdout", Console(file=buffer, width=80, color_system=None))
    return buffer


def test_report_shows_intervals_ranks_and_skips_in_80_columns(two_budgets: Path, narrow: io.StringIO,
                                                              tmp_path: Path) -> None:
    out_csv = tmp_path / "summary.csv"
    assert cli.main(["report", "--runs-dir", str(two_budgets), "--ranks", "--csv", str(out_csv)]) == 0
    text = narrow.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "1 ep · adam · lr 0.01" in text and "2 ep · adam · lr 0.01" in text  # two tables, one per budget
    assert "2/2" in text and "1/1" in text and "3/3" not in text
    # a skipped evaluator is one line (not a row per job or a column of "skipped"), with the recorded reason
    assert text.count("skipped") == 1 and "skipped: blockmnist on 6 job(s) (mnist_subset): dataset" in text
    assert "signal_mask" in text.split("skipped:", 1)[1]
    assert "possible ranks" in text and "evaluator agreement" not in text  # one headline with a value: no pairs
    rows = list(csv.DictReader(out_csv.open()))
    assert {"ci_low", "ci_high", "delta_low", "delta_high", "rank", "rank_best", "rank_worst", "train_label",
            "train_hash", "reasons"} <= set(rows[0])
    stats = summarize(collect_results(two_budgets))
    erm1 = stats[(stats["variant"] == "erm") & (stats["metric"] == "accuracy") & (stats["n_ok"] == 2)].iloc[0]
    assert f"{erm1['mean']:.4f} ± {(erm1['ci_high'] - erm1['ci_low']) / 2:.4f}" in text


def test_site_numbers_equal_the_report(two_budgets: Path, tmp_path: Path) -> None:
    from gibench.leaderboard.build import build_site
    from gibench.submissions.build import build_submission

    build_submission(two_budgets, tmp_path / "subs", {"name": "budgets", "authors": ["A"], "description": "",
                                                      "links": []})
    index = build_site(tmp_path / "subs", tmp_path / "site")
    site = pd.concat([pd.read_csv(p, dtype={"train_hash": str}) for p in
                      (index.parent / "tables").glob("*.csv")], ignore_index=True)
    assert len(list((index.parent / "tables").glob("*.csv"))) == 2  # one table per training config
    report = summarize(collect_results(two_budgets))
    keys = ["train_hash", "variant", "evaluator", "metric"]
    merged = report.merge(site, on=keys, suffixes=("", "_site"))
    assert len(merged) == len(report) == len(site)
    for column in ("mean", "ci_low", "ci_high", "delta_vs_erm", "delta_low", "delta_high", "n_ok"):
        assert np.allclose(merged[column].astype(float), merged[f"{column}_site"].astype(float), equal_nan=True,
                           rtol=0, atol=1e-15), column
    html = index.read_text()
    assert "Skipped and failed evaluations" in html and "1 ep · adam · lr 0.01" in html


class RaisesInTraining(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        raise ValueError("a plugin bug at the first step")


def test_failed_training_appears_in_report_csv_and_site(tmp_path: Path, register_plugin, narrow: io.StringIO) -> None:
    from gibench.leaderboard.build import build_site
    from gibench.submissions.build import build_submission

    register_plugin(registry.regularizers, "raises", RaisesInTraining)
    runs = tmp_path / "runs"
    run_suite(load_suite(_suite(tmp_path, "breaks", regularizers=["raises", "erm"], evaluators=["accuracy"])), runs,
              device="cpu")
    frame = collect_results(runs)
    (failed,) = frame[frame["evaluator"] == "training"].itertuples()
    assert failed.variant == "raises" and failed.status == "failed" and "a plugin bug" in failed.reason
    assert cli.main(["report", "--runs-dir", str(runs), "--csv", str(tmp_path / "s.csv")]) == 0
    text = narrow.getvalue()
    assert text.count("a plugin bug") == 1 and "failed: mnist_subset / gibench_linear / raises / seed 0" in text
    rows = [r for r in csv.DictReader((tmp_path / "s.csv").open()) if r["variant"] == "raises"]
    assert len(rows) == 1 and rows[0]["statuses"] == "failed" and "a plugin bug" in rows[0]["reasons"]
    build_submission(runs, tmp_path / "subs", {"name": "breaks", "authors": ["A"], "description": "", "links": []})
    html = build_site(tmp_path / "subs", tmp_path / "site").read_text()
    assert "training failed (1 seed(s))" in html  # the raises row's cells
    assert "failed</span>: training on raises (breaks): training failed: ValueError: a plugin bug" in html


def test_report_when_every_training_failed_says_so(tmp_path: Path, register_plugin, narrow: io.StringIO) -> None:
    register_plugin(registry.regularizers, "raises", RaisesInTraining)
    runs = tmp_path / "runs"
    run_suite(load_suite(_suite(tmp_path, "breaks", regularizers=["raises"], evaluators=["accuracy"])), runs,
              device="cpu")
    assert cli.main(["report", "--runs-dir", str(runs)]) == 0
    text = narrow.getvalue()
    assert "a plugin bug" in text and f"every job under {runs} failed to train" in text and "smoke" not in text


def test_sanity_view_fits_80_columns_and_says_when_the_gap_is_within_seed_noise(monkeypatch, narrow) -> None:
    import gibench.results.tables

    frame = long_frame({"erm": {"pixel_perturbation": [0.90, 0.91, 0.92]},
                        "fooled(weight=1.0)": {"pixel_perturbation": [0.89, 0.95, 0.80]}},
                       {"pixel_perturbation": True})
    monkeypatch.setattr(gibench.results.tables, "collect_results", lambda runs_dir: frame)
    assert cli.main(["report", "--runs-dir", "unused", "--sanity"]) == 0
    text = narrow.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    # fooled's mean 0.88 is below erm's 0.91 (passes), but the paired Δ interval contains 0
    assert "ok (within" in text and "seed noise)" in text and "0.9100" in text and "0.8800" in text


def test_two_jobs_of_one_row_with_the_same_seed_are_both_counted_and_unpaired() -> None:
    frame = long_frame({"erm": {"acc": [0.90, 0.92]}, "a": {"acc": [0.80, 0.84]}}, {"acc": True})
    twin = frame[(frame["variant"] == "a") & (frame["seed"] == 0)].assign(job_hash="a-0-other-version", value=0.82)
    stats = summarize(pd.concat([frame, twin], ignore_index=True)).set_index("variant")
    assert stats.loc["a", "n_ok"] == 3 and stats.loc["a", "mean"] == pytest.approx(0.82)
    assert stats.loc["a", "delta_method"] == "Welch t"
    low, high = sps.ttest_ind([0.80, 0.84, 0.82], [0.90, 0.92], equal_var=False).confidence_interval(0.95)
    assert (stats.loc["a", "delta_low"], stats.loc["a", "delta_high"]) == (pytest.approx(low), pytest.approx(high))
