"""What the plugin pages, the sanity page and the verification badges show.

* A page per regularizer: its family, the paper and method (the plugin module's docstring, which cites the paper and
  states every choice it leaves open), the objective (the class docstring), the parameters with defaults and ranges
  (:func:`gibench.core.params.describe_config`), and its cost per training step relative to ``erm`` from
  :data:`COST_FILE` (written by ``benchmarks/regularizer_step_cost.py --json``, which names the device).
* A page per evaluator: the definition (module docstring), each metric's direction, bounds, headline and diagnostic
  flags and description (as the submissions recorded them, else as installed), the installed version and the
  versions found in the submissions (a version other than the installed one is marked stale: its numbers may not be
  comparable with a new run), and the version history (``Evaluator.history``: what each version changed), one row
  per declared or seen version. Regularizer pages show their declared history too.
* Plugins named in a submission but not installed where the site is built still get a page, built from what the
  submissions recorded.
* The sanity view: :func:`gibench.results.sanity_table` of each submission (``fooled`` against ``erm``), through
  :func:`gibench.results.collapse.sanity_gate`: a collapsed ``fooled`` row is left out of the gate and listed with its
  reason (judged by the floor the submission's recorded suites declare).
* Verification: :func:`verification`, the badge of :func:`gibench.submissions.verify.verification_status`, which
  says which check the submission passed: re-trained (``gibench verify``) or re-evaluated from its submitted models
  (``gibench verify --reevaluate``, the weaker one).
* Models: :func:`model_links`, the models a submission references in its ``models.json``, each with its weights and
  card (a link for an ``https://`` URL; a ``file:`` URL is shown as text).
"""

from __future__ import annotations

__all__ = [
    "COST_FILE", "CostRow", "HistoryRow", "MetricRow", "ModelLink", "PluginPage", "SanityLeftOut", "SanityRow",
    "Verification", "declared_passes", "evaluator_pages", "history_rows", "load_costs", "model_links",
    "regularizer_pages", "sanity_rows", "sanity_view", "verification",
]

import inspect
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.core.errors import GibenchError
from gibench.core.params import ParamInfo, describe_config
from gibench.leaderboard.tables import MetricInfo, Table, fmt, params_label
from gibench.results.collapse import dataset_classes, rule_of, sanity_gate
from gibench.results.tables import BASELINE, TRAINING
from gibench.submissions.build import LoadedSubmission, slugify

COST_FILE = Path(__file__).parent / "data" / "regularizer_cost.json"
CONTROL = "fooled"  # the sanity control (gibench.results.sanity_table)


@dataclass(frozen=True)
class CostRow:
    backbone: str
    input: str
    step_ms: str
    time_vs_erm: str
    memory_mb: str
    memory_vs_erm: str


@dataclass(frozen=True)
class MetricRow:
    name: str
    higher_is_better: bool
    headline: bool
    diagnostic: bool
    bounds: str  # "[0, 1]", "(−∞, ∞)"
    description: str
    read_beside: str = ""  # "evaluator.metric" the site shows it beside ("" for none)
    caveat: str = ""


@dataclass(frozen=True)
class HistoryRow:
    version: str
    change: str  # what the version changed, as the plugin declares it ("" when it does not)
    installed: bool
    rows: int  # result rows of this version in the submissions
    stale: bool  # seen in a submission, but not the installed version


@dataclass
class PluginPage:
    kind: str  # "regularizer" | "evaluator"
    name: str
    installed: bool
    summary: str = ""  # the class docstring
    doc: str = ""  # the module docstring
    params: list[ParamInfo] = field(default_factory=list)
    family: str = ""
    version: str = ""  # installed version ("" when not installed)
    distribution: str = ""
    requires: list[str] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    cost_device: str = ""
    cost_command: str = ""
    passes: str = ""  # a regularizer's declared model passes per training step at its defaults ("" when unknown)
    versions: list[tuple[str, int, bool]] = field(default_factory=list)  # (version, result rows, stale)
    history: list[HistoryRow] = field(default_factory=list)  # declared versions, then versions only seen
    tables: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (title, anchor, variants)
    error: str = ""  # why an installed plugin could not be loaded
    file: str = ""  # the page's file name: the name when it is plain (letters, digits, _ and -), else a slug of it


@dataclass(frozen=True)
class SanityRow:
    table: str
    submission: str
    evaluator: str
    metric: str
    direction: str
    erm: str
    fooled: str
    delta: str
    verdict: str  # "worse" (beyond seed noise) or ""
    passes: bool


@dataclass(frozen=True)
class SanityLeftOut:
    """A table in which a submission's ``fooled`` row collapsed: left out of the sanity gate."""

    table: str
    submission: str
    reason: str  # "collapsed: accuracy ... vs erm ... (floor ...)"
    floor: str  # the floor it was judged by


@dataclass(frozen=True)
class Verification:
    state: str  # "verified" | "disagrees" | "stale" | "unverified"
    text: str  # what the badge says
    detail: str = ""  # the tooltip / the submission page's sentence
    check: str = ""  # which check the record is of: "retrained" | "reevaluated" ("" when never verified)


@dataclass(frozen=True)
class ModelLink:
    """One model a submission references (its ``models.json``): what the submission page lists."""

    name: str  # dataset / backbone / variant / seed s
    train_label: str
    job_hash: str
    weights: str  # the weights file's URL
    card: str  # the card's URL (card.md, else card.json; "" when not listed)
    sha256: str  # the weights file's SHA-256
    web: bool  # https URLs: shown as links (file: URLs name a local disk, shown as text)


def _registry():
    from gibench.api import registry

    return registry


def _plugin(kind: str, name: str) -> tuple[Any | None, str]:
    reg = getattr(_registry(), kind)
    try:
        return reg.get(name), ""
    except GibenchError as exc:
        return None, "" if name not in reg.names() else str(exc)


def _docs(cls: Any) -> tuple[str, str]:
    """The class and module docstrings as plain text (reST roles and literal quotes dropped: ``x`` → x)."""
    module = sys.modules.get(cls.__module__)
    return (_plain_doc(inspect.cleandoc(cls.__doc__ or "")),
            _plain_doc(inspect.cleandoc(getattr(module, "__doc__", "") or "")))


def _plain_doc(text: str) -> str:
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)  # :mod:`gibench.api.saliency` → gibench.api.saliency
    return text.replace("``", "")


def _appearances(tables: list[Table], match) -> list[tuple[str, str, list[str]]]:
    out = []
    for t in tables:
        variants = sorted({r.variant for r in t.rows if match(t, r)})
        if variants:
            out.append((t.title, t.anchor, variants))
    return out


def load_costs(path: Path = COST_FILE) -> tuple[str, str, list[dict]]:
    """(device, command, rows) of the step-cost file; rows as ``benchmarks/regularizer_step_cost.py`` writes them."""
    if not path.is_file():
        return "", "", []
    payload = json.loads(path.read_text("utf-8"))
    if isinstance(payload, list):  # the script's older format: rows only, no device
        return "", "", payload
    return str(payload.get("device", "")), str(payload.get("command", "")), list(payload.get("rows", []))


def regularizer_pages(tables: list[Table], cost_file: Path = COST_FILE) -> list[PluginPage]:
    """One page per regularizer installed here or named in a table, by name."""
    device, command, costs = load_costs(cost_file)
    names = sorted(set(_registry().regularizers.names()) | {r.regularizer for t in tables for r in t.rows})
    pages = []
    for name in names:
        cls, error = _plugin("regularizers", name)
        page = PluginPage("regularizer", name, cls is not None, error=error, cost_device=device, cost_command=command)
        if cls is not None:
            page.summary, page.doc = _docs(cls)
            page.family, page.version = getattr(cls, "family", "other"), str(getattr(cls, "version", ""))
            page.history = history_rows(cls, page.version, {})
            page.params = _params(cls)
            page.distribution = _distribution("regularizers", name)
            page.passes = declared_passes(name)
        else:
            page.family = next((r.family for t in tables for r in t.rows if r.regularizer == name), "other")
        page.costs = [CostRow(c["backbone"], c.get("input", ""), f"{c['median_step_ms']:.1f}",
                              f"{c['time_vs_erm']:.2f}×", f"{c['peak_step_mb']:.1f}", f"{c['memory_vs_erm']:.2f}×")
                      for c in costs if c.get("regularizer") == name]
        page.tables = _appearances(tables, lambda t, r, name=name: r.regularizer == name)
        pages.append(page)
    return _with_files(pages)


def declared_passes(name: str) -> str:
    """The regularizer's ``passes_per_step`` at its default settings, as a sentence ("" when it cannot be built)."""
    try:
        passes = _registry().regularizers.create(name).passes_per_step()
        ratio = passes.forward_equivalents / 3  # erm's step: 1 forward + 1 backward = 3 forward-equivalents
    except Exception:
        return ""
    return (f"{passes.forward} forward and {passes.backward} backward passes per image "
            f"({passes.forward_equivalents} forward-equivalents, {ratio:.3g}× erm's)")


def _with_files(pages: list[PluginPage]) -> list[PluginPage]:
    taken: set[str] = {"index"}
    for page in pages:
        safe = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}", page.name)
        stem, i = (page.name if safe else slugify(page.name, 80)), 2
        candidate = stem
        while candidate in taken:
            candidate, i = f"{stem}-{i}", i + 1
        taken.add(candidate)
        page.file = f"{candidate}.html"
    return pages


def _params(cls: Any) -> list[ParamInfo]:
    try:
        return describe_config(cls.Config)
    except Exception:  # a plugin whose Config cannot be described still gets its page
        return []


def _distribution(kind: str, name: str) -> str:
    try:
        info = next(i for i in getattr(_registry(), kind).infos() if i.name == name)
    except StopIteration:
        return ""
    return " + ".join(f"{s.distribution} {info.version}" for s in info.sources)


def evaluator_pages(tables: list[Table], submissions: list[LoadedSubmission],
                    info: dict[tuple[str, str], MetricInfo]) -> list[PluginPage]:
    """One page per evaluator installed here or found in a submission, by name."""
    seen = _versions_seen(submissions)
    names = sorted(set(_registry().evaluators.names()) | set(seen))
    pages = []
    for name in names:
        cls, error = _plugin("evaluators", name)
        page = PluginPage("evaluator", name, cls is not None, error=error)
        recorded = {m: i for (e, m), i in info.items() if e == name}
        if cls is not None:
            page.summary, page.doc = _docs(cls)
            page.version = str(cls.version)
            page.params = _params(cls)
            page.requires = sorted(getattr(cls, "requires", ()))
            page.distribution = _distribution("evaluators", name)
            page.metrics = [MetricRow(m.name, m.higher_is_better, m.headline, m.diagnostic, _bounds(m.bounds),
                                      m.description, m.read_beside, m.caveat) for m in cls.metrics]
        else:
            heads = _recorded_directions(submissions, name)
            page.metrics = [MetricRow(m, heads.get(m, (True, False))[0], heads.get(m, (True, False))[1], i.diagnostic,
                                      _bounds(i.bounds), i.description, i.read_beside, i.caveat)
                            for m, i in sorted(recorded.items())]
        page.versions = [(v, n, bool(page.version) and v != page.version)
                         for v, n in sorted(seen.get(name, {}).items())]
        page.history = history_rows(cls, page.version, seen.get(name, {}))
        page.tables = _appearances(tables, lambda t, r, name=name: name in r.evaluators)
        pages.append(page)
    return _with_files(pages)


def history_rows(cls: Any, installed: str, seen: dict[str, int]) -> list[HistoryRow]:
    """The declared ``history`` of ``cls`` (None: not installed) in its order, then the versions seen only in the
    submissions; each row marked installed, with its result rows, stale when seen and not the installed version."""
    declared = getattr(cls, "history", None) or {}
    declared = dict(declared) if isinstance(declared, Mapping) else {}
    versions = list(declared) + sorted(v for v in seen if v not in declared)
    return [HistoryRow(v, str(declared.get(v, "")), bool(installed) and v == installed, seen.get(v, 0),
                       v in seen and bool(installed) and v != installed) for v in versions]


def _versions_seen(submissions: list[LoadedSubmission]) -> dict[str, dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}
    for s in submissions:
        counts = s.results[s.results["evaluator"] != TRAINING].groupby(["evaluator", "evaluator_version"]).size()
        for (evaluator, version), n in counts.items():
            seen.setdefault(str(evaluator), {})
            seen[str(evaluator)][str(version)] = seen[str(evaluator)].get(str(version), 0) + int(n)
    return seen


def _recorded_directions(submissions: list[LoadedSubmission], evaluator: str) -> dict[str, tuple[bool, bool]]:
    out: dict[str, tuple[bool, bool]] = {}
    for s in submissions:
        rows = s.results[s.results["evaluator"] == evaluator].drop_duplicates("metric")
        for r in rows.itertuples():
            out.setdefault(str(r.metric), (bool(r.higher_is_better), bool(r.headline)))
    return out


def _bounds(bounds: tuple[float, float]) -> str:
    low, high = bounds
    left = "(−∞" if math.isinf(low) else f"[{low:g}"
    right = "∞)" if math.isinf(high) else f"{high:g}]"
    return f"{left}, {right}".replace("-", "−")


def sanity_rows(submissions: list[LoadedSubmission], tables: list[Table]) -> list[SanityRow]:
    """``fooled`` against ``erm`` for every saliency headline of every table, per submission (:func:`sanity_view`)."""
    return sanity_view(submissions, tables)[0]


def sanity_view(submissions: list[LoadedSubmission], tables: list[Table]
                ) -> tuple[list[SanityRow], list[SanityLeftOut]]:
    """``fooled`` against ``erm`` for every saliency headline of every table, per submission, and the tables in which
    a submission's ``fooled`` collapsed (left out of the gate)."""
    titles = {(t.dataset, t.backbone_name, t.backbone_params, t.train_label): t.title for t in tables}

    def title_of(r: Any) -> str:
        return titles.get((r.dataset, r.backbone, r.backbone_params, r.train_label),
                          f"{r.dataset} × {r.backbone}{params_label(r.backbone_params)}")

    rows, left_out = [], []
    for s in submissions:
        suites = [record.suite for record in s.submission.provenance.suites]
        rule = rule_of(suites)
        # the gate compares the control with erm alone: the other rows would only cost time (ranks, Δs)
        pair = s.results[s.results["regularizer"].isin([BASELINE, CONTROL])]
        table, collapsed = sanity_gate(pair, dataset_classes(pair["dataset"].astype(str), suites), rule, CONTROL)
        left_out += [SanityLeftOut(title_of(r), s.submission.metadata.name, str(r.collapse_reason), rule.text)
                     for r in collapsed.itertuples()]
        for r in table.itertuples():
            title = title_of(r)
            delta = "" if pd.isna(r.delta_low) else (f"[{fmt(float(r.delta_low), scale=float(r.erm))}, "
                                                     f"{fmt(float(r.delta_high), scale=float(r.erm))}]")
            rows.append(SanityRow(title, s.submission.metadata.name, r.evaluator, r.metric,
                                  "↑" if r.higher_is_better else "↓", fmt(float(r.erm)), fmt(float(r.fooled)), delta,
                                  str(r.verdict), bool(r.passes)))
    return (sorted(rows, key=lambda r: (r.table, r.submission, r.evaluator, r.metric)),
            sorted(left_out, key=lambda r: (r.table, r.submission)))


def verification(loaded: LoadedSubmission) -> Verification:
    """The badge of one submission, from :func:`gibench.submissions.verify.verification_status` (its
    ``verification.json``, written by ``gibench verify``): ``verified`` with the date, tolerance and number of re-run
    jobs (its text and ``check`` say whether they were re-trained or their submitted models re-evaluated);
    ``disagrees`` (some re-computed metric differed beyond the tolerance); ``stale`` (an evaluator's installed version
    differs from the one it was verified with: the check no longer covers the installed code); ``unverified`` (no
    record, or one made for other results or, for a re-evaluation, other models)."""
    from gibench.submissions.verify import verification_status

    status = verification_status(loaded)
    date = (status.date or "")[:10]
    tolerance = "" if status.tolerance is None else f"|Δ| ≤ {status.tolerance:g}"
    jobs = f"{status.jobs_checked} job{'s' if status.jobs_checked != 1 else ''}"
    check = status.check if status.date else ""
    if status.state == "verified" and check == "reevaluated":
        return Verification("verified", f"re-evaluated {date}, {tolerance}",
                            f"`gibench verify --reevaluate` loaded the submitted models of {jobs} (each checked "
                            f"against its SHA-256) and re-ran their evaluations on {date}: every metric agreed within "
                            f"{tolerance} (absolute). {status.detail}. Re-training them (`gibench verify`) is the "
                            "stronger check.", check)
    if status.state == "verified":
        return Verification("verified", f"verified {date}, {tolerance}",
                            f"`gibench verify` re-trained and re-evaluated {jobs} on {date}: every metric agreed "
                            f"within {tolerance} (absolute). {status.detail}.", check)
    if status.state == "disagrees":
        how = ("`gibench verify --reevaluate` re-evaluated the submitted models of" if check == "reevaluated"
               else "`gibench verify` re-ran")
        return Verification("disagrees", f"disagrees {date}",
                            f"{how} {jobs} on {date} and some metrics differed by more than {tolerance}: "
                            f"{status.detail}.", check)
    if status.state == "stale":
        return Verification("stale", "stale", f"Verified on {date} with other evaluator versions: {status.detail}.",
                            check)
    return Verification("unverified", "unverified", f"Not verified ({status.detail}).")


def model_links(loaded: LoadedSubmission) -> list[ModelLink]:
    """The models ``loaded`` references in its ``models.json`` (empty for none), in its order."""
    from gibench.submissions.submitted_models import submitted_models

    links = []
    for entry in submitted_models(loaded):
        weights = entry.files["model.safetensors"]
        card = entry.files.get("card.md") or entry.files.get("card.json")
        links.append(ModelLink(entry.identity.name, entry.identity.train_label, entry.identity.job_hash,
                               weights.url or "", (card.url or "") if card is not None else "", weights.sha256,
                               (weights.url or "").startswith("https://")))
    return links
