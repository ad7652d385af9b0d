"""Re-keying a submission folder made before the identity rule of :mod:`gibench.core.identity`.

A submission names its rows by job hash, evaluator, version and parameters, none of which moved when the rule changed
for the suites shipped then (their job hashes hold no float longer than ten significant digits). What did move are the
result keys (``<name>__v<version>__<config hash>``) under which its artifacts are packed
(``artifacts/<job>/<result key>/``) and recorded in ``submission.json``; they are part of the submission's content
hash, so its id moves with them.
:func:`rekey_submission` rewrites such a folder under the current keys: it recomputes each packed evaluation's key from
its recorded evaluator, version and parameters (the config resolved by the installed evaluator, as ``gibench verify``
rebuilds jobs), renames the artifact folders, updates the artifact records, recomputes the id and writes the folder
under it; ``verification.json`` follows with the new id (the results it verified are unchanged, so its SHA-256 of
``results.csv`` still matches). ``results.csv`` is copied byte for byte. Its ``auxiliary`` column names the auxiliary
models of the store the submission was made from, as they were named then: provenance that no check reads, kept as
recorded.

``python scripts/rekey_submission.py submissions/<id>`` runs it.
"""

from __future__ import annotations

__all__ = ["current_result_key", "rekey_submission"]

import json
import shutil
from pathlib import Path

from gibench.api import registry
from gibench.core.errors import GibenchError
from gibench.core.fsio import atomic_folder, atomic_write_json
from gibench.core.params import build_config
from gibench.store.runs import evaluation_key
from gibench.submissions.build import submission_id
from gibench.submissions.schema import MODELS_FILE, RESULTS_FILE, SUBMISSION_FILE, ArtifactsRecord, Submission
from gibench.submissions.validate import load_submission
from gibench.submissions.verify import VERIFICATION_FILE
from gibench.suites.suite import identity_config

ARTIFACTS = "artifacts"


def current_result_key(evaluator: str, version: str, params_json: str) -> str | None:
    """The result key an evaluation of ``evaluator`` (recorded ``version``, parameters as JSON) has now: its config
    resolved by the installed evaluator and hashed by the identity rule; None when that evaluator is not installed
    or is at another version (its key cannot be recomputed, and is kept)."""
    try:
        cls = registry.evaluators.get(evaluator)
    except GibenchError:
        return None
    if str(cls.version) != str(version):
        return None
    config = build_config(cls.Config, json.loads(params_json), f"evaluator {evaluator!r}")
    return evaluation_key(evaluator, version, identity_config(config))


def rekey_submission(folder: str | Path) -> Path:
    """Rewrite the submission in ``folder`` under the current result keys and return its folder (``folder`` itself
    when nothing moved). The old folder is removed only after the new one is written and validates."""
    folder = Path(folder)
    submission = load_submission(folder).submission
    artifacts = submission.artifacts
    if artifacts is None:
        return folder
    mapping = _key_map(artifacts)
    if not mapping:
        return folder
    rekeyed = _rekeyed_artifacts(artifacts, mapping)
    new_id = submission_id(submission.metadata, submission.provenance, submission.results.sha256, rekeyed,
                           submission.models.sha256 if submission.models is not None else None)
    updated = submission.model_copy(update={"id": new_id, "artifacts": rekeyed})
    final = folder.parent / new_id
    with atomic_folder(final) as tmp:
        shutil.copyfile(folder / RESULTS_FILE, tmp / RESULTS_FILE)
        if submission.models is not None:
            shutil.copyfile(folder / MODELS_FILE, tmp / MODELS_FILE)
        for old, new in zip(artifacts.files, rekeyed.files):
            (tmp / new.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / old.path, tmp / new.path)
        (tmp / SUBMISSION_FILE).write_text(Submission.model_validate(updated.model_dump()).model_dump_json(indent=2)
                                           + "\n", encoding="utf-8")
        if (folder / VERIFICATION_FILE).is_file():
            record = json.loads((folder / VERIFICATION_FILE).read_text(encoding="utf-8"))
            atomic_write_json(tmp / VERIFICATION_FILE, {**record, "submission_id": new_id})
    load_submission(final)  # the new folder validates (artifact SHA-256s included) before the old one goes
    shutil.rmtree(folder)
    return final


def _key_map(artifacts: ArtifactsRecord) -> dict[str, str]:
    """Old result key → current one, for each packed artifact's evaluation whose key moved."""
    mapping = {}
    for f in artifacts.files:
        new = current_result_key(f.evaluator, f.evaluator_version, f.evaluator_params)
        if new is not None and new != f.result_key:
            mapping[f.result_key] = new
    return mapping


def _rekeyed_artifacts(artifacts: ArtifactsRecord, mapping: dict[str, str]) -> ArtifactsRecord:
    files = []
    for f in artifacts.files:
        key = mapping.get(f.result_key, f.result_key)
        path = f"{ARTIFACTS}/{f.job_hash}/{key}/{Path(f.path).name}"
        files.append(f.model_copy(update={"result_key": key, "path": path}))
    left_out = [f.model_copy(update={"result_key": mapping.get(f.result_key, f.result_key)})
                for f in artifacts.left_out]
    return artifacts.model_copy(update={"files": files, "left_out": left_out})
