"""Typed records of the run store: what ``job.json``, ``status.json``, ``results/<key>.json`` and ``manifest.json``
hold.

Each record is a dataclass with ``to_json()`` (plain JSON for :func:`gibench.core.fsio.atomic_write_json`) and
``from_json(data, path)``, which validates field names and types (through pydantic) and raises
:class:`gibench.core.fsio.DamagedFileError` naming the file and the bad field. Unknown extra keys are ignored, so a
store written by a newer gibench that adds fields still reads. :func:`load` reads and validates a file in one call.

Fields added by this version (absent in stores written before; they default so old stores still read):
``TrainStatus.checkpoint_sha256/bytes`` (the commit point records what it commits, so a damaged checkpoint is found
with a size check and, when loaded, a hash check), ``TrainStatus.traceback/retryable``, and
``ResultRecord.checkpoint_sha256`` (the weights a result was computed from: after a damaged checkpoint is retrained,
a result is kept only when the new checkpoint is byte-identical, see :mod:`gibench.running.job_runner`) and
``ResultRecord.eval_batch_size/oom_steps`` (the batch size that fitted, and the ones that ran out of memory).
"""

from __future__ import annotations

__all__ = [
    "JobLabels", "JobRecord", "Manifest", "PluginSource", "Record", "ResultRecord", "RunEntry", "TrainStatus",
    "job_record", "load", "plugin_source",
]

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from gibench.api import registry
from gibench.api.registry import Registry
from gibench.core.fsio import DamagedFileError, read_json
from gibench.suites.jobs import Job

R = TypeVar("R", bound="Record")


class Record:
    """Base of the store's records: JSON round trip with validation."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[R], data: Any, path: Path | str = "<record>") -> R:
        try:
            return _adapter(cls).validate_python(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise DamagedFileError(path, f"field {where!r}: {err['msg']}") from None


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def load(cls: type[R], path: Path) -> R:
    """Read ``path`` and validate it as ``cls`` (DamagedFileError on any problem; FileNotFoundError if absent)."""
    return cls.from_json(read_json(path), path)


@dataclass
class PluginSource(Record):
    distribution: str
    version: str


@dataclass
class JobLabels(Record):
    dataset: str
    backbone: str
    backbone_params: dict[str, Any]
    regularizer: str
    regularizer_params: dict[str, Any]
    variant: str
    seed: int


@dataclass
class JobRecord(Record):
    """``job.json``: the training spec (what the hash covers) plus display labels and plugin provenance."""

    hash: str
    spec: dict[str, Any]
    labels: JobLabels
    plugins: dict[str, PluginSource]


@dataclass
class TrainStatus(Record):
    """``status.json``, the commit point of a job (written after the checkpoint and the log)."""

    state: Literal["trained", "failed"]
    reason: str | None = None
    traceback: str | None = None
    retryable: bool = False  # an environment failure (out of memory): retried by the next run without asking
    checkpoint_sha256: str | None = None
    checkpoint_bytes: int | None = None
    finished: str | None = None

    def keeps_a_rerun_from_training(self, retry_failed: bool) -> bool:
        """Whether a rerun reports this job as failed instead of training it again: its training failed, not
        retryably (out of memory is retried without asking), and the rerun was not told ``--retry-failed``."""
        return self.state == "failed" and not (retry_failed or self.retryable)


@dataclass
class ResultRecord(Record):
    """``results/<key>.json``: one evaluation of one job (ok, skipped or failed)."""

    evaluator: str
    version: str
    params: dict[str, Any]
    config: dict[str, Any]
    config_hash: str
    metrics: list[dict[str, Any]]
    plugin: PluginSource
    status: Literal["ok", "skipped", "failed"]
    finished: str | None = None
    reason: str | None = None
    seconds: float | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    auxiliary: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_sha256: str | None = None
    eval_batch_size: int | None = None
    oom_steps: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """ok and skipped results are final; failed ones are retried by the next run."""
        return self.status in ("ok", "skipped")

    def computed_from(self, checkpoint_sha256: str | None) -> bool:
        """True when this result stands for the job's checkpoint ``checkpoint_sha256``: a skip (no model was read),
        or a result that recorded that checkpoint (or none, as the oldest results did)."""
        return self.status == "skipped" or self.checkpoint_sha256 in (None, checkpoint_sha256)


@dataclass
class RunEntry(Record):
    """One ``gibench run`` invocation, an entry of ``manifest.json`` (the fields a submission's provenance reads)."""

    suite_name: str
    suite_hash: str
    suite: dict[str, Any]
    jobs: list[str]
    started: str
    environment: dict[str, Any]
    plugins: dict[str, dict[str, PluginSource]] = field(default_factory=dict)
    suite_source: str = ""
    finished: str | None = None
    run_id: str = ""
    failed_jobs: list[str] = field(default_factory=list)


@dataclass
class Manifest(Record):
    runs: list[RunEntry] = field(default_factory=list)


def job_record(job: Job) -> JobRecord:
    """What ``job.json`` holds: the training spec plus display labels and plugin provenance."""
    return JobRecord(
        hash=job.hash, spec=job.training_spec(),
        labels=JobLabels(dataset=job.dataset.label, backbone=job.backbone.name, backbone_params=job.backbone.params,
                         regularizer=job.regularizer.name, regularizer_params=job.regularizer.params,
                         variant=job.regularizer.label, seed=job.seed),
        plugins={"regularizer": plugin_source(registry.regularizers, job.regularizer.name),
                 "dataset": plugin_source(registry.datasets, job.dataset.name)},
    )


def plugin_source(reg: Registry, name: str) -> PluginSource:
    """The distribution and version that provide plugin ``name`` of ``reg`` (recorded with every job and result)."""
    source = reg.source(name)
    return PluginSource(distribution=source.distribution, version=source.version)
