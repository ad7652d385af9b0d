"""The run store: one folder per job hash, written atomically so that a killed run resumes cleanly.

Layout under ``runs_dir``::

    manifest.json                       one entry per `gibench run` invocation (suite, environment, plugins)
    jobs/<job hash>/job.json            the training spec and display labels
    jobs/<job hash>/checkpoint.pt       the trained weights (state_dict; loads with weights_only=True)
    jobs/<job hash>/train_log.json      logged loss parts, warnings, timing
    jobs/<job hash>/status.json         {"state": "trained" | "failed", "reason": ...}; written last
    jobs/<job hash>/results/<key>.json  one evaluator result; key = <name>__v<version>__<config hash>
    jobs/<job hash>/artifacts/<key>/    that evaluator's artifacts (renamed into place before its result is written)

Every file is written to a temporary name in the same folder and renamed over the target (``os.replace`` is atomic
on POSIX), so a reader never sees a half-written file; a job counts as trained only once ``status.json`` says so,
which is written after the checkpoint. Leftover temporary files from a killed run are ignored and cleaned up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def result_key(evaluator: str, version: str, config_hash: str) -> str:
    return f"{evaluator}__v{version}__{config_hash}"


class JobFolder:
    """The files of one job."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def hash(self) -> str:
        return self.root.name

    # -- training ----------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        path = self.root / "status.json"
        return read_json(path) if path.exists() else None

    def is_trained(self) -> bool:
        status = self.status()
        return bool(status and status.get("state") == "trained" and (self.root / "checkpoint.pt").exists())

    def write_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_json(self.root / "job.json", spec)

    def spec(self) -> dict[str, Any]:
        return read_json(self.root / "job.json")

    def save_trained(self, model: nn.Module, log: dict[str, Any]) -> None:
        """Checkpoint, then log, then status: the status file is the commit point."""
        buffer = _state_dict_bytes(model)
        atomic_write_bytes(self.root / "checkpoint.pt", buffer)
        atomic_write_json(self.root / "train_log.json", log)
        atomic_write_json(self.root / "status.json", {"state": "trained", "reason": None})

    def save_failed(self, reason: str, log: dict[str, Any]) -> None:
        atomic_write_json(self.root / "train_log.json", log)
        atomic_write_json(self.root / "status.json", {"state": "failed", "reason": reason})

    def clear_status(self) -> None:
        (self.root / "status.json").unlink(missing_ok=True)

    def load_weights(self, model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
        state = torch.load(self.root / "checkpoint.pt", map_location=device, weights_only=True)
        model.load_state_dict(state)
        return model

    def train_log(self) -> dict[str, Any]:
        path = self.root / "train_log.json"
        return read_json(path) if path.exists() else {}

    # -- evaluation --------------------------------------------------------------------------------------------------

    def result_path(self, key: str) -> Path:
        return self.root / "results" / f"{key}.json"

    def has_result(self, key: str) -> bool:
        path = self.result_path(key)
        return path.exists() and read_json(path).get("status") in ("ok", "skipped")

    def staging_artifact_dir(self, key: str) -> Path:
        """A fresh private folder for an evaluator to write into; :meth:`save_result` moves it into place."""
        staging = self.root / "artifacts" / f"{TMP_PREFIX}{key}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def save_result(self, key: str, record: dict[str, Any], staging: Path | None = None) -> None:
        if staging is not None:
            final = self.root / "artifacts" / key
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        atomic_write_json(self.result_path(key), record)

    def results(self) -> Iterator[dict[str, Any]]:
        folder = self.root / "results"
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if not path.name.startswith(TMP_PREFIX):
                    yield read_json(path)

    def clean_temporaries(self) -> None:
        for path in self.root.rglob(f"{TMP_PREFIX}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class RunStore:
    """All jobs under one runs directory."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = Path(runs_dir)

    def job(self, job_hash: str) -> JobFolder:
        return JobFolder(self.runs_dir / "jobs" / job_hash)

    def jobs(self) -> Iterator[JobFolder]:
        folder = self.runs_dir / "jobs"
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_dir() and (path / "job.json").exists():
                    yield JobFolder(path)

    def manifest(self) -> dict[str, Any]:
        path = self.runs_dir / "manifest.json"
        return read_json(path) if path.exists() else {"runs": []}

    def append_run(self, entry: dict[str, Any]) -> int:
        """Add a run entry to the manifest; returns its index (for :meth:`update_run`)."""
        manifest = self.manifest()
        manifest["runs"].append(entry)
        atomic_write_json(self.runs_dir / "manifest.json", manifest)
        return len(manifest["runs"]) - 1

    def update_run(self, index: int, **fields: Any) -> None:
        manifest = self.manifest()
        manifest["runs"][index].update(fields)
        atomic_write_json(self.runs_dir / "manifest.json", manifest)


def _state_dict_bytes(model: nn.Module) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()
