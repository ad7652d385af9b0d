"""Named train presets (gibench/training/presets.py), Nesterov momentum and the one-cycle schedule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gibench.core.errors import ConfigError
from gibench.suites.jobs import expand
from gibench.suites.suite import TrainConfig, load_suite, parse_suite
from gibench.training.presets import RECIPE_KEYS, TRAIN_PRESETS
from gibench.training.train import build_optimizer, build_schedule

SUITE = {
    "name": "presets",
    "datasets": ["mnist_subset", {"blockmnist": {"placement_seed": [0, 1]}}],
    "backbones": ["gibench_linear"],
    "regularizers": ["erm"],
    "evaluators": ["accuracy"],
}

PAPERS = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4, "batch_size": 128, "epochs": 200,
          "schedule": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1, "augment": "crop_flip"}


def _jobs(suite) -> dict[str, object]:
    return {job.dataset.label: job for job in expand(suite)}


def test_every_preset_builds_a_train_config() -> None:
    assert {"papers_cifar", "short_cifar", "short_mnist"} <= set(TRAIN_PRESETS)
    for name in TRAIN_PRESETS:
        assert set(TRAIN_PRESETS[name]) == set(RECIPE_KEYS), name  # each replaces the whole recipe
        assert parse_suite({**SUITE, "train": {"preset": name}}).train == TrainConfig(**TRAIN_PRESETS[name])


def test_a_preset_is_the_keys_it_stands_for_in_the_config_and_the_job_hash() -> None:
    by_preset = parse_suite({**SUITE, "train": {"preset": "papers_cifar"}})
    written = parse_suite({**SUITE, "train": PAPERS})
    assert by_preset.train == written.train
    assert {k: j.hash for k, j in _jobs(by_preset).items()} == {k: j.hash for k, j in _jobs(written).items()}
    # the preset's name is nowhere in a job's identity
    assert "preset" not in str(next(iter(_jobs(by_preset).values())).training_spec())


def test_papers_cifar_is_the_recipe_full_yaml_writes_out() -> None:
    full = load_suite("full")
    assert parse_suite({**SUITE, "train": {"preset": "papers_cifar", "augment": "none"}}).train == full.train
    cifar = dict(full.train_per_dataset)["cifar10"]
    assert parse_suite({**SUITE, "train": {"preset": "papers_cifar"}}).train == cifar


def test_keys_written_beside_a_preset_win() -> None:
    train = parse_suite({**SUITE, "train": {"preset": "short_mnist", "epochs": 5, "lr": 0.01}}).train
    assert train == dataclasses.replace(TrainConfig(**TRAIN_PRESETS["short_mnist"]), epochs=5, lr=0.01)


def test_presets_in_train_per_dataset() -> None:
    suite = parse_suite({**SUITE, "train": {"preset": "short_mnist"}, "train_per_dataset": {
        "blockmnist": {"preset": "papers_cifar", "augment": "none"},
        "blockmnist(placement_seed=1)": {"epochs": 7},
    }})
    trains = {label: job.train for label, job in _jobs(suite).items()}
    short = TrainConfig(**TRAIN_PRESETS["short_mnist"])
    papers = dataclasses.replace(TrainConfig(**TRAIN_PRESETS["papers_cifar"]), augment="none")
    assert trains["mnist_subset"] == short == suite.train
    assert trains["blockmnist(placement_seed=0)"] == papers
    assert trains["blockmnist(placement_seed=1)"] == dataclasses.replace(papers, epochs=7)  # label's keys win
    # an entry's preset replaces the whole recipe and keeps the other keys of `train`
    kept = parse_suite({**SUITE, "train": {"grad_clip": 1.0}, "train_per_dataset": {
        "mnist_subset": {"preset": "short_mnist"}}})
    assert dict(kept.train_per_dataset)["mnist_subset"] == dataclasses.replace(short, grad_clip=1.0)


@pytest.mark.parametrize("train, where", [
    ({"preset": "short_mnst"}, "<suite>: train: unknown preset 'short_mnst'. Did you mean 'short_mnist'?"),
    ({"preset": 3}, "<suite>: train: unknown preset 3."),
])
def test_an_unknown_preset_names_the_presets(train, where) -> None:
    with pytest.raises(ConfigError) as error:
        parse_suite({**SUITE, "train": train})
    message = str(error.value)
    assert message.startswith(where)
    assert "Presets: " + ", ".join(TRAIN_PRESETS) + "." in message


def test_an_unknown_preset_in_train_per_dataset_names_its_entry() -> None:
    with pytest.raises(ConfigError, match=r"train_per_dataset\.blockmnist: unknown preset 'fast'.*Presets: "):
        parse_suite({**SUITE, "train_per_dataset": {"blockmnist": {"preset": "fast"}}})


def test_a_bad_key_beside_a_preset_is_named() -> None:
    with pytest.raises(ConfigError, match=r"<suite>: train: unknown parameter 'epoch'"):
        parse_suite({**SUITE, "train": {"preset": "short_mnist", "epoch": 2}})


def test_nesterov_enters_the_hash_only_when_on() -> None:
    assert "nesterov" not in TrainConfig(optimizer="sgd").hash_dict()
    assert TrainConfig(optimizer="sgd", nesterov=True).hash_dict()["nesterov"] is True
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(optimizer="sgd", nesterov=True))
    assert optimizer.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("keys", [{"optimizer": "adam", "nesterov": True},
                                  {"optimizer": "sgd", "momentum": 0.0, "nesterov": True}])
def test_nesterov_needs_sgd_with_momentum(keys) -> None:
    with pytest.raises(ConfigError, match="nesterov needs optimizer: sgd and momentum > 0"):
        parse_suite({**SUITE, "train": keys})


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_onecycle_follows_torch_one_cycle_lr(optimizer) -> None:
    train = TrainConfig(optimizer=optimizer, lr=0.2, epochs=4, schedule="onecycle")
    steps_per_epoch = 10
    total = train.epochs * steps_per_epoch
    ours = build_optimizer([torch.nn.Parameter(torch.zeros(1))], train)
    schedule = build_schedule(ours, train, steps_per_epoch)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=train.lr, total_steps=total,
                                                         pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
                                                         final_div_factor=1.0e4, cycle_momentum=False)
    rates = []
    for _ in range(total):  # the loop steps the schedule after every optimizer step, the last one included
        rates.append(ours.param_groups[0]["lr"])
        assert rates[-1] == pytest.approx(reference.param_groups[0]["lr"], rel=1e-12)
        ours.step()
        schedule.step()
        reference.step()
        torch_schedule.step()
    assert rates[0] == pytest.approx(train.lr / 25)
    assert max(rates) == pytest.approx(train.lr) and rates.index(max(rates)) == round(0.3 * total) - 1
    assert rates[-1] < train.lr / 25 / 1e3  # annealed far below the start
    key = "momentum" if optimizer == "sgd" else "betas"
    assert ours.param_groups[0][key] == ({"sgd": 0.9, "adam": (0.9, 0.999)}[optimizer])  # momentum is not cycled


def test_the_shipped_suites_use_no_new_field() -> None:
    # a preset-free suite keeps its hash: nesterov is off and left out of every shipped job's train identity
    for name in ("smoke", "standard"):
        for job in expand(load_suite(name)):
            assert "nesterov" not in job.training_spec()["train"]
