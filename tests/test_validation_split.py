"""The validation split is a fixed, seeded, class-stratified part of the training split; test is untouched."""

from __future__ import annotations

import pytest
import torch

from gibench.api import registry
from gibench.core.errors import DataError
from gibench.data.tensors import channel_stats
from gibench.data.validation import hold_out_validation


@pytest.fixture(scope="module")
def blockmnist():
    return registry.datasets.create("blockmnist").load(None)


def test_each_class_holds_out_its_share_and_the_parts_partition_train(blockmnist):
    held = hold_out_validation(blockmnist, 0.1, seed=0)
    assert len(held.validation) == 400 and len(held.train) == 3600  # 40 of each digit's 400 training images
    assert torch.bincount(held.validation.y, minlength=10).tolist() == [40] * 10
    rows = torch.cat([held.train.x, held.validation.x]).flatten(1)
    original = blockmnist.train.x.flatten(1)
    assert sorted(map(hash, map(bytes, rows.numpy()))) == sorted(map(hash, map(bytes, original.numpy())))
    assert held.validation.extras["signal_mask"].shape == (400, 1, 56, 28)  # per-sample extras split alike
    assert held.test is blockmnist.test and held.capabilities == blockmnist.capabilities | {"validation_split"}
    assert (held.mean, held.std) == channel_stats(held.train.x) != (blockmnist.mean, blockmnist.std)


def test_the_split_is_the_same_for_the_same_seed_and_keeps_the_training_order(blockmnist):
    first, again = hold_out_validation(blockmnist, 0.1, 0), hold_out_validation(blockmnist, 0.1, 0)
    assert torch.equal(first.validation.x, again.validation.x) and torch.equal(first.train.y, again.train.y)
    other = hold_out_validation(blockmnist, 0.1, 1)
    assert not torch.equal(first.validation.x, other.validation.x)
    positions = [int(torch.nonzero((blockmnist.train.x == img).flatten(1).all(1))[0]) for img in first.train.x[:20]]
    assert positions == sorted(positions)


@pytest.mark.parametrize(("fraction", "message"), [
    (0.0, "validation fraction must be in (0, 0.5], got 0.0"),
    (0.6, "validation fraction must be in (0, 0.5], got 0.6"),
    (float("nan"), "validation fraction must be in (0, 0.5], got nan"),
])
def test_a_bad_fraction_is_a_clear_error(blockmnist, fraction, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace("]", r"\]")):
        hold_out_validation(blockmnist, fraction, 0)


def test_a_validation_split_is_held_out_only_once(blockmnist):
    with pytest.raises(DataError, match="already holds out a validation split"):
        hold_out_validation(hold_out_validation(blockmnist, 0.1, 0), 0.1, 0)
