"""``keep_remove`` (Hesse et al.'s six Keep/Remove curves) against a computation written from the paper's rules, one
image, one curve and one fraction at a time in numpy; the masking helpers it shares with ``pixel_perturbation``; and
``pixel_perturbation``'s numbers pinned across the move of its helpers into the shared masking module (now
:mod:`gibench.api.masking`)."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import gibench
from gibench.api.masking import fill_images, replace_ranked
from gibench.api.plugin import DatasetBundle, Split
from gibench.api.ranks import rank_positions
from gibench.api.saliency import saliency_for
from gibench.evaluators.keep_remove import CURVES, DEFAULT_FRACTIONS, KeepRemove, clipped_scores, kept_ranks
from gibench.evaluators.pixel_perturbation import PixelPerturbation
from gibench.testing import check_evaluator, make_eval_context, tiny_bundle, tiny_model
from gibench.training.models import Normalize


@pytest.fixture()
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def bundle_of(x: torch.Tensor, y: torch.Tensor, k: int) -> DatasetBundle:
    split = Split(x, y)
    mean, std = tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())
    return DatasetBundle("synthetic", split, split, k, mean, std)


def relu_cnn(c: int, h: int, w: int, k: int) -> nn.Module:
    """A ReLU CNN behind a Normalize layer (so the X-Gradient baseline is the mean colour, not black)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, k))
    normalize = Normalize([0.3, 0.5, 0.7][:c], [0.2, 0.25, 0.3][:c])
    return nn.Sequential(OrderedDict(normalize=normalize, backbone=backbone)).to(torch.get_default_dtype())


def blur_numpy(image: np.ndarray, sigma_fraction: float = 41 / 224) -> np.ndarray:
    """A (C, H, W) image blurred with a normalized separable Gaussian and reflect padding, in numpy loops."""
    c, h, w = image.shape
    sigma = sigma_fraction * min(h, w)
    size = max(3, min(2 * int(51 / 41 * sigma / 2) + 1, 2 * min(h, w) - 1))
    half = size // 2
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, ((0, 0), (half, half), (half, half)), mode="reflect")
    out = np.zeros_like(image)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                out[ch, i, j] = np.sum(np.outer(taps, taps) * padded[ch, i : i + size, j : j + size])
    return out


def curves_by_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fractions,
                   saliency: str) -> dict[tuple[str, str], list]:
    """The six curves from the paper's rules, one image at a time; the attribution is the signed input-gradient or
    the X-Gradient (x − mean colour) ⊙ gradient."""
    n, c, h, w = x.shape
    out = {curve: np.zeros(len(fractions)) for curve in CURVES}
    for b in range(n):
        xb = x[b : b + 1].clone().requires_grad_(True)
        model(xb)[0, int(y[b])].backward()
        g = xb.grad[0].numpy()
        if saliency == "x_gradient":
            g = (x[b].numpy() - model.normalize.mean[0].numpy()) * g
        score = g.mean(0).ravel()  # channel mean of the signed attribution
        image, blurred = x[b].numpy().reshape(c, -1), blur_numpy(x[b].numpy()).reshape(c, -1)
        for mode, sign in CURVES:
            s = {"positive": score, "negative": -score, "absolute": np.abs(score)}[sign]
            s = np.maximum(s, 0.0)
            positives = int((s > 0).sum())
            order = np.argsort(-s, kind="stable") if mode == "keep" else np.argsort(np.where(s > 0, s, np.inf),
                                                                                    kind="stable")
            for i, p in enumerate(fractions):
                k = min(int(math.floor(p * h * w + 0.5)), positives)
                masked = blurred.copy()
                masked[:, order[:k]] = image[:, order[:k]]
                with torch.no_grad():
                    logits = model(torch.tensor(masked.reshape(1, c, h, w)))[0]
                value = float(logits.argmax() == y[b]) if sign == "absolute" else float(logits[y[b]])
                out[mode, sign][i] += value / n
    return out


@pytest.mark.parametrize("saliency", ["input_gradient", "x_gradient"])
def test_six_curves_and_areas_match_the_hand_computation(float64, tmp_path, saliency):
    c, h, w, k = 3, 7, 6, 4
    torch.manual_seed(1)
    x = torch.rand(9, c, h, w)
    model = relu_cnn(c, h, w, k).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % k  # a third misclassified: accuracy curves are not trivially 1
    fractions = (0.03, 0.1, 0.25, 0.5, 0.8, 1.0)
    cfg = KeepRemove.Config(fractions=fractions, saliency=saliency)
    ctx = make_eval_context(model, bundle_of(x, y, k), tmp_path, batch_size=4, saliency=saliency_for(cfg))
    result = KeepRemove(cfg).evaluate(ctx)
    expected = curves_by_hand(model, x, y, fractions, saliency)
    for mode, sign in CURVES:
        curve = result.curves[f"{mode}_{sign}"]
        assert curve.x == fractions
        assert curve.y == pytest.approx(expected[mode, sign].tolist(), rel=1e-9, abs=1e-12)
        auc = float(np.trapezoid(expected[mode, sign], fractions))
        assert result.scalars[f"{mode}_{sign}_auc"] == pytest.approx(auc, rel=1e-9, abs=1e-12)
    # at p = 1 Keep and Remove keep the same pixels (every positive one)
    for sign in ("positive", "negative", "absolute"):
        assert result.curves[f"keep_{sign}"].y[-1] == pytest.approx(result.curves[f"remove_{sign}"].y[-1], abs=0)
    # the curves differ between modes below p = 1 (the test is not vacuous)
    assert result.curves["keep_positive"].y[1] != pytest.approx(result.curves["remove_positive"].y[1])


def test_masks_of_a_hand_made_score_map(float64):
    """One 1x2x3 attribution, worked out on paper: channel means [[3, -1, 0], [2, -4, 1]] (flat 0..5)."""
    attribution = torch.tensor([[[[3.0, -1.0, 0.0], [2.0, -4.0, 1.0]], [[3.0, -1.0, 0.0], [2.0, -4.0, 1.0]]]])
    expected_scores = {"positive": [3, 0, 0, 2, 0, 1], "negative": [0, 1, 0, 0, 4, 0],
                       "absolute": [3, 1, 0, 2, 4, 1]}
    for sign, values in expected_scores.items():
        assert clipped_scores(attribution, sign).flatten().tolist() == values
    x, fill = torch.arange(6.0).view(1, 1, 2, 3), torch.full((1, 1, 2, 3), -1.0)

    def kept(sign: str, mode: str, k: int) -> list[int]:
        ranks, positives = kept_ranks(clipped_scores(attribution, sign), mode)
        masked = replace_ranked(x, fill, ranks, positives.clamp_max(k), inside=False).flatten()
        return [i for i in range(6) if masked[i] == i]

    assert kept("positive", "keep", 2) == [0, 3]        # the two largest positive scores
    assert kept("positive", "remove", 2) == [3, 5]      # the two smallest positive scores
    assert kept("positive", "keep", 6) == kept("positive", "remove", 6) == [0, 3, 5]  # never a score <= 0
    assert kept("negative", "keep", 1) == [4] and kept("negative", "remove", 1) == [1]
    assert kept("absolute", "keep", 3) == [0, 3, 4]
    assert kept("absolute", "remove", 2) == [1, 5]      # ties 1 = 1 at flat 1 and 5; the next is 2 at flat 3
    assert kept("absolute", "remove", 3) == [1, 3, 5]


def test_ranked_breaks_ties_by_pixel_index_in_both_directions():
    scores = torch.tensor([[[1.0, 2.0, 1.0], [2.0, 0.0, 1.0]]])
    assert rank_positions(scores, descending=False)[0].tolist() == [1, 4, 2, 5, 0, 3]
    assert rank_positions(scores, descending=True)[0].tolist() == [2, 0, 3, 1, 5, 4]


def test_blur_fill_matches_a_numpy_blur(float64):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 9, 7)
    blurred = fill_images(x, "blur", (0.5, 0.5, 0.5))
    for b in range(2):
        np.testing.assert_allclose(blurred[b].numpy(), blur_numpy(x[b].numpy()), rtol=0, atol=1e-12)


def test_an_exact_attribution_scores_better_than_its_reverse_on_every_curve(float64, tmp_path):
    """On a linear model, w_y ⊙ (x − blur(x)) is each pixel's exact contribution to the label logit against its
    blurred value. Keeping the most positive contributions then gives a higher logit than keeping the least positive
    ones (Keep-Positive above Remove-Positive) at every fraction, the reverse holds for negative contributions, and
    keeping the largest |contributions| keeps more accuracy: each declared direction is the right one."""
    torch.manual_seed(0)
    c, h, w, k, n = 1, 6, 6, 3, 40
    x = torch.rand(n, c, h, w)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k, bias=False))
    with torch.no_grad():
        y = model(x).argmax(1)

    def contribution(m, xb, yb):
        return m[1].weight[yb].view(xb.shape) * (xb - fill_images(xb, "blur", (0.5,)))

    ctx = make_eval_context(model, bundle_of(x, y, k), tmp_path, batch_size=16, saliency=contribution)
    result = KeepRemove().evaluate(ctx)
    curves = {name: np.asarray(curve.y) for name, curve in result.curves.items()}
    assert (curves["keep_positive"] >= curves["remove_positive"] - 1e-12).all()
    assert (curves["keep_negative"] <= curves["remove_negative"] + 1e-12).all()
    s = result.scalars
    for mode, sign in CURVES:
        if mode == "keep":
            better = KeepRemove.metrics[[m.name for m in KeepRemove.metrics].index(f"keep_{sign}_auc")]
            keep, remove = s[f"keep_{sign}_auc"], s[f"remove_{sign}_auc"]
            assert (keep > remove) if better.higher_is_better else (keep < remove), (sign, keep, remove)
    assert result.curves["keep_absolute"].x == DEFAULT_FRACTIONS and len(DEFAULT_FRACTIONS) == 16
    assert DEFAULT_FRACTIONS == pytest.approx(np.geomspace(0.01, 1.0, 16).tolist(), rel=0)


def test_metrics_declare_directions_bounds_and_one_headline():
    metrics = {m.name: m for m in KeepRemove.metrics}
    assert KeepRemove.headline().name == "keep_absolute_auc"
    directions = {name: m.higher_is_better for name, m in metrics.items()}
    assert directions == {"keep_positive_auc": True, "remove_positive_auc": False, "keep_negative_auc": False,
                          "remove_negative_auc": True, "keep_absolute_auc": True, "remove_absolute_auc": False}
    assert metrics["keep_absolute_auc"].bounds == (0.0, 1.0) and metrics["keep_positive_auc"].bounds[1] == math.inf


@pytest.mark.parametrize("saliency", ["input_gradient", "x_gradient"])
def test_keep_remove_conforms_and_is_registered(saliency):
    result = check_evaluator("keep_remove", params={"max_images": 24, "fractions": [0.1, 0.5, 1.0],
                                                    "saliency": saliency})
    assert set(result.curves) == {f"{m}_{s}" for m, s in CURVES}
    assert isinstance(gibench.create_evaluator("keep_remove"), KeepRemove)


#: pixel_perturbation's numbers before its helpers moved to the shared masking module (computed by the code at commit
#: e463265 on this setup): the refactor must not change any stored result.
PIXEL_PERTURBATION_BEFORE = {
    "image_mean": ((0.16666666666666666, 0.3333333333333333, 0.18333333333333332, 0.16666666666666666,
                    0.3333333333333333), 0.24078204806942965, 0.3179081191226827),
    "blur": ((0.16666666666666666, 0.31666666666666665, 0.08333333333333333, 0.016666666666666666, 0.3),
             0.1926442267534537, 0.26591399425404416),
    "dataset_mean": ((0.15, 0.31666666666666665, 0.1, 0.13333333333333333, 0.3333333333333333),
                     0.20738274164378906, 0.3294770297806706),
}


@pytest.mark.parametrize("fill", sorted(PIXEL_PERTURBATION_BEFORE))
def test_pixel_perturbation_results_unchanged_by_the_shared_masking(fill, tmp_path):
    bundle = tiny_bundle(channels=3)
    model = tiny_model(bundle, batch_norm=False, seed=3)
    cfg = PixelPerturbation.Config(fill=fill, fractions=(0.05, 0.2, 0.5, 0.8, 1.0))
    result = PixelPerturbation(cfg).evaluate(make_eval_context(model, bundle, tmp_path, batch_size=16))
    curve, least, most = PIXEL_PERTURBATION_BEFORE[fill]
    assert result.curves["least_salient_first"].y == curve
    assert result.scalars["area_least_salient"] == least
    assert result.scalars["area_most_salient"] == most


@pytest.mark.parametrize("suite_name", ["standard", "full"])
def test_the_standard_and_full_suites_run_keep_remove_with_both_maps(suite_name):
    from gibench.suites.jobs import expand
    from gibench.suites.suite import load_suite

    suite = load_suite(suite_name)
    specs = [e for e in suite.evaluators if e.name == "keep_remove"]
    assert {e.config.get("saliency", "input_gradient") for e in specs} == {"input_gradient", "x_gradient"}
    jobs = expand(suite)
    assert all(any(e.name == "keep_remove" for e in job.evaluators) for job in jobs)  # every job, both maps on X
    x_jobs = [job for job in jobs if job.backbone.config.get("bias") is False]
    assert x_jobs and all(sum(e.name == "keep_remove" for e in job.evaluators) == 2 for job in x_jobs)
