"""The training loop: determinism, non-finite losses, the smooth-activation warning."""

from __future__ import annotations

import math

import pytest
import torch

from gibench.api.plugin import Regularizer, TrainingLoss
from gibench.regularizers.erm import ERM
from gibench.suites.suite import PluginSpec, TrainConfig
from gibench.training.train import fit

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


def test_paper_multistep_schedule_steps_the_rate_at_half_and_three_quarters(small_bundle):
    """The seed papers' recipe from a suite: SGD 0.1, momentum 0.9, wd 5e-4, batch 128, multistep at 50 % / 75 %."""
    from gibench.suites.suite import parse_suite

    paper = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4, "batch_size": 128,
             "epochs": 4, "schedule": "multistep", "milestones": [0.5, 0.75], "log_every": 1}
    suite = parse_suite({"name": "paper", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"],
                         "regularizers": ["erm"], "evaluators": ["accuracy"], "train": paper})
    train = suite.train
    assert (train.optimizer, train.momentum, train.weight_decay, train.gamma) == ("sgd", 0.9, 5e-4, 0.1)
    outcome = fit(small_bundle, LINEAR, ERM(), train, seed=0)
    by_epoch: dict[int, set[float]] = {}
    for entry in outcome.log["entries"]:  # one entry per step (log_every 1), 4 steps per epoch
        by_epoch.setdefault(entry["epoch"], set()).add(entry["lr"])
    assert [sorted(by_epoch[e]) for e in range(4)] == [[0.1], [0.1], [pytest.approx(0.01)], [pytest.approx(0.001)]]
    assert len(outcome.log["entries"]) == 16


def test_no_host_synchronization_inside_a_training_step(small_bundle, monkeypatch):
    """Only the log flush (every log_every steps) may read device values; the steps themselves never do."""
    import gibench.training.train as train_module
    from gibench.regularizers.score_matching import ScoreMatching

    reading = {"allowed": False}
    real_flush = train_module._flush

    def flush(*args, **kwargs):
        reading["allowed"] = True
        try:
            return real_flush(*args, **kwargs)
        finally:
            reading["allowed"] = False

    def forbid(name):
        real = getattr(torch.Tensor, name)

        def guarded(self, *args, **kwargs):
            if not reading["allowed"]:
                raise AssertionError(f"a training step called Tensor.{name}")
            return real(self, *args, **kwargs)
        return guarded

    monkeypatch.setattr(train_module, "_flush", flush)
    for method in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, method, forbid(method))
    smooth = PluginSpec.of("gibench_cnn", {"act": "softplus", "width": 4}, {"act": "softplus", "width": 4})
    train = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.01, schedule="multistep", grad_clip=1.0,
                        augment="crop_flip", log_every=2)
    outcome = fit(small_bundle, smooth, ScoreMatching(), train, seed=0)
    monkeypatch.undo()
    assert outcome.failure is None and [e["step"] for e in outcome.log["entries"]] == [2, 4]


def test_channels_last_trains_the_same_model_in_another_memory_order(small_bundle):
    spec = PluginSpec.of("gibench_cnn", {"width": 4}, {"width": 4})
    plain = fit(small_bundle, spec, ERM(), TrainConfig(epochs=1, batch_size=128), seed=0)
    last = fit(small_bundle, spec, ERM(), TrainConfig(epochs=1, batch_size=128, channels_last=True), seed=0)
    conv = last.model.backbone.features[2].weight  # 4 -> 4 channels (with 1 input channel both orders agree)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert last.log["channels_last"] is True and plain.log["channels_last"] is False
    for a, b in zip(plain.model.state_dict().values(), last.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # same arithmetic up to summation order
