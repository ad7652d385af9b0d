"""benchmarks/paper_claims.py: a claim's verdict follows the Δ interval against erm and the metric's direction, and a
collapsed row is reported as collapsed, never compared."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.paper_claims import Claim, check_claims, verdict

NAN = math.nan


@pytest.mark.parametrize(("relation", "delta", "low", "high", "higher", "expected"), [
    ("better", 0.1, 0.05, 0.15, True, "holds"),
    ("better", 0.1, -0.05, 0.25, True, "not resolved"),
    ("better", -0.1, -0.15, -0.05, True, "contradicted"),
    ("better", -0.1, -0.15, -0.05, False, "holds"),  # lower is better: a negative Δ is a gain
    ("worse", -0.1, -0.15, -0.05, True, "holds"),
    ("worse", 0.1, 0.05, 0.15, True, "contradicted"),
    ("not worse", 0.01, -0.02, 0.04, True, "holds (no difference)"),
    ("not worse", 0.1, 0.05, 0.15, True, "holds (better)"),
    ("not worse", -0.1, -0.15, -0.05, True, "contradicted"),
    ("better", 0.1, NAN, NAN, True, "not resolved (one seed)"),
])
def test_the_verdict_follows_the_interval_and_the_direction(relation, delta, low, high, higher, expected):
    assert verdict(relation, delta, low, high, higher) == expected


def _row(regularizer, mean, delta=NAN, low=NAN, high=NAN, collapse="kept", reason=""):
    return {"dataset": "mnist_subset", "backbone": "gibench_cnn", "backbone_params": "{}", "train_hash": "t",
            "regularizer": regularizer, "variant": regularizer, "evaluator": "gan_test", "evaluator_params": "{}",
            "metric": "judge_accuracy", "headline": True, "higher_is_better": True, "mean": mean, "ci_low": mean - 0.01,
            "ci_high": mean + 0.01, "n_ok": 3, "delta_vs_erm": delta, "delta_low": low, "delta_high": high,
            "collapse": collapse, "collapse_reason": reason}


def test_claims_are_checked_per_table_and_a_collapsed_row_is_not_compared():
    stats = pd.DataFrame([_row("erm", 0.8), _row("score_matching", 0.9, 0.1, 0.05, 0.15),
                          _row("anti_score_matching", 0.2, -0.6, -0.7, -0.5, "collapsed", "accuracy 0.1 vs erm 0.9")])
    claims = (Claim("P", "sm ≥ erm", "score_matching", "gan_test", "not worse"),
              Claim("P", "anti < erm", "anti_score_matching", "gan_test", "worse"),
              Claim("P", "pgd > erm", "pgd", "gan_test", "better"))
    table = check_claims(stats, claims)
    assert table["verdict"].tolist() == ["holds (better)", "collapsed: accuracy 0.1 vs erm 0.9", "not run"]
    assert table["erm"].iloc[0] == "0.800 ± 0.010 (3)" and table["delta"].iloc[0] == "+0.100 [+0.050, +0.150]"
