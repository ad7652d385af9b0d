"""The tie rule (gibench.api.ranks: ``tied``, ``tie_groups``; docs/architecture.md, "Ranking pixels: ties") on
hand-built maps whose groups and orders are known, its tolerance and its one residual case; and every evaluator that
ranks pixels or correlates rankings gives the same numbers for a map with many exact ties and for the same map times
(1 + 1e-7·noise), the float noise that breaks those ties differently for every saliency method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gibench.api import registry
from gibench.api.masking import removal_ranks
from gibench.api.ranks import (
    TIE_RTOL,
    group_positions,
    rank_positions,
    rankdata_average,
    spearman,
    tie_groups,
    tied,
)
from gibench.testing import make_eval_context, tiny_bundle, trained_model

NOISE = 1e-7
NOISE_SEED = 20240601


def numpy_tie_ranks(values: np.ndarray, rtol: float = TIE_RTOL) -> np.ndarray:
    """The documented rule written out independently: sort, link neighbours with |a − b| ≤ rtol·max(|a|, |b|), give
    every run of linked scores the mean of its 1-based positions."""
    order = np.argsort(values, kind="stable")
    s = np.asarray(values, dtype=np.float64)[order]
    linked = (s[1:] == s[:-1]) | (np.abs(s[1:] - s[:-1]) <= rtol * np.maximum(np.abs(s[1:]), np.abs(s[:-1])))
    group = np.concatenate([[0], np.cumsum(~linked)])
    positions = np.arange(1, len(s) + 1, dtype=np.float64)
    means = np.bincount(group, positions) / np.bincount(group)
    ranks = np.empty(len(s))
    ranks[order] = means[group]
    return ranks


def numpy_tie_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of :func:`numpy_tie_ranks`; 0 where either is one group (gibench's convention)."""
    ra, rb = numpy_tie_ranks(a), numpy_tie_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


# ----------------------------------------------------------------------------------------------------------------------
# The rule, by hand

#: 0 twice; 1.0 twice and 1.00005 (5e-5 relative: tied); 2.0; 3.0 and 3.0006 (2e-4 relative: not tied).
HAND = torch.tensor([[1.0, 3.0, 1.00005, 0.0, 3.0006, 2.0, 0.0, 1.0]], dtype=torch.float64)


def test_tolerance_is_relative_to_the_pair_and_far_above_float32_noise():
    assert TIE_RTOL == 1e-4
    assert torch.finfo(torch.float32).eps < TIE_RTOL / 500  # unit roundoff 6e-8: noise of a few ulps stays tied


def test_hand_built_map_groups_and_orders():
    assert tie_groups(HAND).tolist() == [[1, 3, 1, 0, 4, 2, 0, 1]]
    # ascending: the zeros (index 3, 6), then 1.0, 1.00005, 1.0 by index (0, 2, 7) although 1.00005 > 1.0, then 2, 3,
    # 3.0006
    assert rank_positions(HAND, descending=False).tolist() == [[2, 6, 3, 0, 7, 5, 1, 4]]
    # descending: 3.0006, 3.0, 2.0, then the group of ones by index (0, 2, 7), then the zeros by index (3, 6)
    assert rank_positions(HAND, descending=True).tolist() == [[3, 1, 4, 6, 0, 2, 7, 5]]
    # average ranks: zeros share 1 and 2, the ones share 3, 4 and 5
    assert rankdata_average(HAND).tolist() == [[4.0, 7.0, 4.0, 1.5, 8.0, 6.0, 1.5, 4.0]]
    np.testing.assert_array_equal(rankdata_average(HAND)[0].numpy(), numpy_tie_ranks(HAND[0].numpy()))


def test_exact_rule_is_the_stable_sort_and_scipys_ranks():
    stats = pytest.importorskip("scipy.stats")
    assert rank_positions(HAND, descending=False, rtol=0).tolist() == [[2, 6, 4, 0, 7, 5, 1, 3]]
    np.testing.assert_array_equal(rankdata_average(HAND, rtol=0)[0].numpy(), stats.rankdata(HAND[0].numpy()))


def test_scores_further_apart_than_the_tolerance_are_not_tied():
    one = torch.tensor(1.0, dtype=torch.float64)
    assert tied(one, one + 0.5e-4) and tied(one + 0.99e-4, one)
    assert not tied(one, one + 1.5e-4) and not tied(one, one + 1.01e-4 * (1 + 1.01e-4))
    assert tie_groups(torch.tensor([[1.0, 1.0 + 1.5e-4]], dtype=torch.float64)).tolist() == [[0, 1]]
    assert tie_groups(torch.tensor([[1.0, 1.0 + 0.5e-4]], dtype=torch.float64)).tolist() == [[0, 0]]
    # a pair of 1e-4 · 3.0 apart is tied at 3.0, and 6e-4 apart is not (HAND's 3.0 and 3.0006)
    assert tied(torch.tensor(3.0), torch.tensor(3.0002)) and not tied(torch.tensor(3.0), torch.tensor(3.0006))


def test_zero_ties_only_zero_opposite_signs_never_and_infinities_only_themselves():
    values = torch.tensor([0.0, -0.0, 1e-30, -1e-9, 1e-9, float("inf"), float("inf"), 1e300], dtype=torch.float64)
    assert tied(values[0], values[1]) and not tied(values[0], values[2])
    assert not tied(values[3], values[4])
    assert tied(values[5], values[6]) and not tied(values[5], values[7])
    assert tie_groups(values.view(1, -1)).tolist() == [[1, 1, 2, 0, 3, 5, 5, 4]]


def test_single_linkage_chains_neighbours():
    # 1.0 – 1.00008 – 1.00016: each neighbour within 1e-4, the ends 1.6e-4 apart: one group
    chain = torch.tensor([[1.00016, 1.0, 1.00008, 2.0]], dtype=torch.float64)
    assert not tied(chain[0, 0], chain[0, 1])
    assert tie_groups(chain).tolist() == [[0, 0, 0, 1]]


def test_the_rule_is_scale_free():
    for scale in (1e-30, 1e-6, 7.0, 1e20):
        assert torch.equal(tie_groups(HAND * scale), tie_groups(HAND))


def test_group_positions_put_a_group_of_units_last():
    groups = tie_groups(HAND)
    moved = torch.where(HAND > 0, groups, HAND.shape[1])  # zeros last, as keep_remove's remove order
    assert group_positions(moved, descending=False).tolist() == [[0, 4, 1, 6, 5, 3, 7, 2]]


def test_the_residual_case_a_gap_within_the_noise_of_the_tolerance():
    """The one way a 1e-7 perturbation changes a group: a gap that lies within about 1e-7 of the tolerance."""
    below = 1.0 / (1.0 - TIE_RTOL * (1 - 1e-4))  # (b − 1)/b = 1e-4 · (1 − 1e-4): a gap 1e-8 under the tolerance
    pair = torch.tensor([[1.0, below]], dtype=torch.float64)
    assert tie_groups(pair).tolist() == [[0, 0]]
    assert tie_groups(pair * torch.tensor([[1.0, 1 + 1e-7]], dtype=torch.float64)).tolist() == [[0, 1]]
    # a gap 10 % away from the tolerance (1e-5 relative) is out of reach of the same perturbation
    far = torch.tensor([[1.0, 1.0 / (1.0 - 0.9 * TIE_RTOL)]], dtype=torch.float64)
    for factor in (1 + 1e-7, 1 - 1e-7):
        assert tie_groups(far * torch.tensor([[1.0, factor]], dtype=torch.float64)).tolist() == [[0, 0]]


# ----------------------------------------------------------------------------------------------------------------------
# A map with many exact ties, and the same map with float noise


def _levels_map(shape: tuple[int, ...], seed: int) -> Tensor:
    """Float32 scores drawn from 0, ±1, ±3, ±7: every score is exactly tied with about a seventh of the map."""
    levels = torch.tensor([-7.0, -3.0, -1.0, 0.0, 1.0, 3.0, 7.0])
    return levels[torch.randint(0, 7, shape, generator=torch.Generator().manual_seed(seed))]


def _with_noise(scores: Tensor, seed: int = NOISE_SEED) -> Tensor:
    """``scores`` times (1 + 1e-7·noise), noise ~ N(0, 1) from a fixed seed, computed in float64 and rounded to the
    scores' dtype (as a saliency method's float32 output)."""
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (scores.double() * (1 + NOISE * noise)).to(scores.dtype)


def test_the_noise_breaks_exact_ties_and_the_rule_restores_them():
    scores = _levels_map((16, 12, 12), seed=0)
    noisy = _with_noise(scores)
    assert not torch.equal(noisy, scores)
    # exact ranking: the float noise reorders tied pixels in most maps
    exact = (rank_positions(scores, True, rtol=0) != rank_positions(noisy, True, rtol=0)).any(1)
    assert exact.sum() >= 12
    assert (rankdata_average(scores.flatten(1), rtol=0) != rankdata_average(noisy.flatten(1), rtol=0)).any()
    # the tie rule: the same groups, orders, average ranks and correlations
    assert torch.equal(tie_groups(noisy), tie_groups(scores))
    for descending in (False, True):
        assert torch.equal(rank_positions(noisy, descending), rank_positions(scores, descending))
    assert all(torch.equal(a, b) for a, b in zip(removal_ranks(noisy), removal_ranks(scores)))
    assert torch.equal(rankdata_average(noisy.flatten(1)), rankdata_average(scores.flatten(1)))
    other = _levels_map((16, 12, 12), seed=1)
    assert torch.equal(spearman(noisy.flatten(1), other.flatten(1)), spearman(scores.flatten(1), other.flatten(1)))


def test_spearman_follows_the_independent_rule():
    a, b = _levels_map((4, 50), seed=2), _with_noise(_levels_map((4, 50), seed=3))
    expected = [numpy_tie_spearman(u, v) for u, v in zip(a.double().numpy(), b.double().numpy())]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# Every evaluator that ranks pixels or correlates rankings

#: Evaluator → options for a quick run on the tiny bundle. Each ranks pixel (or coordinate) scores or correlates them.
RANK_BASED: dict[str, dict] = {
    "pixel_perturbation": {},
    "keep_remove": {},
    "road": {},
    "diffroar": {"levels": [0.5, 0.2], "retrain_seeds": [0], "backbone": "gibench_linear",
                 "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2}},
    "random_logit": {},
    "randomisation": {"cascade": True},
    "score_alignment": {"score": "analytic"},
    "blockmnist": {},
}
#: Built-in evaluators that rank nothing, and why (so that a new evaluator has to be placed in one of the two lists).
NOT_RANK_BASED = {
    "accuracy": "no saliency map",
    "validation_accuracy": "no saliency map: accuracy on the held-out validation split",
    "density_ratio": "no saliency map: logits of noisy copies",
    "gan_test": "no saliency map: a judge classifies generated images",
    "complexity": "Gini and entropy are symmetric functions of the scores: swapping tied scores changes nothing",
    "sensitivity": "norms of map differences: continuous in the scores",
    "infidelity": "a least-squares fit of output changes on the map: continuous in the scores",
    "decoy_reliance": "a mass share on a mask and accuracies: continuous in the scores",
}
#: Scalars of a rank-based evaluator that are continuous in the map's values (not ranks): float noise moves them by
#: about its own size, so they are compared within 1e-6, every other scalar exactly.
CONTINUOUS = {
    "random_logit": {"cosine"},
    "randomisation": {"emprt", "entropy_original", "entropy_randomised"},
    "score_alignment": {"cosine_conditional", "cosine_unconditional"},
    "blockmnist": {"signal_mass_share"},
}


def _model_code(model: nn.Module) -> Tensor:
    """A small integer that differs between a model and its re-initialized copies (randomisation's maps differ)."""
    total = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
    return torch.tensor(int(total * 1000) % 7)


def tied_saliency(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """A (N, C, H, W) map of the levels 0, ±1, ±3, ±7 picked by the input, the label and the model: many exact ties,
    a different ranking per class (random_logit) and per model (randomisation), and on abs_sum pixel scores no value
    within 1e-7 of one of randomisation's bin edges."""
    levels = torch.tensor([-7.0, -3.0, -1.0, 0.0, 1.0, 3.0, 7.0], device=x.device)
    rows = torch.arange(x.shape[2], device=x.device).view(1, 1, -1, 1)
    code = (torch.floor(x * 5).long() + 3 * y.view(-1, 1, 1, 1) + rows + _model_code(model).to(x.device)) % 7
    return levels[code]


def noisy_tied_saliency(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """:func:`tied_saliency` times (1 + 1e-7·noise), noise ~ N(0, 1) from a fixed seed."""
    return _with_noise(tied_saliency(model, x, y).cpu()).to(x.device)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, object]:
    """A linear model trained one epoch on the tiny bundle: its predictions depend on which pixels a removal order
    takes (an untrained tiny model predicts one class whatever is removed, and would hide a changed order)."""
    bundle = tiny_bundle()
    return trained_model(bundle, "gibench_linear", epochs=1), bundle


def _evaluate(name: str, saliency, trained, tmp_path) -> tuple[dict, dict]:
    model, bundle = trained
    evaluator = registry.evaluators.create(name, **RANK_BASED[name])
    ctx = make_eval_context(model, bundle, tmp_path / saliency.__name__, saliency=saliency, batch_size=32, seed=3)
    result = evaluator.evaluate(ctx)
    return result.scalars, {key: curve.y for key, curve in result.curves.items()}


def test_every_built_in_evaluator_is_classified():
    built_in = {n for n in registry.evaluators.names()
                if registry.evaluators.get(n).__module__.startswith("gibench.evaluators.")}
    assert built_in == set(RANK_BASED) | set(NOT_RANK_BASED)
    assert not set(RANK_BASED) & set(NOT_RANK_BASED)


def test_the_test_map_has_exact_ties_the_noise_breaks(trained):
    model, bundle = trained
    x, y = bundle.test.x, bundle.test.y
    plain, noisy = tied_saliency(model, x, y), noisy_tied_saliency(model, x, y)
    assert (plain.abs() == 7).flatten(1).sum(1).min() >= 2
    assert (noisy != plain).float().mean() > 0.5
    assert not torch.equal(rank_positions(noisy.abs().sum(1), True, rtol=0),
                           rank_positions(plain.abs().sum(1), True, rtol=0))


@pytest.mark.parametrize("name", sorted(RANK_BASED))
def test_a_map_and_the_same_map_with_float_noise_score_alike(name, trained, tmp_path):
    plain, plain_curves = _evaluate(name, tied_saliency, trained, tmp_path)
    noisy, noisy_curves = _evaluate(name, noisy_tied_saliency, trained, tmp_path)
    headline = registry.evaluators.get(name).headline().name
    assert set(plain) == set(noisy) and headline in plain
    continuous = CONTINUOUS.get(name, set())
    for metric, value in plain.items():
        if metric in continuous:
            assert noisy[metric] == pytest.approx(value, rel=0, abs=1e-6), metric
        else:
            assert noisy[metric] == value, metric
    assert noisy_curves == plain_curves
    assert any(metric not in continuous for metric in plain)  # something rank-based was compared exactly
