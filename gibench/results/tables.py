"""The results table: every stored evaluation as a long pandas DataFrame, and the one aggregation of it.

One row per job × evaluator × metric (:data:`COLUMNS`). Skipped and failed evaluations keep their rows, with a NaN
value, their status and their ``reason``, and a job whose training failed has one ``failed`` row of the
pseudo-evaluator :data:`TRAINING`, so nothing silently disappears from a report or the site. ``train_hash`` and
``train_label`` (:func:`train_columns`) name the job's resolved training config. The ``auxiliary`` column holds (as
JSON) the auxiliary models an evaluation depended on (a GAN-test judge, a denoiser, DiffROAR's retrained models) with
their own quality figures; :func:`auxiliary_table` lists them once each, next to the evaluator and dataset whose
numbers use them.

:func:`summarize` is the one aggregation, used by ``gibench report``, its CSV and the leaderboard site: a row is one
exact configuration (:data:`ROW_KEYS`: dataset, backbone and options, training config, regularizer and options,
evaluator version and options); seeds aggregate only within a row, into a mean with its 95 % interval, Δ against the
``erm`` row of the same table with its own interval, and rank ranges (methods: :mod:`gibench.results.stats`);
:mod:`gibench.results.collapse` then judges each row against erm's accuracy (collapsed rows lose their rank).
:func:`agreement_table` is the evaluator agreement (Spearman's ρ between headline metrics across variants).
"""

from __future__ import annotations

__all__ = [
    "BASELINE", "COLUMNS", "FailedJob", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "ROW_KEYS", "TABLE_KEYS", "TRAINING",
    "add_ranks", "agreement_table", "auxiliary_table", "collect_results", "complete", "evaluations_of", "failed_jobs",
    "metric_label", "mixed_versions", "sanity_table", "summarize", "sweep_point_mask", "train_columns",
]

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gibench.core.identity import identity_hash
from gibench.results.stats import Interval, difference_interval, mean_interval, rank_ranges
from gibench.store.records import JobRecord, PluginSource, ResultRecord
from gibench.store.runs import RunStore

#: The results table's schema, defined once (a submission's ``results.csv`` is this table): column -> kind, one of
#: str (non-empty text), text (any text), json (a JSON object), int, float (empty = NaN), bool, status (ok, skipped or
#: failed). Every table must have these columns.
REQUIRED_COLUMNS: dict[str, str] = {
    "job_hash": "str", "dataset": "str", "backbone": "str", "backbone_params": "json", "regularizer": "str",
    "regularizer_params": "json", "variant": "str", "seed": "int", "evaluator": "str", "evaluator_version": "str",
    "evaluator_params": "json", "metric": "str", "value": "float", "higher_is_better": "bool", "headline": "bool",
    "status": "status", "regularizer_distribution": "text", "regularizer_plugin_version": "text",
    "evaluator_distribution": "text", "evaluator_plugin_version": "text",
}
#: Columns added after the first submissions were made: written always, read as their default where absent
#: (:func:`complete`).
OPTIONAL_COLUMNS: dict[str, str] = {"auxiliary": "text", "train_hash": "text", "train_label": "text", "reason": "text"}
COLUMNS = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]
BASELINE = "erm"


def collect_results(runs_dir: Path, job_hashes: set[str] | None = None,
                    warn: Callable[[str], None] | None = None,
                    evaluations: set[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """The long results table of every job under ``runs_dir`` (optionally only ``job_hashes``).

    A job whose training failed has no evaluations; it gets one row of the pseudo-evaluator :data:`TRAINING`
    (metric ``trained``, not a headline, status ``failed``, its recorded ``reason``), so the report, the CSV, a
    submission and the site show it instead of letting it vanish.

    ``evaluations`` keeps only results whose (evaluator, version, config hash) is listed (the hash recomputed from the
    result's recorded config, so a store not yet re-keyed by :mod:`gibench.store.rekey` reads the same): ``gibench run``
    passes the suite's own evaluations, so results of an older evaluator version stored for the same job stay out of its
    report (:func:`evaluations_of` computes the set for a suite).

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
            if evaluations is None or (result.evaluator, result.version, identity_hash(result.config)) in evaluations:
                rows.extend(_rows(job, result))
        status = folder.status()
        if status is not None and status.state == "failed":
            rows.extend(_rows(job, _training_failure(status.reason or "no reason recorded")))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"seed": "int64", "value": "float64", "higher_is_better": "bool", "headline": "bool"})


#: The pseudo-evaluator whose one ``failed`` row stands for a job whose training failed.
TRAINING = "training"


def _training_failure(reason: str) -> ResultRecord:
    from gibench.version import __version__

    return ResultRecord(evaluator=TRAINING, version="-", params={}, config={}, config_hash="",
                        metrics=[{"name": "trained", "higher_is_better": True, "headline": False}],
                        plugin=PluginSource(distribution="gibench", version=__version__), status="failed",
                        reason=f"training failed: {reason}")


def evaluations_of(suite) -> set[tuple[str, str, str]]:
    """(evaluator, installed version, config hash) of every evaluation of a suite."""
    from gibench.api import registry
    return {(spec.name, registry.evaluators.get(spec.name).version, identity_hash(spec.config))
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


def train_columns(train: dict, validation: dict | None = None) -> dict[str, str]:
    """``train_hash``: the first 8 hex digits of the SHA-256 of the job's resolved training config (as hashed into the
    job hash), so runs trained differently never share a row; ``train_label``: a short human label of it (epochs,
    optimizer, learning rate, augmentation when not ``none``), e.g. ``"3 ep · adam · lr 0.001"``.

    ``validation`` (the job's held-out validation split, ``{fraction, seed}``, from its dataset spec) joins the hash and
    the label (``"· 10 % held out"``) when present: a model trained on part of the training split never shares a row
    with one trained on all of it; without it the hash is what it always was."""
    if not train:
        return {"train_hash": "", "train_label": ""}
    if validation:
        columns = train_columns(train)
        return {"train_hash": identity_hash({"train": train, "validation": validation}, length=8),
                "train_label": f"{columns['train_label']} · {validation.get('fraction', 0) * 100:g} % held out"}
    label = f"{train.get('epochs', '?')} ep · {train.get('optimizer', '?')}"
    if isinstance(train.get("lr"), (int, float)):
        label += f" · lr {train['lr']:g}"
    if train.get("augment", "none") != "none":
        label += f" · {train['augment']}"
    return {"train_hash": identity_hash(train, length=8), "train_label": label}


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
        **train_columns(job.spec.get("train", {}), job.spec.get("dataset", {}).get("validation")),
        "reason": result.reason or "",
    }
    scalars = result.scalars or {}
    return [
        {**base, "metric": m["name"], "value": scalars.get(m["name"], math.nan),
         "higher_is_better": m["higher_is_better"], "headline": m["headline"]}
        for m in result.metrics
    ]


TABLE_KEYS = ["dataset", "backbone", "backbone_params", "train_hash", "train_label"]
VARIANT_KEYS = ["regularizer", "regularizer_params", "variant"]
METRIC_KEYS = ["evaluator", "evaluator_version", "evaluator_params", "metric"]
#: One row of every view (report, CSV, submission, site): a table (dataset, backbone and options, training config),
#: a variant (regularizer and options) and an evaluator metric (evaluator version and options).
ROW_KEYS = [*TABLE_KEYS, *VARIANT_KEYS, *METRIC_KEYS]
_DEFAULTS = {"job_hash": "", "backbone_params": "{}", "regularizer_params": "{}", "evaluator_version": "",
             "evaluator_params": "{}", "train_hash": "", "train_label": "", "reason": ""}


def summarize(frame: pd.DataFrame, baseline: str = BASELINE, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per row (:data:`ROW_KEYS`, plus ``by``, e.g. the submission on the site): the mean over seeds with its 95 %
    interval, the change against the baseline with its own interval, and the variant's rank range in its table.

    Columns: the keys, ``higher_is_better``, ``headline``, ``mean``, ``std`` (ddof = 1; NaN for one seed), ``n_ok``
    (seeds with an ``ok`` value), ``n_seeds`` (seeds with any result), ``ci_low``/``ci_high`` (Student-t, NaN for one
    seed), ``statuses``/``reasons`` (of the non-ok results, separated by ``,`` and :data:`REASON_SEPARATOR`),
    ``delta_vs_erm`` with ``delta_low``/``delta_high``/``delta_method`` (paired t when both rows have the same seeds,
    else Welch's t; see :mod:`gibench.results.stats`), ``verdict`` (``better``/``worse`` only when the Δ interval
    excludes zero, else empty), ``better_than_erm`` (verdict is better), and ``rank``/``rank_best``/``rank_worst`` (see
    :func:`add_ranks`).

    Δ is against the ``baseline`` row with the same ``by`` keys, dataset, backbone and options, training config and
    evaluator version and options; none when there is no such row, or more than one (erm with different options).
    """
    by = list(by)
    frame = complete(frame)
    keys = [*by, *ROW_KEYS]
    stats = pd.DataFrame([_summarize_group(group) | dict(zip(keys, key))
                          for key, group in frame.groupby(keys, sort=False, dropna=False)],
                         columns=[*keys, *_STAT_COLUMNS, "_seeds"])
    stats = _add_deltas(stats, baseline, [*by, *TABLE_KEYS, *METRIC_KEYS])
    return add_ranks(stats.drop(columns="_seeds"))


#: Between the distinct reasons of a row's skipped or failed results in ``reasons`` (a reason may contain "; ").
REASON_SEPARATOR = " | "
_STAT_COLUMNS = ["higher_is_better", "headline", "mean", "std", "n_ok", "n_seeds", "ci_low", "ci_high", "statuses",
                 "reasons"]


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the optional columns that older stores and submissions lack, and one JSON spelling per set of
    options (sorted keys), so that equal options always fall into one row."""
    frame = frame.copy()
    if "regularizer" not in frame.columns:
        frame["regularizer"] = frame["variant"].str.split("(", n=1).str[0]
    for column, default in _DEFAULTS.items():
        frame[column] = frame[column].fillna(default).astype(str) if column in frame.columns else default
    for column in ("backbone_params", "regularizer_params", "evaluator_params"):
        frame[column] = frame[column].map(lambda text: json.dumps(json.loads(text or "{}"), sort_keys=True))
    return frame


def sweep_point_mask(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.Series:
    """True on the rows of ``frame`` that belong to settings trained only for a strength sweep: in a table (and
    ``by``, e.g. a submission) that holds validation accuracies, a variant whose every result is a validation accuracy
    or a failed training. A suite that selects (:mod:`gibench.running.selection`) trains every swept setting with the
    sweep's seeds and scores only the one it selects, so such a variant has no number on the test split: it is a point
    of the selection's curve (``gibench report`` prints the curves, the site draws them), not a row of a results table,
    and a table of every swept setting would bury the settings compared at matched accuracy."""
    from gibench.suites.jobs import VALIDATION_EVALUATOR

    if frame.empty:
        return pd.Series(False, index=frame.index, dtype=bool)
    frame = complete(frame)
    tables = [*by, *TABLE_KEYS]
    validation = frame["evaluator"] == VALIDATION_EVALUATOR.name
    scored = ~(validation | (frame["evaluator"] == TRAINING))
    selects = validation.groupby([frame[k] for k in tables], dropna=False).transform("any")
    variant_scored = scored.groupby([frame[k] for k in [*tables, *VARIANT_KEYS]], dropna=False).transform("any")
    return (selects & ~variant_scored).astype(bool)


def _summarize_group(group: pd.DataFrame) -> dict:
    ok = group[(group["status"] == "ok") & group["value"].notna()]
    # keyed by seed for pairing; two jobs of one row with the same seed (e.g. a regularizer version bump kept both)
    # are both kept, keyed by (seed, job hash), which makes a Δ unpaired (Welch) rather than silently drop one
    unique = not ok["seed"].duplicated().any()
    seeds = {(int(s) if unique else (int(s), h)): float(v) for s, h, v in zip(ok["seed"], ok["job_hash"], ok["value"])}
    interval = mean_interval(list(seeds.values()))
    problems = group[group["status"] != "ok"]
    values = list(seeds.values())
    return {
        "higher_is_better": bool(group["higher_is_better"].iloc[0]), "headline": bool(group["headline"].iloc[0]),
        "mean": interval.estimate, "std": float(pd.Series(values).std()) if len(values) > 1 else math.nan,
        "n_ok": len(seeds), "n_seeds": max(int(group["seed"].nunique()), len(seeds)), "ci_low": interval.low,
        "ci_high": interval.high, "statuses": ",".join(sorted(set(problems["status"]))),
        "reasons": REASON_SEPARATOR.join(sorted({r for r in problems["reason"] if r})), "_seeds": seeds,
    }


def _add_deltas(stats: pd.DataFrame, baseline: str, match: list[str]) -> pd.DataFrame:
    base = stats[stats["regularizer"] == baseline].drop_duplicates(match, keep=False)
    base_seeds = {tuple(r[k] for k in match): r["_seeds"] for r in base.to_dict("records")}
    intervals = [difference_interval(r["_seeds"], base_seeds.get(tuple(r[k] for k in match), {}))
                 if r["regularizer"] != baseline else None for r in stats.to_dict("records")]
    stats["delta_vs_erm"] = [i.estimate if i else math.nan for i in intervals]
    stats["delta_low"] = [i.low if i else math.nan for i in intervals]
    stats["delta_high"] = [i.high if i else math.nan for i in intervals]
    stats["delta_method"] = [i.method if i else "" for i in intervals]
    stats["verdict"] = [_verdict(i, higher) for i, higher in zip(intervals, stats["higher_is_better"])]
    stats["better_than_erm"] = stats["verdict"] == "better"
    return stats


def _verdict(interval: Interval | None, higher_is_better: bool) -> str:
    """``better``/``worse`` in the metric's direction when the Δ interval excludes zero; else ``""``."""
    if interval is None or not interval.excludes_zero():
        return ""
    return "better" if (interval.low > 0) == bool(higher_is_better) else "worse"


def add_ranks(stats: pd.DataFrame) -> pd.DataFrame:
    """``rank``, ``rank_best``, ``rank_worst`` of each row among the variants of its table on the same metric
    (:data:`TABLE_KEYS` × :data:`METRIC_KEYS`, across every ``by`` group, e.g. every submission of a site table):
    1 = best in the metric's direction; the range is what the 95 % intervals allow
    (:func:`gibench.results.stats.rank_ranges`). Rows without an ok value, or collapsed, get no rank."""
    stats = stats.copy()
    for column in ("rank", "rank_best", "rank_worst"):
        stats[column] = pd.array([pd.NA] * len(stats), dtype="Int64")
    ranked = stats[(stats["n_ok"] > 0) & (stats.get("collapse", "") != "collapsed")]  # gibench.results.collapse
    for _, group in ranked.groupby([*TABLE_KEYS, *METRIC_KEYS], sort=False):
        ranges = rank_ranges(group["mean"].tolist(), group["ci_low"].tolist(), group["ci_high"].tolist(),
                             bool(group["higher_is_better"].iloc[0]))
        stats.loc[group.index, "rank"] = [r.rank for r in ranges]
        stats.loc[group.index, "rank_best"] = [r.best for r in ranges]
        stats.loc[group.index, "rank_worst"] = [r.worst for r in ranges]
    return stats


def metric_label(evaluator: str, metric: str, higher_is_better: bool) -> str:
    """``pixel_perturbation: auc ↓``; ``accuracy ↑`` when the metric is named like its evaluator."""
    name = evaluator if metric == evaluator else f"{evaluator}: {metric}"
    return f"{name} {'↑' if higher_is_better else '↓'}"


def agreement_table(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Evaluator agreement: per table (:data:`TABLE_KEYS`), Spearman's ρ between every two headline metrics across
    the variants (and ``by`` groups) that have both, collapsed ones left out, each turned so that higher is better; ρ
    is NaN with fewer than 3 such variants, or when either metric is the same for all of them. Columns: table keys,
    ``metric_a``, ``metric_b`` (labels as :func:`metric_label`, with the evaluator version when a table holds two),
    ``rho``, ``n_variants``."""
    columns = [*TABLE_KEYS, "metric_a", "metric_b", "rho", "n_variants"]
    heads = stats[stats["headline"] & (stats["n_ok"] > 0) & (stats.get("collapse", "") != "collapsed")]
    rows = []
    for key, table in heads.groupby(TABLE_KEYS, sort=False):
        table = table.assign(_label=[metric_label(r.evaluator, r.metric, r.higher_is_better)
                                     + (f" v{r.evaluator_version}{_params(r.evaluator_params)}"
                                        if _ambiguous(table, r) else "") for r in table.itertuples()],
                             _aligned=table["mean"].where(table["higher_is_better"], -table["mean"]))
        wide = table.pivot_table(index=[*by, *VARIANT_KEYS], columns="_label", values="_aligned", aggfunc="first")
        labels = list(wide.columns)
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                both = wide[[a, b]].dropna()
                # a constant column (e.g. accuracy 1.000 for every variant) has no ranking: ρ is undefined
                defined = len(both) >= 3 and both[a].nunique() > 1 and both[b].nunique() > 1
                rho = both[a].corr(both[b], method="spearman") if defined else math.nan
                rows.append(dict(zip(TABLE_KEYS, key)) | {"metric_a": a, "metric_b": b, "rho": float(rho),
                                                          "n_variants": len(both)})
    return pd.DataFrame(rows, columns=columns)


def _ambiguous(table: pd.DataFrame, row) -> bool:
    same = table[(table["evaluator"] == row.evaluator) & (table["metric"] == row.metric)]
    return len(same[["evaluator_version", "evaluator_params"]].drop_duplicates()) > 1


def _params(params_json: str) -> str:
    params = json.loads(params_json or "{}")
    return "(" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else ""


def sanity_table(frame: pd.DataFrame, control: str = "fooled", baseline: str = BASELINE) -> pd.DataFrame:
    """The meta-evaluation: does every saliency evaluator rank the ``fooled`` control below ``erm``?

    ``fooled`` keeps accuracy while its logit-gradients are trained toward a meaningless target (softmax
    shift-invariance), so an evaluator that does not score it worse than ``erm`` on the same dataset and backbone is
    not measuring the explanations. One row per (dataset, backbone and options, training config, evaluator headline);
    ``passes`` is True when the control's mean is worse in the metric's direction, and ``verdict`` (with
    ``delta_low``/``delta_high``, the control's Δ interval) says whether that difference exceeds the seed noise
    (``worse``) or not (``""``). Evaluators with ``judges_saliency = False`` (accuracy) are left out, and so are
    evaluations skipped on every seed of the row (they measured nothing) and metrics declared ``diagnostic`` (plain
    MPRT ranks ``fooled`` above ``erm`` by design; it is reported, never gated).
    """
    from gibench.api import registry

    stats = summarize(frame, baseline)
    stats = stats[stats["headline"] & stats["evaluator"].map(lambda n: _judges_saliency(registry, n))]
    gated = [not _diagnostic(registry, e, m) for e, m in zip(stats["evaluator"], stats["metric"])]
    stats = stats[pd.Series(gated, index=stats.index, dtype=bool)]
    stats = stats[stats["n_ok"] > 0]  # an evaluator skipped on every seed (blockmnist without a signal mask) has no say
    keys = [*TABLE_KEYS, *METRIC_KEYS, "higher_is_better"]
    base = stats[stats["variant"] == baseline][keys + ["mean"]].rename(columns={"mean": "erm"})
    ctrl = stats[stats["regularizer"] == control][keys + ["variant", "mean", "delta_low", "delta_high", "verdict"]]
    table = ctrl.rename(columns={"mean": control}).merge(base, on=keys, how="inner")
    sign = table["higher_is_better"].map({True: 1.0, False: -1.0})
    table["passes"] = (table["erm"] - table[control]) * sign > 0
    return table[["dataset", "backbone", "backbone_params", "train_label", "variant", "evaluator", "metric",
                  "higher_is_better", "erm", control, "delta_low", "delta_high", "verdict", "passes"]]


def _diagnostic(registry, evaluator: str, metric: str) -> bool:
    """Whether the evaluator declares ``metric`` diagnostic (reported, never gated or ranked: plain MPRT)."""
    try:
        return any(m.name == metric and m.diagnostic for m in registry.evaluators.get(evaluator).metrics)
    except Exception:  # an evaluator no longer installed: keep its rows rather than hide them
        return False


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
