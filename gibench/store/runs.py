"""The run store: one folder per job hash, written atomically, read back with validation, shared by many workers.

Layout under ``runs_dir``::

    manifest.json                       one entry per `gibench run` invocation (records.Manifest; locked updates)
    runs/<run id>.json                  the same entry, one file per run: the manifest is rebuilt from these when
                                        it is damaged, so no run's provenance is lost
    jobs/<job hash>/job.json            records.JobRecord: the training spec and display labels
    jobs/<job hash>/checkpoint.pt       the trained weights (state_dict; loads with weights_only=True)
    jobs/<job hash>/train_log.json      logged loss parts, warnings, timing
    jobs/<job hash>/events.jsonl        the job's history, appended: one line per training (trained / failed)
    jobs/<job hash>/status.json         records.TrainStatus; written last (the commit point), with the checkpoint's
                                        size and SHA-256
    jobs/<job hash>/results/<key>.json  records.ResultRecord; key = <name>__v<version>__<config hash>
    jobs/<job hash>/artifacts/<key>/    that evaluator's artifacts (renamed into place before its result is written)
    claims/<job hash>.lock, .owner.json the claim of the worker training/evaluating that job (gibench.core.fsio.Claim)
    quarantine/<time>/...               damaged files, moved aside (never deleted), each folder with a reason.json
    aux/                                auxiliary models (gibench.store.auxiliary)

Writes go through :mod:`gibench.core.fsio` (temporary file + rename). Every read validates: a file that does not parse
or lacks a field is a :class:`gibench.core.fsio.DamagedFileError`, handed to :meth:`RunStore.damaged`. A store opened
with ``repair=True`` (by ``gibench run``) moves the file into ``quarantine/`` and carries on as if it were absent, so
the job or evaluation is recomputed; a read-only store (``report``, ``submit``) leaves it where it is and skips it. Both
report it (``warn`` callback, and :attr:`RunStore.warnings`) with the file's path.
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT", "DamagedStoreWarning", "JobFolder", "RunStore", "evaluation_key", "result_key", "state_dict_bytes",
]

import io
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gibench.core.fsio import (  # noqa: F401  (atomic_write_*, read_json re-exported for older imports)
    TMP_PREFIX,
    DamagedFileError,
    atomic_write_bytes,
    atomic_write_json,
    file_sha256,
    locked_update,
    quarantine,
    read_json,
    remove_temporaries,
    this_host,
)
from gibench.core.identity import identity_hash
from gibench.store.records import JobRecord, Manifest, ResultRecord, RunEntry, TrainStatus, load

CHECKPOINT = "checkpoint.pt"


class DamagedStoreWarning(UserWarning):
    """A damaged file in a runs directory was skipped or moved aside."""


def result_key(evaluator: str, version: str, config_hash: str) -> str:
    return f"{evaluator}__v{version}__{config_hash}"


def evaluation_key(evaluator: str, version: str, config: Any) -> str:
    """The result key of an evaluation of ``evaluator`` at ``version`` with the resolved ``config``: its config hash
    is the identity hash (:mod:`gibench.core.identity`) of that config."""
    return result_key(evaluator, version, identity_hash(config))


class JobFolder:
    """The files of one job."""

    def __init__(self, root: Path, store: RunStore | None = None) -> None:
        self.root = Path(root)
        self.store = store if store is not None else RunStore(self.root.parent.parent)

    @property
    def hash(self) -> str:
        return self.root.name

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    # -- training ----------------------------------------------------------------------------------------------------

    def status(self) -> TrainStatus | None:
        return self._read(TrainStatus, self.root / "status.json")

    def is_trained(self) -> bool:
        """A trained status whose checkpoint exists with the recorded size (a truncated one is handled as damaged)."""
        status = self.status()
        if not (status and status.state == "trained"):
            return False
        if not self.checkpoint.exists():
            return False
        size = self.checkpoint.stat().st_size
        if status.checkpoint_bytes is not None and size != status.checkpoint_bytes:
            self.checkpoint_damaged(f"{size} bytes where status.json recorded {status.checkpoint_bytes}")
            return False
        return True

    def checkpoint_damaged(self, problem: str) -> None:
        """Report the checkpoint as damaged; a repairing store moves it aside with its commit point (status.json)."""
        self.store.damaged(DamagedFileError(self.checkpoint, problem), then="the job is retrained")
        if self.store.repair and (self.root / "status.json").exists():
            why = f"commit point of a damaged checkpoint ({problem})"
            quarantine(self.root / "status.json", self.store.runs_dir, why)

    def write_spec(self, record: JobRecord) -> None:
        atomic_write_json(self.root / "job.json", record.to_json())

    def spec(self) -> JobRecord | None:
        return self._read(JobRecord, self.root / "job.json")

    def save_trained(self, model: nn.Module, log: dict[str, Any], finished: str | None = None) -> TrainStatus:
        """Checkpoint, then log, then status: the status file is the commit point."""
        data = state_dict_bytes(model)
        atomic_write_bytes(self.checkpoint, data)
        atomic_write_json(self.root / "train_log.json", log)
        status = TrainStatus("trained", checkpoint_sha256=_sha256(data), checkpoint_bytes=len(data), finished=finished)
        atomic_write_json(self.root / "status.json", status.to_json())
        return status

    def save_failed(self, reason: str, log: dict[str, Any], traceback: str | None = None, retryable: bool = False,
                    finished: str | None = None) -> TrainStatus:
        atomic_write_json(self.root / "train_log.json", log)
        status = TrainStatus("failed", reason, traceback, retryable, finished=finished)
        atomic_write_json(self.root / "status.json", status.to_json())
        return status

    def record_event(self, event: str, **fields: Any) -> None:
        """Append one line to ``events.jsonl``, the job's history (trained, failed); one O_APPEND write per line."""
        line = json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), "host": this_host(), **fields},
                          sort_keys=True, default=str) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        """The job's history; a line cut short by a killed writer is left out."""
        path = self.root / "events.jsonl"
        if not path.exists():
            return []
        events = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def clear_status(self) -> None:
        (self.root / "status.json").unlink(missing_ok=True)

    def load_weights(self, model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
        """Load the checkpoint into ``model``; DamagedFileError when it does not match its record or does not load."""
        status = self.status()
        if status and status.checkpoint_sha256 and file_sha256(self.checkpoint) != status.checkpoint_sha256:
            raise DamagedFileError(self.checkpoint, "its SHA-256 differs from the one status.json recorded")
        try:
            state = torch.load(self.checkpoint, map_location=device, weights_only=True)
            model.load_state_dict(state)
        except FileNotFoundError:
            raise
        except Exception as exc:  # truncated zip, wrong keys or shapes: the file is not this job's checkpoint
            raise DamagedFileError(self.checkpoint, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        return model

    def train_log(self) -> dict[str, Any]:
        path = self.root / "train_log.json"
        try:
            return read_json(path) if path.exists() else {}
        except DamagedFileError as exc:
            self.store.damaged(exc, then="the log is left out")
            return {}

    # -- evaluation --------------------------------------------------------------------------------------------------

    def result_path(self, key: str) -> Path:
        return self.root / "results" / f"{key}.json"

    def result(self, key: str) -> ResultRecord | None:
        return self._read(ResultRecord, self.result_path(key))

    def has_result(self, key: str) -> bool:
        record = self.result(key)
        return bool(record and record.done)

    def staging_artifact_dir(self, key: str) -> Path:
        """A fresh private folder for an evaluator to write into; :meth:`save_result` moves it into place."""
        staging = self.root / "artifacts" / f"{TMP_PREFIX}{key}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def save_result(self, key: str, record: ResultRecord | dict[str, Any], staging: Path | None = None) -> None:
        if staging is not None:
            final = self.root / "artifacts" / key
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        data = record.to_json() if isinstance(record, ResultRecord) else record
        atomic_write_json(self.result_path(key), data)

    def set_aside_result(self, key: str, reason: str) -> None:
        """Move a stale result (and its artifacts) into quarantine so that it is recomputed."""
        for path in (self.result_path(key), self.root / "artifacts" / key):
            if path.exists():
                quarantine(path, self.store.runs_dir, reason)

    def results(self) -> Iterator[ResultRecord]:
        folder = self.root / "results"
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if not path.name.startswith(TMP_PREFIX):
                    record = self._read(ResultRecord, path)
                    if record is not None:
                        yield record

    def result_keys(self) -> list[str]:
        folder = self.root / "results"
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith(TMP_PREFIX)) \
            if folder.is_dir() else []

    def clean_temporaries(self) -> list[Path]:
        return remove_temporaries(self.root) if self.root.is_dir() else []

    def _read(self, cls: type, path: Path) -> Any:
        try:
            return load(cls, path)
        except FileNotFoundError:
            return None
        except DamagedFileError as exc:
            self.store.damaged(exc, then="it is recomputed" if self.store.repair else "it is skipped")
            return None


class RunStore:
    """All jobs under one runs directory (see the module docstring for ``repair`` and ``warn``)."""

    def __init__(self, runs_dir: Path, *, repair: bool = False, warn: Callable[[str], None] | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.repair = repair
        self.warn = warn
        self.warnings: list[str] = []

    def job(self, job_hash: str) -> JobFolder:
        return JobFolder(self.runs_dir / "jobs" / job_hash, self)

    def jobs(self) -> Iterator[JobFolder]:
        folder = self.runs_dir / "jobs"
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_dir() and (path / "job.json").exists():
                    yield JobFolder(path, self)

    def claim_path(self, job_hash: str) -> Path:
        return self.runs_dir / "claims" / f"{job_hash}.lock"

    def damaged(self, exc: DamagedFileError, then: str) -> None:
        """Report a damaged file; a repairing store moves it into quarantine first."""
        if self.repair and exc.path.exists():
            moved = quarantine(exc.path, self.runs_dir, exc.problem)
            message = f"{exc}; moved to {moved}; {then}."
        else:
            message = f"{exc}; {then} (`gibench doctor --runs-dir {self.runs_dir} --fix` moves it aside)."
        self.warnings.append(message)
        if self.warn is not None:
            self.warn(message)
        else:
            warnings.warn(message, DamagedStoreWarning, stacklevel=3)

    # -- manifest ----------------------------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.runs_dir / "manifest.json"

    def manifest(self) -> Manifest:
        """The manifest; a damaged one is reported and rebuilt from ``runs/<run id>.json`` (not written back here)."""
        try:
            return load(Manifest, self.manifest_path)
        except FileNotFoundError:
            return Manifest(self._run_files())
        except DamagedFileError as exc:
            self.damaged(exc, then="its runs are rebuilt from runs/*.json")
            return Manifest(self._run_files())

    def record_run(self, entry: RunEntry) -> None:
        """Add or replace (by ``run_id``) a run entry: in ``runs/<run id>.json`` and, locked, in the manifest."""
        atomic_write_json(self.runs_dir / "runs" / f"{entry.run_id}.json", entry.to_json())

        def update(data: Any) -> dict[str, Any]:
            manifest = self._parse_manifest(data)
            runs = [r for r in manifest.runs if r.run_id != entry.run_id or not entry.run_id]
            position = next((i for i, r in enumerate(manifest.runs) if r.run_id == entry.run_id and entry.run_id),
                            len(runs))
            runs.insert(position, entry)
            return Manifest(runs).to_json()

        locked_update(self.manifest_path, update, default=lambda: Manifest(self._run_files()).to_json(),
                      on_damaged=self._manifest_damaged)

    def _parse_manifest(self, data: Any) -> Manifest:
        try:
            return Manifest.from_json(data, self.manifest_path)
        except DamagedFileError as exc:  # valid JSON, wrong fields
            self._manifest_damaged(exc)
            return Manifest(self._run_files())

    def _manifest_damaged(self, exc: DamagedFileError) -> None:
        self.damaged(exc, then="it is rebuilt from runs/*.json")

    def _run_files(self) -> list[RunEntry]:
        entries = []
        for path in sorted((self.runs_dir / "runs").glob("*.json")):
            if path.name.startswith(TMP_PREFIX):
                continue
            try:
                entries.append(load(RunEntry, path))
            except DamagedFileError as exc:
                self.damaged(exc, then="that run's provenance is left out")
        return sorted(entries, key=lambda e: (e.started, e.run_id))


def state_dict_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
