"""``decoy_mnist`` (Ross, Hughes & Doshi-Velez, "Right for the Right Reasons", IJCAI 2017) and the ``decoy_reliance``
evaluator: the construction against the paper's rules, the metrics against independent computations, and a short real
training run in which plain training learns the decoy."""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import gibench
from gibench.api import registry
from gibench.api.cost import CostContext
from gibench.api.plugin import DECOY_SHORTCUT, IRRELEVANT_MASK, DataSizes
from gibench.data.bundled import MNISTSubset
from gibench.data.decoy_mnist import DecoyMNIST, DecoyMNISTConfig
from gibench.data.tensors import make_bundle
from gibench.testing import check_evaluator, make_eval_context, tiny_bundle, tiny_model, trained_model

SHADES = (255.0 - 25.0 * np.arange(10)) / 255.0  # Ross et al.'s gray levels 255 − 25·k, in [0, 1] pixel units
TOP, BOTTOM = set(range(4)), set(range(24, 28))


@pytest.fixture(scope="module")
def source():
    return MNISTSubset().load(None)


@pytest.fixture(scope="module")
def decoy():
    return DecoyMNIST().load(None)


def _corner(mask: torch.Tensor) -> tuple[bool, bool]:
    """(bottom, right) of one (1, 28, 28) mask, after checking it is exactly a 4×4 corner block."""
    rows = set(torch.nonzero(mask[0].any(1)).flatten().tolist())
    cols = set(torch.nonzero(mask[0].any(0)).flatten().tolist())
    assert rows in (TOP, BOTTOM) and cols in (TOP, BOTTOM) and int(mask.sum()) == 16
    return rows == BOTTOM, cols == BOTTOM


def _shade_digit(image: torch.Tensor, mask: torch.Tensor) -> int:
    """The k of the swatch's one gray level (255 − 25·k)/255, checked to be one of the ten shades."""
    values = image[mask].unique()
    assert len(values) == 1
    k = int(np.argmin(np.abs(SHADES - float(values[0]))))
    assert abs(float(values[0]) - SHADES[k]) < 1e-7
    return k


# ----------------------------------------------------------------------------------------------------------------------
# The dataset


def test_train_swatch_is_the_label_shade_on_exactly_the_masked_corner_and_the_digit_is_unchanged(decoy, source):
    x, y, mask = decoy.train.x, decoy.train.y, decoy.train.extras[IRRELEVANT_MASK]
    assert x.shape == (4000, 1, 28, 28) and torch.equal(y, source.train.y)
    assert mask.dtype == torch.bool and mask.shape == x.shape
    for i in range(0, 4000, 37):
        _corner(mask[i])
    assert (mask.flatten(1).sum(1) == 16).all()
    expected = torch.tensor(SHADES, dtype=torch.float64)[y].view(-1, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(x[mask].double(), expected[mask], rtol=0, atol=1e-7)  # replaced, not added
    assert torch.equal(torch.where(mask, 0.0, x), torch.where(mask, 0.0, source.train.x))
    assert decoy.capabilities == frozenset({IRRELEVANT_MASK, DECOY_SHORTCUT}) and decoy.num_classes == 10


def test_test_shades_are_random_digits_shades_independent_of_the_label(decoy, source):
    x, y, mask = decoy.test.x, decoy.test.y, decoy.test.extras[IRRELEVANT_MASK]
    assert torch.equal(y, source.test.y) and len(y) == 1000
    digits = np.array([_shade_digit(x[i], mask[i]) for i in range(len(y))])
    matches = float(np.mean(digits == y.numpy()))
    assert 0.07 < matches < 0.13  # 1/10 ± 3 binomial standard deviations (0.0095)
    counts = np.bincount(digits, minlength=10)
    assert counts.min() > 65 and counts.max() < 135  # each of the ten shades, about 100 times
    for label in range(10):  # within one label, the shades spread over the digits
        assert len(set(digits[y.numpy() == label])) >= 7
    assert torch.equal(torch.where(mask, 0.0, x), torch.where(mask, 0.0, source.test.x))


def test_each_corner_appears_a_quarter_of_the_time(decoy):
    masks = torch.cat([decoy.train.extras[IRRELEVANT_MASK], decoy.test.extras[IRRELEVANT_MASK]])
    share = {corner: float(masks[:, 0, r, c].float().mean()) for corner, (r, c) in
             {"top-left": (0, 0), "top-right": (0, 27), "bottom-left": (27, 0), "bottom-right": (27, 27)}.items()}
    assert sum(share.values()) == pytest.approx(1.0)
    for corner, value in share.items():
        assert abs(value - 0.25) < 0.02, (corner, value)  # 5,000 images: σ = 0.006


def test_the_draws_follow_the_stated_order_of_the_raw_pcg64_stream(decoy):
    """One raw output per image for its corner (train then test; bit 0 rows, bit 1 columns), then one per test image
    for its shade digit (output mod 10)."""
    n_train, n_test = len(decoy.train), len(decoy.test)
    raw = np.random.PCG64(0).random_raw(n_train + 2 * n_test)
    masks = torch.cat([decoy.train.extras[IRRELEVANT_MASK], decoy.test.extras[IRRELEVANT_MASK]])
    for i in [0, 1, 2, 3, 999, n_train - 1, n_train, n_train + 500, n_train + n_test - 1]:
        assert _corner(masks[i]) == (bool(raw[i] & 1), bool((raw[i] >> 1) & 1)), i
    for j in [0, 1, 2, 400, n_test - 1]:
        assert _shade_digit(decoy.test.x[j], decoy.test.extras[IRRELEVANT_MASK][j]) == int(raw[n_train + n_test + j]
                                                                                            % 10), j


def test_decoy_shortcut_differs_from_the_test_image_only_in_the_mask_and_carries_the_label_shade(decoy, source):
    x, y = decoy.test.x, decoy.test.y
    mask, shortcut = decoy.test.extras[IRRELEVANT_MASK], decoy.test.extras[DECOY_SHORTCUT]
    assert shortcut.shape == x.shape and shortcut.dtype == torch.float32
    assert torch.equal(torch.where(mask, 0.0, shortcut), torch.where(mask, 0.0, x))
    assert torch.equal(torch.where(mask, 0.0, shortcut), torch.where(mask, 0.0, source.test.x))
    expected = torch.tensor(SHADES, dtype=torch.float64)[y].view(-1, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(shortcut[mask].double(), expected[mask], rtol=0, atol=1e-7)
    differs = (shortcut != x).flatten(1).any(1)
    assert abs(float(differs.float().mean()) - 0.9) < 0.03  # the same shade where the random digit is the label


def test_same_seed_same_tensors_other_seed_other_corners(decoy):
    again = DecoyMNIST().load(None)
    for a, b in [(again.train.x, decoy.train.x), (again.test.x, decoy.test.x),
                 (again.train.extras[IRRELEVANT_MASK], decoy.train.extras[IRRELEVANT_MASK]),
                 (again.test.extras[IRRELEVANT_MASK], decoy.test.extras[IRRELEVANT_MASK]),
                 (again.test.extras[DECOY_SHORTCUT], decoy.test.extras[DECOY_SHORTCUT])]:
        assert torch.equal(a, b)
    other = DecoyMNIST(DecoyMNISTConfig(decoy_seed=1)).load(None)
    moved = (other.train.extras[IRRELEVANT_MASK] != decoy.train.extras[IRRELEVANT_MASK]).flatten(1).any(1)
    assert abs(float(moved.float().mean()) - 0.75) < 0.03  # another corner for 3 images in 4
    assert torch.equal(other.train.y, decoy.train.y)


def test_sizes_without_loading(decoy):
    assert DecoyMNIST().sizes() == DataSizes.of(decoy)
    assert registry.datasets.create("decoy_mnist").sizes() == DataSizes.of(gibench.load_dataset("decoy_mnist"))
    assert DecoyMNIST(DecoyMNISTConfig(source="mnist")).sizes() == DataSizes(
        (1, 28, 28), 10, 60000, 10000, frozenset({IRRELEVANT_MASK, DECOY_SHORTCUT}))


def test_tiny_bundle_annotates_its_label_free_half_and_has_a_decoy():
    bundle = tiny_bundle()
    signal = bundle.test.extras["signal_mask"]
    assert torch.equal(bundle.test.extras[IRRELEVANT_MASK], ~signal)
    train_mask = bundle.train.extras[IRRELEVANT_MASK]
    assert train_mask[:, :, 4:].all() and not train_mask[:, :, :4].any()
    shortcut, x, y = bundle.test.extras[DECOY_SHORTCUT], bundle.test.x, bundle.test.y
    changed = (shortcut != x)[:, 0]
    assert not changed[:, :6].any() and not changed[:, :, 2:].any()  # only the bottom-left 2×2 corner
    torch.testing.assert_close(shortcut[:, 0, 6:, :2], ((y + 1) / 4).view(-1, 1, 1).expand(-1, 2, 2).float())


# ----------------------------------------------------------------------------------------------------------------------
# The evaluator on hand-built models


class ShortcutReader(nn.Module):
    """Reads only the four 4×4 corners: s = the largest corner mean (the swatch's shade, since MNIST corners are
    blank), logits_k = c·(μ_k·s − μ_k²/2), the nearest-shade classifier, linear in s. Its input-gradient lies on the
    swatch alone."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(SHADES, dtype=torch.float32))

    def forward(self, x):
        blocks = torch.stack([x[:, 0, :4, :4], x[:, 0, :4, -4:], x[:, 0, -4:, :4], x[:, 0, -4:, -4:]], 1)
        s = blocks.flatten(2).mean(2).max(1).values
        return 10.0 * (s[:, None] * self.mu - self.mu ** 2 / 2)


class CentreReader(nn.Module):
    """A fixed random linear map of the central 16×16 pixels: nothing outside them reaches the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(256, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, 256, generator=torch.Generator().manual_seed(3)))

    def forward(self, x):
        return self.linear(x[:, 0, 6:22, 6:22].flatten(1))


def _evaluate(model, bundle, folder, batch_size=128, **params):
    ctx = make_eval_context(model, bundle, folder, batch_size=batch_size)
    return registry.evaluators.create("decoy_reliance", **params).evaluate(ctx).scalars


def test_a_model_reading_only_the_swatch_relies_on_it_and_its_map_lies_on_it(decoy, tmp_path):
    scores = _evaluate(ShortcutReader(), decoy, tmp_path)
    mask = decoy.test.extras[IRRELEVANT_MASK]
    random_digits = np.array([_shade_digit(decoy.test.x[i], mask[i]) for i in range(len(decoy.test))])
    by_chance = float(np.mean(random_digits == decoy.test.y.numpy()))  # nearest shade = the random digit's
    assert scores["accuracy_consistent"] == 1.0
    assert scores["accuracy_uninformative"] == pytest.approx(by_chance, abs=1e-12)
    assert scores["shortcut_gap"] == pytest.approx(1.0 - by_chance, abs=1e-12) and scores["shortcut_gap"] > 0.85
    assert scores["decoy_saliency_share"] == pytest.approx(1.0, abs=1e-6)
    assert scores["decoy_area_share"] == pytest.approx(16 / 784, abs=1e-12)


def test_a_model_reading_only_the_centre_ignores_the_decoy(decoy, tmp_path):
    model = CentreReader()
    scores = _evaluate(model, decoy, tmp_path)
    with torch.no_grad():
        predicted = model(decoy.test.x).argmax(1)
    accuracy = float((predicted == decoy.test.y).double().mean())
    assert scores["accuracy_uninformative"] == scores["accuracy_consistent"] == pytest.approx(accuracy, abs=1e-12)
    assert scores["shortcut_gap"] == 0.0 and scores["decoy_saliency_share"] == 0.0


def _independent_scores(model, bundle, n):
    """Each metric image by image: one backward per image, shares and accuracies in NumPy."""
    x, y = bundle.test.x[:n], bundle.test.y[:n]
    mask = bundle.test.extras[IRRELEVANT_MASK][:n, 0].numpy()
    shortcut = bundle.test.extras[DECOY_SHORTCUT][:n]
    shares, right_test, right_shortcut = [], [], []
    for i in range(n):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logits = model(xi)
        logits[0, int(y[i])].backward()
        score = np.abs(xi.grad[0].numpy().astype(np.float64)).sum(0)
        shares.append(score[mask[i]].sum() / score.sum())
        right_test.append(int(logits.argmax()) == int(y[i]))
        right_shortcut.append(int(model(shortcut[i:i + 1]).argmax()) == int(y[i]))
    return {"decoy_saliency_share": float(np.mean(shares)), "decoy_area_share": float(mask.mean()),
            "accuracy_uninformative": float(np.mean(right_test)), "accuracy_consistent": float(np.mean(right_shortcut)),
            "shortcut_gap": float(np.mean(right_shortcut) - np.mean(right_test))}


@pytest.fixture(scope="module")
def erm_mlp(decoy):
    """gibench_mlp trained with erm by gibench's own loop on decoy_mnist's 4,000 training digits for 3 epochs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return trained_model(decoy, "gibench_mlp", epochs=3, seed=0)
    finally:
        torch.set_num_threads(before)


def test_the_metrics_equal_an_image_by_image_computation(decoy, erm_mlp, tmp_path):
    scores = _evaluate(erm_mlp, decoy, tmp_path, batch_size=32, max_images=60)
    expected = _independent_scores(erm_mlp, decoy, 60)
    assert scores.keys() == expected.keys()
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=1e-6), name


def test_plain_training_learns_the_decoy(decoy, erm_mlp, tmp_path):
    """Ross et al.'s finding: a model trained on Decoy MNIST is right on the shortcut images and loses accuracy when
    the swatch is random (measured: gap 0.34, consistent 0.97, saliency share 0.09 against an area share of 0.02)."""
    scores = _evaluate(erm_mlp, decoy, tmp_path, batch_size=250)
    assert scores["shortcut_gap"] > 0.2
    assert scores["accuracy_consistent"] > 0.9
    assert scores["decoy_saliency_share"] > 2 * scores["decoy_area_share"]


def test_the_cost_hook_counts_the_passes_the_evaluation_runs(decoy):
    bundle = make_bundle("decoy_small", decoy.train.x[:64], decoy.train.y[:64], decoy.test.x[:20], decoy.test.y[:20],
                         num_classes=10, capabilities={IRRELEVANT_MASK, DECOY_SHORTCUT},
                         train_extras={IRRELEVANT_MASK: decoy.train.extras[IRRELEVANT_MASK][:64]},
                         test_extras={k: v[:20] for k, v in decoy.test.extras.items()})
    for params in ({}, {"max_images": 7}, {"saliency": "integrated_gradients", "ig_steps": 3, "max_images": 5}):
        counts = {"saliency": 0, "forward": 0}

        def hook(module, inputs, output, counts=counts):
            counts["saliency" if torch.is_grad_enabled() else "forward"] += inputs[0].shape[0]

        model = gibench.build_model("gibench_linear", {}, bundle)
        model.register_forward_hook(hook)
        evaluator = registry.evaluators.create("decoy_reliance", **params)
        with tempfile.TemporaryDirectory() as folder:
            ctx = make_eval_context(model, bundle, folder, batch_size=8, saliency=evaluator.config.saliency_function())
            evaluator.evaluate(ctx)
        cost = evaluator.cost(CostContext(SimpleNamespace(backbone="net"), DataSizes.of(bundle), batch_size=8))
        declared = {unit.kind: count for unit, count in cost.per_job.items()}
        assert declared == counts, params
    plain = DataSizes((1, 28, 28), 10, 4000, 1000)
    assert registry.evaluators.create("decoy_reliance").cost(CostContext(SimpleNamespace(backbone="net"), plain,
                                                                         batch_size=8)).per_job == {}


def test_decoy_reliance_conforms():
    result = check_evaluator("decoy_reliance")
    assert result is not None and result.scalars["decoy_area_share"] == 0.5  # the tiny bundle's bottom half
    assert registry.evaluators.get("decoy_reliance").headline().name == "decoy_saliency_share"
    assert not registry.evaluators.get("decoy_reliance").headline().higher_is_better


def test_decoy_reliance_conforms_on_decoy_mnist(decoy, tmp_path):
    result = check_evaluator("decoy_reliance", params={"max_images": 20}, bundle=decoy,
                             model=tiny_model(decoy, batch_norm=False), artifact_dir=tmp_path, batch_size=10)
    assert result.scalars["decoy_area_share"] == pytest.approx(16 / 784, abs=1e-12)
    from PIL import Image

    with Image.open(tmp_path / "first" / result.artifacts["saliency_grid"]) as image:  # inputs, maps, masks
        assert image.width >= 8 * 56 and image.height >= 3 * 56
