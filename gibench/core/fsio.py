"""The one place that owns how gibench writes, names and shares files: atomic writes, canonical hashing, damaged-file
detection, quarantine, locked read-modify-write and work claims.

* **Atomic writes.** A file is written to a temporary name (prefix :data:`TMP_PREFIX`) in the target's folder,
  flushed, fsync'ed and renamed over the target (``os.replace`` is atomic on POSIX), so a reader never sees a
  half-written file; a killed writer leaves only a temporary that :mod:`gibench.store.doctor` reports and the store
  cleans.
* **Canonical hashing.** :func:`canonical_json` (sorted keys, no whitespace, ASCII, other objects through ``str``) and
  :func:`canonical_hash` (its SHA-256, first ``length`` hex digits): content hashes of suites and submissions, which
  see every bit. Jobs, evaluator configs and auxiliary models are named by :func:`gibench.core.identity.identity_hash`,
  which first rounds every float to ten significant digits so that every machine computes the same key.
* **Damaged files.** :func:`read_json` raises :class:`DamagedFileError` (naming the file) for anything that is not
  valid UTF-8 JSON; :func:`quarantine` moves a damaged file or folder into ``runs_dir/quarantine/<time>/`` (never
  deletes it), next to a ``reason.json``.
* **Locks and claims.** :func:`locked_update` is a read-modify-write of a JSON file under an OS lock (``filelock``).
  :class:`Claim` makes one process the owner of one piece of work (a job): an OS file lock, which the kernel releases
  when its owner dies, plus an owner file (pid, host, heartbeat) that a heartbeat thread refreshes every
  ``heartbeat_s``. The owner file serves ``gibench doctor`` and shared filesystems whose locks are not coherent
  across hosts: a lock that is free but whose owner file names *another host* with a heartbeat younger than
  ``timeout_s`` still counts as held; after ``timeout_s`` without a heartbeat the claim is taken over. On one host the
  kernel lock alone decides (an owner file left by a dead process on this host is taken over at once).
"""

from __future__ import annotations

__all__ = [
    "Claim", "DamagedFileError", "Owner", "QUARANTINE", "TMP_PREFIX", "atomic_folder", "atomic_write_bytes",
    "atomic_write_json", "atomic_write_with", "canonical_hash", "canonical_json", "claimed", "file_sha256",
    "locked_update", "pid_alive", "quarantine", "read_json", "remove_temporaries", "this_host",
]

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from gibench.core.errors import GibenchError

TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"


class DamagedFileError(GibenchError):
    """A file gibench wrote earlier cannot be read back (truncated, not JSON, wrong fields)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} is damaged ({problem})")


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes


def atomic_write_with(path: Path, write: Callable[[str], None], durable: bool = True) -> None:
    """Call ``write(temporary_path)`` and rename the temporary over ``path`` (for writers that take a file name).

    ``durable`` fsyncs the data before the rename, so that the file survives a power loss as well as a killed
    process (the rename alone guarantees the latter). Ephemeral files (claim owner files) skip it: on a VM disk an
    fsync costs about 10 ms (benchmarks/runner_overhead.py).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data), durable)


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), durable)


@contextmanager
def atomic_folder(final: Path, replace: bool = False, lock_timeout_s: float = 120.0) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``final``; rename it into place when the block succeeds.

    Without ``replace`` an existing ``final`` is an error (FileExistsError). With ``replace`` the old folder is swapped
    out under a lock (``final`` + ``.lock``, so concurrent builders take turns) and deleted; readers see the old or
    the new folder, never a half-built one (only for the instant between two renames, no folder at all).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if not replace:
            os.rename(tmp, final)
            return
        with FileLock(str(final.parent / f"{final.name}.lock"), timeout=lock_timeout_s):
            old = None
            if final.exists():
                old = final.parent / f"{TMP_PREFIX}{final.name}-old-{os.getpid()}-{time.monotonic_ns()}"
                os.rename(final, old)
            os.rename(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON content of ``path``; :class:`DamagedFileError` when it is not readable UTF-8 JSON."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedFileError(path, f"not valid JSON: {exc}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Canonical hashing


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace (ASCII-escaped; tuples as lists, dataclasses and other objects through
    :func:`gibench.core.params.jsonable`, then ``str``): equal data gives equal text."""
    from gibench.core.params import jsonable

    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)


def canonical_hash(obj: Any, length: int = 16) -> str:
    """sha256 of :func:`canonical_json` of ``obj``, first ``length`` hex digits."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


# ----------------------------------------------------------------------------------------------------------------------
# Quarantine


def quarantine(path: Path, runs_dir: Path, reason: str) -> Path:
    """Move a damaged file or folder into ``runs_dir/quarantine/<UTC time>/`` (never delete it) with a reason.json.

    The relative path under ``runs_dir`` is kept, so ``quarantine/<time>/jobs/<hash>/checkpoint.pt`` says where the
    file came from. Returns the new location.
    """
    path, runs_dir = Path(path), Path(runs_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    root = runs_dir / QUARANTINE / f"{stamp}-{os.getpid()}"
    target = root / path.relative_to(runs_dir) if path.is_relative_to(runs_dir) else root / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    atomic_write_json(root / "reason.json", {"path": str(path), "reason": reason, "moved_to": str(target)})
    return target


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete leftover temporaries (:data:`TMP_PREFIX`) of killed writers under ``folder``; returns what was removed."""
    removed = []
    for path in sorted(Path(folder).rglob(f"{TMP_PREFIX}*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# ----------------------------------------------------------------------------------------------------------------------
# Locked read-modify-write


def locked_update(path: Path, update: Callable[[Any], Any], default: Callable[[], Any], timeout_s: float = 120.0,
                  on_damaged: Callable[[DamagedFileError], None] | None = None) -> Any:
    """Read ``path`` (or ``default()`` if absent), apply ``update`` and write the result back, all under a lock.

    ``update`` returns the new content. A damaged file is handed to ``on_damaged`` (which moves it aside) and
    replaced by ``default()``; without ``on_damaged`` the :class:`DamagedFileError` propagates. Returns the new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout_s):
        current = default()
        if path.exists():
            try:
                current = read_json(path)
            except DamagedFileError as exc:
                if on_damaged is None:
                    raise
                on_damaged(exc)
        new = update(current)
        atomic_write_json(path, new)
        return new


# ----------------------------------------------------------------------------------------------------------------------
# Claims


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: written to the owner file when it is taken, refreshed by the heartbeat."""

    pid: int
    host: str
    started: float
    heartbeat: float

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (last heartbeat {self.age_s():.0f} s ago)"

    @classmethod
    def read(cls, path: Path) -> Owner | None:
        try:
            data = read_json(path)
            return cls(int(data["pid"]), str(data["host"]), float(data["started"]), float(data["heartbeat"]))
        except (FileNotFoundError, DamagedFileError, KeyError, TypeError, ValueError):
            return None


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claim:
    """Exclusive ownership of one piece of work (see the module docstring for the takeover rule).

    ``claim = Claim(folder / "x.lock", timeout_s=300, heartbeat_s=30)``; ``claim.try_acquire()`` returns True when
    this process now owns it, False when a live owner holds it (``claim.holder()`` says who); ``claim.release()``
    gives it up. Not reentrant; one Claim object per attempt.
    """

    def __init__(self, lock_path: Path, timeout_s: float, heartbeat_s: float) -> None:
        self.lock_path = Path(lock_path)
        self.owner_path = self.lock_path.with_suffix(".owner.json")
        self.timeout_s, self.heartbeat_s = float(timeout_s), float(heartbeat_s)
        self._lock = FileLock(str(self.lock_path), timeout=0, thread_local=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Owner | None:
        return Owner.read(self.owner_path)

    def try_acquire(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        previous = self.holder()
        if previous and previous.host != this_host() and previous.age_s() < self.timeout_s:
            self._lock.release()  # a live owner on another host whose lock this filesystem does not show us
            return False
        now = time.time()
        self._write_owner(Owner(os.getpid(), this_host(), now, now))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.lock_path.name}", daemon=True)
        self._thread.start()
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.owner_path.unlink(missing_ok=True)
        if self._lock.is_locked:
            self._lock.release()

    def _beat(self) -> None:
        started = time.time()
        while not self._stop.wait(self.heartbeat_s):
            self._write_owner(Owner(os.getpid(), this_host(), started, time.time()))

    def _write_owner(self, owner: Owner) -> None:
        atomic_write_json(self.owner_path, asdict(owner), durable=False)  # ephemeral: a lost one means "no owner"


@contextmanager
def claimed(lock_path: Path, timeout_s: float, heartbeat_s: float) -> Iterator[Claim | None]:
    """``with claimed(path, ...) as claim:`` yields the held Claim, or None when another live owner holds it."""
    claim = Claim(lock_path, timeout_s, heartbeat_s)
    if not claim.try_acquire():
        yield None
        return
    try:
        yield claim
    finally:
        claim.release()
