"""That every node of a Ray cluster sees the driver's runs directory (part of :mod:`gibench.running.ray_executor`,
whose docstring states the choice: **Shared store**).

The driver writes a marker file with a random token into the runs directory; a probe task on every alive node, and
every job task again (for nodes that join later), reads it back: a node that finds no such file, or one with another
content, does not share the driver's runs directory, and the error names that node and the path.
"""

from __future__ import annotations

__all__ = ["MARKER_PREFIX", "Marker", "check_marker", "check_nodes_see_runs_dir", "visibility_marker"]

import dataclasses
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gibench.core.errors import ConfigError

MARKER_PREFIX = ".ray-visible-"


@dataclasses.dataclass(frozen=True)
class Marker:
    """A file in the runs directory whose content only this driver knows."""

    path: Path
    token: str


@contextmanager
def visibility_marker(runs_dir: Path) -> Iterator[Marker]:
    """Write a new marker into ``runs_dir`` (created if missing) for the length of the block, then delete it."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        marker = Marker(runs_dir / f"{MARKER_PREFIX}{secrets.token_hex(8)}", secrets.token_hex(16))
        marker.path.write_text(marker.token)
    except OSError as exc:
        raise ConfigError(f"cannot write into the runs directory {runs_dir}: {exc}. Pass a writable --runs-dir.") \
            from None
    try:
        yield marker
    finally:
        marker.path.unlink(missing_ok=True)


def check_marker(marker: Marker) -> None:
    """Raise if this process does not see the driver's marker (run on a worker)."""
    try:
        seen = marker.path.read_text()
    except OSError:
        seen = None
    if seen != marker.token:
        raise ConfigError(
            f"the runs directory {marker.path.parent} is not the driver's on Ray node {socket.gethostname()}: "
            f"{'a different' if seen is not None else 'no'} file {marker.path.name} is there. Every node must "
            "mount the runs directory at the same path on a shared filesystem (NFS, Lustre, ...); pass a --runs-dir "
            "on it.")


def _probe(marker: Marker) -> str | None:
    """The marker check on one node, its problem returned rather than raised, so that the driver lists every node's."""
    try:
        check_marker(marker)
    except ConfigError as exc:
        return str(exc)
    return None


def check_nodes_see_runs_dir(ray: Any, marker: Marker) -> None:
    """Run the marker check once on every alive node, before any job starts."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=1)(_probe)  # a worker that dies is retried, as a job would be
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(marker) for node in nodes]
    problems = [problem for problem in ray.get(refs) if problem]
    if problems:
        raise ConfigError("\n".join(problems))

