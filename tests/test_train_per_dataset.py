"""train_per_dataset: per-dataset training settings merged over `train`, in the jobs and their hashes."""

from __future__ import annotations

import dataclasses

import pytest

from gibench.core.errors import ConfigError
from gibench.suites.jobs import expand
from gibench.suites.suite import TrainConfig, parse_suite

SUITE = {
    "name": "per-dataset",
    "datasets": ["mnist_subset", {"blockmnist": {"placement_seed": [0, 1]}}],
    "backbones": ["gibench_linear"],
    "regularizers": ["erm"],
    "evaluators": ["accuracy"],
    "train": {"epochs": 2, "optimizer": "sgd", "lr": 0.1},
}


def _by_dataset(suite) -> dict[str, TrainConfig]:
    return {job.dataset.label: job.train for job in expand(suite)}


def test_entries_merge_over_train_by_name_and_by_label() -> None:
    suite = parse_suite({**SUITE, "train_per_dataset": {
        "blockmnist": {"augment": "crop_flip", "lr": 0.05},
        "blockmnist(placement_seed=1)": {"lr": 0.01},
    }})
    base = TrainConfig(epochs=2, optimizer="sgd", lr=0.1)
    trains = _by_dataset(suite)
    assert trains["mnist_subset"] == base == suite.train  # not named: the suite's train section
    assert trains["blockmnist(placement_seed=0)"] == dataclasses.replace(base, augment="crop_flip", lr=0.05)
    assert trains["blockmnist(placement_seed=1)"] == dataclasses.replace(base, augment="crop_flip",
                                                                         lr=0.01)  # label wins


def test_the_job_hash_uses_the_merged_config() -> None:
    plain = {job.dataset.label: job for job in expand(parse_suite(SUITE))}
    merged = {job.dataset.label: job for job in expand(parse_suite({**SUITE, "train_per_dataset": {
        "blockmnist(placement_seed=0)": {"augment": "crop_flip"}}}))}
    assert merged["mnist_subset"].hash == plain["mnist_subset"].hash
    assert merged["blockmnist(placement_seed=1)"].hash == plain["blockmnist(placement_seed=1)"].hash
    changed = merged["blockmnist(placement_seed=0)"]
    assert changed.hash != plain["blockmnist(placement_seed=0)"].hash
    assert changed.training_spec()["train"] == {**plain["blockmnist(placement_seed=0)"].training_spec()["train"],
                                                "augment": "crop_flip"}
    # writing the suite's own value per dataset changes nothing
    same = expand(parse_suite({**SUITE, "train_per_dataset": {"mnist_subset": {"lr": 0.1}}}))
    assert [job.hash for job in same] == [job.hash for job in plain.values()]


def test_unknown_dataset_is_a_config_error_with_did_you_mean() -> None:
    with pytest.raises(ConfigError) as info:
        parse_suite({**SUITE, "train_per_dataset": {"mnist_subst": {"lr": 0.01}}}, source="s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: train_per_dataset: 'mnist_subst' is not a dataset of this suite.")
    assert "Did you mean 'mnist_subset'?" in message and "blockmnist(placement_seed=0)" in message
    with pytest.raises(ConfigError, match="'cifar10' is not a dataset of this suite"):
        parse_suite({**SUITE, "train_per_dataset": {"cifar10": {"augment": "crop_flip"}}})


def test_unknown_or_bad_train_key_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"s.yaml: train_per_dataset.mnist_subset: unknown parameter 'agument'\. "
                                          r"Did you mean 'augment'\?"):
        parse_suite({**SUITE, "train_per_dataset": {"mnist_subset": {"agument": "crop_flip"}}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"train_per_dataset.blockmnist: unknown augment 'crop'"):
        parse_suite({**SUITE, "train_per_dataset": {"blockmnist": {"augment": "crop"}}})
    with pytest.raises(ConfigError, match=r"train_per_dataset.mnist_subset: parameter 'epochs' = True is a boolean"):
        parse_suite({**SUITE, "train_per_dataset": {"mnist_subset": {"epochs": True}}})
    with pytest.raises(ConfigError, match=r"train_per_dataset.mnist_subset: expected a mapping"):
        parse_suite({**SUITE, "train_per_dataset": {"mnist_subset": ["lr", 0.1]}})
    with pytest.raises(ConfigError, match=r"train_per_dataset: expected a mapping"):
        parse_suite({**SUITE, "train_per_dataset": ["mnist_subset"]})
