"""Markdown tables of chosen metrics from a finished runs directory, one table per dataset, for docs/benchmarks.md.

Run (seconds; reads the store, trains nothing)::

    python benchmarks/metric_tables.py --runs-dir RUNS [--metrics random_logit.cosine complexity.gini ...] \\
        [--backbone-params '{"act": "softplus"}'] [--saliency input_gradient] [--delta] [--suite standard] \\
        [--markdown out.md]

Every cell is one exact configuration (dataset, backbone with its options, training config, regularizer with its
options, evaluator version with its options): ``gibench.results.summarize`` groups by all of them and never pools
unlike rows. A cell shows the mean over the row's seeds; with two or more seeds also the 95 % Student-t half-width
and the seed count (``0.512 ± 0.031 (3)``); with ``--delta`` a second line per regularizer shows Δ against ``erm``
of the same table, paired by seed when both rows share at least two seeds, and a ✓/✗ when that Δ interval excludes
zero in the metric's better/worse direction (no mark: the interval includes zero, or one seed and no interval).

``--suite`` keeps only that suite's jobs (by job hash, so probes or other suites sharing the runs directory stay
out) and orders the rows as the suite lists its regularizers. ``--metrics`` takes ``evaluator.metric`` names;
``--saliency`` keeps only the evaluations with that ``saliency`` option (``input_gradient``, the default, is stored as
the option left out); ``--backbone-params`` keeps the given backbone variants (JSON each, as in the results'
``backbone_params``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from gibench.results.tables import collect_results, summarize

#: the metric families' headlines (and accuracy beside them)
DEFAULT_METRICS = ["accuracy.accuracy", "random_logit.cosine", "complexity.gini", "sensitivity.max_sensitivity",
                   "infidelity.relative_infidelity_gaussian", "randomisation.emprt", "road.gap_lerf_morf"]


def _saliency(evaluator_params: str) -> str:
    return json.loads(evaluator_params or "{}").get("saliency", "input_gradient")


def select(stats: pd.DataFrame, metrics: list[str], saliency: str, backbone_params: list[str] | None) -> pd.DataFrame:
    stats = stats.copy()
    stats["key"] = stats["evaluator"] + "." + stats["metric"]
    keep = stats["key"].isin(metrics)
    keep &= (stats["evaluator"] == "accuracy") | (stats["evaluator_params"].map(_saliency) == saliency)
    if backbone_params is not None:
        keep &= stats["backbone_params"].isin([json.dumps(json.loads(p), sort_keys=True) for p in backbone_params])
    return stats[keep]


def _cell(row: pd.Series) -> str:
    if row["n_ok"] == 0:
        return row["statuses"] or "–"
    text = f"{row['mean']:.3f}"
    if not math.isnan(row["ci_low"]):
        text += f" ± {(row['ci_high'] - row['ci_low']) / 2:.3f} ({int(row['n_ok'])})"
    return text


def _delta_cell(row: pd.Series) -> str:
    if math.isnan(row["delta_vs_erm"]):
        return ""
    text = f"Δ {row['delta_vs_erm']:+.3f}"
    if not math.isnan(row["delta_low"]):
        text += f" [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]"
    return text + {"better": " ✓", "worse": " ✗"}.get(row["verdict"], "")


def row_order(suite) -> list[str]:
    """The variant labels in the order the suite lists them (every grid), erm first; [] without a suite."""
    if suite is None:
        return []
    labels = [r.label for grid in suite.all_grids() for r in grid.regularizers]
    return ["erm", *dict.fromkeys(label for label in labels if label != "erm")]


def _name_and_options(label: str) -> tuple[str, set[str]]:
    name, _, options = label.partition("(")
    return name, {part.strip() for part in options.rstrip(")").split(", ") if part.strip()}


def listed_rank(variant: str, rank: dict[str, int]) -> int:
    """The place of ``variant`` among the suite's listed labels: its own, or, for a setting a selection chose
    (``pgd(norm=l2, epsilon=2)``), that of the listed label it was swept from (``pgd(norm=l2)``: the same name, its
    options a subset); unlisted variants go last."""
    if variant in rank:
        return rank[variant]
    name, options = _name_and_options(variant)
    listed = [(len(opts), rank[label]) for label in rank
              for listed_name, opts in [_name_and_options(label)] if listed_name == name and opts <= options]
    return max(listed)[1] if listed else len(rank)


def tables(stats: pd.DataFrame, metrics: list[str], delta: bool, order: list[str] = ()) -> str:
    out = []
    rank = {label: i for i, label in enumerate(order)}
    present = [m for m in metrics if m in set(stats["key"])]
    arrows = {k: "↑" if h else "↓" for k, h in zip(stats["key"], stats["higher_is_better"])}
    for dataset, sub in stats.groupby("dataset", sort=False):
        out += [f"**{dataset}**", "",
                "| row | " + " | ".join(f"{m} {arrows[m]}" for m in present) + " |",
                "| --- " * (len(present) + 1) + "|"]
        sub = sub.assign(row=sub["variant"] + sub["backbone_params"].map(_backbone_note),
                         order=sub["variant"].map(lambda v: listed_rank(v, rank)),
                         n_options=sub["backbone_params"].map(lambda p: len(json.loads(p))))
        sub = sub.sort_values(["order", "n_options", "backbone_params"], kind="stable")  # a variant before its twins
        for label, group in sub.groupby("row", sort=False):
            by_metric = {r["key"]: r for _, r in group.iterrows()}
            cells = [_cell(by_metric[m]) if m in by_metric else "–" for m in present]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
            if delta and label.split(" [")[0] != "erm":
                deltas = [_delta_cell(by_metric[m]) if m in by_metric else "" for m in present]
                if any(deltas):
                    out.append("| | " + " | ".join(deltas) + " |")
        out.append("")
    return "\n".join(out)


def _backbone_note(params: str) -> str:
    options = json.loads(params)
    return f" [{', '.join(f'{k}={v}' for k, v in sorted(options.items()))}]" if options else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    parser.add_argument("--saliency", default="input_gradient")
    parser.add_argument("--backbone-params", nargs="+", default=None, help="keep these backbone variants (JSON)")
    parser.add_argument("--delta", action="store_true", help="add a Δ-against-erm line under each regularizer")
    parser.add_argument("--suite", default=None,
                        help="keep only this suite's jobs, in the order the suite lists its regularizers")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    results = collect_results(args.runs_dir)
    suite = None
    if args.suite is not None:
        import gibench
        from gibench.core.errors import GibenchError
        from gibench.suites.jobs import rebuildable_jobs

        try:
            suite = gibench.load_suite(args.suite)  # a selecting suite's sweep and scored settings, whichever were run
        except GibenchError as exc:
            parser.error(str(exc))
        results = results[results["job_hash"].isin({job.hash for job in rebuildable_jobs(suite)})]
    stats = select(summarize(results), args.metrics, args.saliency, args.backbone_params)
    if stats.empty:
        raise SystemExit(f"none of {args.metrics} in {args.runs_dir} (with saliency {args.saliency})")
    text = tables(stats, args.metrics, args.delta, row_order(suite))
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
