"""Atomic writes and the run store's commit points."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from gibench.store.records import JobLabels, JobRecord, PluginSource, ResultRecord, RunEntry
from gibench.store.runs import JobFolder, RunStore, atomic_write_json, read_json

SPEC = JobRecord("abc", {}, JobLabels("d", "b", {}, "erm", {}, "erm", 0), {})


def _result(status: str) -> ResultRecord:
    return ResultRecord("acc", "1", {}, {}, "x", [], PluginSource("gibench", "0"), status)


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(target, {"v": 2})
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_job_counts_as_trained_only_after_status(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec(SPEC)
    model = torch.nn.Linear(3, 2)
    assert not folder.is_trained()
    folder.save_trained(model, {"entries": []})
    assert folder.is_trained()
    (folder.root / "checkpoint.pt").unlink()
    assert not folder.is_trained()  # a status without its checkpoint is not a trained job


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec(SPEC)
    model = torch.nn.Linear(3, 2)
    folder.save_trained(model, {})
    other = folder.load_weights(torch.nn.Linear(3, 2))
    assert torch.equal(other.weight, model.weight)


def test_results_and_artifacts_are_committed_together(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec(SPEC)
    staging = folder.staging_artifact_dir("acc__v1__x")
    (staging / "grid.png").write_bytes(b"png")
    assert not folder.has_result("acc__v1__x")
    folder.save_result("acc__v1__x", _result("ok"), staging)
    assert folder.has_result("acc__v1__x")
    assert (folder.root / "artifacts" / "acc__v1__x" / "grid.png").read_bytes() == b"png"
    folder.save_result("bad__v1__x", _result("failed"))
    assert not folder.has_result("bad__v1__x")  # failed evaluations are retried


def test_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec(SPEC)
    (folder.root / ".tmp-half-written").write_bytes(b"\x00")
    folder.staging_artifact_dir("k")
    folder.clean_temporaries()
    assert sorted(p.name for p in folder.root.rglob("*")) == ["artifacts", "job.json"]


def _entry(name: str, run_id: str, started: str = "2026-01-01T00:00:00+00:00") -> RunEntry:
    return RunEntry(suite_name=name, suite_hash="0" * 16, suite={"name": name}, jobs=[], started=started,
                    environment={}, run_id=run_id)


def test_manifest_records_and_updates_runs(tmp_path):
    store = RunStore(tmp_path, repair=True)
    first = _entry("a", "r1")
    store.record_run(first)
    store.record_run(_entry("b", "r2", "2026-01-02T00:00:00+00:00"))
    store.record_run(dataclasses.replace(first, finished="now"))  # replaced in place, by run id
    assert [r.suite_name for r in store.manifest().runs] == ["a", "b"]
    assert store.manifest().runs[0].finished == "now"
