"""The training loop: determinism, non-finite losses, the smooth-activation warning."""

from __future__ import annotations

import math

import pytest
import torch

from gibench.api import Regularizer, TrainingLoss
from gibench.config import PluginSpec, TrainConfig
from gibench.regularizers.erm import ERM
from gibench.train import fit

LINEAR = PluginSpec("gibench_linear")
TRAIN = TrainConfig(epochs=1, batch_size=64, lr=1e-2, log_every=3)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(small_bundle):
    a = fit(small_bundle, LINEAR, ERM(), TRAIN, seed=0).model.state_dict()
    b = fit(small_bundle, LINEAR, ERM(), TRAIN, seed=0).model.state_dict()
    c = fit(small_bundle, LINEAR, ERM(), TRAIN, seed=1).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["backbone.fc.weight"], c["backbone.fc.weight"])


def test_training_learns_and_logs_parts_every_log_every_steps(small_bundle):
    outcome = fit(small_bundle, LINEAR, ERM(), TrainConfig(epochs=2, batch_size=64, lr=1e-2, log_every=3), seed=0)
    entries = outcome.log["entries"]
    assert outcome.failure is None
    assert [e["step"] for e in entries] == [3, 6, 9, 12, 15, 16]  # 8 steps per epoch, the last step always logged
    assert entries[-1]["cross_entropy"] < entries[0]["cross_entropy"]
    with torch.no_grad():
        accuracy = (outcome.model(small_bundle.test.x).argmax(1) == small_bundle.test.y).float().mean().item()
    assert accuracy > 0.7


class NaNAfterThree(Regularizer):
    """Cross-entropy that turns into NaN from the fourth step on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def training_loss(self, model, x, y):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if self.calls > 3:
            loss = loss * float("nan")
        return TrainingLoss(loss, {"cross_entropy": loss.detach()})


def test_non_finite_loss_stops_with_the_first_bad_step(small_bundle):
    outcome = fit(small_bundle, LINEAR, NaNAfterThree(), TRAIN, seed=0)
    assert outcome.failure is not None
    assert outcome.failure.startswith("non-finite loss at step 4 (epoch 1)")
    assert "Lower the learning rate" in outcome.failure


class NeedsHessian(ERM):
    needs_smooth_activation = True


def test_piecewise_linear_backbone_warns_for_hessian_regularizers(small_bundle):
    with pytest.warns(UserWarning, match="Hessian trace is zero almost everywhere"):
        outcome = fit(small_bundle, PluginSpec("gibench_mlp"), NeedsHessian(), TRAIN, seed=0)
    assert "act: softplus" in outcome.log["warnings"][0]
    smooth = PluginSpec.of("gibench_mlp", {"act": "softplus"}, {"act": "softplus"})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(small_bundle, smooth, NeedsHessian(), TRAIN, seed=0)


def test_schedules_follow_the_config(small_bundle):
    cosine = fit(small_bundle, LINEAR, ERM(), TrainConfig(epochs=2, lr=0.1, schedule="cosine", log_every=1), 0)
    lrs = [e["lr"] for e in cosine.log["entries"]]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.1 * (1 + math.cos(math.pi * 15 / 16)) / 2)
    step = fit(small_bundle, LINEAR, ERM(), TrainConfig(epochs=4, lr=0.1, schedule="multistep", milestones=(0.5,),
                                                         log_every=1), 0)
    lrs = [e["lr"] for e in step.log["entries"]]
    assert lrs[15] == pytest.approx(0.1) and lrs[16] == pytest.approx(0.01)  # after 2 of 4 epochs (8 steps each)
