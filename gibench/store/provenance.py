"""Provenance: where a number came from.

:func:`environment_info` describes the software and hardware a run used; the runner stores it in
``runs_dir/manifest.json`` and ``gibench submit`` copies it into the submission. :func:`suite_hash` fingerprints a
suite (as a plain dict) so two submissions can be checked to have run the same protocol.

Choices:

* Package versions come from installed distribution metadata (:mod:`importlib.metadata`), so recording them imports
  nothing heavy; only ``torch`` is imported, for its CUDA build and device names (the runner has imported it anyway).
* The git commit is recorded only when the ``gibench`` package itself is tracked in a git checkout (an editable
  install). A wheel installed into a virtual environment that happens to live inside some other git repository
  records ``None``, not that repository's commit. ``git_dirty`` is True when the checkout has uncommitted changes,
  untracked files included (a new, uncommitted plugin module changes results too); git-ignored files do not count.
* The host name is deliberately not recorded (privacy). The device name is the GPU model for CUDA devices and the
  CPU model otherwise.
"""

from __future__ import annotations

__all__ = [
    "cpu_model", "device_name", "environment_info", "git_state", "suite_hash",
]

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

from gibench.core import fsio
from gibench.version import __version__

_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas")
_GIT_TIMEOUT_S = 5.0


def environment_info(device: str) -> dict[str, Any]:
    """The software and hardware of this process, as a JSON-ready dict.

    Args:
        device: the torch device string the run uses (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Returns:
        ``{"gibench_version", "git_commit", "git_dirty", "python", "platform", "torch", "torchvision", "timm",
        "numpy", "pandas", "cuda", "cuda_available", "device", "device_name"}``. Versions of packages that are not
        installed are ``None``; ``cuda`` is ``torch.version.cuda`` (``None`` for CPU-only builds of torch).

    Example:
        >>> info = environment_info("cpu")
        >>> info["device"], info["gibench_version"] == __version__
        ('cpu', True)
    """
    commit, dirty = git_state(Path(__file__).resolve().parent)  # the gibench package folder
    cuda, cuda_available = _cuda_info()
    info: dict[str, Any] = {
        "gibench_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    info.update({name: _dist_version(name) for name in _PACKAGES})
    info.update({
        "cuda": cuda,
        "cuda_available": cuda_available,
        "device": str(device),
        "device_name": device_name(str(device)),
    })
    return info


def suite_hash(suite: Any) -> str:
    """The first 16 hex digits of the SHA-256 of the suite's canonical JSON.

    Args:
        suite: the suite as plain data (dicts, lists, strings, numbers; tuples and dataclasses are converted).

    Example:
        >>> suite_hash({"name": "smoke", "seeds": [0]}) == suite_hash({"seeds": [0], "name": "smoke"})
        True
    """
    return canonical_hash(suite, length=16)


#: JSON with sorted keys and no whitespace; the same encoding as every other hash in gibench (gibench.core.fsio owns
#: it), so ``suite_hash(suite.raw) == suite.hash``.
canonical_json = fsio.canonical_json
canonical_hash = fsio.canonical_hash


def git_state(folder: Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout that tracks ``folder/__init__.py``; ``(None, None)`` otherwise."""
    if _git(folder, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(folder, "status", "--porcelain", "--untracked-files=normal")
    return commit, (bool(status) if status is not None else None)


def device_name(device: str) -> str | None:
    """The GPU model for a CUDA device, ``"Apple MPS"`` for MPS, otherwise the CPU model."""
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return str(torch.cuda.get_device_name(torch.device(device)))
        except Exception:  # noqa: BLE001 - provenance is best effort, never fatal
            return None
        return None
    if device.startswith("mps"):
        return "Apple MPS"
    return cpu_model()


def cpu_model() -> str | None:
    """The CPU model string (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _cuda_info() -> tuple[str | None, bool]:
    try:
        import torch
    except ImportError:
        return None, False
    return torch.version.cuda, bool(torch.cuda.is_available())
