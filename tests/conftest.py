"""Shared fixtures: small suites on the bundled data that train in seconds on the CPU."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import yaml

from gibench.running.options import ISOLATION_ENV
from gibench.testing import registered

# Tests run their jobs in the test's own process, and so do the `gibench run` processes they start (which inherit the
# environment): the plugins tests register in-process are invisible to a worker process, and a worker's start costs
# seconds. Tests of process isolation ask for it explicitly (isolation="process", --isolation process);
# GIBENCH_ISOLATION=process in the environment runs every test's jobs in worker processes instead.
os.environ.setdefault(ISOLATION_ENV, "none")

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


@pytest.fixture(scope="session")
def small_bundle():
    """The first 512 training and 256 test digits of the bundled subset: enough to train a linear model in a second."""
    from gibench import load_dataset
    from gibench.data.tensors import make_bundle

    full = load_dataset("mnist_subset")
    return make_bundle("mnist_small", full.train.x[:512], full.train.y[:512], full.test.x[:256], full.test.y[:256],
                       num_classes=10)


@pytest.fixture
def register_plugin():
    """Register an in-process plugin class for one test, and remove it afterwards (``gibench.testing.registered``)."""
    with contextlib.ExitStack() as stack:
        yield lambda reg, name, cls: stack.enter_context(registered(reg.kind, name, cls))


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads ran a test epoch 7× slower (4 s vs 30 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli_output(monkeypatch):
    """(stdout, stderr) of the command line as text: its rich consoles redirected, 200 columns, no colour."""
    import io

    from rich.console import Console

    from gibench import cli

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli._shared, "stdout", Console(file=out, width=200, color_system=None))
    monkeypatch.setattr(cli._shared, "stderr", Console(file=err, width=200, color_system=None))
    return out, err
