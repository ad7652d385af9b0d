"""Preflight: the mistakes that used to surface hours into a run are all reported, together, before any training."""

from __future__ import annotations

import errno
import os
import socket
import tempfile

import pytest

from gibench.cli import main
from gibench.core.errors import ConfigError
from gibench.running.preflight import PreflightError
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite
from tests.conftest import write_suite

BAD_BACKBONES = [{"resnet18": {"drop_rate": -3}}, "gibench_linear", "vit_tiny_patch16_224"]


def _bad_suite(tmp_path):
    return write_suite(tmp_path, datasets=["mnist_subset", "cifar10"], backbones=BAD_BACKBONES,
                       regularizers=["erm"], evaluators=["accuracy", "blockmnist"])


def test_every_problem_is_reported_at_once_and_nothing_trains(tmp_path):
    suite = load_suite(_bad_suite(tmp_path))
    runs = tmp_path / "runs"
    with pytest.raises(PreflightError) as caught:
        run_suite(suite, runs, RunOptions(device="cpu", data_root=tmp_path / "data"))
    message = str(caught.value)
    assert "found 3 problem(s); nothing was trained" in message
    assert "backbone resnet18(drop_rate=-3) does not run on dataset mnist_subset (input 1×28×28" in message
    assert "dropout probability has to be between 0 and 1, but got -3" in message
    assert "backbone vit_tiny_patch16_224 does not run on dataset mnist_subset (input 1×28×28" in message
    assert f"dataset cifar10: dataset 'cifar10' was not found (or is incomplete) in {tmp_path / 'data' / 'cifar10'}" \
        in message and "--download" in message
    assert "gibench_linear" not in message  # the backbone that fits is not reported
    assert not (runs / "jobs").exists() and not (runs / "manifest.json").exists()


def test_dry_run_shows_the_findings_per_job(tmp_path, capsys):
    suite_file = _bad_suite(tmp_path)
    summary = run_suite(load_suite(suite_file), tmp_path / "runs",
                        RunOptions(device="cpu", data_root=tmp_path / "data"), dry_run=True)
    states = {(r.job.dataset.name, r.job.backbone.name): r.state for r in summary.jobs}
    assert states == {("mnist_subset", "resnet18"): "invalid", ("mnist_subset", "gibench_linear"): "planned",
                      ("mnist_subset", "vit_tiny_patch16_224"): "invalid", ("cifar10", "resnet18"): "invalid",
                      ("cifar10", "gibench_linear"): "invalid", ("cifar10", "vit_tiny_patch16_224"): "invalid"}
    linear = next(r for r in summary.jobs if r.job.backbone.name == "gibench_linear" and r.job.dataset.name ==
                  "mnist_subset")
    # blockmnist needs the signal mask that mnist_subset lacks: a warning, not an error
    assert linear.findings == ["warning: evaluator blockmnist requires ['signal_mask'], which dataset mnist_subset "
                               "lacks: it will be recorded as skipped on its 3 job(s)."]
    assert not (tmp_path / "runs").exists()

    code = main(["run", "--suite", str(suite_file), "--runs-dir", str(tmp_path / "runs"), "--dry-run",
                 "--device", "cpu", "--data-root", str(tmp_path / "data")])
    captured = capsys.readouterr()
    assert code == 1 and "5 job(s) would not run" in captured.err
    assert "dropout probability" in captured.out and "Traceback" not in captured.out + captured.err
    for job in expand(load_suite(suite_file)):
        assert job.hash in captured.out


def test_requirements_that_depend_on_an_evaluators_options_are_warned(tmp_path):
    suite = write_suite(tmp_path, evaluators=["accuracy", {"score_alignment": {"score": "analytic"}}],
                        regularizers=["erm"])
    summary = run_suite(load_suite(suite), tmp_path / "runs", RunOptions(device="cpu"), dry_run=True)
    assert summary.jobs[0].findings == [
        "warning: evaluator score_alignment(score=analytic) requires ['analytic_score'], which dataset mnist_subset "
        "lacks: it will be recorded as skipped on its 1 job(s)."]


def test_a_run_that_passes_the_preflight_still_trains(tiny_suite_file, tmp_path):
    summary = run_suite(load_suite(tiny_suite_file), tmp_path / "runs", RunOptions(device="cpu"))
    assert [r.state for r in summary.jobs] == ["trained", "trained"]


def test_bad_run_options_are_clear_errors():
    with pytest.raises(ConfigError, match=r"--eval-batch-size must be a positive integer .*got 0"):
        RunOptions(eval_batch_size=0)
    with pytest.raises(ConfigError, match=r"--eval-batch-size .* got True"):
        RunOptions(eval_batch_size=True)
    with pytest.raises(ConfigError, match="--device must be 'cpu', 'cuda' or 'cuda:N'"):
        RunOptions(device="gpu")
    with pytest.raises(ConfigError, match="heartbeat_s .* must be shorter than claim_timeout_s"):
        RunOptions(claim_timeout_s=10, heartbeat_s=30)


def test_train_epochs_true_is_not_one_epoch(tmp_path):
    with pytest.raises(ConfigError, match=r"train: parameter 'epochs' = True is a boolean, but epochs is a number"):
        load_suite(write_suite(tmp_path, train={"epochs": True}))


@pytest.mark.parametrize("argv, expected", [
    (["--eval-batch-size", "0"], "--eval-batch-size must be a positive integer"),
    (["--device", "tpu"], "--device must be 'cpu', 'cuda' or 'cuda:N'"),
    (["--gpus-per-job", "0.5"], "--address and --gpus-per-job apply to --executor ray only"),
    (["--executor", "ray", "--gpus-per-job", "-1"], "--gpus-per-job must be 0 (CPU tasks) or a positive number"),
])
def test_bad_cli_values_exit_2_without_a_traceback(tiny_suite_file, tmp_path, capsys, argv, expected):
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_runs_dir_that_is_a_file(tiny_suite_file, tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--runs-dir {tmp_path / 'runs'} is a file, not a folder" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the next test simulates it")
def test_read_only_runs_dir(tiny_suite_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(runs), "--device", "cpu"]) == 2
    finally:
        runs.chmod(0o755)
    assert f"--runs-dir {runs} is not writable" in capsys.readouterr().err


def test_read_only_runs_dir_as_the_file_system_reports_it(tiny_suite_file, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    runs = tmp_path / "runs"
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(runs), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--runs-dir {runs} is not writable (Read-only file system)" in err and "Traceback" not in err
    assert not (runs / "jobs").exists()


def test_serve_on_a_busy_port(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html></html>")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["leaderboard", "serve", "--out", str(site), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is already in use" in err and "Traceback" not in err


def test_missing_datasets_are_one_finding_for_exactly_their_jobs(tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    suite_file = write_suite(tmp_path, datasets=["mnist_subset", "svhn", {"blockmnist": {"source": "mnist"}}],
                             regularizers=["erm"], evaluators=["accuracy"])
    runs = tmp_path / "runs"
    summary = run_suite(load_suite(suite_file), runs, RunOptions(device="cpu", data_root=data), dry_run=True)
    states = {r.job.dataset.label: r.state for r in summary.jobs}
    assert states == {"mnist_subset": "planned", "svhn": "invalid", "blockmnist(source=mnist)": "invalid"}
    findings = next(r.findings for r in summary.jobs if r.job.dataset.name == "svhn")
    assert len(findings) == 1 and findings[0].startswith("error: 2 dataset(s) are not on disk")
    assert f"dataset svhn: dataset 'svhn' was not found (or is incomplete) in {data / 'svhn'}" in findings[0]
    assert f"dataset blockmnist(source=mnist): dataset 'mnist' was not found (or is incomplete) in {data / 'mnist'}" \
        in findings[0]
    assert (f"`gibench run --suite {suite_file} --runs-dir {runs} --data-root {data} --device cpu --download` "
            f"fetches them into {data}") in findings[0]
    assert not any(data.iterdir())
