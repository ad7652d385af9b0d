"""Atomic writes and the run store's commit points."""

from __future__ import annotations

import os

import pytest
import torch

from gibench.store import JobFolder, RunStore, atomic_write_json, read_json


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
    folder.write_spec({"hash": "abc"})
    model = torch.nn.Linear(3, 2)
    assert not folder.is_trained()
    folder.save_trained(model, {"entries": []})
    assert folder.is_trained()
    (folder.root / "checkpoint.pt").unlink()
    assert not folder.is_trained()  # a status without its checkpoint is not a trained job


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec({"hash": "abc"})
    model = torch.nn.Linear(3, 2)
    folder.save_trained(model, {})
    other = folder.load_weights(torch.nn.Linear(3, 2))
    assert torch.equal(other.weight, model.weight)


def test_results_and_artifacts_are_committed_together(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec({"hash": "abc"})
    staging = folder.staging_artifact_dir("acc__v1__x")
    (staging / "grid.png").write_bytes(b"png")
    assert not folder.has_result("acc__v1__x")
    folder.save_result("acc__v1__x", {"status": "ok"}, staging)
    assert folder.has_result("acc__v1__x")
    assert (folder.root / "artifacts" / "acc__v1__x" / "grid.png").read_bytes() == b"png"
    folder.save_result("bad__v1__x", {"status": "failed"})
    assert not folder.has_result("bad__v1__x")  # failed evaluations are retried


def test_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "abc")
    folder.write_spec({"hash": "abc"})
    (folder.root / ".tmp-half-written").write_bytes(b"\x00")
    folder.staging_artifact_dir("k")
    folder.clean_temporaries()
    assert sorted(p.name for p in folder.root.rglob("*")) == ["artifacts", "job.json"]


def test_manifest_appends_runs(tmp_path):
    store = RunStore(tmp_path)
    index = store.append_run({"suite_name": "a", "finished": None})
    store.update_run(index, finished="now")
    store.append_run({"suite_name": "b"})
    assert [r["suite_name"] for r in store.manifest()["runs"]] == ["a", "b"]
    assert store.manifest()["runs"][0]["finished"] == "now"
