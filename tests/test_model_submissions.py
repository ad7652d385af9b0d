"""Submissions that reference their trained models (docs/models.md, "Submitting with models"): ``gibench submit
--models DIR --models-url PREFIX`` writes ``models.json`` (every file by URL with its SHA-256, covered by the
submission's id), ``gibench validate`` checks its shape naming the bad key, and ``gibench verify --reevaluate`` loads
the submitted models, re-runs their evaluations and agrees exactly on an honest submission, while a value altered
after the fact or a model file whose bytes changed is caught; the site links the models and says which check passed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import gibench
from gibench.cli import main
from gibench.core.errors import SubmissionError
from gibench.running.runner import RunOptions, run_suite
from gibench.submissions.build import build_submission, load_submission, validate_submission
from gibench.submissions.model_export import export_models
from gibench.submissions.reevaluate import reevaluate_submission
from gibench.submissions.verify import VERIFICATION_FILE, verification_status
from gibench.suites.suite import load_suite
from tests.conftest import write_suite

#: One job of one epoch on the bundled digits, scored by two evaluators (six metrics).
SUITE = dict(
    evaluators=["accuracy", {"pixel_perturbation": {"max_images": 32, "fractions": [0.1, 0.5, 1.0]}}],
    regularizers=["erm"], seeds=[0], train={"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 1.0e-2},
)
META = {"name": "With models", "authors": ["A. Person"]}
#: The release folder sits beside submissions/, as at a repository's root: reached from submissions/<id>/.
RELATIVE_URL = "file:../../release/models"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """A trained runs directory, its export in release/models, and its submission with and without models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("model_submissions")
        summary = run_suite(load_suite(write_suite(root, **SUITE)), root / "runs", RunOptions(device="cpu"))
        assert summary.ok and len(summary.jobs) == 1
        export_models(root / "runs", root / "release" / "models")
        folder = build_submission(root / "runs", root / "submissions", META, models_dir=root / "release" / "models",
                                  models_url=RELATIVE_URL)
        plain = build_submission(root / "runs", root / "plain", META)
        scratch = root / "scratch"
        honest = reevaluate_submission(load_submission(folder), runs_dir=scratch)
        yield {"root": root, "folder": folder, "plain": plain, "scratch": scratch, "honest": honest,
               "job": summary.jobs[0].job.hash}
    finally:
        torch.set_num_threads(threads)


def _copy(made: dict, under: Path, *, release: bool = False) -> Path:
    """A copy of the submission at ``under/submissions/<id>`` (and of the release folder beside it)."""
    folder = under / "submissions" / made["folder"].name
    shutil.copytree(made["folder"], folder)
    (folder / VERIFICATION_FILE).unlink(missing_ok=True)
    if release:
        shutil.copytree(made["root"] / "release", under / "release")
    return folder


def _edit_models(folder: Path, change) -> None:
    data = json.loads((folder / "models.json").read_text())
    change(data["models"][0])
    (folder / "models.json").write_text(json.dumps(data, indent=2))


# ----------------------------------------------------------------------------------------------------------------------
# gibench submit --models and gibench validate


def test_submit_with_models_references_every_exported_file_and_the_id_covers_them(made, cli_output) -> None:
    folder, job, root = made["folder"], made["job"], made["root"]
    exported = json.loads((root / "release" / "models" / "models.json").read_text())["models"][0]
    index = json.loads((folder / "models.json").read_text())
    (entry,) = index["models"]
    assert entry["job_hash"] == job and set(entry["files"]) == {"model.safetensors", "card.json", "card.md"}
    for name, ref in entry["files"].items():
        assert ref == {"url": f"{RELATIVE_URL}/{job}/{name}", "sha256": exported["files"][name]["sha256"],
                       "bytes": exported["files"][name]["bytes"]}
    record = json.loads((folder / "submission.json").read_text())["models"]
    assert record == {"file": "models.json", "models": 1,
                      "sha256": hashlib.sha256((folder / "models.json").read_bytes()).hexdigest()}
    # the same runs without models: same results, another id (the models' digest is part of the content hash)
    assert validate_submission(folder).id == folder.name != made["plain"].name
    assert load_submission(made["plain"]).submission.results == load_submission(folder).submission.results
    assert load_submission(made["plain"]).submission.models is None
    # the submission is a source of gibench.load_model: the same network as the export gives
    x = gibench.load_dataset("mnist_subset").test.x[:16]
    with torch.no_grad():
        assert torch.equal(gibench.load_model(folder, job=job)(x), gibench.load_model(root / "release" / "models")(x))
    # the command line: submitting the same again is a no-op under the same id; validate names the models
    out, _ = cli_output
    assert main(["submit", "--runs-dir", str(root / "runs"), "--name", META["name"], "--author", "A. Person",
                 "--out", str(root / "submissions"), "--models", str(root / "release" / "models"),
                 "--models-url", RELATIVE_URL]) == 0
    assert f"wrote submission {folder}" in out.getvalue() and f"1 model(s) under {RELATIVE_URL}" in out.getvalue()
    assert main(["validate", str(folder)]) == 0
    assert "1 referenced model(s) in models.json" in out.getvalue()


def _by_path(entry: dict) -> None:
    ref = entry["files"]["card.json"]
    del ref["url"]
    ref["path"] = "card.json"


BAD_ENTRIES = {
    "ftp scheme": (lambda e: e["files"]["model.safetensors"].update(url="ftp://example.org/m.safetensors"),
                   "models[0].files.model.safetensors.url 'ftp://example.org/m.safetensors' is not an https:// URL"),
    "http scheme": (lambda e: e["files"]["card.md"].update(url="http://example.org/card.md"),
                    "models[0].files.card.md.url 'http://example.org/card.md' is not an https:// URL with a host"),
    "short hash": (lambda e: e["files"]["model.safetensors"].update(sha256="abc123"),
                   "models[0].files.model.safetensors: sha256 must be 64 lower-case hex digits, got 'abc123'"),
    "unknown job": (lambda e: e.update(job_hash="0123456789abcdef"),
                    "models[0].job_hash '0123456789abcdef' is not a job of this submission"),
    "a path": (_by_path, "models[0].files.card.json.path 'card.json': a submission names its model files by url"),
    "empty file": (lambda e: e["files"]["card.md"].update(bytes=0),
                   "models[0].files.card.md.bytes is 0: a model file is never empty"),
    "another seed": (lambda e: e.update(seed=7), "models[0].seed is 7, but the rows of job"),
}


@pytest.mark.parametrize("bad", list(BAD_ENTRIES))
def test_a_bad_models_json_is_refused_naming_the_key(made, tmp_path, bad) -> None:
    folder = _copy(made, tmp_path)
    change, message = BAD_ENTRIES[bad]
    _edit_models(folder, change)
    with pytest.raises(SubmissionError) as info:
        validate_submission(folder)
    assert str(info.value).startswith(f"{folder / 'models.json'}: ") and message in str(info.value)


def test_a_swapped_model_or_an_unrecorded_models_json_is_refused(made, tmp_path) -> None:
    folder = _copy(made, tmp_path)
    _edit_models(folder, lambda e: e["files"]["model.safetensors"].update(sha256="ab" * 32))  # well formed
    with pytest.raises(SubmissionError, match=r"does not match field 'models.sha256' in .*submission.json: it "
                                              r"changed after `gibench submit`"):
        validate_submission(folder)
    plain = tmp_path / "plain" / made["plain"].name
    shutil.copytree(made["plain"], plain)
    shutil.copyfile(made["folder"] / "models.json", plain / "models.json")
    with pytest.raises(SubmissionError, match=r"is not recorded in field 'models' of .*so the submission's id does "
                                              r"not cover it"):
        validate_submission(plain)


@pytest.mark.parametrize("with_folder, url, message", [
    (False, RELATIVE_URL, "--models and --models-url go together"),
    (True, "http://example.org/models", "--models-url 'http://example.org/models' is not an https:// or file: URL"),
    (True, "https:///models", "--models-url 'https:///models' is not an https:// or file: URL"),
    (True, "file:../release/models", "which does not exist. Fix: a relative file: URL starts from the submission "
                                     "folder"),
])
def test_submit_refuses_models_it_cannot_reference(made, tmp_path, with_folder, url, message) -> None:
    root = made["root"]
    folder = root / "release" / "models" if with_folder else None
    with pytest.raises(SubmissionError) as info:
        build_submission(root / "runs", tmp_path / "submissions", META, models_dir=folder, models_url=url)
    assert message in str(info.value) and not (tmp_path / "submissions").exists()


# ----------------------------------------------------------------------------------------------------------------------
# gibench verify --reevaluate


def test_reevaluating_an_honest_submission_agrees_exactly(made, cli_output) -> None:
    result, folder = made["honest"], made["folder"]
    table = load_submission(folder).results
    assert result.status == "verified" and result.check == "reevaluated"
    (job,) = result.jobs
    assert job["state"] == "re-evaluated" and job["job_hash"] == made["job"]
    assert job["url"] == f"{RELATIVE_URL}/{made['job']}/model.safetensors"
    assert len(result.rows) == len(table) == 6 and {r.abs_diff for r in result.rows} == {0.0}
    assert {r.metric: r.recomputed for r in result.rows} == dict(zip(table["metric"], table["value"]))
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    assert record["check"] == "reevaluated" and record["status"] == "verified"
    assert record["models_sha256"] == load_submission(folder).submission.models.sha256
    status = verification_status(load_submission(folder))
    assert (status.state, status.check, status.jobs_checked) == ("verified", "reevaluated", 1)
    # the command line, in the kept scratch folder: the checkpoint is the same bytes, so the results are reused
    out, _ = cli_output
    assert main(["verify", str(folder), "--reevaluate", "--runs-dir", str(made["scratch"])]) == 0
    text = " ".join(out.getvalue().split())
    assert f"job {made['job']}" in text and ": re-evaluated (weights " in text
    assert text.endswith(f"verified: 1 job(s) re-evaluated from their submitted models; record written to "
                         f"{folder / VERIFICATION_FILE}")


def test_a_value_altered_after_the_fact_is_caught(made, tmp_path, cli_output) -> None:
    folder = _copy(made, tmp_path, release=True)
    table = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    index = int(table.index[table["metric"] == "accuracy"][0])
    honest = float(table.loc[index, "value"])
    forged = honest + 0.05 if honest < 0.9 else honest - 0.05
    table.loc[index, "value"] = repr(forged)
    table.to_csv(folder / "results.csv", index=False)
    data = json.loads((folder / "submission.json").read_text())  # re-digested, so that validate accepts it
    data["results"]["sha256"] = hashlib.sha256((folder / "results.csv").read_bytes()).hexdigest()
    (folder / "submission.json").write_text(json.dumps(data))
    assert validate_submission(folder).id == folder.name
    assert main(["verify", str(folder), "--reevaluate", "--runs-dir", str(made["scratch"])]) == 1
    out, _ = cli_output
    assert "accuracy v1 │ accuracy │ 1 │ 0.05 │ disagrees" in " ".join(out.getvalue().split())
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    (row,) = [r for r in record["rows"] if r["outcome"] != "agrees"]
    assert (row["submitted"], row["recomputed"]) == (forged, honest)
    assert verification_status(load_submission(folder)).state == "disagrees"


def test_a_model_file_whose_bytes_changed_is_rejected(made, tmp_path, cli_output) -> None:
    folder = _copy(made, tmp_path, release=True)
    weights = tmp_path / "release" / "models" / made["job"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor: same size, same structure, other weights
    weights.write_bytes(bytes(data))
    assert validate_submission(folder).id == folder.name  # validate reads no model file
    assert main(["verify", str(folder), "--reevaluate", "--runs-dir", str(tmp_path / "scratch")]) == 1
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    (job,) = record["jobs"]
    assert job["state"] == "model rejected" and "its SHA-256 is" in job["reason"] and str(weights) in job["reason"]
    assert record["status"] == "disagrees" and {r["outcome"] for r in record["rows"]} == {"disagrees"}
    status = verification_status(load_submission(folder))
    assert status.state == "disagrees" and status.detail.startswith(f"the model of job {made['job']} is not the "
                                                                    "submitted one")
    assert not (tmp_path / "scratch" / "jobs" / made["job"] / "checkpoint.pt").exists()  # nothing was evaluated


def test_what_cannot_be_reevaluated_says_how_to_fix_it(made, tmp_path, cli_output) -> None:
    _, err = cli_output
    assert main(["verify", str(made["plain"]), "--reevaluate"]) == 2
    message = " ".join(err.getvalue().split())
    assert "references no trained models (it has no models.json)" in message
    assert "gibench submit ... --models <folder> --models-url <its URL>" in message
    folder = _copy(made, tmp_path)  # no release folder beside it: the file: URLs name nothing
    assert main(["verify", str(folder), "--reevaluate"]) == 2
    assert "the weights file is missing" in err.getvalue() and not (folder / VERIFICATION_FILE).exists()
    assert main(["verify", str(folder), "--download"]) == 2
    assert "--download and --cache-dir apply to the submitted models, which only --reevaluate loads" in err.getvalue()


def test_the_site_links_the_models_and_says_which_check_passed(made, tmp_path) -> None:
    from gibench.leaderboard.build import build_site

    folder = _copy(made, tmp_path)
    shutil.copyfile(made["folder"] / VERIFICATION_FILE, folder / VERIFICATION_FILE)
    index = build_site(tmp_path / "submissions", tmp_path / "site").read_text()
    sid = folder.name
    assert f'<a class="models-link" href="submissions/{sid}.html#models"' in index
    assert 'data-check="reevaluated" data-verification="verified"' in index
    page = (tmp_path / "site" / "submissions" / f"{sid}.html").read_text()
    assert '<h2 id="models">Models</h2>' in page and f'<tr id="model-{made["job"]}">' in page
    assert '<code title="SHA-256 ' in page and f"{RELATIVE_URL}/{made['job']}/model.safetensors</code>" in page
    assert "re-evaluated " in page and "Re-training them (`gibench verify`) is the stronger check." in page
    # a re-evaluation record no longer covers other models: the badge falls back to unverified
    record = json.loads((folder / VERIFICATION_FILE).read_text())
    (folder / VERIFICATION_FILE).write_text(json.dumps({**record, "models_sha256": "0" * 64}))
    status = verification_status(load_submission(folder))
    assert status.state == "unverified" and "re-evaluated other models" in status.detail
