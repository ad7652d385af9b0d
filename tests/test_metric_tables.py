"""benchmarks/metric_tables.py: a selecting suite's scored rows (labels that carry the chosen strength) keep the order
in which the suite lists their regularizers."""

from __future__ import annotations

from benchmarks.metric_tables import listed_rank

LISTED = ["erm", "gradient_norm", "pgd(norm=l2)", "pgd(norm=linf)", "jem(sgld_steps=5)", "fooled"]
RANK = {label: i for i, label in enumerate(LISTED)}


def test_a_selected_setting_takes_the_place_of_the_listed_label_it_was_swept_from():
    assert listed_rank("gradient_norm(weight=100)", RANK) == 1
    assert listed_rank("pgd(norm=linf, epsilon=0.3)", RANK) == 3  # not pgd(norm=l2)'s place: its options differ
    assert listed_rank("pgd(norm=l2, epsilon=2)", RANK) == 2
    assert listed_rank("jem(sgld_steps=5, weight=0.03)", RANK) == 4
    assert listed_rank("fooled", RANK) == 5
    assert listed_rank("trades(beta=30)", RANK) == len(LISTED)  # not listed: last
    assert listed_rank("jem(sgld_steps=20, weight=0.03)", RANK) == len(LISTED)  # another sgld_steps is not listed
