"""ROAD (evaluators/road.py): the noisy linear imputation against hand-solved systems and Quantus 0.6.0's imputer,
the evaluator's curves against an independent per-image loop, and the erm vs fooled ordering on a trained pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gibench.api import registry
from gibench.api.saliency import input_gradient, pixel_scores
from gibench.evaluators.road import ORDERS, impute, noisy_linear_imputation, removal_ranks
from gibench.testing import make_eval_context, tiny_bundle, tiny_model


def test_an_image_with_every_pixel_kept_is_returned_unchanged():
    x = np.random.default_rng(0).random((2, 3, 5, 7))
    out = impute(x, np.zeros((2, 5, 7), dtype=bool))
    assert np.array_equal(out, x) and out is not x
    noisy = noisy_linear_imputation(torch.from_numpy(x).float(), torch.zeros(2, 5, 7, dtype=torch.bool),
                                    torch.randn(2, 3, 5, 7))
    assert torch.equal(noisy, torch.from_numpy(x).float())  # noise lands on removed pixels only: none here


def test_kept_pixels_stay_bit_identical_and_removed_ones_change():
    rng = np.random.default_rng(1)
    x, removed = rng.random((4, 2, 6, 6)), rng.random((4, 6, 6)) < 0.6
    out = impute(x, removed)
    keep = np.broadcast_to(~removed[:, None], x.shape)
    assert np.array_equal(out[keep], x[keep])
    assert not np.allclose(out[~keep], x[~keep])


def test_centre_pixel_is_the_weighted_mean_of_its_eight_neighbours():
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3) / 10
    removed = np.zeros((1, 3, 3), dtype=bool)
    removed[0, 1, 1] = True
    edges, corners = x[0, 0, [0, 1, 1, 2], [1, 0, 2, 1]].sum(), x[0, 0, [0, 0, 2, 2], [0, 2, 0, 2]].sum()
    assert impute(x, removed)[0, 0, 1, 1] == pytest.approx(edges / 6 + corners / 12, abs=1e-15)


def test_two_coupled_unknowns_match_the_hand_solved_system():
    """2×2 image, top row removed (a, b), bottom row kept (c = 0, d = 0.6). At the border the weights of a are
    b: 1/6, c: 1/6, d: 1/12 (sum 5/12), so ×12: 5a − 2b = 2c + d = 0.6 and, by symmetry, 5b − 2a = 2d + c = 1.2.
    Hence 21b = 7.2: b = 12/35, a = 9/35."""
    x = np.array([[[[0.9, 0.9], [0.0, 0.6]]]])
    removed = np.array([[[True, True], [False, False]]])
    out = impute(x, removed)
    np.testing.assert_allclose(out[0, 0, 0], [9 / 35, 12 / 35], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(out[0, 0, 1], [0.0, 0.6])


def test_imputation_matches_quantus_on_grey_and_rgb_images():
    """Quantus 0.6.0's ``noisy_linear_imputation`` (the reference's solver) on one image at a time, noise 0. Its ROAD
    metric crashes on RGB (research note §4.1), but the imputer itself takes pixel indices for a (C, H, W) array."""
    quantus_impute = pytest.importorskip("quantus.functions.perturb_func").noisy_linear_imputation
    rng = np.random.default_rng(2)
    for channels, fraction in ((1, 0.3), (3, 0.9)):
        x, removed = rng.random((3, channels, 9, 11)), rng.random((3, 9, 11)) < fraction
        out = impute(x, removed)
        for i in range(3):
            ref = quantus_impute(x[i], np.flatnonzero(removed[i].ravel()), noise=0.0)
            np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-12)


def test_batched_solve_equals_one_image_at_a_time():
    rng = np.random.default_rng(3)
    x, removed = rng.random((5, 3, 8, 8)), rng.random((5, 8, 8)) < 0.7
    together = impute(x, removed)
    alone = np.concatenate([impute(x[i:i + 1], removed[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-13)


def test_noise_is_added_to_removed_pixels_and_clipped_to_the_data_range():
    rng = np.random.default_rng(4)
    x, removed = rng.random((2, 1, 6, 6)), rng.random((2, 6, 6)) < 0.5
    noise = torch.full((2, 1, 6, 6), 0.01, dtype=torch.float64)
    noise[0, 0, 0, 0] = 5.0  # pushes that pixel (if removed) above 1: clipped
    out = noisy_linear_imputation(torch.from_numpy(x), torch.from_numpy(removed), noise)
    expected = torch.from_numpy(impute(x, removed))
    mask = torch.from_numpy(removed).unsqueeze(1)
    expected = torch.where(mask, (expected + noise).clamp(0, 1), expected)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.max() <= 1.0


def test_removal_orders_rank_most_least_and_random():
    scores = torch.tensor([[[0.3, 0.1], [0.9, 0.1]]])
    perm = torch.tensor([[2, 0, 3, 1]])
    ranks = removal_ranks(scores, perm)
    assert ranks[0].tolist() == [[1, 2, 0, 3]]  # most relevant first; tie 0.1/0.1: lower index first
    assert ranks[1].tolist() == [[2, 0, 3, 1]]  # least relevant first
    assert ranks[2].tolist() == [[2, 0, 3, 1]]


def _independent_road(model, x, y, fractions):
    """Per image, per order, per fraction: numpy argsort ranks, Quantus' imputer (noise 0), one forward."""
    quantus_impute = pytest.importorskip("quantus.functions.perturb_func").noisy_linear_imputation
    scores = pixel_scores(input_gradient(model, x, y)).flatten(1).numpy()
    p = scores.shape[1]
    accuracy = np.zeros((3, len(fractions)))
    for b in range(len(y)):
        perm = np.random.default_rng([0, b]).permutation(p)
        orders = [np.argsort(-scores[b], kind="stable"), np.argsort(scores[b], kind="stable"), np.argsort(perm)]
        for o, order in enumerate(orders):
            for i, f in enumerate(fractions):
                k = int(math.floor(f * p + 0.5))
                filled = quantus_impute(x[b].double().numpy(), order[:k], noise=0.0)
                with torch.no_grad():
                    pred = model(torch.from_numpy(filled).float()[None]).argmax(1)
                accuracy[o, i] += float(pred == y[b])
    return accuracy / len(y)


def test_curves_match_an_independent_per_image_computation(tmp_path):
    bundle = tiny_bundle(channels=3)
    model = tiny_model(bundle, seed=1).eval()
    fractions = (0.2, 0.5, 0.8)
    ctx = make_eval_context(model, bundle, tmp_path, batch_size=16)
    result = registry.evaluators.create("road", fractions=fractions, noise=0.0, max_images=24).evaluate(ctx)
    x, y = bundle.test.x[:24], bundle.test.y[:24]
    expected = _independent_road(model, x, y, fractions)
    for o, order in enumerate(ORDERS):
        np.testing.assert_allclose(result.curves[order].y, expected[o], atol=1e-12)
    assert result.scalars["gap_lerf_morf"] == pytest.approx(expected[1].mean() - expected[0].mean())
    assert result.scalars["gap_random_morf"] == pytest.approx(expected[2].mean() - expected[0].mean())


def test_fractions_must_be_proper_and_increasing():
    from gibench.core.errors import ConfigError

    for bad in ([0.5, 1.0], [0.5, 0.3], []):
        with pytest.raises(ConfigError):
            registry.evaluators.create("road", fractions=bad)


@pytest.mark.slow
def test_road_ranks_fooled_below_erm_on_a_trained_pair(tmp_path, one_thread):
    """2,000 digits of mnist_subset, gibench_cnn (softplus), Adam 1e-3, batch 64, 2 epochs, seed 0; ROAD on the first
    200 test images at 10/30/50/70/90 %. Observed: gap_lerf_morf erm 0.69 vs fooled −0.02 (MoRF accuracy 0.25 vs
    0.65, random order 0.88 vs 0.77)."""
    from gibench import load_dataset
    from gibench.data.tensors import make_bundle
    from gibench.suites.suite import PluginSpec, TrainConfig
    from gibench.training.train import fit

    full = load_dataset("mnist_subset")
    bundle = make_bundle("mnist_2000", full.train.x[:2000], full.train.y[:2000], full.test.x[:200],
                         full.test.y[:200], num_classes=10)
    backbone = PluginSpec.of("gibench_cnn", {"act": "softplus"}, {"act": "softplus"})
    train = TrainConfig(epochs=2, batch_size=64, optimizer="adam", lr=1e-3, amp=False, log_every=1000)
    scores = {}
    for name in ("erm", "fooled"):
        model = fit(bundle, backbone, registry.regularizers.create(name), train, seed=0).model
        ctx = make_eval_context(model, bundle, tmp_path / name, batch_size=100)
        scores[name] = registry.evaluators.create("road", fractions=[0.1, 0.3, 0.5, 0.7, 0.9]).evaluate(ctx).scalars
    assert scores["erm"]["gap_lerf_morf"] > 0.5, scores
    assert scores["fooled"]["gap_lerf_morf"] < scores["erm"]["gap_lerf_morf"] - 0.3, scores
    assert scores["fooled"]["morf_accuracy"] > scores["erm"]["morf_accuracy"], scores
