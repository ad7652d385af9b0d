"""gibench verify: a real one-job submission re-trained in a scratch folder agrees exactly; a tampered value (its
SHA-256 recomputed, so validate accepts it) is reported as disagreeing; the record and the site's status."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from gibench.api import registry
from gibench.cli import main
from gibench.core.errors import ConfigError
from gibench.running.runner import run_suite
from gibench.submissions.build import build_submission, load_submission, validate_submission
from gibench.submissions.verify import (
    DEFAULT_TOLERANCE,
    VERIFICATION_FILE,
    verification_status,
    verify_submission,
)
from gibench.suites.suite import parse_suite

SUITE = {
    "name": "verify_tiny", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"], "regularizers": ["erm"],
    "evaluators": ["accuracy", {"pixel_perturbation": {"max_images": 32, "fractions": [0.1, 0.5, 1.0]}}],
    "seeds": [0], "train": {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 1.0e-2},
}
META = {"name": "Verify me", "authors": ["A. Person"]}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Path]:
    """One job trained and evaluated on the bundled data, submitted; plus a verify scratch folder already used once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("verify")
        run_suite(parse_suite(SUITE, "verify_tiny.yaml"), root / "runs", device="cpu")
        folder = build_submission(root / "runs", root / "submissions", META)
        scratch = root / "scratch"
        first = verify_submission(load_submission(folder), jobs=1, runs_dir=scratch)
        yield {"root": root, "runs": root / "runs", "folder": folder, "scratch": scratch, "first": first}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_real_submission_agrees_exactly_and_the_record_says_so(real) -> None:
    result, folder = real["first"], real["folder"]
    table = load_submission(folder).results
    assert result.status == "verified" and result.tolerance == DEFAULT_TOLERANCE == 1e-6
    assert [j["state"] for j in result.jobs] == ["trained"] and result.jobs[0]["job_hash"] == table["job_hash"][0]
    assert len(result.rows) == len(table) == 6  # accuracy + 5 pixel_perturbation metrics
    assert {r.outcome for r in result.rows} == {"agrees"} and {r.abs_diff for r in result.rows} == {0.0}
    by_metric = {r.metric: r.recomputed for r in result.rows}
    assert by_metric == dict(zip(table["metric"], table["value"]))
    assert sorted(m.metric for m in result.metrics) == sorted(table["metric"])
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    assert record["status"] == "verified" and record["tolerance"] == {"absolute": 1e-6}
    assert record["results_sha256"] == load_submission(folder).submission.results.sha256
    assert record["evaluator_versions"] == {name: registry.evaluators.get(name).version
                                            for name in ("accuracy", "pixel_perturbation")}
    assert record["gibench_version"] and record["jobs_requested"] == 1 and record["seed"] == 0
    assert record["environment_changes"] == {} and record["torch_threads"] == 1
    # the record is not part of the hashed content: the submission is still valid under the same id
    assert validate_submission(folder).id == folder.name
    status = verification_status(load_submission(folder))
    assert (status.state, status.date, status.tolerance, status.jobs_checked) == (
        "verified", record["date"], 1e-6, 1)
    assert (real["runs"] / "jobs" / table["job_hash"][0] / "status.json").exists()  # the user's run is untouched


@pytest.mark.slow
def test_a_tampered_value_with_its_sha256_recomputed_disagrees(real, tmp_path: Path, capsys) -> None:
    folder = tmp_path / real["folder"].name
    shutil.copytree(real["folder"], folder)
    (folder / VERIFICATION_FILE).unlink()
    table = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    index = int(table.index[table["metric"] == "accuracy"][0])
    honest = float(table.loc[index, "value"])
    forged = honest - 0.0123 if honest > 0.5 else honest + 0.0123
    table.loc[index, "value"] = repr(forged)
    table.to_csv(folder / "results.csv", index=False)
    data = json.loads((folder / "submission.json").read_text())
    data["results"]["sha256"] = hashlib.sha256((folder / "results.csv").read_bytes()).hexdigest()
    (folder / "submission.json").write_text(json.dumps(data))
    assert validate_submission(folder).id == folder.name  # plausible, and the hashes match

    # the scratch folder of the first verify is reused: its re-trained model, no second training
    assert main(["verify", str(folder), "--runs-dir", str(real["scratch"])]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "accuracy v1 │ accuracy │ 1 │ 0.0123 │ disagrees" in out and out.endswith(
        f"disagrees: 1 job(s) re-run; record written to {folder / VERIFICATION_FILE}")
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    assert record["status"] == "disagrees" and record["jobs"][0]["state"] == "cached"
    (row,) = [r for r in record["rows"] if r["outcome"] != "agrees"]
    assert row["metric"] == "accuracy" and row["submitted"] == forged and row["recomputed"] == honest
    assert row["abs_diff"] == pytest.approx(0.0123, abs=1e-12)
    assert [m["outcome"] for m in record["metrics"] if m["metric"] != "accuracy"] == ["agrees"] * 5
    status = verification_status(load_submission(folder))
    assert status.state == "disagrees" and status.detail == "accuracy: accuracy disagrees"


@pytest.mark.slow
def test_verify_never_runs_in_a_runs_folder_of_the_users(real) -> None:
    with pytest.raises(ConfigError) as info:
        verify_submission(load_submission(real["folder"]), runs_dir=real["runs"], write=False)
    assert str(info.value) == (
        f"--runs-dir {real['runs']} is not empty and was not made by `gibench verify`. verify re-trains in a scratch "
        "folder and never reuses or writes into a runs folder of yours. Fix: pass a new or empty folder, or leave "
        "--runs-dir out for a temporary one.")


@pytest.mark.slow
def test_status_is_stale_when_an_evaluator_version_changed_since(real, tmp_path: Path) -> None:
    folder = tmp_path / real["folder"].name
    shutil.copytree(real["folder"], folder)
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    record["evaluator_versions"]["accuracy"] = "0"
    (folder / VERIFICATION_FILE).write_text(json.dumps(record))
    status = verification_status(load_submission(folder))
    assert (status.state, status.changed, status.detail) == (
        "stale", {"accuracy": ("0", "1")}, "evaluator versions changed since: accuracy v0 → v1")
    record["results_sha256"] = "0" * 64
    (folder / VERIFICATION_FILE).write_text(json.dumps(record))
    assert verification_status(load_submission(folder)).state == "unverified"
    (folder / VERIFICATION_FILE).write_text("{broken")
    assert verification_status(load_submission(folder)).state == "unverified"
    (folder / VERIFICATION_FILE).unlink()
    assert verification_status(load_submission(folder)).detail == "never verified"


@pytest.mark.parametrize(("option", "expected"), [
    (["--jobs", "0"], "--jobs must be a whole number >= 1, got 0. Fix: e.g. --jobs 2."),
    (["--tolerance", "-1"], "--tolerance must be a finite number >= 0, got -1.0. Fix: e.g. --tolerance 1e-6 on the "
                            "CPU, or --tolerance 0.02 across devices."),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, capsys, option, expected) -> None:
    from tests.test_submission import META as SUB_META
    from tests.test_submission import make_runs

    runs_dir, table = make_runs(tmp_path)
    folder = build_submission(runs_dir, tmp_path / "s", SUB_META, "tiny", results=table)
    assert main(["verify", str(folder), *option]) == 2
    assert " ".join(capsys.readouterr().err.split()) == f"error: {expected}"


@pytest.mark.slow
def test_a_job_the_installed_code_cannot_rebuild_is_stale(real, monkeypatch, tmp_path: Path) -> None:
    import gibench.suites.jobs

    monkeypatch.setattr(gibench.suites.jobs, "TRAINING_CODE_VERSION", "changed")  # every job hash changes
    result = verify_submission(load_submission(real["folder"]), runs_dir=tmp_path / "scratch", write=False)
    assert result.status == "stale" and len(result.rows) == 6 and {r.outcome for r in result.rows} == {"stale"}
    (job,) = result.jobs
    assert job["state"] == "not reproducible" and "do not rebuild this job hash" in job["reason"]
    assert not (tmp_path / "scratch" / "jobs").exists()  # nothing was trained


def _rows(**changes) -> pd.DataFrame:
    base = {"job_hash": "j", "evaluator": "accuracy", "evaluator_version": "1", "evaluator_params": "{}",
            "metric": "accuracy", "status": "ok", "value": 0.5}
    return pd.DataFrame([{**base, **change} for change in changes.values()], index=list(changes))


def test_compare_row_by_row_with_the_stated_tolerance() -> None:
    from gibench.submissions.verify import compare, metric_outcomes

    submitted = _rows(same={}, edge={"metric": "m2", "value": 0.5 + 1e-6}, over={"metric": "m3", "value": 0.5 + 3e-6},
                      skipped={"metric": "m4", "status": "skipped", "value": float("nan")},
                      flipped={"metric": "m5", "status": "failed", "value": float("nan")},
                      old={"evaluator": "pixel_perturbation", "evaluator_version": "0", "metric": "auc"},
                      params={"metric": "m6", "evaluator_params": '{"b": 1, "a": 2}'})
    recomputed = _rows(same={}, edge={"metric": "m2"}, over={"metric": "m3"},
                       skipped={"metric": "m4", "status": "skipped", "value": float("nan")},
                       flipped={"metric": "m5"}, params={"metric": "m6", "evaluator_params": '{"a": 2, "b": 1}'})
    rows = compare(submitted, recomputed, 2e-6, {"accuracy": "1", "pixel_perturbation": "1"})
    outcome = {r.metric: r.outcome for r in rows}
    assert outcome == {"accuracy": "agrees", "m2": "agrees", "m3": "disagrees", "m4": "agrees", "m5": "disagrees",
                       "auc": "stale", "m6": "agrees"}
    assert next(r.abs_diff for r in rows if r.metric == "m3") == pytest.approx(3e-6, rel=1e-9)
    by = {(m.evaluator, m.metric): m.outcome for m in metric_outcomes(rows)}
    assert by[("pixel_perturbation", "auc")] == "stale" and by[("accuracy", "m3")] == "disagrees"


def test_a_missing_dataset_stops_verify_with_what_to_pass(tmp_path: Path) -> None:
    from gibench.core.errors import DataError
    from gibench.store.provenance import environment_info, suite_hash
    from gibench.suites.jobs import expand
    from tests.test_submission import row

    suite = {**SUITE, "name": "needs_cifar", "datasets": ["mnist"]}
    (job,) = expand(parse_suite(suite, "needs_cifar.yaml"))
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / "manifest.json").write_text(json.dumps({"runs": [{
        "suite_name": "needs_cifar", "suite_hash": suite_hash(suite), "suite": suite, "jobs": [job.hash],
        "started": "2025-01-02T03:04:05+00:00", "environment": environment_info("cpu")}]}))
    table = pd.DataFrame([row(job.hash, "erm", 0, "accuracy", "accuracy", 0.9, dataset="mnist")])
    folder = build_submission(runs_dir, tmp_path / "s", META, results=table)
    empty = tmp_path / "no_data"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        verify_submission(load_submission(folder), data_root=empty, runs_dir=tmp_path / "scratch")
    message = str(info.value)
    assert message.startswith(f"cannot verify job {job.hash} (mnist / gibench_linear / erm / seed 0): could not load "
                              "dataset mnist: ")
    assert message.endswith("Fix: pass --data-root with the folder holding that dataset (verify never downloads).")
    assert not (folder / VERIFICATION_FILE).exists()


@pytest.mark.slow
def test_environment_changes_name_what_differs_from_the_recorded_runs(real) -> None:
    from gibench.submissions.verify import environment_changes

    loaded = load_submission(real["folder"])
    (job,) = set(loaded.results["job_hash"])
    recorded = loaded.submission.provenance.runs[0].environment
    now = {**recorded.model_dump(), "torch": "0.0.1", "device": "cuda:0", "device_name": "Another CPU"}
    assert environment_changes(loaded, [job], now) == {
        "torch": [recorded.torch, "0.0.1"], "device": ["cpu", "cuda:0"],
        "device_name": [recorded.device_name, "Another CPU"]}
    assert environment_changes(loaded, ["another job"], now) == {}
