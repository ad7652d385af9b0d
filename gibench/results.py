"""The results table: every stored evaluation as a long pandas DataFrame, seed aggregation and baseline deltas.

One row per job × evaluator × metric (:data:`COLUMNS`). Skipped and failed evaluations keep their rows, with a NaN
value and their status, so nothing silently disappears from a report. The ``auxiliary`` column holds (as JSON) the
auxiliary models an evaluation depended on (a GAN-test judge, a denoiser, DiffROAR's retrained models) with their own
quality figures; :func:`auxiliary_table` lists them once each, next to the evaluator and dataset whose numbers use them.
"""

from __future__ import annotations

__all__ = [
    "BASELINE", "COLUMNS", "FailedJob", "GROUP", "auxiliary_table", "collect_results", "evaluations_of",
    "failed_jobs", "headline_table", "mixed_versions", "sanity_table", "summarize",
]

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gibench.records import JobRecord, ResultRecord
from gibench.store import RunStore

COLUMNS = [
    "job_hash", "dataset", "backbone", "backbone_params", "regularizer", "regularizer_params", "variant", "seed",
    "evaluator", "evaluator_version", "evaluator_params", "metric", "value", "higher_is_better", "headline",
    "status", "regularizer_distribution", "regularizer_plugin_version", "evaluator_distribution",
    "evaluator_plugin_version", "auxiliary",
]
GROUP = ["dataset", "backbone", "variant", "evaluator", "metric"]
BASELINE = "erm"


def collect_results(runs_dir: Path, job_hashes: set[str] | None = None,
                    warn: Callable[[str], None] | None = None,
                    evaluations: set[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """The long results table of every job under ``runs_dir`` (optionally only ``job_hashes``).

    ``evaluations`` keeps only results whose (evaluator, version, config hash) is listed: ``gibench run`` passes the
    suite's own evaluations, so results of an older evaluator version stored for the same job stay out of its report
    (:func:`evaluations_of` computes the set for a suite).

    Read-only: a damaged job.json or result file is skipped with a warning naming it (``warn``, default
    ``warnings.warn``); ``gibench run`` or ``gibench doctor --fix`` moves such files aside.
    """
    rows = []
    for folder in RunStore(Path(runs_dir), repair=False, warn=warn).jobs():
        if job_hashes is not None and folder.hash not in job_hashes:
            continue
        job = folder.spec()
        if job is None:
            continue
        for result in folder.results():
            if evaluations is None or (result.evaluator, result.version, result.config_hash) in evaluations:
                rows.extend(_rows(job, result))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"seed": "int64", "value": "float64", "higher_is_better": "bool", "headline": "bool"})


def evaluations_of(suite) -> set[tuple[str, str, str]]:
    """(evaluator, installed version, config hash) of every evaluation of a suite."""
    from gibench import registry
    from gibench.fsio import canonical_hash

    return {(spec.name, registry.evaluators.get(spec.name).version, canonical_hash(spec.config))
            for spec in suite.evaluators}


def mixed_versions(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Evaluators with results of more than one version in ``frame`` (their rows would be averaged together)."""
    versions = frame.groupby("evaluator")["evaluator_version"].unique()
    return {str(name): sorted(map(str, v)) for name, v in versions.items() if len(v) > 1}


@dataclass(frozen=True)
class FailedJob:
    hash: str
    label: str
    reason: str


def failed_jobs(runs_dir: Path, job_hashes: set[str] | None = None,
                warn: Callable[[str], None] | None = None) -> list[FailedJob]:
    """Jobs whose training failed (they have no results, so the results table cannot show them)."""
    failed = []
    for folder in RunStore(Path(runs_dir), repair=False, warn=warn).jobs():
        if job_hashes is not None and folder.hash not in job_hashes:
            continue
        status, job = folder.status(), folder.spec()
        if status is not None and status.state == "failed":
            label = (f"{job.labels.dataset} / {job.labels.backbone} / {job.labels.variant} / seed {job.labels.seed}"
                     if job else folder.hash)
            failed.append(FailedJob(folder.hash, label, status.reason or "no reason recorded"))
    return failed


def _rows(job: JobRecord, result: ResultRecord) -> list[dict]:
    labels, plugins = job.labels, job.plugins
    base = {
        "job_hash": job.hash, "dataset": labels.dataset, "backbone": labels.backbone,
        "backbone_params": json.dumps(labels.backbone_params, sort_keys=True),
        "regularizer": labels.regularizer, "regularizer_params": json.dumps(labels.regularizer_params),
        "variant": labels.variant, "seed": labels.seed, "evaluator": result.evaluator,
        "evaluator_version": result.version, "evaluator_params": json.dumps(result.params),
        "status": result.status,
        "regularizer_distribution": plugins["regularizer"].distribution,
        "regularizer_plugin_version": plugins["regularizer"].version,
        "evaluator_distribution": result.plugin.distribution,
        "evaluator_plugin_version": result.plugin.version,
        "auxiliary": json.dumps(result.auxiliary, sort_keys=True),
    }
    scalars = result.scalars or {}
    return [
        {**base, "metric": m["name"], "value": scalars.get(m["name"], math.nan),
         "higher_is_better": m["higher_is_better"], "headline": m["headline"]}
        for m in result.metrics
    ]


def summarize(frame: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, backbone, variant, evaluator, metric), with the change against the baseline.

    ``delta_vs_erm`` is the mean minus the baseline's mean on the same dataset, backbone, evaluator and metric (NaN
    where the suite has no baseline); ``better_than_erm`` applies the metric's direction to it.
    """
    ok = frame[frame["status"] == "ok"]
    stats = (
        ok.groupby(GROUP + ["higher_is_better", "headline"], sort=False)["value"]
        .agg(mean="mean", std="std", n_seeds="count")
        .reset_index()
    )
    stats["std"] = stats["std"].fillna(0.0)
    base = stats[stats["variant"] == baseline][["dataset", "backbone", "evaluator", "metric", "mean"]]
    base = base.rename(columns={"mean": "baseline_mean"})
    stats = stats.merge(base, on=["dataset", "backbone", "evaluator", "metric"], how="left")
    stats["delta_vs_erm"] = stats["mean"] - stats["baseline_mean"]
    sign = stats["higher_is_better"].map({True: 1.0, False: -1.0})
    stats["better_than_erm"] = (stats["delta_vs_erm"] * sign) > 0
    return stats.drop(columns="baseline_mean")


def headline_table(frame: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per (dataset, backbone, variant) and one column per evaluator headline: ``mean ± std (Δ vs erm)``."""
    stats = summarize(frame, baseline)
    stats = stats[stats["headline"]]
    stats["cell"] = [_cell(r) for r in stats.itertuples()]
    stats["column"] = [f"{r.evaluator}: {r.metric} {'↑' if r.higher_is_better else '↓'}" for r in stats.itertuples()]
    table = stats.pivot_table(index=["dataset", "backbone", "variant"], columns="column", values="cell",
                              aggfunc="first", sort=False)
    table.columns.name = None
    table = table.reset_index()
    order = table.assign(_not_baseline=table["variant"] != baseline)
    order = order.sort_values(["dataset", "backbone", "_not_baseline", "variant"], kind="stable")
    return order.drop(columns="_not_baseline").reset_index(drop=True)


def _cell(row) -> str:
    text = f"{row.mean:.4f}"
    if row.n_seeds > 1:
        text += f" ± {row.std:.4f}"
    if isinstance(row.delta_vs_erm, float) and not math.isnan(row.delta_vs_erm) and row.variant != BASELINE:
        text += f" ({row.delta_vs_erm:+.4f})"
    return text


def sanity_table(frame: pd.DataFrame, control: str = "fooled", baseline: str = BASELINE) -> pd.DataFrame:
    """The meta-evaluation: does every saliency evaluator rank the ``fooled`` control below ``erm``?

    ``fooled`` keeps accuracy while its logit-gradients are trained toward a meaningless target (softmax
    shift-invariance), so an evaluator that does not score it worse than ``erm`` on the same dataset and backbone is
    not measuring the explanations. One row per (dataset, backbone, evaluator headline); ``passes`` is True when the
    control is worse in the metric's direction. Evaluators with ``judges_saliency = False`` (accuracy) are left out.
    """
    from gibench import registry

    stats = summarize(frame, baseline)
    stats = stats[stats["headline"] & stats["evaluator"].map(lambda n: _judges_saliency(registry, n))]
    stats = stats.assign(regularizer=stats["variant"].str.split("(", n=1).str[0])
    keys = ["dataset", "backbone", "evaluator", "metric", "higher_is_better"]
    base = stats[stats["variant"] == baseline][keys + ["mean"]].rename(columns={"mean": "erm"})
    ctrl = stats[stats["regularizer"] == control][keys + ["variant", "mean"]].rename(columns={"mean": control})
    table = ctrl.merge(base, on=keys, how="inner")
    sign = table["higher_is_better"].map({True: 1.0, False: -1.0})
    table["passes"] = (table["erm"] - table[control]) * sign > 0
    return table[["dataset", "backbone", "variant", "evaluator", "metric", "higher_is_better", "erm", control, "passes"]]


def _judges_saliency(registry, name: str) -> bool:
    try:
        return registry.evaluators.get(name).judges_saliency
    except Exception:  # an evaluator no longer installed: keep its rows rather than hide them
        return True


def auxiliary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, evaluator, auxiliary model kind): how many models, how many jobs used them, and each
    quality figure as ``min – max`` over the models (one value when there is one model, e.g. a judge shared by every
    job of a dataset). Empty when no evaluation used an auxiliary model."""
    rows = []
    evaluations = frame.drop_duplicates(["job_hash", "evaluator", "evaluator_version", "evaluator_params"])
    for r in evaluations.itertuples():
        for aux in json.loads(r.auxiliary or "[]"):
            rows.append({"dataset": r.dataset, "evaluator": r.evaluator, "kind": aux["kind"], "hash": aux["hash"],
                         "job_hash": r.job_hash, **{f"quality:{k}": v for k, v in aux["quality"].items()}})
    columns = ["dataset", "evaluator", "kind", "models", "jobs", "quality"]
    if not rows:
        return pd.DataFrame(columns=columns)
    used = pd.DataFrame(rows)
    out = []
    for (dataset, evaluator, kind), group in used.groupby(["dataset", "evaluator", "kind"], sort=True):
        models = group.drop_duplicates("hash")
        figures = []
        for column in sorted(c for c in models.columns if c.startswith("quality:")):
            values = models[column].dropna()
            if len(values):
                low, high = values.min(), values.max()
                figures.append(f"{column[8:]} {low:.4g}" + (f"–{high:.4g}" if high != low else ""))
        out.append({"dataset": dataset, "evaluator": evaluator, "kind": kind, "models": len(models),
                    "jobs": group["job_hash"].nunique(), "quality": ", ".join(figures)})
    return pd.DataFrame(out, columns=columns)
