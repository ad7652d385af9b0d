"""The images and curves a submission carries for the site: chosen from the runs store, packed, and checked.

``gibench submit`` copies the artifacts of every ``ok`` evaluation in the submitted results (saliency grids, noise
and sample images, curve JSON files) into the submission folder, mirroring the runs store::

    runs_dir/jobs/<job_hash>/artifacts/<result key>/<file>
        →  submissions/<id>/artifacts/<job_hash>/<result key>/<file>

Choices:

* Only ``.png``, ``.svg`` and ``.json`` files travel (:data:`ALLOWED_ARTIFACT_SUFFIXES`); anything else an evaluator
  wrote, a symbolic link, or a path that leaves the evaluation's own artifact folder is left out and recorded so.
* Size limit: :data:`DEFAULT_MAX_ARTIFACT_MB` = 20 MB in all (1 MB = 10^6 bytes; ``--max-artifact-mb``). The
  built-in evaluators write about 160-250 kB per job (measured: a smoke run, 58 files, 0.96 MB for 6 jobs; a
  standard run on three datasets, 403 files, 9.8 MB for 39 jobs), so the limit holds a standard run twice over and
  a site page loads quickly. Over the limit, nothing fails: files are packed in this
  priority order while they fit, and every file left out is recorded with its reason (``left_out``):

  1. the lowest seed of each row first (a row is a dataset, backbone, training config and regularizer variant, as in
     :data:`gibench.results.ROW_KEYS`), so every regularizer keeps one complete set of pictures; then the next seed;
  2. within a seed, curves (``.json``) before vector images (``.svg``) before raster images (``.png``): curves are
     small and one line per regularizer needs them all;
  3. then by job hash, result key and artifact name, so the choice is reproducible.

  A file that does not fit is skipped and smaller later files may still be packed.
* ``submission.json`` records each packed file with its job hash, evaluator (name, version, parameters), result
  key, artifact name, path, size and SHA-256; :func:`check_artifacts` (run by ``gibench validate``) checks each
  against the file.
"""

from __future__ import annotations

__all__ = [
    "ArtifactPlan", "DEFAULT_MAX_ARTIFACT_MB", "check_artifacts", "limit_bytes", "pack_artifacts", "plan_artifacts",
]

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from gibench.core.errors import SubmissionError
from gibench.core.fsio import file_sha256
from gibench.store.runs import RunStore, result_key
from gibench.submissions.schema import (
    ALLOWED_ARTIFACT_SUFFIXES,
    ArtifactFile,
    ArtifactsRecord,
    LeftOutArtifact,
)

DEFAULT_MAX_ARTIFACT_MB = 20.0
_KIND_ORDER = {".json": 0, ".svg": 1, ".png": 2}
_ROW = ["dataset", "backbone", "backbone_params", "train_hash", "regularizer", "regularizer_params", "variant"]
_REMAKE = "re-create the submission with `gibench submit` instead of editing it by hand"


@dataclass(frozen=True)
class ArtifactPlan:
    """What to pack: the record for ``submission.json`` and, per recorded path, the runs-store file to copy."""

    record: ArtifactsRecord
    sources: dict[str, Path]


@dataclass(frozen=True)
class _Candidate:
    priority: tuple
    file: ArtifactFile
    source: Path


def limit_bytes(max_mb: float) -> int:
    """``max_mb`` megabytes (10^6 bytes) as bytes; SubmissionError for a negative or non-finite limit."""
    if not (max_mb >= 0 and max_mb != float("inf")):
        raise SubmissionError(f"--max-artifact-mb must be a number >= 0, got {max_mb}. Fix: pass e.g. "
                              f"--max-artifact-mb {DEFAULT_MAX_ARTIFACT_MB:g} (0 packs no artifacts).")
    return int(max_mb * 1_000_000)


def plan_artifacts(runs_dir: Path, table: pd.DataFrame, limit: int,
                   warn: Callable[[str], None] | None = None) -> ArtifactPlan:
    """Choose the artifacts of ``table``'s ok evaluations in ``runs_dir`` that fit in ``limit`` bytes (see module)."""
    candidates, left_out = _candidates(Path(runs_dir), table, warn)
    files, sources, total = [], {}, 0
    for candidate in sorted(candidates, key=lambda c: c.priority):
        if total + candidate.file.bytes > limit:
            left_out.append(_left_out(candidate.file, f"over the {limit / 1e6:g} MB artifact limit "
                                                      "(raise it with --max-artifact-mb)"))
            continue
        files.append(candidate.file)
        sources[candidate.file.path] = candidate.source
        total += candidate.file.bytes
    record = ArtifactsRecord(limit_bytes=limit, total_bytes=total, files=files, left_out=left_out)
    return ArtifactPlan(record, sources)


def pack_artifacts(folder: Path, plan: ArtifactPlan) -> None:
    """Copy the planned files into ``folder`` (a submission being written); SubmissionError if one changed since."""
    for artifact in plan.record.files:
        target = folder / artifact.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plan.sources[artifact.path], target)
        if file_sha256(target) != artifact.sha256:
            raise SubmissionError(f"{plan.sources[artifact.path]} changed while it was being packed (is `gibench "
                                  "run` still writing to this runs folder?). Submit again when the run has finished.")


def check_artifacts(folder: Path, record: ArtifactsRecord | None, file: Path) -> None:
    """Every recorded artifact exists inside ``folder`` as a plain file with the recorded size and SHA-256."""
    if record is None:
        return
    root = folder.resolve()
    for i, artifact in enumerate(record.files):
        where = f"{file}: field 'artifacts.files.{i}.path' ({artifact.path!r})"
        path = folder / artifact.path
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise SubmissionError(f"{where} leads outside the submission folder. Fix: artifacts are plain files "
                                  f"under artifacts/; {_REMAKE}.")
        if not path.is_file():
            raise SubmissionError(f"{where}: the file is missing. Fix: restore it, or {_REMAKE}.")
        if path.stat().st_size != artifact.bytes or file_sha256(path) != artifact.sha256:
            raise SubmissionError(f"{where}: the file does not match the recorded size and SHA-256 (it changed after "
                                  f"`gibench submit`). Fix: {_REMAKE}.")


# ----------------------------------------------------------------------------------------------------------------------


def _candidates(runs_dir: Path, table: pd.DataFrame,
                warn: Callable[[str], None] | None) -> tuple[list[_Candidate], list[LeftOutArtifact]]:
    ok = table[table["status"] == "ok"]
    if len(ok) == 0:
        return [], []
    evaluations = {(r.job_hash, r.evaluator, str(r.evaluator_version), _canonical(r.evaluator_params))
                   for r in ok.itertuples()}
    seed_rank = _seed_ranks(ok)
    store = RunStore(runs_dir, repair=False, warn=warn)
    candidates: list[_Candidate] = []
    left_out: list[LeftOutArtifact] = []
    for job_hash in sorted(set(ok["job_hash"])):
        folder = store.job(job_hash)
        if not folder.root.is_dir():
            continue
        for record in folder.results():
            params = _canonical(json.dumps(record.params))
            if record.status != "ok" or (job_hash, record.evaluator, record.version, params) not in evaluations:
                continue
            key = result_key(record.evaluator, record.version, record.config_hash)
            for name, relative in sorted(record.artifacts.items()):
                found = _candidate(folder.root, job_hash, record.evaluator, record.version, params, key, name,
                                   relative, seed_rank[job_hash])
                (candidates if isinstance(found, _Candidate) else left_out).append(found)
    return candidates, left_out


def _candidate(job_root: Path, job_hash: str, evaluator: str, version: str, params: str, key: str, name: str,
               relative: str, seed_rank: int) -> _Candidate | LeftOutArtifact:
    parts = PurePosixPath(relative).parts
    file_name = parts[-1] if parts else ""
    source = job_root / relative
    size = source.stat().st_size if source.is_file() else 0

    def skip(reason: str) -> LeftOutArtifact:
        return LeftOutArtifact(job_hash=job_hash, evaluator=evaluator, result_key=key, name=name, bytes=size,
                               reason=reason)

    if len(parts) != 3 or parts[:2] != ("artifacts", key) or file_name in ("", ".", "..") \
            or file_name.startswith("."):
        return skip(f"its path {relative!r} is not a file of the evaluation's own artifact folder")
    suffix = PurePosixPath(file_name).suffix.lower()
    if suffix not in ALLOWED_ARTIFACT_SUFFIXES:
        return skip(f"not an image or curve file ({', '.join(ALLOWED_ARTIFACT_SUFFIXES)})")
    if source.is_symlink():
        return skip("a symbolic link, not a file of the runs store")
    if not source.is_file():
        return skip("missing from the runs store")
    try:
        artifact = ArtifactFile(job_hash=job_hash, evaluator=evaluator, evaluator_version=version,
                                evaluator_params=params, result_key=key, name=name,
                                path=f"artifacts/{job_hash}/{key}/{file_name}", bytes=size,
                                sha256=file_sha256(source))
    except ValueError as exc:  # a job hash or file name that is not a plain file-name component
        return skip(f"not packable: {str(exc).splitlines()[-1].strip()}")
    priority = (seed_rank, _KIND_ORDER[suffix], job_hash, key, name)
    return _Candidate(priority, artifact, source)


def _left_out(artifact: ArtifactFile, reason: str) -> LeftOutArtifact:
    return LeftOutArtifact(job_hash=artifact.job_hash, evaluator=artifact.evaluator, result_key=artifact.result_key,
                           name=artifact.name, bytes=artifact.bytes, reason=reason)


def _seed_ranks(ok: pd.DataFrame) -> dict[str, int]:
    """job hash → position of its seed among the seeds of its row (0 = the row's lowest seed)."""
    jobs = ok.drop_duplicates("job_hash").copy()
    for column in _ROW:
        jobs[column] = jobs[column].astype(str) if column in jobs.columns else ""
    jobs["_rank"] = jobs.groupby(_ROW)["seed"].rank(method="dense").astype(int) - 1
    return dict(zip(jobs["job_hash"], jobs["_rank"]))


def _canonical(params_json: str) -> str:
    return json.dumps(json.loads(params_json or "{}"), sort_keys=True)
