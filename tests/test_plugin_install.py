"""The example third-party plugin, installed for real with pip, listed by `gibench list` and used by name in a suite."""

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

    listed = subprocess.run([sys.executable, "-m", "gibench", "list", "regularizers"],
                            capture_output=True, text=True, env=env)
    line = next(line for line in listed.stdout.splitlines() if "gradient_l1" in line)
    assert "gibench-example-plugin" in line and "0.1.0" in line and "ok" in line

    suite = tmp_path / "one_job.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "plugin-check", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"],
        "regularizers": [{"gradient_l1": {"weight": 1.0e-3}}], "evaluators": ["accuracy"], "seeds": [0],
        "train": {"epochs": 1, "batch_size": 128, "lr": 1.0e-2}}))
    runs = tmp_path / "runs"
    run = subprocess.run([sys.executable, "-m", "gibench", "run", "--suite", str(suite), "--runs-dir", str(runs),
                          "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    (results,) = list((runs / "site" / "submissions").glob("*/results.csv"))
    frame = pd.read_csv(results)
    row = frame[frame["metric"] == "accuracy"].iloc[0]
    assert row["regularizer"] == "gradient_l1"
    assert row["regularizer_distribution"] == "gibench-example-plugin" and str(row["regularizer_plugin_version"]) == "0.1.0"
    assert row["value"] > 0.7
