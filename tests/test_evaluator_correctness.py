"""The evaluators measure what they claim: exact ground truth where it exists (analytic scores, linear models), and
otherwise equality with an independent, unbatched computation on a few images (float64 throughout)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from gibench.api.plugin import SIGNAL_MASK, DatasetBundle, EvalContext, Split
from gibench.api.ranks import rankdata_average
from gibench.data.gaussian_mixture import BayesClassifier, GaussianMixture, GaussianMixtureConfig
from gibench.evaluators.accuracy import Accuracy
from gibench.evaluators.blockmnist import BlockMNISTLeakage
from gibench.evaluators.density_ratio import DensityRatio
from gibench.evaluators.pixel_perturbation import DEFAULT_FRACTIONS, PixelPerturbation, area, removal_ranks
from gibench.evaluators.score_alignment import ScoreAlignment, cosine, spearman
from gibench.testing import make_eval_context


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def make_bundle(x, y, num_classes, capabilities=frozenset(), test_extras=None, extras=None) -> DatasetBundle:
    split = Split(x, y, test_extras or {})
    mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
    std = tuple(x.std(dim=(0, 2, 3)).tolist())
    return DatasetBundle("synthetic", split, split, num_classes, mean, std,
                         capabilities=frozenset(capabilities), extras=extras or {})


def make_ctx(model, bundle, tmp_path: Path, batch_size=4, seed=0) -> EvalContext:
    return make_eval_context(model, bundle, tmp_path, batch_size=batch_size, seed=seed)


def small_cnn(c, h, w, k, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.Softplus(beta=5), nn.Flatten(), nn.Linear(4 * h * w, k))


def labels_half_correct(model, x, k, seed=0) -> torch.Tensor:
    """Labels equal to the model's prediction for 2/3 of the images and random otherwise (non-trivial accuracy)."""
    with torch.no_grad():
        y = model(x).argmax(1)
    g = torch.Generator().manual_seed(seed)
    other = torch.randint(0, k, y.shape, generator=g)
    return torch.where(torch.arange(len(y)) % 3 == 2, other, y)


def grad_one(model, x1, y1) -> np.ndarray:
    """∇x f_y(x) for one image (1, C, H, W), unbatched."""
    x1 = x1.clone().requires_grad_(True)
    model(x1)[0, int(y1)].backward()
    return x1.grad[0].numpy()


# ----------------------------------------------------------------------------------------------------------------------
# score_alignment


@pytest.fixture(scope="module")
def mixture():
    cfg = GaussianMixtureConfig(num_classes=3, height=6, width=6, train_size=10, test_size=60)
    bundle = GaussianMixture(cfg).load()
    test = Split(bundle.test.x.double(), bundle.test.y)
    return DatasetBundle(bundle.name, test, test, bundle.num_classes, bundle.mean, bundle.std,
                         capabilities=bundle.capabilities, extras=bundle.extras)


class Shifted(nn.Module):
    """A model plus the same g(x) on every logit: softmax, predictions and accuracy are unchanged."""

    def __init__(self, base: nn.Module, dim: int) -> None:
        super().__init__()
        self.base = base
        g = torch.Generator().manual_seed(1)
        self.freq = torch.randn(dim, generator=g) * 7
        self.phase = torch.rand(dim, generator=g) * 6.28

    def g(self, x):
        return 50 * torch.sin(x.flatten(1) * self.freq + self.phase).sum(1, keepdim=True)

    def forward(self, x):
        return self.base(x) + self.g(x)


def test_bayes_model_is_perfectly_aligned(mixture, tmp_path):
    model = BayesClassifier(mixture.extras["density"])
    result = ScoreAlignment(ScoreAlignment.Config(max_images=0)).evaluate(make_ctx(model, mixture, tmp_path))
    for name in ("cosine_conditional", "spearman_conditional", "cosine_unconditional", "spearman_unconditional"):
        assert result.scalars[name] == pytest.approx(1.0, abs=1e-12), name


def test_shifted_logits_keep_accuracy_and_lose_alignment(mixture, tmp_path):
    bayes = BayesClassifier(mixture.extras["density"])
    shifted = Shifted(bayes, mixture.test.x[0].numel())
    x = mixture.test.x
    with torch.no_grad():
        assert torch.equal(shifted(x).argmax(1), bayes(x).argmax(1))
    acc = [Accuracy().evaluate(make_ctx(m, mixture, tmp_path)).scalars["accuracy"] for m in (bayes, shifted)]
    assert acc[0] == acc[1] and acc[0] > 0.9
    result = ScoreAlignment().evaluate(make_ctx(shifted, mixture, tmp_path))
    for name, value in result.scalars.items():
        assert abs(value) < 0.3, (name, value)


def test_score_alignment_matches_unbatched_computation(mixture, tmp_path):
    model = small_cnn(1, 6, 6, 3)
    n = 7
    result = ScoreAlignment(ScoreAlignment.Config(max_images=n)).evaluate(make_ctx(model, mixture, tmp_path, 3))
    score = mixture.extras["score"]
    expected = {k: [] for k in result.scalars}
    for i in range(n):
        x1, y1 = mixture.test.x[i : i + 1], mixture.test.y[i : i + 1]
        g = grad_one(model, x1, y1).ravel()
        xu = x1.clone().requires_grad_(True)
        torch.logsumexp(model(xu), 1).sum().backward()
        gu = xu.grad[0].numpy().ravel()
        s, su = score(x1, y1)[0].numpy().ravel(), score(x1, None)[0].numpy().ravel()
        expected["cosine_conditional"].append(g @ s / np.linalg.norm(g) / np.linalg.norm(s))
        expected["spearman_conditional"].append(stats.spearmanr(g, s).statistic)
        expected["cosine_unconditional"].append(gu @ su / np.linalg.norm(gu) / np.linalg.norm(su))
        expected["spearman_unconditional"].append(stats.spearmanr(gu, su).statistic)
    for name, values in expected.items():
        assert result.scalars[name] == pytest.approx(float(np.mean(values)), abs=1e-10), name


def test_rank_correlation_handles_ties_and_zero_maps():
    a = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 2.0, 2.0, 5.0, 0.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    assert torch.allclose(rankdata_average(a)[0], torch.tensor(stats.rankdata(a[0].numpy()), dtype=torch.float64))
    rho = spearman(a, b)
    assert rho[0].item() == pytest.approx(stats.spearmanr(a[0].numpy(), b[0].numpy()).statistic, abs=1e-12)
    assert rho[1].item() == 0.0 and cosine(a, b)[1].item() == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# pixel_perturbation


def _fill_independent(x: np.ndarray, mode: str, dataset_mean, sigma_fraction=41 / 224) -> np.ndarray:
    """The fill of one (C, H, W) image, computed without the evaluator's helpers."""
    if mode == "image_mean":
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    if mode == "constant":
        return np.full_like(x, 0.5)
    if mode == "dataset_mean":
        return np.broadcast_to(np.asarray(dataset_mean).reshape(-1, 1, 1), x.shape)
    side = min(x.shape[1:])  # blur: separable Gaussian, reflect padding
    sigma = sigma_fraction * side
    size = max(3, min(2 * int(51 / 41 * sigma / 2) + 1, 2 * side - 1))
    t = np.linspace(-(size // 2), size // 2, size)
    k1 = np.exp(-0.5 * (t / sigma) ** 2)
    k1 /= k1.sum()
    kernel = torch.tensor(np.outer(k1, k1)).expand(x.shape[0], 1, size, size)
    padded = F.pad(torch.tensor(x)[None], [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=x.shape[0])[0].numpy()


def _pixel_perturbation_unbatched(model, x, y, fractions, fill, dataset_mean, reduction="abs_sum"):
    """Accuracy curves (least-first, most-first), one image and one fraction at a time."""
    n, c, h, w = x.shape
    correct = np.zeros((2, len(fractions)))
    for i in range(n):
        g = grad_one(model, x[i : i + 1], y[i])
        s = (np.abs(g).sum(0) if reduction == "abs_sum" else g.std(0)).ravel()
        xi = x[i].numpy()
        fi = _fill_independent(xi, fill, dataset_mean).reshape(c, -1)
        for o, order in enumerate((np.argsort(s, kind="stable"), np.argsort(-s, kind="stable"))):
            for j, f in enumerate(fractions):
                k = int(math.floor(f * h * w + 0.5))
                xp = xi.reshape(c, -1).copy()
                xp[:, order[:k]] = fi[:, order[:k]]
                with torch.no_grad():
                    pred = model(torch.tensor(xp.reshape(1, c, h, w))).argmax(1).item()
                correct[o, j] += pred == int(y[i])
    return correct / n


@pytest.mark.parametrize("fill", ["image_mean", "constant", "dataset_mean", "blur"])
def test_pixel_perturbation_matches_unbatched_computation(fill, tmp_path):
    torch.manual_seed(0)
    c, h, w, k = 3, 6, 5, 4
    x = torch.rand(10, c, h, w)
    model = small_cnn(c, h, w, k).eval()
    y = labels_half_correct(model, x, k)
    bundle = make_bundle(x, y, k)
    fractions = (0.04, 0.1, 0.3, 0.5, 0.8, 1.0)
    reduction = "channel_std" if fill == "blur" else "abs_sum"
    cfg = PixelPerturbation.Config(fractions=fractions, fill=fill, pixel_reduction=reduction)
    result = PixelPerturbation(cfg).evaluate(make_ctx(model, bundle, tmp_path, batch_size=4))
    expected = _pixel_perturbation_unbatched(model, x, y, fractions, fill, bundle.mean, reduction)
    assert result.curves["least_salient_first"].y == pytest.approx(expected[0].tolist(), abs=0)
    assert result.curves["most_salient_first"].y == pytest.approx(expected[1].tolist(), abs=0)
    assert result.curves["least_salient_first"].x == fractions


def test_pixel_perturbation_on_a_linear_model_matches_its_weights(tmp_path):
    torch.manual_seed(0)
    c, h, w, k, n = 2, 5, 5, 3, 30
    x = torch.rand(n, c, h, w)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k))
    y = labels_half_correct(model, x, k, seed=1)
    result = PixelPerturbation().evaluate(make_ctx(model, make_bundle(x, y, k), tmp_path, batch_size=8))
    weight, bias = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    xs, ys = x.numpy().reshape(n, c, h * w), y.numpy()
    correct = np.zeros((2, len(DEFAULT_FRACTIONS)))
    for i in range(n):
        score = np.abs(weight[ys[i]].reshape(c, h * w)).sum(0)  # the saliency of a linear model is its weight row
        fill = xs[i].mean(1, keepdims=True)
        for o, order in enumerate((np.argsort(score, kind="stable"), np.argsort(-score, kind="stable"))):
            for j, f in enumerate(DEFAULT_FRACTIONS):
                xp = xs[i].copy()
                xp[:, order[: int(math.floor(f * h * w + 0.5))]] = fill
                correct[o, j] += np.argmax(weight @ xp.ravel() + bias) == ys[i]
    acc = correct / n
    clean = float(np.mean(np.argmax(xs.reshape(n, -1) @ weight.T + bias, 1) == ys))
    u = np.log10(DEFAULT_FRACTIONS)
    areas = [np.sum((a[1:] + a[:-1]) * np.diff(u)) / 2 / (u[-1] - u[0]) for a in acc]
    assert result.curves["least_salient_first"].y == pytest.approx(acc[0].tolist(), abs=0)
    assert result.curves["most_salient_first"].y == pytest.approx(acc[1].tolist(), abs=0)
    assert result.scalars["clean_accuracy"] == pytest.approx(clean, abs=0)
    assert result.scalars["area_least_salient"] == pytest.approx(areas[0], abs=1e-12)
    assert result.scalars["area_most_salient"] == pytest.approx(areas[1], abs=1e-12)
    assert result.scalars["area_least_salient_normalized"] == pytest.approx(areas[0] / clean, abs=1e-12)
    assert result.scalars["area_most_salient_normalized"] == pytest.approx(areas[1] / clean, abs=1e-12)
    # most-salient-first removal hurts a linear model more than least-salient-first removal
    assert areas[1] < areas[0]


def test_removal_ranks_break_ties_by_pixel_index():
    scores = torch.tensor([[[2.0, 1.0, 2.0], [0.0, 1.0, 2.0]]])
    least, most = removal_ranks(scores)
    flat = scores.flatten(1)[0].numpy()
    for ranks, order in ((least, np.argsort(flat, kind="stable")), (most, np.argsort(-flat, kind="stable"))):
        assert ranks[0, torch.tensor(order)].tolist() == list(range(6))
    assert least[0].tolist() == [3, 1, 4, 0, 2, 5] and most[0].tolist() == [0, 3, 1, 5, 4, 2]


def test_area_is_normalized_by_the_axis_width():
    fractions = list(DEFAULT_FRACTIONS)
    assert area(fractions, [0.7] * 25, "log") == pytest.approx(0.7, abs=1e-12)
    assert area(fractions, [0.7] * 25, "linear") == pytest.approx(0.7, abs=1e-12)
    assert area([0.0, 1.0], [1.0, 0.0], "linear") == pytest.approx(0.5)
    # over log10(f) from 0.01 to 1, a curve equal to log10(f) + 2 (0 -> 2) has mean 1
    assert area(fractions, [math.log10(f) + 2 for f in fractions], "log") == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# density_ratio


@pytest.mark.parametrize("clamp", [False, True])
def test_density_ratio_matches_unbatched_computation(clamp, tmp_path):
    torch.manual_seed(0)
    c, h, w, k, n, draws = 1, 5, 5, 3, 9, 2
    x = torch.rand(n, c, h, w)
    model = small_cnn(c, h, w, k)
    y = labels_half_correct(model, x, k)
    sigmas = (0.05, 0.1, 0.3)
    cfg = DensityRatio.Config(sigmas=sigmas, reference_sigma=0.1, num_draws=draws, clamp=clamp)
    result = DensityRatio(cfg).evaluate(make_ctx(model, make_bundle(x, y, k), tmp_path, batch_size=4, seed=5))
    z = torch.randn((n, draws, c, h, w), generator=torch.Generator().manual_seed(5), dtype=torch.float32).double()
    logs, ratios = [], []
    with torch.no_grad():
        for s in sigmas:
            deltas = []
            for i in range(n):
                clean = model(x[i : i + 1])[0, y[i]].item()
                for d in range(draws):
                    noisy = x[i : i + 1] + s * z[i : i + 1, d]
                    noisy = noisy.clamp(0, 1) if clamp else noisy
                    deltas.append(model(noisy)[0, y[i]].item() - clean)
            logs.append(np.mean(deltas))
            ratios.append(np.mean(np.exp(deltas)))
    assert result.curves["mean_log_ratio"].y == pytest.approx(logs, abs=1e-12)
    assert result.curves["mean_ratio"].y == pytest.approx(ratios, rel=1e-12)
    assert result.scalars["mean_log_ratio_at_ref"] == pytest.approx(logs[1], abs=1e-12)
    assert result.scalars["mean_ratio_at_ref"] == pytest.approx(ratios[1], rel=1e-12)


def test_density_ratio_of_a_linear_model_is_the_projected_noise(tmp_path):
    torch.manual_seed(0)
    n, d, k = 40, 16, 2
    x = torch.rand(n, 1, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k))
    y = torch.arange(n) % k
    result = DensityRatio(DensityRatio.Config(sigmas=(0.1, 0.2), reference_sigma=0.2)).evaluate(
        make_ctx(model, make_bundle(x, y, k), tmp_path, batch_size=16, seed=3))
    z = torch.randn((n, 1, 1, 4, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float32).double()
    projected = (model[1].weight.detach()[y] * z.flatten(1)).sum(1)  # f_y(x + s z) − f_y(x) = s <w_y, z>
    for s, log_ratio, ratio in zip((0.1, 0.2), result.curves["mean_log_ratio"].y, result.curves["mean_ratio"].y):
        assert log_ratio == pytest.approx(float((s * projected).mean()), abs=1e-12)
        assert ratio == pytest.approx(float(torch.exp(s * projected).mean()), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# blockmnist


def _leakage_bundle(n=12, seed=0):
    """Tiny 1×8×4 images whose signal is the top or the bottom 4×4 half at random."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 4, generator=g)
    top = torch.rand(n, generator=g) < 0.5
    mask = torch.zeros(n, 1, 8, 4, dtype=torch.bool)
    mask[top, :, :4] = True
    mask[~top, :, 4:] = True
    y = torch.randint(0, 2, (n,), generator=g)
    return make_bundle(x, y, 2, capabilities={SIGNAL_MASK}, test_extras={"signal_mask": mask})


def test_blockmnist_leakage_matches_unbatched_computation(tmp_path):
    bundle = _leakage_bundle()
    model = small_cnn(1, 8, 4, 2)
    cfg = BlockMNISTLeakage.Config(top_k_fraction=0.25)
    result = BlockMNISTLeakage(cfg).evaluate(make_ctx(model, bundle, tmp_path, batch_size=5))
    k = 8  # 0.25 · 32 pixels
    mass, topk = [], []
    for i in range(len(bundle.test)):
        s = np.abs(grad_one(model, bundle.test.x[i : i + 1], bundle.test.y[i])).sum(0).ravel()
        m = bundle.test.extras["signal_mask"][i, 0].numpy().ravel()
        mass.append(s[m].sum() / s.sum())
        topk.append(np.mean(~m[np.argsort(-s, kind="stable")[:k]]))
    assert result.scalars["signal_mass_share"] == pytest.approx(float(np.mean(mass)), abs=1e-12)
    assert result.scalars["null_topk_share"] == pytest.approx(float(np.mean(topk)), abs=1e-12)


@pytest.mark.parametrize("block", ["top", "bottom", "none"])
def test_blockmnist_leakage_of_models_looking_at_one_block(block, tmp_path):
    bundle = _leakage_bundle()
    masks = bundle.test.extras["signal_mask"][:, 0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 2))
    with torch.no_grad():
        weight = torch.zeros(2, 8, 4)
        if block != "none":
            rows = slice(0, 4) if block == "top" else slice(4, 8)
            weight[:, rows] = torch.randn(2, 4, 4)
        model[1].weight.copy_(weight.view(2, 32))
    evaluator = BlockMNISTLeakage(BlockMNISTLeakage.Config(top_k_fraction=0.25))
    result = evaluator.evaluate(make_ctx(model, bundle, tmp_path))
    on_top = masks[:, 0, 0].double()
    if block == "none":  # a zero map: the mask's share of the pixels, and ties broken towards the top rows
        assert result.scalars["signal_mass_share"] == pytest.approx(0.5, abs=1e-12)
        assert result.scalars["null_topk_share"] == pytest.approx(float(1 - on_top.mean()), abs=1e-12)
    else:
        looked_at_signal = on_top if block == "top" else 1 - on_top
        assert result.scalars["signal_mass_share"] == pytest.approx(float(looked_at_signal.mean()), abs=1e-12)
        assert result.scalars["null_topk_share"] == pytest.approx(float(1 - looked_at_signal.mean()), abs=1e-12)
