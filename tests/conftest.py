"""Shared fixtures: small suites on the bundled data that train in seconds on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_SUITE = {
    "name": "tiny",
    "description": "one epoch of a linear model on the bundled subset",
    "datasets": ["mnist_subset"],
    "backbones": ["gibench_linear"],
    "regularizers": ["erm", {"gradient_norm": {"weight": 1.0e-3}}],
    "evaluators": ["accuracy", {"pixel_perturbation": {"max_images": 200}}],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2},
}


@pytest.fixture
def tiny_suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SUITE, sort_keys=False))
    return path


def write_suite(tmp_path: Path, **changes) -> Path:
    """A copy of the tiny suite with some top-level keys replaced, written to a file."""
    suite = {**TINY_SUITE, **changes}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path
