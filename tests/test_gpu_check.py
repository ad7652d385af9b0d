"""benchmarks/gpu_check.py: the CPU's toy run goes through every part, and writes one JSON and one Markdown file that
name the device and the command; the mini-suite covers every built-in plugin; the pass-count floor adds up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from gibench.api import registry
from gibench.suites.jobs import expand
from gibench.suites.suite import parse_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--budget", "60",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return done, out


def test_the_cpu_run_records_every_part_as_ok_failed_or_skipped(toy_run):
    done, out = toy_run
    report = json.loads((out / "gpu_check.json").read_text())
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == list(gpu_check.PARTS)
    for part in parts.values():
        assert part["status"] in ("ok", "failed", "skipped"), part
        if part["status"] == "ok":
            assert part["result"], part["name"]
        elif part["status"] == "failed":
            assert part["traceback"].strip(), part["name"]
        else:
            assert part["note"].strip(), part["name"]
    failed = {name: p["traceback"] for name, p in parts.items() if p["status"] == "failed"}
    assert not failed and done.returncode == 0, (failed, done.stdout, done.stderr)
    assert report["environment"]["device"] == "cpu" and report["budget_s"] == 60


def test_the_mini_suite_ran_run_report_submit_and_validate(toy_run):
    _, out = toy_run
    report = json.loads((out / "gpu_check.json").read_text())
    mini = next(p for p in report["parts"] if p["name"] == "mini_suite")
    assert mini["status"] == "ok", mini
    commands = [step["command"].split()[:2] for step in mini["result"]["steps"]]
    assert commands == [["gibench", "run"], ["gibench", "report"], ["gibench", "submit"], ["gibench", "validate"]]
    assert all(step["returncode"] == 0 or step["timed_out"] for step in mini["result"]["steps"])
    assert "--device cpu" in mini["result"]["steps"][0]["command"]
    store = mini["result"]["store"]
    assert store["trained"] >= 1 and store["training_failed"] == 0 and not store["failures"]
    assert (out / "mini_suite.yaml").is_file()


def test_the_markdown_names_the_device_and_the_command(toy_run):
    _, out = toy_run
    report = json.loads((out / "gpu_check.json").read_text())
    text = (out / "gpu_check.md").read_text()
    head = text.split("| part |")[0]
    assert report["environment"]["device_name"] and report["environment"]["device_name"] in head
    assert "`cpu`" in head and f"torch {report['environment']['torch']}" in head
    assert f"python benchmarks/gpu_check.py --device cpu --budget 60 --out {out}" in head
    for name in gpu_check.PARTS:
        assert f"## {name}" in text


def _builtins(reg) -> set[str]:
    return {info.name for info in reg.infos() if info.distribution == "gibench"}


@pytest.mark.parametrize("sizes", [gpu_check.GPU, gpu_check.CPU], ids=["gpu", "cpu"])
def test_the_mini_suite_has_every_built_in_regularizer_and_evaluator(sizes):
    suite = parse_suite(gpu_check.mini_suite(sizes))
    jobs = expand(suite)
    assert {j.regularizer.name for j in jobs} == _builtins(registry.regularizers)
    assert {e.name for e in suite.evaluators} == _builtins(registry.evaluators)
    xdnn = [j for j in jobs if j.regularizer.name == "attribution_prior"]
    assert xdnn and all(j.backbone.config["act"] == "relu" and j.backbone.config["bias"] is False for j in xdnn)
    assert all(j.backbone.config["act"] == "softplus" for j in jobs if j.regularizer.name != "attribution_prior")
    shapes = [d.params for d in suite.datasets if d.name == "gaussian_mixture"]
    assert [(p["channels"], p["height"], p["width"]) for p in shapes] == [(3, 32, 32)]


def test_every_built_in_regularizer_has_a_pass_count():
    assert _builtins(registry.regularizers) <= set(gpu_check.PASSES)
    assert gpu_check.passes_of("pgd")[4] == registry.regularizers.create("pgd").config.steps


def test_the_floor_adds_the_passes_of_a_step():
    medians = {f"{kind} [fp32]": value for kind, value in
               {"optimizer": 1.0, "forward": 10.0, "erm": 31.0, "gradnorm": 80.0, "hvp": 200.0, "attack": 25.0}.items()}
    floor, times = gpu_check.pass_floor("erm", "fp32", medians)
    assert times == {"O": 1.0, "F": 10.0, "B": 20.0, "DB": 49.0, "T": 120.0, "A": 25.0}
    assert floor == 31.0  # erm's floor is the bare erm step
    assert gpu_check.pass_floor("gradient_norm", "fp32", medians)[0] == 80.0
    assert gpu_check.pass_floor("score_matching", "fp32", medians)[0] == 1 + 2 * 10 + 2 * 20 + 49
    assert gpu_check.pass_floor("score_matching_hutchinson", "fp32", medians)[0] == 200.0
    assert gpu_check.pass_floor("pgd", "fp32", medians)[0] == 31.0 + 7 * 25.0
    assert gpu_check.pass_floor("not_a_regularizer", "fp32", medians)[0] is None
