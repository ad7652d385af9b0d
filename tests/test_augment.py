"""train.augment: crop_flip against a per-image reference, seeding, the training loop, the job hash, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gibench.api.plugin import Regularizer, TrainingLoss
from gibench.core.errors import ConfigError
from gibench.core.identity import identity_hash
from gibench.core.params import build_config
from gibench.suites.jobs import expand
from gibench.suites.suite import PluginSpec, TrainConfig, parse_suite
from gibench.training.augment import (
    AUGMENTATIONS,
    CROP_PADDING,
    apply_crop_flip,
    augmentation,
    crop_flip,
    draw_crop_flip,
)
from gibench.training.train import AUGMENT_SEED_OFFSET, fit

LINEAR = PluginSpec("gibench_linear")


def _reference_crop_flip(x: torch.Tensor, rows, cols, flips, padding: int) -> torch.Tensor:
    """One image at a time: pad with zeros, cut the H×W window at (row, col), mirror it left-right if drawn."""
    out = []
    h, w = x.shape[-2:]
    for image, r, c, flip in zip(x, rows.tolist(), cols.tolist(), flips.tolist()):
        padded = F.pad(image, (padding, padding, padding, padding))
        crop = padded[:, r : r + h, c : c + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (9, 1, 12, 7)])
def test_batched_crop_flip_equals_the_per_image_reference(shape) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    rows, cols, flips = draw_crop_flip(shape[0], CROP_PADDING, torch.Generator().manual_seed(1))
    assert flips.any() and not flips.all()  # both branches are exercised
    assert torch.equal(apply_crop_flip(x, rows, cols, flips, CROP_PADDING),
                       _reference_crop_flip(x, rows, cols, flips, CROP_PADDING))
    drawn = crop_flip(x, torch.Generator().manual_seed(1))  # the same draws in the same order
    assert torch.equal(drawn, _reference_crop_flip(x, rows, cols, flips, CROP_PADDING))


def test_offsets_and_flips_are_uniform_and_the_border_is_zero() -> None:
    n = 9000
    rows, cols, flips = draw_crop_flip(n, CROP_PADDING, torch.Generator().manual_seed(0))
    for offsets in (rows, cols):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 0.85 * n / 9 and counts.max() < 1.15 * n / 9
    assert abs(flips.float().mean().item() - 0.5) < 0.03
    x = torch.ones(3, 1, 8, 8)
    out = apply_crop_flip(x, torch.tensor([0, 4, 8]), torch.tensor([0, 4, 8]), torch.tensor([False, False, True]), 4)
    assert out[0, 0, :4].eq(0).all() and out[0, 0, 4:, 4:].eq(1).all()  # shifted down-right: zero top-left border
    assert torch.equal(out[1], x[1])  # the centred crop without flip is the image itself
    # shifted up-left (zero bottom-right border), then mirrored: the zero border is now bottom and left
    assert out[2, 0, 4:].eq(0).all() and out[2, 0, :4, :4].eq(0).all() and out[2, 0, :4, 4:].eq(1).all()


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, crop_flip(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, crop_flip(x, torch.Generator().manual_seed(6)))


def test_unknown_augmentation_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'crop'.*Did you mean 'crop_flip'.*Choices: none, crop_flip"):
        augmentation("crop")
    with pytest.raises(ConfigError, match=r"suite.yaml: train: unknown augment 'flip_crop'.*Choices: none, crop_flip"):
        build_config(TrainConfig, {"augment": "flip_crop"}, "suite.yaml: train")
    assert set(AUGMENTATIONS) == {"none", "crop_flip"}


class RecordBatches(Regularizer):
    """Cross-entropy, keeping a copy of every training batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def training_loss(self, model, x, y):
        self.batches.append(x.detach().clone())
        loss = F.cross_entropy(model(x), y)
        return TrainingLoss(loss, {"cross_entropy": loss.detach()})


def test_training_batches_are_the_seeded_crops_of_the_unchanged_batch_order(small_bundle) -> None:
    train = TrainConfig(epochs=2, batch_size=128, augment="crop_flip", log_every=100)
    seed = 4
    recorder = RecordBatches()
    fit(small_bundle, LINEAR, recorder, train, seed=seed)
    order_generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed + AUGMENT_SEED_OFFSET)
    expected = []
    x_all = small_bundle.train.x
    for _ in range(train.epochs):
        order = torch.randperm(len(x_all), generator=order_generator)
        for start in range(0, len(order), train.batch_size):
            expected.append(crop_flip(x_all[order[start : start + train.batch_size]], augment_generator))
    assert len(recorder.batches) == len(expected) == 8
    assert all(torch.equal(got, want) for got, want in zip(recorder.batches, expected))
    again = RecordBatches()
    fit(small_bundle, LINEAR, again, train, seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(recorder.batches, again.batches))  # same seed, same batches


def test_flips_on_digits_are_the_users_choice(small_bundle) -> None:
    """crop_flip is applied to MNIST-like data too when asked for: nothing is overridden silently."""
    recorder = RecordBatches()
    fit(small_bundle, LINEAR, recorder, TrainConfig(epochs=1, batch_size=512, augment="crop_flip"), seed=0)
    (batch,) = recorder.batches
    order = torch.randperm(512, generator=torch.Generator().manual_seed(0))
    rows, cols, flips = draw_crop_flip(512, CROP_PADDING, torch.Generator().manual_seed(AUGMENT_SEED_OFFSET))
    clean = small_bundle.train.x[order]
    assert torch.equal(batch, _reference_crop_flip(clean, rows, cols, flips, CROP_PADDING))
    unshifted_flips = flips & (rows == 4) & (cols == 4)
    assert unshifted_flips.any() and torch.equal(batch[unshifted_flips], clean[unshifted_flips].flip(-1))


def test_an_identity_augmentation_leaves_training_bit_identical(small_bundle, monkeypatch) -> None:
    """The augmentation generator is separate: the batch order and the global stream do not move."""
    monkeypatch.setitem(AUGMENTATIONS, "identity", lambda x, generator: x.clone())
    spec = PluginSpec.of("gibench_cnn", {"act": "softplus", "width": 4}, {"act": "softplus", "width": 4})
    from gibench.regularizers.gaussian_noise import GaussianNoise  # draws from the global generator

    plain = fit(small_bundle, spec, GaussianNoise(), TrainConfig(epochs=1, batch_size=128), seed=0).model
    same = fit(small_bundle, spec, GaussianNoise(), TrainConfig(epochs=1, batch_size=128, augment="identity"), 0).model
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), same.state_dict().values()))


def test_augment_none_trains_exactly_as_a_plain_loop(small_bundle) -> None:
    """Independent loop: seed, build, Adam, the seeded batch order, cross-entropy; bit-equal weights."""
    from gibench.regularizers.erm import ERM
    from gibench.training.models import build_model

    train = TrainConfig(epochs=2, batch_size=128, lr=1e-2)
    got = fit(small_bundle, LINEAR, ERM(), train, seed=7).model
    torch.manual_seed(7)
    model = build_model("gibench_linear", {}, small_bundle).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order_generator = torch.Generator().manual_seed(7)
    for _ in range(2):
        order = torch.randperm(512, generator=order_generator)
        for start in range(0, 512, 128):
            index = order[start : start + 128]
            loss = F.cross_entropy(model(small_bundle.train.x[index]), small_bundle.train.y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), model.state_dict().values()))


def test_default_augment_stays_out_of_the_job_hash_and_crop_flip_is_in_it() -> None:
    v1_fields = {"epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "schedule", "milestones",
                 "gamma", "grad_clip", "amp", "log_every"}
    default = TrainConfig()
    assert set(default.hash_dict()) == v1_fields
    assert identity_hash(default.hash_dict()) == "48f65c0f741b7f0c"  # computed before augment existed
    augmented = TrainConfig(augment="crop_flip")
    assert augmented.hash_dict() == {**default.hash_dict(), "augment": "crop_flip"}
    assert TrainConfig(channels_last=True).hash_dict() == {**default.hash_dict(), "channels_last": True}
    suite = {"name": "s", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"], "regularizers": ["erm"],
             "evaluators": ["accuracy"]}
    (plain,) = expand(parse_suite(suite))
    (explicit_default,) = expand(parse_suite({**suite, "train": {"augment": "none"}}))
    (cropped,) = expand(parse_suite({**suite, "train": {"augment": "crop_flip"}}))
    assert plain.hash == explicit_default.hash != cropped.hash
    assert cropped.training_spec()["train"]["augment"] == "crop_flip"
    assert "augment" not in plain.training_spec()["train"]
