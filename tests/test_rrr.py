"""``rrr`` (Right for the Right Reasons) and the trainer's annotation path: the penalty against an independent
computation, the mask handed batch by batch and moved by augmentation, and the errors for data without annotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gibench import IRRELEVANT_MASK, TrainingLoss, create_regularizer
from gibench.api.regularizer import Regularizer
from gibench.core.errors import GibenchError
from gibench.data.tensors import make_bundle
from gibench.running.preflight import PreflightError
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.suite import load_suite
from gibench.testing import check_regularizer, registered
from gibench.training.augment import CROP_PADDING, apply_crop_flip, draw_crop_flip
from gibench.training.specs import PluginSpec, TrainConfig
from gibench.training.train import _augmented, fit
from tests.conftest import write_suite


class Linear(nn.Module):
    """f(x) = W·vec(x) + b, so that ∇x log p̂_k has a closed form."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(bias, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def _case(seed: int = 0, n: int = 5, k: int = 4, side: int = 3):
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(k, side * side)), rng.normal(size=k)
    x = rng.uniform(size=(n, 1, side, side))
    y = rng.integers(0, k, size=n)
    mask = rng.uniform(size=(n, 1, side, side)) < 0.4
    return weight, bias, x, y, mask


def _independent_total(weight, bias, x, y, mask, lam, gradient_of):
    """CE + λ·mean_b Σ_d (A ⊙ ∂/∂x target)², by hand for the linear model (NumPy, float64)."""
    flat = x.reshape(len(x), -1)
    logits = flat @ weight.T + bias
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    p = np.exp(log_p)
    ce = -log_p[np.arange(len(y)), y].mean()
    k = weight.shape[0]
    if gradient_of == "sum_log_probs":  # Σ_k ∇ log p̂_k = Σ_k W_k − K·Σ_j p_j W_j
        grads = weight.sum(0)[None, :] - k * p @ weight
    else:  # ∇ f_y = W_y
        grads = weight[y]
    penalty = ((grads * mask.reshape(len(x), -1)) ** 2).sum(1).mean()
    return ce + lam * penalty, penalty


@pytest.mark.parametrize("gradient_of", ["sum_log_probs", "label_logit"])
def test_total_equals_an_independent_computation(gradient_of):
    weight, bias, x, y, mask = _case()
    reg = create_regularizer("rrr", weight=0.7, gradient_of=gradient_of)
    loss = reg.training_loss(Linear(weight, bias), torch.tensor(x), torch.tensor(y),
                             annotations={IRRELEVANT_MASK: torch.tensor(mask)})
    expected_total, expected_penalty = _independent_total(weight, bias, x, y, mask, 0.7, gradient_of)
    assert float(loss.total.detach()) == pytest.approx(expected_total, rel=1e-10)
    assert float(loss.parts["right_reasons"]) == pytest.approx(expected_penalty, rel=1e-10)
    assert expected_penalty > 0.1  # the case is not trivially zero


def test_an_empty_mask_is_plain_cross_entropy_and_a_full_one_penalizes_the_whole_gradient():
    weight, bias, x, y, _ = _case(seed=1)
    model, xt, yt = Linear(weight, bias), torch.tensor(x), torch.tensor(y)
    reg = create_regularizer("rrr", weight=2.0)
    empty = reg.training_loss(model, xt, yt, annotations={IRRELEVANT_MASK: torch.zeros(x.shape, dtype=torch.bool)})
    assert torch.equal(empty.total.detach(), F.cross_entropy(model(xt), yt).detach())
    full = reg.training_loss(model, xt, yt, annotations={IRRELEVANT_MASK: torch.ones(x.shape, dtype=torch.bool)})
    expected, _ = _independent_total(weight, bias, x, y, np.ones(x.shape, bool), 2.0, "sum_log_probs")
    assert float(full.total.detach()) == pytest.approx(expected, rel=1e-10)


def test_one_channel_mask_covers_every_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).double()
    x = torch.rand(4, 2, 3, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    mask = torch.zeros(4, 1, 3, 3, dtype=torch.bool)
    mask[..., 0, :] = True
    reg = create_regularizer("rrr", weight=1.0, gradient_of="label_logit")
    loss = reg.training_loss(model, x, y, annotations={IRRELEVANT_MASK: mask})
    w = model[1].weight.detach().view(3, 2, 3, 3)
    expected = (w[y][:, :, 0, :] ** 2).sum((1, 2)).mean()  # both channels of the top row
    assert float(loss.parts["right_reasons"]) == pytest.approx(float(expected), rel=1e-10)


def test_conformance_with_both_gradient_forms():
    check_regularizer("rrr")
    check_regularizer("rrr", params={"gradient_of": "label_logit"})


class MaskSpy(Regularizer):
    """Cross-entropy; records the annotations it is handed."""

    requires = frozenset({IRRELEVANT_MASK})
    zero_strength = None
    sweep = None
    seen: list = []

    def training_loss(self, model, x, y, *, annotations):
        MaskSpy.seen.append((x.clone(), annotations[IRRELEVANT_MASK].clone()))
        ce = F.cross_entropy(model(x), y)
        return TrainingLoss(ce, {"cross_entropy": ce.detach()})


def _annotated_bundle(n: int = 40):
    """Images whose mask marks exactly their bright pixels, so that a batch's mask can be checked against it."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 1, 6, 6, generator=generator) > 0.7).float() * 0.9 + 0.05
    mask = x > 0.5
    y = torch.arange(n) % 3
    return make_bundle("annotated", x, y, x[:10], y[:10], num_classes=3, capabilities={IRRELEVANT_MASK},
                       train_extras={IRRELEVANT_MASK: mask}, test_extras={IRRELEVANT_MASK: mask[:10]})


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_the_trainer_hands_each_batch_its_own_masks(augment):
    MaskSpy.seen = []
    train = TrainConfig(epochs=1, batch_size=16, augment=augment)
    fit(_annotated_bundle(), PluginSpec("gibench_linear", {}), MaskSpy(), train, seed=0)
    assert len(MaskSpy.seen) == 3  # 40 images in batches of 16
    for x, mask in MaskSpy.seen:  # the mask marks the bright pixels of exactly the batch's (augmented) images
        assert mask.dtype == torch.bool and mask.shape == x.shape
        assert torch.equal(mask, x > 0.5)


def test_augmentation_moves_the_masks_with_the_images_and_draws_the_same_crops():
    x = torch.rand(6, 3, 8, 8)
    mask = torch.rand(6, 1, 8, 8) > 0.5
    moved_x, moved = _augmented(lambda batch, g: apply_crop_flip(batch, *draw_crop_flip(len(batch), CROP_PADDING, g),
                                                                   padding=CROP_PADDING),
                                torch.Generator().manual_seed(3), x, {IRRELEVANT_MASK: mask})
    draws = draw_crop_flip(6, CROP_PADDING, torch.Generator().manual_seed(3))
    assert torch.equal(moved_x, apply_crop_flip(x, *draws, padding=CROP_PADDING))  # the images as without masks
    assert torch.equal(moved[IRRELEVANT_MASK], apply_crop_flip(mask.float(), *draws, padding=CROP_PADDING) > 0.5)


def test_training_on_a_dataset_without_annotations_is_a_clear_error(small_bundle):
    with pytest.raises(GibenchError, match=r"requires the annotations \['irrelevant_mask'\], which dataset "
                                           r"'mnist_small' does not provide"):
        fit(small_bundle, PluginSpec("gibench_linear", {}), create_regularizer("rrr"), TrainConfig(epochs=1), seed=0)


def test_a_suite_with_rrr_on_unannotated_data_fails_the_preflight_naming_the_datasets_that_have_it(tmp_path):
    suite = load_suite(write_suite(tmp_path, datasets=["mnist_subset"], regularizers=["erm", "rrr"]))
    with pytest.raises(PreflightError) as caught:
        run_suite(suite, tmp_path / "runs", RunOptions(device="cpu"))
    message = str(caught.value)
    assert "regularizer rrr trains on the annotations ['irrelevant_mask'], which dataset mnist_subset does not " \
           "provide (datasets that have them: decoy_mnist)" in message
    assert not (tmp_path / "runs" / "jobs").exists()


def test_a_regularizer_without_requirements_is_called_with_three_arguments():
    class Strict(Regularizer):
        zero_strength = None
        sweep = None

        def training_loss(self, model, x, y):  # no annotations keyword: a TypeError if the trainer passed one
            ce = F.cross_entropy(model(x), y)
            return TrainingLoss(ce, {"cross_entropy": ce.detach()})

    with registered("regularizer", "strict_three_arguments", Strict):
        outcome = fit(_annotated_bundle(), PluginSpec("gibench_linear", {}), Strict(), TrainConfig(epochs=1),
                      seed=0)
    assert outcome.failure is None
