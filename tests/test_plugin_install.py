"""The example third-party plugin, installed for real with pip: its own conformance tests pass against the installed
gibench, `gibench list` shows both of its plugins, and a suite uses them by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"


def test_example_plugin_installs_lists_and_runs(tmp_path):
    source = tmp_path / "plugin-src"
    shutil.copytree(EXAMPLE, source)  # building writes egg-info next to the sources; keep the repo clean
    target = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}

    own_tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
                               capture_output=True, text=True, env=env, cwd=source, timeout=600)
    assert own_tests.returncode == 0, own_tests.stdout[-3000:]
    assert "5 passed" in own_tests.stdout

    both = "from gibench.cli import main; main(['list', 'regularizers']); main(['list', 'evaluators'])"  # one start-up
    listed = subprocess.run([sys.executable, "-c", both], capture_output=True, text=True, env=env, check=True)
    for name in ("gradient_l1", "top_pixel_share"):
        line = next(line for line in listed.stdout.splitlines() if name in line)
        assert "gibench-example-plugin" in line and "0.1.0" in line and "ok" in line

    suite = tmp_path / "one_job.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "plugin-check", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"],
        "regularizers": [{"gradient_l1": {"weight": 1.0e-3}}], "evaluators": ["accuracy", "top_pixel_share"],
        "seeds": [0],
        "train": {"epochs": 1, "batch_size": 128, "lr": 1.0e-2}}))
    runs = tmp_path / "runs"
    run = subprocess.run([sys.executable, "-m", "gibench", "run", "--suite", str(suite), "--runs-dir", str(runs),
                          "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    (results,) = list((runs / "site" / "submissions").glob("*/results.csv"))
    frame = pd.read_csv(results)
    row = frame[frame["metric"] == "accuracy"].iloc[0]
    assert row["regularizer"] == "gradient_l1"
    assert (row["regularizer_distribution"] == "gibench-example-plugin"
            and str(row["regularizer_plugin_version"]) == "0.1.0")
    assert row["value"] > 0.7
    share = frame[frame["metric"] == "top_pixel_share"].iloc[0]
    assert share["evaluator_distribution"] == "gibench-example-plugin" and 0.1 <= share["value"] <= 1.0
