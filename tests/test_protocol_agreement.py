"""The agreement between an expensive and a cheap protocol's rankings (gibench.results.protocol_agreement)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from gibench.results.protocol_agreement import (
    kendall_tau,
    protocol_agreement,
    seed_bootstrap_resamples,
    wilson_interval,
)


def frame(values: dict[str, list[float]], evaluator: str = "pixel_perturbation", params: dict | None = None,
          status: str = "ok") -> pd.DataFrame:
    """A results table: ``values[variant][i]`` is seed i's headline."""
    rows = [{"dataset": "mnist_subset", "backbone": "gibench_cnn", "backbone_params": '{"act": "softplus"}',
             "variant": variant, "seed": seed, "evaluator": evaluator, "evaluator_params": json.dumps(params or {}),
             "metric": "auc_gap", "value": value, "higher_is_better": True, "headline": True, "status": status}
            for variant, seed_values in values.items() for seed, value in enumerate(seed_values)]
    return pd.DataFrame(rows)


# Four variants whose reference means are 1 < 2 < 3 < 4 with a small, consistent seed spread: every pair resolved.
REFERENCE = {"erm": [1.0, 1.1, 0.9], "a": [2.0, 2.1, 1.9], "b": [3.0, 3.05, 2.95], "c": [4.0, 4.1, 3.9]}


def test_identical_protocols_agree_completely():
    row = protocol_agreement(frame(REFERENCE), frame(REFERENCE)).iloc[0]
    assert row["kendall_tau"] == pytest.approx(1.0)
    assert (row["tau_low"], row["tau_high"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (row["pairs"], row["resolved"], row["kept"], row["reversed"]) == (6, 6, 6, 0)
    assert row["kept_share"] == 1.0
    assert (row["variants"], row["seeds"], row["left_out"]) == (4, 3, 0)


def test_a_swapped_pair_is_one_ordering_lost_and_tau_drops_by_a_third():
    # the candidate swaps a and b, confidently: one of six concordant pairs becomes discordant, tau = (5 - 1) / 6
    swapped = {**REFERENCE, "a": [3.0, 3.05, 2.95], "b": [2.0, 2.1, 1.9]}
    row = protocol_agreement(frame(REFERENCE), frame(swapped)).iloc[0]
    assert row["kendall_tau"] == pytest.approx(4 / 6)
    assert (row["resolved"], row["kept"], row["reversed"]) == (6, 5, 1)
    assert row["kept_share"] == pytest.approx(5 / 6)
    assert (row["kept_low"], row["kept_high"]) == pytest.approx(wilson_interval(5, 6))


def test_an_unresolved_reference_pair_does_not_count():
    # a is noisy under the reference: a - erm per seed is -0.5, 0.9, 0.5 and b - a is 2.5, 1.05, 1.55, both paired
    # intervals hold zero (t(0.975, 2) = 4.30); only a - c (3.5, 2.1, 2.5) stays resolved of a's three pairs
    noisy = {**REFERENCE, "a": [0.5, 2.0, 1.4]}
    row = protocol_agreement(frame(noisy), frame(REFERENCE)).iloc[0]
    assert (row["pairs"], row["resolved"], row["kept"]) == (6, 4, 4)


def test_a_tie_under_the_candidate_is_not_kept_and_a_noisy_reversal_is_not_reversed():
    # a ties erm exactly; b falls below a and erm in mean, but within its seed noise (b - a per seed: -0.5, -0.1, 0.3)
    cand = {**REFERENCE, "a": [1.0, 1.1, 0.9], "b": [0.5, 1.0, 1.2]}
    row = protocol_agreement(frame(REFERENCE), frame(cand)).iloc[0]
    assert (row["resolved"], row["kept"], row["reversed"]) == (6, 3, 0)  # only the three pairs with c are kept


def test_kendall_tau_matches_the_count_of_pairs():
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_wilson_interval_matches_the_textbook_value():
    # 9 of 10 at 95 %: (0.5958, 0.9821), Wilson (1927); Newcombe (1998), Table I's method 3
    low, high = wilson_interval(9, 10)
    assert (low, high) == (pytest.approx(0.5958, abs=1e-4), pytest.approx(0.9821, abs=1e-4))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_the_seed_bootstrap_is_enumerated_exactly_for_few_seeds():
    resamples = seed_bootstrap_resamples([0, 1, 2])
    assert len(resamples) == 27 and len(set(resamples)) == 27
    assert len(seed_bootstrap_resamples(list(range(6)))) == 4000  # 6^6 > 3125: drawn, seeded
    assert seed_bootstrap_resamples(list(range(6))) == seed_bootstrap_resamples(list(range(6)))


def test_collapsed_and_incomplete_variants_are_left_out():
    cand = frame(REFERENCE)
    cand = cand[~((cand["variant"] == "c") & (cand["seed"] == 2))]  # c misses a seed under the candidate
    key = ("mnist_subset", "gibench_cnn", '{"act": "softplus"}', "b")
    row = protocol_agreement(frame(REFERENCE), cand, collapsed=[key]).iloc[0]
    # b is collapsed (out, not counted as left out); c lacks seed 2, so the common seeds are 0 and 1 for everyone
    assert row["variants"] == 3 and row["seeds"] == 2 and row["left_out"] == 0


def test_a_variant_the_candidate_cannot_score_loses_every_ordering_it_had():
    # c's evaluation failed under the candidate (or its training diverged): the three orderings the reference resolves
    # with c count as resolved and not kept; the other three are compared as usual
    cand = pd.concat([frame({k: v for k, v in REFERENCE.items() if k != "c"}), frame({"c": [4.0, 4.1, 3.9]},
                                                                                        status="failed")])
    row = protocol_agreement(frame(REFERENCE), cand).iloc[0]
    assert row["variants"] == 3 and row["left_out"] == 1
    assert (row["pairs"], row["resolved"], row["kept"], row["missing"]) == (6, 6, 3, 3)
    assert row["kept_share"] == pytest.approx(0.5) and row["kendall_tau"] == pytest.approx(1.0)


def test_each_candidate_setting_gets_its_own_row():
    cand = pd.concat([frame(REFERENCE, params={"max_images": 100}), frame(REFERENCE, params={"max_images": 250})])
    table = protocol_agreement(frame(REFERENCE, params={"max_images": 1000}), cand)
    assert list(table["candidate_params"]) == ['{"max_images": 100}', '{"max_images": 250}']
    assert set(table["reference_params"]) == {'{"max_images": 1000}'}


def test_two_reference_settings_or_two_results_per_seed_are_refused():
    two = pd.concat([frame(REFERENCE, params={"max_images": 100}), frame(REFERENCE, params={"max_images": 250})])
    with pytest.raises(ValueError, match="pixel_perturbation.*2 settings"):
        protocol_agreement(two, frame(REFERENCE))
    doubled = pd.concat([frame(REFERENCE), frame(REFERENCE)])
    with pytest.raises(ValueError, match="erm / seed 0 / pixel_perturbation"):
        protocol_agreement(doubled, frame(REFERENCE))


def test_the_study_script_compares_two_suites_of_one_runs_directory(tmp_path):
    """benchmarks/protocol_agreement.py end to end: two protocols that share their models (the candidate scores the
    same jobs with a smaller image budget, and once at the reference's own budget) on a real runs directory."""
    from benchmarks.protocol_agreement import agreement, main, markdown
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite
    from tests.conftest import write_suite

    regularizers = ["erm", {"gradient_norm": {"weight": 1.0}}, "fooled"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "cand").mkdir()
    reference = write_suite(tmp_path / "ref", regularizers=regularizers, seeds=[0, 1, 2],
                            evaluators=["accuracy", {"complexity": {"max_images": 100}}])
    candidate = write_suite(tmp_path / "cand", regularizers=regularizers, seeds=[0, 1, 2],
                            evaluators=[{"complexity": {"max_images": 25}}, {"complexity": {"max_images": 100}}])
    runs = tmp_path / "runs"
    for suite in (reference, candidate):
        run_suite(load_suite(suite), runs, RunOptions(device="cpu"))
    table = agreement(runs, reference, [candidate]).set_index("candidate_params")
    same = table.loc['{"max_images": 100}']
    assert same["kendall_tau"] == pytest.approx(1.0) and same["kept"] == same["resolved"]
    assert same["work"] == pytest.approx(1.0)
    assert table.loc['{"max_images": 25}', "work"] == pytest.approx(0.25)
    assert set(table["variants"]) == {3} and set(table["seeds"]) == {3}
    assert "complexity: gini" in markdown(table.reset_index())
    assert main(["--runs-dir", str(tmp_path / "absent"), "--reference", str(reference), "--candidate",
                 str(candidate)]) == 2  # a clear error, no traceback
    assert main(["--runs-dir", str(runs), "--reference", str(tmp_path / "nope.yaml"), "--candidate",
                 str(candidate)]) == 2


def test_the_verdict_needs_a_resolved_ordering_and_names_each_short_evaluator():
    from benchmarks.protocol_agreement import verdict

    rows = pd.DataFrame({"evaluator": ["gan_test", "road"], "candidate_params": ['{"steps": 100}', "{}"],
                         "resolved": [10, 4], "kept_share": [0.8, 1.0]})
    assert verdict(rows) == ("Keeps at least 90% of the resolved orderings on every evaluator judged: no "
                             "(gan_test steps=100: 0.80).")
    assert verdict(rows.assign(kept_share=[0.9, 1.0])).startswith("Keeps at least 90% of the resolved orderings on "
                                                                  "every evaluator judged: yes (2 of 2 rows)")
    assert verdict(rows.assign(resolved=[0, 0])).startswith("Cannot tell")  # never a vacuous yes
