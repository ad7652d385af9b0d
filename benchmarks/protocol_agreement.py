"""Does a cheap protocol keep an expensive protocol's regularizer rankings?

Run (seconds; reads the store, trains nothing)::

    python benchmarks/protocol_agreement.py --runs-dir RUNS --reference benchmarks/suites/agreement_paper.yaml \\
        --candidate benchmarks/suites/agreement_cheap.yaml --candidate benchmarks/suites/agreement_budgets.yaml \\
        [--markdown out.md] [--csv out.csv]

A protocol is a suite file: its jobs (training recipe, regularizers, seeds) and its evaluators' settings. The
reference and every candidate must hold the same regularizer variants and seeds; each candidate's results are
compared with the reference's per table and evaluator, one row per candidate evaluator setting (a candidate suite may
list one evaluator at several budgets, as ``agreement_budgets.yaml`` does). The statistics are
:func:`gibench.results.protocol_agreement.protocol_agreement`'s: Kendall's τ of the mean headlines with its seed
bootstrap interval, and the share of the reference's resolved pairwise orderings that the candidate keeps, with a
Wilson interval. Variants that collapse under the reference (:mod:`gibench.results.collapse`) are left out.

``work`` is the candidate evaluation's model passes over the reference's (forward-equivalents, per job, from the
evaluators' ``cost`` hooks, :func:`gibench.running.estimate.plan`), so a row reads "this budget costs x of the
reference and keeps y of its orderings". The last line per candidate suite is the acceptance test: every evaluator keeps
at least 90 % of the orderings the reference resolves.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import pandas as pd

from gibench.core.errors import GibenchError
from gibench.results.collapse import COLLAPSED, judged_summary, rule_of_runs
from gibench.results.protocol_agreement import protocol_agreement
from gibench.results.tables import collect_results, evaluations_of
from gibench.running.estimate import plan
from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite

#: The bar a cheap protocol must clear: the share of the reference's resolved orderings every evaluator must keep.
KEPT_TARGET = 0.9


def protocol_results(runs_dir: Path, suite) -> tuple[pd.DataFrame, set[str]]:
    """The results of ``suite``'s own jobs and evaluator settings in ``runs_dir``, and those jobs' hashes."""
    hashes = {job.hash for job in expand(suite)}
    return collect_results(runs_dir, hashes, evaluations=evaluations_of(suite)), hashes


def evaluator_work(suite) -> tuple[dict[tuple[str, str], float], float]:
    """(evaluator, canonical params JSON) → the forward-equivalent passes of all its evaluations in ``suite``, and the
    whole suite's (training, evaluations and auxiliary models)."""
    with tempfile.TemporaryDirectory() as empty:
        counted = plan(suite, Path(empty))
    by_label = {row.evaluator: row.passes.forward_equivalents for row in counted.evaluators}
    per_evaluator = {(spec.name, _canonical(spec.params_json)): by_label.get(spec.label, math.nan)
                     for spec in suite.evaluators}
    return per_evaluator, counted.passes.forward_equivalents


def collapsed_variants(runs_dir: Path, reference: pd.DataFrame, hashes: set[str]) -> set[tuple]:
    """(dataset, backbone, backbone_params, variant) of every variant that collapses under the reference."""
    if reference.empty:
        return set()
    rule, suites = rule_of_runs(runs_dir, hashes)
    stats = judged_summary(reference, rule=rule, suites=suites)
    gone = stats[stats["collapse"] == COLLAPSED]
    return {(r.dataset, r.backbone, r.backbone_params, r.variant) for r in gone.itertuples()}


def agreement(runs_dir: Path, reference_path: Path, candidate_paths: list[Path]) -> pd.DataFrame:
    reference_suite = load_suite(reference_path)
    reference, ref_hashes = protocol_results(runs_dir, reference_suite)
    collapsed = collapsed_variants(runs_dir, reference, ref_hashes)
    ref_work, ref_total = evaluator_work(reference_suite)
    ref_work_by_name = {name: work for (name, _), work in ref_work.items()}
    tables = []
    for path in candidate_paths:
        suite = load_suite(path)
        table = protocol_agreement(reference, protocol_results(runs_dir, suite)[0], collapsed)
        work, total = evaluator_work(suite)
        table.insert(0, "protocol", suite.name)
        table.insert(1, "protocol_work", total / ref_total)
        table["work"] = [work.get((e, p), math.nan) / ref_work_by_name.get(e, math.nan)
                         for e, p in zip(table["evaluator"], table["candidate_params"])]
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text or "{}"), sort_keys=True)


def _settings(params: str) -> str:
    values = json.loads(params)
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "defaults"


def _interval(value: float, low: float, high: float, digits: int = 2) -> str:
    if math.isnan(value):
        return "—"
    text = f"{value:.{digits}f}"
    return text if math.isnan(low) else f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(table: pd.DataFrame) -> str:
    columns = ["evaluator", "candidate settings", "work", "variants × seeds", "Kendall τ [95 %]", "resolved",
               "kept [95 %]", "reversed", "missing", "candidate resolves"]
    lines = []
    for protocol, rows in table.groupby("protocol", sort=False):
        share = rows["protocol_work"].iloc[0]
        lines += [f"**{protocol}** (its whole work, training included, is {share:.3g} of the reference's)", "",
                  "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for r in rows.itertuples():
            kept = "—" if not r.resolved else f"{r.kept}/{r.resolved} = " + _interval(r.kept_share, r.kept_low,
                                                                                        r.kept_high)
            cells = [f"{r.evaluator}: {r.metric} {'↑' if r.higher_is_better else '↓'}", _settings(r.candidate_params),
                     "—" if math.isnan(r.work) else f"{r.work:.3g}", f"{r.variants} × {r.seeds}",
                     _interval(r.kendall_tau, r.tau_low, r.tau_high), f"{r.resolved}/{r.pairs}", kept,
                     str(r.reversed), str(r.missing), f"{r.candidate_resolved}/{r.compared}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", verdict(rows), ""]
    return "\n".join(lines)


def verdict(rows: pd.DataFrame) -> str:
    """Whether every evaluator of a candidate keeps at least :data:`KEPT_TARGET` of the resolved orderings."""
    judged = rows[rows["resolved"] > 0]
    short = judged[judged["kept_share"] < KEPT_TARGET]
    unjudged = sorted(set(rows.loc[rows["resolved"] == 0, "evaluator"]))
    failing = ", ".join(f"{r.evaluator} {_settings(r.candidate_params)}: {r.kept_share:.2f}"
                        for r in short.itertuples())
    if judged.empty:
        text = f"Cannot tell whether it keeps {KEPT_TARGET:.0%} of the orderings: the reference resolves none"
    elif short.empty:
        text = (f"Keeps at least {KEPT_TARGET:.0%} of the resolved orderings on every evaluator judged: yes "
                f"({len(judged)} of {len(rows)} rows)")
    else:
        text = f"Keeps at least {KEPT_TARGET:.0%} of the resolved orderings on every evaluator judged: no ({failing})"
    if unjudged and not judged.empty:
        text += f". No ordering resolved by the reference, so not judged: {', '.join(unjudged)}"
    return text + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="the expensive protocol's suite file")
    parser.add_argument("--candidate", type=Path, action="append", required=True,
                        help="a cheap protocol's suite file (repeat for several)")
    parser.add_argument("--markdown", type=Path, help="write the tables as markdown here too")
    parser.add_argument("--csv", type=Path, help="write every column here")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        print(f"error: --runs-dir {args.runs_dir} is not a folder; pass the runs directory both suites ran in",
              file=sys.stderr)
        return 2
    try:
        table = agreement(args.runs_dir, args.reference, args.candidate)
    except (GibenchError, ValueError) as exc:  # a suite file that does not load, or a protocol that is not one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if table.empty:
        print("no candidate evaluation matches the reference's evaluators in this runs directory", file=sys.stderr)
        return 1
    text = markdown(table)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
