"""The schema of a submission folder: ``submission.json``'s pydantic models, its JSON Schema, and the loaded form.

Every model forbids unknown keys (a misspelt field is an error, not silently ignored). Free-text fields (name, authors,
description, links, suite names) must be plain visible text, and links ``http(s)://`` URLs
(:mod:`gibench.submissions.text_fields` checks them and says why); :func:`parse_model`
(:mod:`gibench.submissions.parsing`) turns a validation error into a message naming the file, the field and the fix.

Metric bounds are JSON pairs ``[low, high]`` where ``null`` stands for an infinite end (JSON has no infinity).
"""

from __future__ import annotations

__all__ = [
    "ALLOWED_ARTIFACT_SUFFIXES", "ArtifactFile", "ArtifactsRecord", "Environment", "ID_PATTERN", "LeftOutArtifact",
    "LoadedSubmission", "MANIFEST_FILE", "MODELS_FILE", "MetricInfo", "ModelsFile", "PluginRecord", "Provenance",
    "RESULTS_FILE", "RunRecord",
    "SCHEMA_VERSION", "STATUSES", "SUBMISSION_FILE", "SelectionPoint", "SelectionRecord", "SelectionUnitRecord",
    "Submission", "SubmissionMetadata", "SubmissionScan",
    "SuiteRecord", "bounds_from_json", "bounds_to_json", "control_character", "parse_model", "submission_json_schema",
    "suite_selects", "write_json_schema",
]

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gibench.store.provenance import suite_hash
from gibench.submissions.parsing import parse_model
from gibench.submissions.text_fields import (
    PLAIN_TEXT_FIX,
    author_name,
    control_character,
    json_strings,
    plain_text,
    web_link,
)

SCHEMA_VERSION = 1
SUBMISSION_FILE = "submission.json"
RESULTS_FILE = "results.csv"
MANIFEST_FILE = "manifest.json"
MODELS_FILE = "models.json"
ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{12}$"
STATUSES = ("ok", "skipped", "failed")
#: The only artifact files a submission carries: images and curves the site shows.
ALLOWED_ARTIFACT_SUFFIXES = (".json", ".png", ".svg")
_SAFE_PART = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$"  # one path component: no separator, no leading dot, no '..'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmissionMetadata(_Strict):
    """What the submitters say about their submission (all of it is shown, escaped, on the site)."""

    name: str = Field(min_length=1, max_length=200, description="Display name of the submission")
    authors: list[Annotated[str, AfterValidator(author_name)]] = Field(min_length=1)
    description: str = ""
    links: list[Annotated[str, AfterValidator(web_link)]] = Field(
        default_factory=list, description="http(s) URLs: paper, code, checkpoints")

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name is blank. Fix: give the name of your method, e.g. --name \"Gradient norm\"")
        return plain_text(value.strip())

    @field_validator("description")
    @classmethod
    def _description_plain(cls, value: str) -> str:
        return plain_text(value, allow="\n\t")


class PluginRecord(_Strict):
    distribution: str
    version: str


class Environment(BaseModel):
    """:func:`gibench.store.provenance.environment_info`; unknown keys are kept (newer gibench versions may add
    some)."""

    model_config = ConfigDict(extra="allow")
    gibench_version: str
    git_commit: str | None = None
    git_dirty: bool | None = None
    python: str
    platform: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    timm: str | None = None
    numpy: str | None = None
    pandas: str | None = None
    cuda: str | None = None
    cuda_available: bool | None = None
    device: str
    device_name: str | None = None


class SelectionPoint(_Strict):
    """One swept value of a selection: the validation accuracy of each sweep seed and their mean."""

    value: float
    accuracies: list[Annotated[float, Field(ge=0, le=1)] | Literal["failed"] | None]
    mean: Annotated[float, Field(ge=0, le=1)] | None


class SelectionUnitRecord(_Strict):
    """The choice for one dataset × backbone × regularizer entry (:class:`gibench.running.selection.UnitChoice`)."""

    dataset: str
    backbone: str
    regularizer: str
    name: str
    parameter: str
    scale: Literal["log", "linear"]
    curve: list[SelectionPoint] = Field(min_length=1)
    reference: Annotated[float, Field(ge=0, le=1)] | None
    budget: float | None
    selected: float | None
    state: Literal["selected", "over_budget", "pending", "no_reference", "failed"]
    reason: Annotated[str, AfterValidator(plain_text)]

    @model_validator(mode="after")
    def _choice_on_the_curve(self) -> SelectionUnitRecord:
        chosen = self.state in ("selected", "over_budget")
        if chosen != (self.selected is not None):
            raise ValueError(f"state {self.state!r} with selected = {self.selected!r}: a unit is selected or over "
                             "budget exactly when it has a selected value")
        if chosen and self.selected not in [p.value for p in self.curve]:
            raise ValueError(f"selected = {self.selected!r} is not a value of its curve")
        return self


class SelectionRecord(_Strict):
    """The selection of a suite that selects (:meth:`gibench.running.selection.Selection.to_json`)."""

    format: Literal[1]
    suite: str
    suite_hash: str = Field(pattern=r"^[0-9a-f]{16}$")
    rule: dict[str, Any]
    validation: dict[str, Any]
    units: list[SelectionUnitRecord]


def suite_selects(suite: Any) -> bool:
    """Whether a suite's mapping selects a strength per regularizer (``select: {rule: max_drop}``): such a suite's
    record must carry the selection its run made."""
    select = suite.get("select") if isinstance(suite, dict) else None
    return isinstance(select, dict) and select.get("rule") == "max_drop"


class SuiteRecord(_Strict):
    name: str
    suite: dict[str, Any]
    hash: str = Field(pattern=r"^[0-9a-f]{16}$")
    #: the selection a suite with ``select: {rule: max_drop}`` made (absent for any other suite)
    selection: SelectionRecord | None = None

    @model_validator(mode="after")
    def _selection_of_this_suite(self) -> SuiteRecord:
        if suite_selects(self.suite) and self.selection is None:
            raise ValueError("the suite selects (`select: {rule: max_drop}`) but no selection is recorded; submit the "
                             "runs again with this gibench version (it records the selection from the runs folder)")
        if self.selection is not None and self.selection.suite_hash != self.hash:
            raise ValueError(f"selection.suite_hash {self.selection.suite_hash!r} is not the suite's hash "
                             f"{self.hash!r}")
        return self

    @field_validator("name")
    @classmethod
    def _name_plain(cls, value: str) -> str:
        return plain_text(value)

    @field_validator("suite")
    @classmethod
    def _suite_plain(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path, text in json_strings(value):  # its description may span lines; nothing else may hide in it
            found = control_character(text, allow="\n\t")
            if found:
                raise ValueError(f"the suite's {path} contains the invisible character {found[1]} at position "
                                 f"{found[0]}. Fix: {PLAIN_TEXT_FIX} (edit the suite file and run it again)")
        return value

    @field_validator("hash")
    @classmethod
    def _hash_matches(cls, value: str, info: Any) -> str:
        if "suite" in info.data and suite_hash(info.data["suite"]) != value:
            raise ValueError(f"does not match the suite (its hash is {suite_hash(info.data['suite'])})")
        return value


class RunRecord(_Strict):
    """One ``gibench run`` invocation (an entry of ``runs_dir/manifest.json``)."""

    suite_name: Annotated[str, AfterValidator(plain_text)]
    suite_hash: str
    started: datetime
    finished: datetime | None = None
    environment: Environment
    plugins: dict[str, dict[str, PluginRecord]] = Field(default_factory=dict)
    jobs: list[str]


class Provenance(_Strict):
    suites: list[SuiteRecord] = Field(min_length=1)
    runs: list[RunRecord] = Field(min_length=1)

    @model_validator(mode="after")
    def _runs_name_known_suites(self) -> Provenance:
        known = {s.hash for s in self.suites}
        for i, run in enumerate(self.runs):
            if run.suite_hash not in known:
                raise ValueError(f"runs[{i}].suite_hash {run.suite_hash!r} is not the hash of any entry of 'suites'")
        return self

    def job_hashes(self) -> set[str]:
        return {job for run in self.runs for job in run.jobs}


class ResultsFile(_Strict):
    file: Literal["results.csv"] = RESULTS_FILE
    rows: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelsFile(_Strict):
    """``models.json``: the trained models the submission references by URL (each file with its SHA-256 and size;
    the weights themselves are never part of a submission). Its SHA-256 is recorded here, so the submission's id
    covers it (gibench.submissions.submitted_models)."""

    file: Literal["models.json"] = MODELS_FILE
    models: int = Field(ge=1, description="how many models it lists")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


Bound = float | None


def bounds_to_json(bounds: tuple[float, float]) -> tuple[Bound, Bound]:
    """``(-inf, 1.0)`` → ``(None, 1.0)``: infinite ends as None (null in JSON)."""
    return tuple(None if math.isinf(b) else float(b) for b in bounds)  # type: ignore[return-value]


def bounds_from_json(bounds: tuple[Bound, Bound]) -> tuple[float, float]:
    """``(None, 1.0)`` → ``(-inf, 1.0)``."""
    low, high = bounds
    return (-math.inf if low is None else float(low), math.inf if high is None else float(high))


class MetricInfo(_Strict):
    """A metric's declaration as recorded at submit time (from the installed evaluator of the same version), so the
    site and ``validate`` need not ask installed plugins: direction, headline, bounds (null = infinite), whether
    it is a diagnostic (reported, never ranked), and the metric it must be read beside (``"evaluator.metric"``,
    empty for none) with the caveat the site shows (see :class:`gibench.api.Metric`). Submissions made before the
    last two were recorded load with both empty."""

    evaluator: str
    version: str
    metric: str
    description: str = ""
    higher_is_better: bool
    headline: bool
    bounds: tuple[Bound, Bound] = (None, None)
    diagnostic: bool = False
    read_beside: str = Field(default="", pattern=r"^(|[^.\s]+\.[^.\s]+)$",
                             description="the metric the site shows this one beside, as evaluator.metric")
    caveat: Annotated[str, AfterValidator(plain_text)] = Field(
        default="", description="why it must be read beside that metric (shown by the site)")

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, value: tuple[Bound, Bound]) -> tuple[Bound, Bound]:
        low, high = bounds_from_json(value)
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ValueError(f"{list(value)} is not a range [low, high] with low <= high (null for an infinite end). "
                             "Fix: re-create the submission with `gibench submit`")
        return value


def _safe_part(value: str, what: str) -> str:
    if not re.fullmatch(_SAFE_PART, value):
        raise ValueError(f"{what} {value!r} is not one plain file-name component (letters, digits, _ . + -)")
    return value


class ArtifactFile(_Strict):
    """One packed artifact: ``path`` is ``artifacts/<job_hash>/<result_key>/<file name>`` inside the submission."""

    job_hash: str
    evaluator: str
    evaluator_version: str
    evaluator_params: str = Field(description="the evaluation's parameters as canonical JSON (sorted keys)")
    result_key: str
    name: str
    path: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _path_inside(self) -> ArtifactFile:
        _safe_part(self.job_hash, "job_hash")
        _safe_part(self.result_key, "result_key")
        parts = PurePosixPath(self.path).parts
        if len(parts) != 4 or parts[:3] != ("artifacts", self.job_hash, self.result_key):
            raise ValueError(f"path {self.path!r} is not artifacts/{self.job_hash}/{self.result_key}/<file name>")
        _safe_part(parts[3], "the file name of path")
        if PurePosixPath(parts[3]).suffix.lower() not in ALLOWED_ARTIFACT_SUFFIXES:
            raise ValueError(f"path {self.path!r} is not one of the artifact kinds "
                             f"{', '.join(ALLOWED_ARTIFACT_SUFFIXES)}")
        return self


class LeftOutArtifact(_Strict):
    """An artifact of the runs store that ``gibench submit`` did not pack, and why."""

    job_hash: str
    evaluator: str
    result_key: str
    name: str
    bytes: int = Field(ge=0)
    reason: str


class ArtifactsRecord(_Strict):
    """The artifacts packed under ``artifacts/`` (``limit_bytes``: the size limit they were packed under)."""

    limit_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    files: list[ArtifactFile] = Field(default_factory=list)
    left_out: list[LeftOutArtifact] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactsRecord:
        total = sum(f.bytes for f in self.files)
        if total != self.total_bytes:
            raise ValueError(f"total_bytes is {self.total_bytes} but the files add up to {total}")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("two entries of 'files' have the same path")
        return self


class Submission(_Strict):
    """The schema of ``submission.json`` (JSON Schema: :func:`submission_json_schema`)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(pattern=ID_PATTERN)
    created: datetime
    gibench_version: str
    metadata: SubmissionMetadata
    provenance: Provenance
    results: ResultsFile
    metric_descriptions: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="evaluator -> metric -> one-line description (from the installed plugins)")
    metrics: list[MetricInfo] = Field(
        default_factory=list, description="every (evaluator, version, metric) of results.csv with its declaration")
    artifacts: ArtifactsRecord | None = Field(default=None, description="images and curves packed for the site")
    models: ModelsFile | None = Field(default=None, description="the trained models referenced in models.json")


@dataclass(frozen=True)
class LoadedSubmission:
    """A validated submission folder and its typed results table.

    ``sources`` maps an artifact's recorded path to the file it was packed from, for a submission packaged in memory
    (:func:`gibench.submissions.build.package_results`, ``path`` None): its artifacts still lie in the runs store.
    """

    path: Path | None  # None for a submission packaged in memory (package_results), not written anywhere
    submission: Submission
    results: pd.DataFrame = field(repr=False)
    data: bytes = field(default=b"", repr=False)  # the results.csv bytes
    sources: dict[str, Path] = field(default_factory=dict, repr=False)
    models_data: bytes = field(default=b"", repr=False)  # the models.json bytes (empty: it references no models)

    def artifact_path(self, artifact: ArtifactFile) -> Path | None:
        """The absolute path of one packed artifact (None: a submission in memory that does not know it)."""
        if artifact.path in self.sources:
            return self.sources[artifact.path]
        return (self.path / artifact.path).resolve() if self.path is not None else None

    @property
    def artifacts(self) -> dict[tuple[str, str], dict[str, Path]]:
        """(job_hash, evaluator) → {artifact name: absolute path} of every packed artifact.

        A job evaluated by one evaluator in two versions or with two sets of parameters keeps the names of the
        evaluation listed last; :attr:`artifact_files` tells them apart (``evaluator_version``,
        ``evaluator_params``).
        """
        found: dict[tuple[str, str], dict[str, Path]] = {}
        for artifact in self.artifact_files:
            path = self.artifact_path(artifact)
            if path is not None:
                found.setdefault((artifact.job_hash, artifact.evaluator), {})[artifact.name] = path
        return found

    @property
    def artifact_files(self) -> list[ArtifactFile]:
        record = self.submission.artifacts
        return list(record.files) if record is not None else []


@dataclass(frozen=True)
class SubmissionScan:
    """Every folder under a submissions root: the valid ones, and (folder, error message) for the others."""

    valid: list[LoadedSubmission]
    invalid: list[tuple[Path, str]]


def submission_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``submission.json``, generated from :class:`Submission`."""
    schema = Submission.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "gibench submission"}


def write_json_schema(path: str | Path) -> Path:
    """Write :func:`submission_json_schema` to ``path`` (e.g. ``submission.schema.json``) and return the path."""
    path = Path(path)
    path.write_text(json.dumps(submission_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
