"""gibench.api.ranks, the one implementation of ranks the evaluators share: tie-averaged ranks and Spearman's
correlation against scipy, rank positions and the floor(f·P + 0.5) count on small hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gibench
from gibench.api.ranks import fraction_count, rank_positions, rankdata_average, spearman

stats = pytest.importorskip("scipy.stats")


def _ties(shape: tuple[int, ...], seed: int, high: int = 4) -> torch.Tensor:
    """Integer-valued float64 data: many ties."""
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_rankdata_average_matches_scipy_with_ties_along_any_dimension(dim):
    x = _ties((5, 7, 30), seed=0)
    expected = stats.rankdata(x.numpy(), method="average", axis=dim)
    ranks = rankdata_average(x, dim=dim)
    assert ranks.dtype == torch.float64 and ranks.shape == x.shape
    np.testing.assert_array_equal(ranks.numpy(), expected)


def test_rankdata_average_of_float32_and_all_tied_rows():
    x = torch.tensor([[0.5, -1.0, 0.5, 2.0], [3.0, 3.0, 3.0, 3.0]], dtype=torch.float32)
    assert rankdata_average(x).tolist() == [[2.5, 1.0, 2.5, 4.0], [2.5, 2.5, 2.5, 2.5]]
    np.testing.assert_array_equal(rankdata_average(x).numpy(), stats.rankdata(x.numpy(), axis=1))


@pytest.mark.parametrize("dim", [-1, 0])
def test_spearman_matches_scipy_with_ties(dim):
    a, b = _ties((6, 50), seed=1), _ties((6, 50), seed=2, high=6)
    rho = spearman(a, b, dim=dim)
    a_np, b_np = (a.numpy(), b.numpy()) if dim == -1 else (a.numpy().T, b.numpy().T)
    expected = [stats.spearmanr(u, v).statistic for u, v in zip(a_np, b_np)]
    assert rho.dtype == torch.float64 and rho.shape == (len(expected),)
    np.testing.assert_allclose(rho.numpy(), expected, rtol=0, atol=1e-12)


def test_spearman_is_zero_for_an_all_tied_input_where_scipy_has_none():
    a = torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[1.0, 3.0, 2.0, 4.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    assert spearman(a, b).tolist() == [0.0, 0.0, 0.0]
    assert spearman(a, a).tolist()[:2] == [0.0, 0.0]  # a constant map agrees with nothing, not even itself
    assert spearman(a[2:], a[2:]).item() == pytest.approx(1.0, abs=1e-15)


def test_rank_positions_by_hand():
    scores = torch.tensor([[[0.3, 0.1], [0.3, 0.9]], [[1.0, 1.0], [1.0, 1.0]]])  # (N, H, W), ties in both images
    # descending: 0.9 first, then the two 0.3 in flat order (index 0 before index 2), then 0.1
    assert rank_positions(scores, descending=True).tolist() == [[1, 3, 2, 0], [0, 1, 2, 3]]
    # ascending: 0.1 first, then the 0.3 at index 0, the 0.3 at index 2, then 0.9
    assert rank_positions(scores, descending=False).tolist() == [[1, 0, 2, 3], [0, 1, 2, 3]]
    assert rank_positions(scores, descending=True).dtype == torch.int64


def test_rank_positions_select_the_top_k_with_one_comparison():
    scores = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0]])
    k = fraction_count(0.4, 5)
    assert k == 2
    assert (rank_positions(scores, descending=True) < k).tolist() == [[True, False, True, False, False]]
    assert (rank_positions(scores, descending=False) < k).tolist() == [[False, True, False, True, False]]


@pytest.mark.parametrize(("fraction", "sizes", "count"), [
    (0.5, (5,), 3),          # 2.5 rounds up (Python's round would give 2)
    (0.5, (7,), 4),          # 3.5 → 4
    (0.25, (10,), 3),        # 2.5 → 3
    (0.1, (784,), 78),       # 78.4 → 78
    (0.1, (28, 28), 78),
    (0.05, (10,), 1),        # 0.5 → 1
    (0.04, (10,), 0),        # 0.4 → 0
    (1.0, (3, 4), 12),
    (0.0, (100,), 0),
])
def test_fraction_count_by_hand(fraction, sizes, count):
    assert fraction_count(fraction, *sizes) == count


def test_fraction_count_multiplies_its_sizes_left_to_right():
    # (0.3·3)·15 and 0.3·45 differ in the last bit, right at a half: 13.499999999999998 vs 13.5
    assert 0.3 * 3 * 15 != 0.3 * 45
    assert fraction_count(0.3, 3, 15) == 13 and fraction_count(0.3, 45) == 14


def test_rankdata_average_and_spearman_are_exported_by_gibench():
    assert gibench.rankdata_average is rankdata_average and gibench.spearman is spearman
