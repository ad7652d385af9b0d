"""Recovery from a damaged store: every kind of damage below, then a rerun that completes with nothing lost."""

from __future__ import annotations

import json
import shutil

import pytest

from gibench.cli import main
from gibench.core.fsio import file_sha256
from gibench.results.tables import collect_results
from gibench.running.runner import RunObserver, RunOptions, run_suite
from gibench.store.doctor import doctor
from gibench.store.runs import RunStore
from gibench.suites.suite import load_suite

CPU = RunOptions(device="cpu")


class Warnings(RunObserver):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, message: str) -> None:
        self.messages.append(message)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the tiny suite (2 jobs × 2 evaluators), to copy and damage."""
    from tests.conftest import write_suite

    tmp = tmp_path_factory.mktemp("finished")
    suite_file = write_suite(tmp)
    runs = tmp / "runs"
    run_suite(load_suite(suite_file), runs, CPU)
    return suite_file, runs


@pytest.fixture
def damaged(finished, tmp_path):
    suite_file, runs = finished
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    frame = collect_results(copy)
    first = sorted(copy.glob("jobs/*"))[0]
    return load_suite(suite_file), suite_file, copy, first, frame


def _rerun(suite, runs):
    observer = Warnings()
    summary = run_suite(suite, runs, CPU, observer=observer)
    assert summary.ok, summary.failures()
    return summary, observer.messages


def _quarantined(runs, name):
    return [p for p in (runs / "quarantine").rglob(name) if p.is_file()]


def test_truncated_checkpoint_with_every_result_cached(damaged):
    suite, _, runs, job, before = damaged
    sha = file_sha256(job / "checkpoint.pt")
    with open(job / "checkpoint.pt", "r+b") as handle:
        handle.truncate(1000)
    summary, warnings = _rerun(suite, runs)
    (message,) = warnings
    assert f"{job / 'checkpoint.pt'} is damaged (1000 bytes where status.json recorded" in message
    assert "moved to" in message and "the job is retrained" in message
    (moved,) = _quarantined(runs, "checkpoint.pt")
    assert moved.stat().st_size == 1000  # moved aside, never deleted
    report = next(r for r in summary.jobs if r.job.hash == job.name)
    assert report.state == "trained"
    # training on the CPU is deterministic: the retrained checkpoint is byte-identical, so its results are kept
    assert file_sha256(job / "checkpoint.pt") == sha
    assert [e.state for e in report.evaluations] == ["cached", "cached"]
    assert collect_results(runs).equals(before)
    assert [e["event"] for e in RunStore(runs).job(job.name).events()] == ["trained", "trained"]


def test_results_of_another_checkpoint_are_recomputed(damaged):
    suite, _, runs, job, before = damaged
    (result,) = job.glob("results/accuracy__*.json")
    record = json.loads(result.read_text())
    record["checkpoint_sha256"] = "0" * 64  # as if computed from weights that a retraining replaced
    result.write_text(json.dumps(record))
    summary, _ = _rerun(suite, runs)
    report = next(r for r in summary.jobs if r.job.hash == job.name)
    assert [e.state for e in report.evaluations] == ["ok", "cached"]
    (stale,) = _quarantined(runs, result.name)
    assert json.loads(stale.read_text())["checkpoint_sha256"] == "0" * 64
    assert json.loads(result.read_text())["checkpoint_sha256"] == file_sha256(job / "checkpoint.pt")
    assert collect_results(runs).equals(before)


def test_truncated_result_breaks_neither_report_nor_submit_nor_run(damaged, tmp_path, capsys):
    suite, _, runs, job, before = damaged
    (result,) = job.glob("results/accuracy__*.json")
    result.write_bytes(result.read_bytes()[:100])

    assert main(["report", "--runs-dir", str(runs)]) == 0
    err = capsys.readouterr().err
    assert str(result) in err and "is damaged" in err and "it is skipped" in err and "Traceback" not in err
    assert result.exists()  # report only reads

    assert main(["submit", "--runs-dir", str(runs), "--name", "x", "--author", "A", "--out", str(tmp_path / "s")]) == 0
    assert str(result) in capsys.readouterr().err
    (submission,) = (tmp_path / "s").iterdir()
    rows = (submission / "results.csv").read_text().splitlines()
    assert len(rows) - 1 == len(before) - 1  # every row but the damaged result's one metric

    summary, warnings = _rerun(suite, runs)
    assert any(str(result) in m and "moved to" in m for m in warnings)
    report = next(r for r in summary.jobs if r.job.hash == job.name)
    assert [e.state for e in report.evaluations] == ["ok", "cached"]
    assert collect_results(runs).equals(before)  # recomputed to the same number
    assert len(_quarantined(runs, result.name)) == 1


def test_truncated_status_breaks_neither_dry_run_nor_run(damaged, capsys):
    suite, suite_file, runs, job, before = damaged
    status = job / "status.json"
    status.write_bytes(status.read_bytes()[:10])
    assert main(["run", "--suite", str(suite_file), "--runs-dir", str(runs), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert str(status) in captured.err and "Traceback" not in captured.err
    assert status.read_bytes()[:10] == status.read_bytes()  # a dry run changes nothing

    summary, warnings = _rerun(suite, runs)
    assert any(str(status) in m for m in warnings)
    report = next(r for r in summary.jobs if r.job.hash == job.name)
    assert report.state == "trained" and [e.state for e in report.evaluations] == ["cached", "cached"]
    assert collect_results(runs).equals(before)


def test_truncated_manifest_is_rebuilt_without_losing_a_run(damaged, capsys):
    suite, suite_file, runs, _, before = damaged
    manifest = runs / "manifest.json"
    first_run = json.loads(manifest.read_text())["runs"][0]
    manifest.write_bytes(manifest.read_bytes()[:50])
    assert main(["run", "--suite", str(suite_file), "--runs-dir", str(runs), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert str(manifest) in err and "rebuilt from runs/*.json" in err
    runs_now = json.loads(manifest.read_text())["runs"]
    assert len(runs_now) == 2 and runs_now[0]["run_id"] == first_run["run_id"]
    assert runs_now[1]["finished"] is not None
    assert len(_quarantined(runs, "manifest.json")) == 1
    assert collect_results(runs).equals(before)


def test_doctor_reports_every_damage_and_changes_nothing_until_fix(damaged, capsys):
    suite, suite_file, runs, job, before = damaged
    (result,) = job.glob("results/accuracy__*.json")
    paths = {"checkpoint": job / "checkpoint.pt", "result": result, "status": sorted(runs.glob("jobs/*"))[1] /
             "status.json", "manifest": runs / "manifest.json"}
    for path in paths.values():
        path.write_bytes(path.read_bytes()[:40])
    (job / ".tmp-left-by-a-kill").write_bytes(b"x")
    import os
    os.utime(job / ".tmp-left-by-a-kill", (0, 0))  # old: no write can still be in progress
    snapshot = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}

    problems = doctor(runs)
    damaged_paths = {p.path for p in problems if p.kind == "damaged"}
    assert damaged_paths == set(paths.values())
    assert {p.path for p in problems if p.kind == "stale"} == {job / ".tmp-left-by-a-kill"}
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == snapshot  # nothing changed
    assert main(["doctor", "--runs-dir", str(runs)]) == 1
    assert "5 damaged or stale file(s)" in capsys.readouterr().out
    assert main(["run", "--suite", str(suite_file), "--runs-dir", str(runs), "--check"]) == 1  # the same scan
    assert "5 damaged or stale file(s)" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == snapshot

    assert main(["doctor", "--runs-dir", str(runs), "--fix"]) == 0
    assert not any(p.exists() for p in paths.values()) and len(list((runs / "quarantine").glob("*"))) == 5
    assert [p for p in doctor(runs) if p.kind in ("damaged", "stale")] == []
    _rerun(suite, runs)
    assert collect_results(runs).equals(before)


def test_truncated_job_record_is_skipped_by_report_and_rewritten_by_run(damaged, capsys):
    suite, _, runs, job, before = damaged
    (job / "job.json").write_bytes((job / "job.json").read_bytes()[:30])
    assert main(["report", "--runs-dir", str(runs)]) == 0
    assert f"{job / 'job.json'} is damaged" in capsys.readouterr().err
    assert set(collect_results(runs, warn=lambda m: None)["job_hash"]) == set(before["job_hash"]) - {job.name}
    summary, warnings = _rerun(suite, runs)
    assert any(str(job / "job.json") in m for m in warnings)
    assert collect_results(runs).equals(before)


def test_results_of_an_old_evaluator_version_are_stale(damaged, monkeypatch, capsys):
    from gibench.api import registry

    suite, suite_file, runs, _, before = damaged
    monkeypatch.setattr(registry.evaluators.get("accuracy"), "version", "99")  # as after a bump of the evaluator
    summary, _ = _rerun(suite, runs)
    assert {e.evaluator: e.state for r in summary.jobs for e in r.evaluations} == {"accuracy": "ok",
                                                                                    "pixel_perturbation": "cached"}
    assert main(["report", "--runs-dir", str(runs)]) == 0
    assert "results of versions 1, 99 of accuracy are stored and counted together" in capsys.readouterr().err
    stale = [p for p in doctor(runs) if p.kind == "stale"]
    assert sorted(p.path.name for p in stale) == sorted(p.name for p in runs.glob("jobs/*/results/accuracy__v1__*"))
    assert all("installed version is 99" in p.what for p in stale)
    doctor(runs, fix=True)
    assert main(["report", "--runs-dir", str(runs)]) == 0
    assert "counted together" not in capsys.readouterr().err
    assert set(collect_results(runs)["evaluator_version"]) == {"99", before["evaluator_version"].iloc[-1]}
