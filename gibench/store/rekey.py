"""Re-keying: move what a runs directory stores under an older identity rule to the key it has now, losing nothing.

A job folder, a result file and an auxiliary model are each named by a hash of what they record (``job.json``'s
``spec``, a result's ``config``, an auxiliary model's ``identity.json``). When the rule that turns those records into
keys changes (:mod:`gibench.core.identity`: floats rounded to ten significant digits, so that every machine agrees), a
store written before holds its trained models and results under keys that no suite asks for any more. Re-keying
recomputes each key from the record beside it and, where it differs, renames the folder or file to the new key and
updates every place that names it:

* ``jobs/<old>/`` → ``jobs/<new>/`` (``job.json``'s ``hash`` field too); the run entries in ``manifest.json`` and
  ``runs/*.json`` that list the job (``jobs``, ``failed_jobs``) name the new key;
* ``results/<name>__v<version>__<old>.json`` → ``…__<new>.json`` with its ``config_hash`` and ``artifacts`` paths,
  and ``artifacts/<old key>/`` → ``artifacts/<new key>/``;
* ``aux/<kind>-<old>/`` → ``aux/<kind>-<new>/`` (``identity.json``'s ``hash`` too), and every result's
  ``auxiliary`` entries that name it.

Nothing is deleted or retrained. A job, result or auxiliary model whose current key is already taken (gibench computed
it again under that key, for example because the old one could not be found) is a superseded copy: it is set aside into
``quarantine/`` (never deleted), so that the store holds one record per key and a report one row per evaluation. A job
that a live worker holds (its claim) is left for the next re-key. A ``job.json`` that does not parse leaves its folder's
name alone (``gibench doctor`` reports the file), but the job's results are still re-keyed, since their keys do not
depend on it. Each rename is atomic; a re-key interrupted half-way leaves every file readable under either
its old or its new key, and the next re-key finishes it. A second process re-keying the same store waits for the
first (one lock, ``.rekey.lock``).

``gibench run`` re-keys its store before anything trains and says what it moved; ``gibench doctor`` reports what
would move, and ``gibench doctor --fix`` moves it.
"""

from __future__ import annotations

__all__ = ["Rekeyed", "rekey_store", "stale_keys"]

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from gibench.core.fsio import (
    TMP_PREFIX,
    DamagedFileError,
    atomic_write_json,
    claimed,
    locked_update,
    quarantine,
    read_json,
)
from gibench.core.identity import identity_hash
from gibench.store.auxiliary import aux_key
from gibench.store.runs import result_key

HashFunction = Callable[[Any], str]

#: The lock one re-keying process holds over a whole runs directory.
REKEY_LOCK = ".rekey.lock"
#: Claim timeout while a job folder is renamed (the runner's default ``--claim-timeout``).
CLAIM_TIMEOUT_S = 120.0


@dataclass
class Rekeyed:
    """What a re-key moved (old → new key), what it set aside into quarantine (path → why) and what it left where it
    was, with why."""

    jobs: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)  # "<old job>/<old key>" → "<new job>/<new key>"
    auxiliary: dict[str, str] = field(default_factory=dict)  # "<kind>-<old>" → "<kind>-<new>"
    set_aside: dict[str, str] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)

    @property
    def moved(self) -> int:
        return len(self.jobs) + len(self.results) + len(self.auxiliary)

    def counts(self) -> str:
        """What moved, in words: '2 jobs, 5 results and 1 auxiliary model'."""
        parts = [_count(len(self.jobs), "job"), _count(len(self.results), "result"),
                 _count(len(self.auxiliary), "auxiliary model")]
        return f"{', '.join(parts[:2])} and {parts[2]}"

    def summary(self) -> str:
        """One line for the user after a re-key."""
        return (f"{self.counts()} stored under an older identity rule were re-keyed to their current hashes "
                "(nothing was retrained)")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def stale_keys(runs_dir: Path) -> Rekeyed:
    """What :func:`rekey_store` would move, without changing anything."""
    return _Rekey(Path(runs_dir), apply=False, hash_fn=identity_hash).run()


def rekey_store(runs_dir: Path, hash_fn: HashFunction = identity_hash) -> Rekeyed:
    """Re-key every job, result and auxiliary model under ``runs_dir`` whose recorded identity hashes to another key
    than its name (see the module docstring). Safe to run at any time, by several processes, on any store.

    ``hash_fn`` is the rule to key by: the current one (:func:`gibench.core.identity.identity_hash`) unless a test
    builds a store as an older gibench wrote it (the exact-float rule, :func:`gibench.core.fsio.canonical_hash`).
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return Rekeyed()
    with FileLock(str(runs_dir / REKEY_LOCK)):
        return _Rekey(runs_dir, apply=True, hash_fn=hash_fn).run()


class _Rekey:
    def __init__(self, runs_dir: Path, apply: bool, hash_fn: HashFunction) -> None:
        self.runs_dir, self.apply, self.hash = runs_dir, apply, hash_fn
        self.done = Rekeyed()

    def run(self) -> Rekeyed:
        aux_names = self._auxiliary()
        for folder in _folders(self.runs_dir / "jobs"):
            self._job(folder, aux_names)
        if self.apply and self.done.jobs:
            self._run_entries()
        return self.done

    # -- auxiliary models ----------------------------------------------------------------------------------------------

    def _auxiliary(self) -> dict[str, str]:
        """Re-key ``aux/<kind>-<hash>/`` folders; returns old folder name → new folder name."""
        root = self.runs_dir / "aux"
        for folder in _folders(root):
            record = _read(folder / "identity.json")
            if not (isinstance(record, dict) and {"kind", "hash", "identity"} <= set(record)
                    and folder.name == f"{record['kind']}-{record['hash']}"):
                continue
            kind = record["kind"]
            new = aux_key(kind, record["identity"], record.get("aux_code_version"), hash_fn=self.hash)
            if new == record["hash"]:
                continue
            target = root / f"{kind}-{new}"
            if target.exists():
                self._set_aside(folder, f"its current key {new} is already held by aux/{target.name}")
                continue
            if self.apply:
                os.rename(folder, target)
                atomic_write_json(target / "identity.json", {**record, "hash": new})
            self.done.auxiliary[folder.name] = target.name
        return dict(self.done.auxiliary)

    # -- jobs and their results ----------------------------------------------------------------------------------------

    def _job(self, folder: Path, aux_names: dict[str, str]) -> None:
        """Plan the job's own move and its results' moves; apply them under the job's claim, so no worker is
        training or evaluating it meanwhile (a job a live worker holds is left for the next re-key)."""
        record = _read(folder / "job.json")
        readable = isinstance(record, dict) and isinstance(record.get("spec"), dict)
        new = self.hash(record["spec"]) if readable else folder.name  # a damaged job.json: its results still move
        superseded = new != folder.name and (folder.parent / new).exists()
        changes, duplicates = ([], []) if superseded else self._result_changes(folder, aux_names)
        if new == folder.name and not changes and not duplicates and not superseded:
            return
        if self.apply:
            with claimed(self.runs_dir / "claims" / f"{folder.name}.lock", CLAIM_TIMEOUT_S,
                         CLAIM_TIMEOUT_S / 4) as claim:
                if claim is None:
                    self.done.left.append(f"jobs/{folder.name}: a live worker holds it; the next re-key moves it")
                    return
                self._apply_job(folder, record, new, superseded, changes, duplicates)
        else:
            self._record_job(folder, new, superseded, changes, duplicates)

    def _apply_job(self, folder: Path, record: Any, new: str, superseded: bool, changes: list,
                   duplicates: list) -> None:
        """Under the job's claim: set a superseded job aside, or rename it and move its results."""
        if superseded:
            self._set_aside(folder, f"its current key {new} is already held by jobs/{new}")
            return
        if new != folder.name:
            os.rename(folder, folder.parent / new)
            atomic_write_json(folder.parent / new / "job.json", {**record, "hash": new, "rekeyed_from": folder.name})
        for path, result, new_key, auxiliary in changes:
            self._move_result(folder.parent / new, path.name, result, new_key, auxiliary)
        for path, new_key in duplicates:
            self._set_aside_result(folder.parent / new, path.name, new_key)
        self._record_job(folder, new, False, changes, duplicates)

    def _record_job(self, folder: Path, new: str, superseded: bool, changes: list, duplicates: list) -> None:
        """What moved (or, without ``apply``, would move) for one job."""
        if superseded:
            self.done.set_aside[f"jobs/{folder.name}"] = f"its current key {new} is already held by jobs/{new}"
            return
        if new != folder.name:
            self.done.jobs[folder.name] = new
        for path, _, new_key, _ in changes:
            if new_key != path.stem:
                self.done.results[f"{folder.name}/{path.stem}"] = f"{new}/{new_key}"
        for path, new_key in duplicates:
            why = f"its current key {new_key} is already held"
            self.done.set_aside[f"jobs/{folder.name}/results/{path.name}"] = why

    def _result_changes(self, folder: Path, aux_names: dict[str, str]) -> tuple[list, list]:
        """(path, record, new key, new auxiliary entries) of each result whose key or auxiliary names move, and
        (path, new key) of each result whose current key another result file already holds (a superseded copy)."""
        changes, duplicates = [], []
        for path in sorted((folder / "results").glob("*.json")) if (folder / "results").is_dir() else []:
            if path.name.startswith(TMP_PREFIX):
                continue
            record = _read(path)
            if not (isinstance(record, dict) and isinstance(record.get("config"), dict)
                    and {"evaluator", "version"} <= set(record)):
                continue
            new_key = result_key(record["evaluator"], record["version"], self.hash(record["config"]))
            auxiliary = [_renamed_aux(entry, aux_names) for entry in record.get("auxiliary") or []]
            if new_key == path.stem and auxiliary == (record.get("auxiliary") or []):
                continue
            if new_key != path.stem and (folder / "results" / f"{new_key}.json").exists():
                duplicates.append((path, new_key))
                continue
            changes.append((path, record, new_key, auxiliary))
        return changes, duplicates

    def _set_aside(self, path: Path, why: str) -> None:
        """Move a superseded job or auxiliary-model folder into quarantine (with ``apply``) and record why."""
        name = str(path.relative_to(self.runs_dir))
        if self.apply:
            quarantine(path, self.runs_dir, f"re-keying: superseded, {why}")
        self.done.set_aside[name] = why

    def _set_aside_result(self, folder: Path, file_name: str, new_key: str) -> None:
        """Move a superseded result file and its artifact folder into quarantine."""
        why = f"re-keying: superseded, its current key {new_key} is already held"
        old_key = file_name.removesuffix(".json")
        if (folder / "artifacts" / old_key).is_dir():
            quarantine(folder / "artifacts" / old_key, self.runs_dir, why)
        quarantine(folder / "results" / file_name, self.runs_dir, why)

    @staticmethod
    def _move_result(folder: Path, file_name: str, record: dict, new_key: str, auxiliary: list) -> None:
        old_key = file_name.removesuffix(".json")
        updated = {**record, "auxiliary": auxiliary}
        if new_key != old_key:
            prefix = f"artifacts/{old_key}/"
            updated.update(config_hash=new_key.rsplit("__", 1)[1], artifacts={
                name: f"artifacts/{new_key}/{value[len(prefix):]}" if str(value).startswith(prefix) else value
                for name, value in (record.get("artifacts") or {}).items()})
            artifacts = folder / "artifacts" / old_key
            if artifacts.is_dir() and not (folder / "artifacts" / new_key).exists():
                os.rename(artifacts, folder / "artifacts" / new_key)
        atomic_write_json(folder / "results" / f"{new_key}.json", updated)
        if new_key != old_key:
            (folder / "results" / file_name).unlink()

    # -- run entries ---------------------------------------------------------------------------------------------------

    def _run_entries(self) -> None:
        renamed = self.done.jobs
        for path in sorted((self.runs_dir / "runs").glob("*.json")) if (self.runs_dir / "runs").is_dir() else []:
            if not path.name.startswith(TMP_PREFIX):
                data = _read(path)
                if isinstance(data, dict):
                    atomic_write_json(path, _renamed_entry(data, renamed))
        manifest = self.runs_dir / "manifest.json"
        if isinstance(_read(manifest), dict):  # a damaged manifest is rebuilt from runs/*.json by the store
            try:
                locked_update(manifest, lambda data: _renamed_manifest(data, renamed), default=dict)
            except DamagedFileError:
                pass


def _renamed_aux(entry: Any, aux_names: dict[str, str]) -> Any:
    """A result's record of an auxiliary model, naming the model's new key when it was re-keyed."""
    if not isinstance(entry, dict):
        return entry
    old_name = f"{entry.get('kind')}-{entry.get('hash')}"
    if old_name not in aux_names:
        return entry
    new_name = aux_names[old_name]
    return {**entry, "hash": new_name[len(f"{entry.get('kind')}-"):],
            "folder": f"aux/{new_name}" if entry.get("folder") else entry.get("folder")}


def _renamed_entry(data: dict, renamed: dict[str, str]) -> dict:
    updated = dict(data)
    for name in ("jobs", "failed_jobs"):
        if isinstance(data.get(name), list):
            updated[name] = [renamed.get(job, job) for job in data[name]]
    return updated


def _renamed_manifest(data: Any, renamed: dict[str, str]) -> Any:
    if not (isinstance(data, dict) and isinstance(data.get("runs"), list)):
        return data
    return {**data, "runs": [_renamed_entry(run, renamed) if isinstance(run, dict) else run for run in data["runs"]]}


def _folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith((TMP_PREFIX, "."))]


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (DamagedFileError, FileNotFoundError, OSError):
        return None

