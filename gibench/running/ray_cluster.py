"""The Ray cluster of a run: connecting to it, and how a job maps onto its GPUs (part of
:mod:`gibench.running.ray_executor`, whose docstring states the choices: **Connection**, **Resources**, **Device**).

Ray is imported only inside these functions, never when this module is imported: importing gibench never imports Ray.
"""

from __future__ import annotations

__all__ = [
    "INSTALL_HINT", "cluster_gpus", "import_ray", "ray_session", "resolve_gpus_per_job", "task_device",
]

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from gibench.core.errors import ConfigError
from gibench.running.options import check_gpus_per_job

INSTALL_HINT = "pip install 'gibench[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it (Ray is an optional extra of gibench)."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed ({exc}). Install it with "
                          f"`{INSTALL_HINT}`, or run with `--executor local`.") from None
    return ray


# -- connecting ----------------------------------------------------------------------------------------------------


@contextmanager
def ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Connect (**Connection** in :mod:`gibench.running.ray_executor`); disconnect afterwards only from a session
    opened here."""
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        _check_reachable(target)
    try:  # without an address Ray reads RAY_ADDRESS, then a `ray start` cluster on this machine, else starts one
        ray.init(address=address or None, include_dashboard=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {target!r}" if target else "a local Ray cluster"
        raise ConfigError(f"could not connect to {where}: {exc}. Start one with `ray start --head` and pass its "
                          "address (`--address HOST:PORT`, or set RAY_ADDRESS), or omit both to start a local "
                          "cluster.") from None
    try:
        yield
    finally:
        ray.shutdown()  # stops a cluster started here; only disconnects from one given by address


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nothing listens at (ray.init would retry for minutes); other forms go to Ray."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"could not connect to the Ray cluster at {address!r}: nothing answers there ({exc}). "
                          "Start one with `ray start --head` and pass the address it prints (`--address HOST:PORT`, "
                          "or set RAY_ADDRESS), or omit both to start a local cluster.") from None


def cluster_gpus(ray: Any) -> list[float]:
    """The GPU count of every alive node."""
    return [float(node.get("Resources", {}).get("GPU", 0)) for node in ray.nodes() if node.get("Alive")]


# -- resources and devices -----------------------------------------------------------------------------------------


def resolve_gpus_per_job(requested: float | None, node_gpus: Sequence[float], device: str | None) -> float:
    """GPUs per job: the rule of **Resources** in :mod:`gibench.running.ray_executor`.

    A value given is first held to the rules that need no cluster (:func:`gibench.running.options.check_gpus_per_job`,
    which ``run_suite`` and ``gibench run`` apply before Ray starts), then to this cluster: more GPUs than its
    largest node has could never be scheduled, and ``device`` asking for CUDA on a cluster without GPUs could never run.
    """
    most = max(node_gpus, default=0.0)
    if requested is None:
        if most == 0 and device not in (None, "auto", "cpu"):
            raise ConfigError(f"--device {device}, but the Ray cluster has no GPUs. Add GPU nodes, or pass "
                              "--device cpu.")
        return 0.0 if device == "cpu" or most == 0 else 1.0
    requested = check_gpus_per_job(requested, device)
    if requested > most:
        have = f"the largest node has {most:g}" if most else "the cluster has no GPUs"
        raise ConfigError(f"--gpus-per-job {requested:g} can never be scheduled: {have}. Lower --gpus-per-job"
                          + ("" if most else " to 0 (CPU-only training)") + ".")
    return requested


def task_device(requested: str | None, gpu_ids: Sequence[Any], cuda_available: bool,
                visible_devices: str | None) -> str:
    """The torch device for a task Ray gave ``gpu_ids`` (**Device** in :mod:`gibench.running.ray_executor`).

    An explicit ``cuda`` on a worker without CUDA stays ``cuda``, so that ``run_job`` fails that job saying so.
    """
    if requested == "cpu" or not gpu_ids:
        return "cpu"
    if not cuda_available:
        return "cpu" if requested in (None, "auto") else requested
    visible = [v.strip() for v in visible_devices.split(",")] if visible_devices else []
    first = str(gpu_ids[0])
    index = visible.index(first) if first in visible else (0 if visible else int(first))
    return f"cuda:{index}"
