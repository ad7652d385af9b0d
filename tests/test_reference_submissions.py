"""The reference submissions shipped in ``submissions/``: real results of the shipped suites on the bundled data.

A fresh clone's ``gibench leaderboard build`` renders them, so they must validate with the installed plugins (the
evaluator versions and metric bounds they recorded are today's), every job of each must be a job of the shipped
suite of the same name (the shipped suite's expansion names it by the same content hash; a suite whose text changed
since keeps its jobs' hashes as long as what they train did not change; for a suite that selects, a job of its sweep
or of any setting its selection could score), and the site must build from them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gibench.submissions.build import load_submission
from gibench.suites.jobs import expand, rebuildable_jobs
from gibench.suites.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
REFERENCES = sorted(p for p in (REPO / "submissions").glob("*") if p.is_dir() and not p.name.startswith((".", "_")))


def test_the_repository_ships_reference_submissions_of_smoke_and_standard():
    suites = {run.suite_name for ref in REFERENCES for run in load_submission(ref).submission.provenance.runs}
    assert {"smoke", "standard"} <= suites, f"submissions/ holds runs of {sorted(suites)}"


@pytest.mark.slow
@pytest.mark.parametrize("folder", REFERENCES, ids=[p.name for p in REFERENCES])
def test_reference_submission_validates_and_its_jobs_are_the_shipped_suites(folder: Path):
    loaded = load_submission(folder)
    for run in loaded.submission.provenance.runs:
        shipped = {job.hash for job in rebuildable_jobs(load_suite(run.suite_name))}
        missing = sorted(set(run.jobs) - shipped)
        assert not missing, f"{folder.name}: jobs {missing[:3]} are not jobs of the shipped suite {run.suite_name!r}"
    assert len(loaded.results) == loaded.submission.results.rows


@pytest.mark.slow
def test_the_site_builds_from_the_reference_submissions(tmp_path: Path):
    from gibench.leaderboard.build import build_site

    build_site(REPO / "submissions", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    for ref in REFERENCES:
        assert load_submission(ref).submission.metadata.name in index


@pytest.mark.slow
def test_the_standard_reference_holds_every_job_and_evaluation_of_the_shipped_suite():
    """So that the site shows every column of ``standard`` (the metric families and the X-Gradient ones included)
    and the X-DNN grid beside its biased twins."""
    import json

    suite = load_suite("standard")
    (folder,) = [ref for ref in REFERENCES
                 if {run.suite_name for run in load_submission(ref).submission.provenance.runs} == {"standard"}]
    results = load_submission(folder).results
    assert set(results["job_hash"]) == {job.hash for job in expand(suite)}
    recorded = {(name, json.dumps(json.loads(params), sort_keys=True)) for name, params in
                zip(results["evaluator"], results["evaluator_params"])}  # the options as the suite writes them
    assert {(spec.name, json.dumps(spec.params, sort_keys=True)) for spec in suite.evaluators} <= recorded
    not_ok = results[results["status"] != "ok"]
    assert set(not_ok["status"]) == {"skipped"}  # nothing failed
    assert set(zip(not_ok["evaluator"], not_ok["dataset"])) <= {  # only where the dataset lacks the annotation
        ("blockmnist", d) for d in ("mnist_subset", "gaussian_mixture", "decoy_mnist")} | {
        ("decoy_reliance", d) for d in ("mnist_subset", "gaussian_mixture", "blockmnist")}
