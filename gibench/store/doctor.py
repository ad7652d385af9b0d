"""``gibench doctor``: scan a runs directory for what is damaged, stale or orphaned; change nothing unless ``fix``.

What counts as what, and what ``--fix`` does about it:

* **damaged**: a JSON file that does not parse or lacks a field (manifest, runs/*.json, job.json, status.json,
  results, train_log.json); a checkpoint whose size or SHA-256 differs from what status.json recorded.
  Fix: moved into ``quarantine/`` (never deleted); the next run recomputes it.
* **stale**: a result of an evaluator version other than the installed one, or computed from another checkpoint
  than the stored one. Fix: moved into ``quarantine/``; the next run recomputes it.
* **stale**: a job, result or auxiliary model stored under a key of an older identity rule (its recorded identity
  hashes to another key now, :mod:`gibench.core.identity`). Fix: re-keyed (:mod:`gibench.store.rekey`), nothing
  retrained; a copy whose current key another copy already holds is moved into ``quarantine/``.
* **stale**: leftover temporaries of killed writers (``.tmp-*``), except those of a job a live worker holds and
  those younger than :data:`TEMPORARY_GRACE_S` (a write may be in progress). Fix: deleted (never committed data).
* **stale**: a claim whose owner is dead (its lock is free, its owner file remains). Fix: owner file deleted; a run
  would take it over anyway.
* **damaged**: an auxiliary model (``aux/<kind>-<hash>/``) whose records do not parse or whose checkpoint differs
  from the size and SHA-256 its status.json recorded. Fix: the folder moves into ``quarantine/``; the next
  evaluation that needs the model trains it again.
* **orphaned**: a job folder no run in the manifest lists; artifacts without a result; a result of an evaluator
  that is not installed. Reported only: they may belong to runs made elsewhere.

Failed trainings and failed evaluations are listed as ``info`` (the next run retries failed evaluations; failed
trainings need ``--retry-failed``).
"""

from __future__ import annotations

__all__ = [
    "KINDS", "Problem", "TEMPORARY_GRACE_S", "doctor",
]

import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from gibench.api import registry
from gibench.core.errors import GibenchError
from gibench.core.fsio import TMP_PREFIX, DamagedFileError, Owner, file_sha256, quarantine, read_json
from gibench.store.records import JobRecord, Manifest, ResultRecord, RunEntry, TrainStatus, load
from gibench.store.rekey import rekey_store, stale_keys

KINDS = ("damaged", "stale", "orphaned", "info")
#: temporaries younger than this may belong to a write in progress (manifest, site build) and are left alone
TEMPORARY_GRACE_S = 600.0


@dataclass(frozen=True)
class Problem:
    kind: str  # one of KINDS
    path: Path
    what: str
    fixed: str = ""  # what --fix did, "" when nothing


def doctor(runs_dir: Path, fix: bool = False) -> list[Problem]:
    """Every problem under ``runs_dir`` (see the module docstring); with ``fix``, repaired where that is safe."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise GibenchError(f"{runs_dir} is not a runs directory (no such folder). Pass the --runs-dir of a run.")
    scan = _Scan(runs_dir, fix)
    scan.rekeying()
    scan.manifest()
    for job in sorted((runs_dir / "jobs").glob("*")) if (runs_dir / "jobs").is_dir() else []:
        if job.is_dir() and not job.name.startswith(TMP_PREFIX):
            scan.job(job)
    for folder in sorted((runs_dir / "aux").glob("*")) if (runs_dir / "aux").is_dir() else []:
        if folder.is_dir() and not folder.name.startswith((TMP_PREFIX, ".")):
            scan.auxiliary(folder)
    scan.claims()
    scan.temporaries()
    return scan.problems


class _Scan:
    def __init__(self, runs_dir: Path, fix: bool) -> None:
        self.runs_dir, self.fix = runs_dir, fix
        self.problems: list[Problem] = []
        self.listed: set[str] = set()

    def add(self, kind: str, path: Path, what: str, repair=None) -> None:
        fixed = ""
        if self.fix and repair is not None and path.exists():
            fixed = repair()
        self.problems.append(Problem(kind, path, what, fixed))

    def _quarantine(self, path: Path, why: str):
        return lambda: f"moved to {quarantine(path, self.runs_dir, why)}"

    def _validated(self, cls, path: Path):
        try:
            return load(cls, path)
        except FileNotFoundError:
            return None
        except DamagedFileError as exc:
            self.add("damaged", path, exc.problem, self._quarantine(path, exc.problem))
            return None

    def rekeying(self) -> None:
        """Jobs, results and auxiliary models stored under keys of an older identity rule (:mod:`gibench.store.rekey`).
        Fix: re-keyed (renamed to their current keys; nothing is retrained). Runs first, so the scans after it see
        the re-keyed store."""
        found = rekey_store(self.runs_dir) if self.fix else stale_keys(self.runs_dir)
        fixed = "re-keyed to {}" if self.fix else ""
        what = "stored under a key of an older identity rule; its key is now {}"
        for old, new in found.jobs.items():
            self.problems.append(Problem("stale", self.runs_dir / "jobs" / old, "job " + what.format(new),
                                         fixed.format(f"jobs/{new}")))
        for old, new in found.results.items():
            (job, key), (new_job, new_key) = old.split("/"), new.split("/")
            self.problems.append(Problem("stale", self.runs_dir / "jobs" / job / "results" / f"{key}.json",
                                         "result " + what.format(new_key),
                                         fixed.format(f"jobs/{new_job}/results/{new_key}.json")))
        for old, new in found.auxiliary.items():
            self.problems.append(Problem("stale", self.runs_dir / "aux" / old, "auxiliary model " + what.format(new),
                                         fixed.format(f"aux/{new}")))
        for path, why in found.set_aside.items():
            self.problems.append(Problem("stale", self.runs_dir / path, f"superseded copy: {why}",
                                         "moved to quarantine/" if self.fix else ""))
        for line in found.left:
            self.problems.append(Problem("info", self.runs_dir, f"not re-keyed: {line}"))

    def manifest(self) -> None:
        manifest = self._validated(Manifest, self.runs_dir / "manifest.json")
        entries = list(manifest.runs) if manifest else []
        for path in sorted((self.runs_dir / "runs").glob("*.json")):
            if not path.name.startswith(TMP_PREFIX):
                entry = self._validated(RunEntry, path)
                entries += [entry] if entry else []
        self.listed = {job for entry in entries for job in entry.jobs}

    def job(self, folder: Path) -> None:
        record = self._validated(JobRecord, folder / "job.json")
        if record is not None and folder.name not in self.listed:
            self.add("orphaned", folder, "job folder that no run in manifest.json lists")
        status = self._validated(TrainStatus, folder / "status.json")
        if status is not None and status.state == "failed":
            self.add("info", folder / "status.json", f"training failed: {status.reason}")
        checkpoint_sha = self._checkpoint(folder, status)
        if (folder / "train_log.json").exists():
            try:
                read_json(folder / "train_log.json")
            except DamagedFileError as exc:
                self.add("damaged", exc.path, exc.problem, self._quarantine(exc.path, exc.problem))
        keys = set()
        for path in sorted((folder / "results").glob("*.json")):
            if not path.name.startswith(TMP_PREFIX):
                keys.add(path.stem)
                result = self._validated(ResultRecord, path)
                if result is not None:
                    self._result(path, result, checkpoint_sha)
        for artifacts in sorted((folder / "artifacts").glob("*")):
            if artifacts.is_dir() and not artifacts.name.startswith(TMP_PREFIX) and artifacts.name not in keys:
                self.add("orphaned", artifacts, "artifacts without a result file")

    def auxiliary(self, folder: Path) -> None:
        """An auxiliary model (gibench.store.auxiliary): its records parse and its checkpoint is the one its status
        recorded. Fix: the whole folder moves into quarantine/; the next evaluation that needs it trains it again.
        A folder without status.json was never committed (a killed training); the next training replaces it."""
        if not (folder / "status.json").exists():
            return
        problem = self._auxiliary_problem(folder)
        if problem is not None:
            self.add("damaged", folder, f"auxiliary model: {problem}", self._quarantine(folder, problem))

    @staticmethod
    def _auxiliary_problem(folder: Path) -> str | None:
        try:
            status = read_json(folder / "status.json")
            for name in ("identity.json", "quality.json"):
                read_json(folder / name)
        except FileNotFoundError as exc:
            return f"{Path(exc.filename).name} is missing"
        except DamagedFileError as exc:
            return f"{exc.path.name}: {exc.problem}"
        checkpoint = folder / "checkpoint.pt"
        if not checkpoint.exists():
            return "status.json says trained but checkpoint.pt is missing"
        if status.get("checkpoint_sha256") and (checkpoint.stat().st_size != status.get("checkpoint_bytes")
                                                or file_sha256(checkpoint) != status["checkpoint_sha256"]):
            return "checkpoint.pt differs from the size and SHA-256 that status.json recorded"
        return None

    def _checkpoint(self, folder: Path, status: TrainStatus | None) -> str | None:
        path = folder / "checkpoint.pt"
        if status is None or status.state != "trained" or status.checkpoint_sha256 is None:
            return None
        if not path.exists():
            self.add("damaged", folder / "status.json", "says trained but checkpoint.pt is missing",
                     self._quarantine(folder / "status.json", "checkpoint missing"))
            return None
        size = path.stat().st_size
        if size != status.checkpoint_bytes or file_sha256(path) != status.checkpoint_sha256:
            what = f"{size} bytes, {status.checkpoint_bytes} recorded" if size != status.checkpoint_bytes else \
                "SHA-256 differs from the one status.json recorded"
            self.add("damaged", path, what, lambda: self._set_aside_checkpoint(folder, what))
        return status.checkpoint_sha256

    def _set_aside_checkpoint(self, folder: Path, what: str) -> str:
        moved = quarantine(folder / "checkpoint.pt", self.runs_dir, what)
        quarantine(folder / "status.json", self.runs_dir, f"commit point of a damaged checkpoint ({what})")
        return f"moved to {moved} (with its status.json); the next run retrains the job"

    def _result(self, path: Path, result: ResultRecord, checkpoint_sha: str | None) -> None:
        try:
            installed = registry.evaluators.get(result.evaluator).version
        except GibenchError:
            self.add("orphaned", path, f"result of evaluator {result.evaluator!r}, which is not installed")
            return
        if result.version != installed:
            what = f"result of {result.evaluator} version {result.version}; the installed version is {installed}"
            self.add("stale", path, what, self._quarantine(path, what))
        elif result.checkpoint_sha256 and checkpoint_sha and result.checkpoint_sha256 != checkpoint_sha:
            what = "computed from another checkpoint than the stored one"
            self.add("stale", path, what, self._quarantine(path, what))
        elif result.status == "failed":
            self.add("info", path, f"evaluation failed (retried by the next run): {_last_line(result.reason)}")

    def claims(self) -> None:
        for owner_path in sorted((self.runs_dir / "claims").glob("*.owner.json")):
            lock_path = owner_path.with_name(owner_path.name.replace(".owner.json", ".lock"))
            lock = FileLock(str(lock_path), timeout=0, thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # held by a live worker
            try:
                owner = Owner.read(owner_path)
                who = owner.describe() if owner else "an unreadable owner"
                self.add("stale", owner_path, f"claim of a dead worker ({who}); the next run takes it over",
                         lambda p=owner_path: (p.unlink(), "deleted")[1])
            finally:
                lock.release()

    def temporaries(self) -> None:
        """Leftovers of killed writers; those of a job a live worker holds, or younger than 10 minutes, are in use."""
        now = time.time()
        for path in sorted(self.runs_dir.rglob(f"{TMP_PREFIX}*")):
            if (self.runs_dir / "quarantine") in path.parents or any(p.name.startswith(TMP_PREFIX) for p in
                                                                      path.parents):
                continue
            job = path.relative_to(self.runs_dir).parts
            if job[0] == "jobs" and len(job) > 2 and self._claim_held(job[1]):
                continue
            if now - path.lstat().st_mtime < TEMPORARY_GRACE_S:
                continue
            self.add("stale", path, "leftover temporary of a killed writer", lambda p=path: _delete(p))

    def _claim_held(self, job_hash: str) -> bool:
        lock = FileLock(str(self.runs_dir / "claims" / f"{job_hash}.lock"), timeout=0, thread_local=False)
        if not lock.lock_file or not Path(lock.lock_file).exists():
            return False
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False


def _delete(path: Path) -> str:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return "deleted"


def _last_line(text: str | None) -> str:
    return text.strip().splitlines()[-1] if text and text.strip() else ""
