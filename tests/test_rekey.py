"""Stores and submissions written under the exact-float hash rule keep every trained model and result (content
hashes that every machine agrees on): `gibench run` re-keys them and trains and evaluates nothing, `gibench doctor`
reports them and `--fix` re-keys them, and a reference submission re-keyed by scripts/rekey_submission.py still
validates and keeps its verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gibench.api import registry
from gibench.api.plugin import EvalResult, Evaluator, Metric
from gibench.core.fsio import canonical_hash
from gibench.core.identity import identity_hash
from gibench.results.tables import collect_results
from gibench.running.runner import RunObserver, RunOptions, run_suite
from gibench.store.auxiliary import classifier
from gibench.store.doctor import doctor
from gibench.store.rekey import rekey_store, stale_keys
from gibench.store.runs import result_key
from gibench.suites.jobs import expand
from gibench.suites.suite import PluginSpec, TrainConfig, load_suite
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]
#: 17 significant digits: the exact-float rule and the ten-digit rule give this job different keys
LONG_WEIGHT = 0.0012345678901234567


class MeanProbe(Evaluator):
    """Trains one auxiliary classifier whose identity holds the train split's channel means: floats computed at run
    time, as DiffROAR's train-mean fill is."""

    metrics = (Metric("probe_accuracy", True, "the auxiliary classifier's clean accuracy", headline=True),)

    def evaluate(self, ctx):
        identity = {**ctx.job.training_spec()["dataset"], "fill": list(ctx.data.mean)}
        probe = classifier(ctx.aux, "mean_probe", ctx.data, identity, PluginSpec.of("gibench_linear", {}, {}),
                           TrainConfig(epochs=1, batch_size=256, lr=1e-2), seed=7)
        return EvalResult(scalars={"probe_accuracy": probe.quality["test_accuracy"]})


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.reports = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def job_finished(self, report) -> None:
        self.reports.append(report)


@pytest.fixture
def old_store(tmp_path: Path, register_plugin):
    """A store trained by today's code, then keyed as gibench keyed it before (exact floats), checked to be so."""
    register_plugin(registry.evaluators, "mean_probe", MeanProbe)
    suite = load_suite(write_suite(tmp_path, regularizers=["erm", {"gradient_norm": {"weight": LONG_WEIGHT}}],
                                   evaluators=["accuracy", {"pixel_perturbation": {"max_images": 100}}, "mean_probe"]))
    runs = tmp_path / "runs"
    assert run_suite(suite, runs, RunOptions(device="cpu")).ok
    current = _snapshot(runs)
    aged = rekey_store(runs, hash_fn=canonical_hash)
    assert len(aged.jobs) == 1 and len(aged.auxiliary) == 1  # the gradient_norm job; the probe (means in identity)
    assert len(aged.results) == 2  # pixel_perturbation (logspace fractions) of both jobs
    for folder in (runs / "jobs").iterdir():  # every name is the exact-float hash of what its record holds
        assert folder.name == canonical_hash(json.loads((folder / "job.json").read_text())["spec"])
        for path in (folder / "results").glob("*.json"):
            record = json.loads(path.read_text())
            assert path.stem == result_key(record["evaluator"], record["version"], canonical_hash(record["config"]))
            assert record["config_hash"] == path.stem.rsplit("__", 1)[1]
    return suite, runs, current


def _snapshot(runs: Path) -> dict[str, dict]:
    """Every result's metrics and checkpoint by (job key, result key), and the checkpoints' SHA-256."""
    found = {}
    for path in sorted(runs.glob("jobs/*/results/*.json")):
        record = json.loads(path.read_text())
        found[f"{path.parent.parent.name}/{path.stem}"] = {"scalars": record["scalars"],
                                                          "checkpoint": record["checkpoint_sha256"]}
    return found


def test_a_rerun_of_an_old_store_re_keys_it_and_trains_and_evaluates_nothing(old_store) -> None:
    suite, runs, current = old_store
    checkpoints = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("jobs/*/checkpoint.pt")}
    observer = Recorder()
    summary = run_suite(suite, runs, RunOptions(device="cpu"), observer=observer)
    assert summary.ok
    assert [r.state for r in observer.reports] == ["cached", "cached"]
    assert all(e.state == "cached" for r in observer.reports for e in r.evaluations)
    assert any("1 job, 2 results and 1 auxiliary model stored under an older identity rule were re-keyed" in w
               for w in observer.warnings)
    assert _snapshot(runs) == current  # the same results, under today's keys
    assert {p.parent.name for p in runs.glob("jobs/*/checkpoint.pt")} == {job.hash for job in expand(suite)}
    moved = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("jobs/*/checkpoint.pt")}
    assert sorted(moved.values()) == sorted(checkpoints.values())  # renamed, never rewritten
    manifest = json.loads((runs / "manifest.json").read_text())
    assert {job for run in manifest["runs"] for job in run["jobs"]} == {job.hash for job in expand(suite)}
    for path in runs.glob("jobs/*/results/mean_probe*.json"):  # results name the probe by its new key
        aux = json.loads(path.read_text())["auxiliary"][0]
        assert (runs / aux["folder"] / "identity.json").exists()
        assert json.loads((runs / aux["folder"] / "identity.json").read_text())["hash"] == aux["hash"]
    assert not stale_keys(runs).moved


def test_report_reads_an_old_store_before_it_is_re_keyed(old_store) -> None:
    from gibench.results.tables import evaluations_of

    suite, runs, _ = old_store
    table = collect_results(runs, evaluations=evaluations_of(suite))
    assert set(table["evaluator"]) == {"accuracy", "pixel_perturbation", "mean_probe"}
    assert len(set(table["job_hash"])) == 2


def test_doctor_reports_old_keys_and_fix_re_keys_them(old_store) -> None:
    suite, runs, current = old_store
    found = [p for p in doctor(runs) if "older identity rule" in p.what]
    assert {p.kind for p in found} == {"stale"} and len(found) == 4
    assert not any(p.fixed for p in found)
    fixed = [p for p in doctor(runs, fix=True) if "older identity rule" in p.what]
    assert len(fixed) == 4 and all(p.fixed.startswith("re-keyed to ") for p in fixed)
    assert _snapshot(runs) == current
    assert not [p for p in doctor(runs) if p.kind in ("stale", "damaged")]


def test_a_dry_run_says_the_store_needs_re_keying_and_changes_nothing(old_store) -> None:
    suite, runs, _ = old_store
    before = sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
    observer = Recorder()
    run_suite(suite, runs, RunOptions(device="cpu"), observer=observer, dry_run=True)
    assert any("stored under keys of an older identity rule" in w and "gibench doctor --fix" in w
               for w in observer.warnings)
    assert sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) == before


def test_a_job_whose_new_key_is_taken_is_set_aside_into_quarantine(old_store) -> None:
    suite, runs, _ = old_store
    old = next(p for p in (runs / "jobs").iterdir()
               if identity_hash(json.loads((p / "job.json").read_text())["spec"]) != p.name)
    shutil.copytree(old, runs / "jobs" / identity_hash(json.loads((old / "job.json").read_text())["spec"]))
    done = rekey_store(runs)
    assert not old.exists() and not done.jobs
    assert list(done.set_aside) == [f"jobs/{old.name}"]
    assert "already held by jobs/" in done.set_aside[f"jobs/{old.name}"]
    assert len(list(runs.glob(f"quarantine/*/jobs/{old.name}/checkpoint.pt"))) == 1  # moved, never deleted


def test_a_result_computed_again_under_its_new_key_leaves_one_row_and_a_damaged_job_json_still_re_keys(
        old_store) -> None:
    """An evaluation was computed again under its current key while the old-key copy stayed (its job.json was
    damaged, so the folder was never re-keyed): the old copy is set aside and the report has one row per evaluation
    instead of refusing a duplicate. A damaged job.json does not stop its job's results from moving."""
    suite, runs, _ = old_store
    folder, other = sorted((runs / "jobs").iterdir(), key=lambda p: identity_hash(
        json.loads((p / "job.json").read_text())["spec"]) != p.name)  # one whose job key stays first
    old = next((folder / "results").glob("pixel_perturbation__*.json"))
    record = json.loads(old.read_text())
    new_key = result_key(record["evaluator"], record["version"], identity_hash(record["config"]))
    shutil.copy(old, folder / "results" / f"{new_key}.json")
    job_json = (folder / "job.json").read_text()
    (folder / "job.json").write_text("{damaged")
    (other / "job.json").write_text("{damaged")
    done = rekey_store(runs)
    assert done.set_aside == {f"jobs/{folder.name}/results/{old.name}": f"its current key {new_key} is already held"}
    assert not old.exists() and len(list(runs.glob(f"quarantine/*/jobs/{folder.name}/results/{old.name}"))) == 1
    moved = [p for p in (other / "results").glob("*.json")]
    assert moved and all(p.stem == result_key(r["evaluator"], r["version"], identity_hash(r["config"]))
                         for p in moved for r in [json.loads(p.read_text())])
    (folder / "job.json").write_text(job_json)  # as the next run writes it again
    table = collect_results(runs, warn=lambda message: None)
    rows = table[(table["job_hash"] == folder.name) & (table["evaluator"] == "pixel_perturbation")]
    assert len(rows) > 0 and not rows.duplicated(["metric"]).any()


def test_the_reference_submissions_re_key_validate_and_stay_verified(tmp_path: Path) -> None:
    from gibench.submissions.validate import load_submission
    from gibench.submissions.verify import verification_status
    from scripts.rekey_submission import main

    smoke = next((ROOT / "submissions").glob("gibench-reference-smoke-*"))
    copy = tmp_path / smoke.name
    shutil.copytree(smoke, copy)
    # The folder as it was before the rule: pixel_perturbation's artifacts under its exact-float key.
    suite = load_suite("smoke")
    spec = next(s for s in suite.evaluators if s.name == "pixel_perturbation")
    assert identity_hash(spec.config) != canonical_hash(spec.config)
    assert main([str(copy)]) == 0  # current already: nothing moves
    assert copy.exists()
    loaded = load_submission(copy)
    keys = {f.result_key for f in loaded.submission.artifacts.files if f.evaluator == "pixel_perturbation"}
    version = registry.evaluators.get("pixel_perturbation").version  # the smoke reference is made with it
    assert keys == {result_key("pixel_perturbation", version, identity_hash(spec.config))}
    # re-keying leaves the verification as it was (verified when recorded; stale once an evaluator's version moves)
    assert verification_status(loaded).state == verification_status(load_submission(smoke)).state


def test_rekey_submission_moves_artifacts_renames_the_folder_and_keeps_the_verification(tmp_path: Path) -> None:
    from gibench.submissions.build import submission_id
    from gibench.submissions.rekey import rekey_submission
    from gibench.submissions.validate import load_submission
    from gibench.submissions.verify import verification_status

    smoke = next((ROOT / "submissions").glob("gibench-reference-smoke-*"))
    old = _aged_submission(smoke, tmp_path)
    new = rekey_submission(old)
    assert not old.exists() and new.parent == old.parent and new.name != old.name
    loaded = load_submission(new)
    sub = loaded.submission
    models = sub.models.sha256 if sub.models is not None else None  # the smoke reference references its models
    assert new.name == sub.id == submission_id(sub.metadata, sub.provenance, sub.results.sha256, sub.artifacts, models)
    assert (new / "results.csv").read_bytes() == (smoke / "results.csv").read_bytes()
    assert [f.path for f in sub.artifacts.files] == [f.path for f in load_submission(smoke).submission.artifacts.files]
    assert verification_status(loaded).state == verification_status(load_submission(smoke)).state
    assert json.loads((new / "verification.json").read_text())["submission_id"] == sub.id


def _aged_submission(folder: Path, tmp_path: Path) -> Path:
    """A copy of a current submission with its density_ratio artifacts (an evaluator still at the version the
    submission recorded, so its key can be recomputed) under a made-up older key."""
    from gibench.submissions.build import submission_id
    from gibench.submissions.schema import Submission

    copy = tmp_path / "aged"
    shutil.copytree(folder, copy)
    sub = Submission.model_validate_json((copy / "submission.json").read_text())
    files = []
    for f in sub.artifacts.files:
        if f.evaluator == "density_ratio":
            old_key = f.result_key.rsplit("__", 1)[0] + "__0123456789abcdef"
            old_path = f"artifacts/{f.job_hash}/{old_key}/{Path(f.path).name}"
            (copy / old_path).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.path).rename(copy / old_path)
            f = f.model_copy(update={"result_key": old_key, "path": old_path})
        files.append(f)
    for empty in sorted(copy.glob("artifacts/*/density_ratio__*"), reverse=True):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    artifacts = sub.artifacts.model_copy(update={"files": files})
    new_id = submission_id(sub.metadata, sub.provenance, sub.results.sha256, artifacts,
                           sub.models.sha256 if sub.models is not None else None)
    aged = sub.model_copy(update={"id": new_id, "artifacts": artifacts})
    (copy / "submission.json").write_text(aged.model_dump_json(indent=2) + "\n")
    record = json.loads((copy / "verification.json").read_text())
    (copy / "verification.json").write_text(json.dumps({**record, "submission_id": new_id}, indent=2))
    return copy.rename(tmp_path / new_id)
