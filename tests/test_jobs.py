"""The job cross product and its content hash."""

from __future__ import annotations

from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite
from tests.conftest import write_suite


def _hashes(tmp_path, **changes):
    return [job.hash for job in expand(load_suite(write_suite(tmp_path, **changes)))]


def test_cross_product_order_is_deterministic(tmp_path):
    suite = load_suite(write_suite(tmp_path, regularizers=["erm", {"gradient_norm": {"weight": [0.1, 0.2]}}],
                                   seeds=[0, 1]))
    jobs = expand(suite)
    assert [(j.regularizer.label, j.seed) for j in jobs] == [
        ("erm", 0), ("erm", 1), ("gradient_norm(weight=0.1)", 0), ("gradient_norm(weight=0.1)", 1),
        ("gradient_norm(weight=0.2)", 0), ("gradient_norm(weight=0.2)", 1)]
    assert len({j.hash for j in jobs}) == 6


def test_same_spec_same_hash(tmp_path):
    assert _hashes(tmp_path) == _hashes(tmp_path)


def test_explicit_default_does_not_change_the_hash(tmp_path):
    implicit = _hashes(tmp_path, regularizers=["gradient_norm"])
    explicit = _hashes(tmp_path, regularizers=[{"gradient_norm": {"weight": 1.0e-3}}])
    assert implicit == explicit


def test_every_training_field_changes_the_hash(tmp_path):
    base = _hashes(tmp_path)
    changes = [
        {"train": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2}},
        {"train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-2}},
        {"train": {"epochs": 1, "batch_size": 128, "optimizer": "sgd", "lr": 1.0e-2}},
        {"train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-3}},
        {"train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2, "schedule": "cosine"}},
        {"seeds": [1]},
        {"backbones": ["gibench_mlp"]},
        {"datasets": [{"mnist_subset": {"split_seed": 1}}]},
        {"regularizers": ["erm", {"gradient_norm": {"weight": 2.0e-3}}]},
    ]
    for change in changes:
        changed = _hashes(tmp_path, **change)
        assert changed != base, change


def test_evaluator_settings_do_not_change_the_hash(tmp_path):
    base = _hashes(tmp_path)
    assert _hashes(tmp_path, evaluators=["accuracy"]) == base
    assert _hashes(tmp_path, evaluators=[{"pixel_perturbation": {"max_images": 10}}]) == base


def test_suite_name_does_not_change_the_hash(tmp_path):
    assert _hashes(tmp_path, name="other") == _hashes(tmp_path)
