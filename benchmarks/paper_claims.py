"""What the seed papers claim, checked against a finished runs directory: one markdown table.

Run (seconds; reads the store, trains nothing)::

    python benchmarks/paper_claims.py --runs-dir RUNS [--backbone-params '{"act": "softplus"}'] [--markdown out.md]

Each claim compares one regularizer with ``erm`` on one evaluator's headline metric, in every table (dataset ×
backbone × training config) that has both. The numbers are those of ``gibench report``: the row's mean over seeds and
its Δ against ``erm`` of the same table with the 95 % interval (paired t by seed when both rows share their seeds,
else Welch's t; :func:`gibench.results.summarize`); rows are judged for collapse first
(:mod:`gibench.results.collapse`), and a collapsed row is reported as such, never compared. In a suite that selects,
each regularizer's row is its selected strength, named in the variant.

Verdicts, by the claimed relation:

* ``better`` (the paper reports an improvement over erm): **holds** when the Δ interval excludes zero in the
  metric's better direction, **contradicted** when it excludes zero in the worse direction, else **not resolved**
  (the interval contains zero; with one seed there is no interval and the verdict is always not resolved);
* ``worse`` (the paper reports a degradation): the mirror image;
* ``not worse`` (the paper reports parity or better): **holds** unless the interval excludes zero in the worse
  direction (then **contradicted**); a holding row says whether it is also significantly better.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gibench.results.collapse import judged_summary, rule_of_runs
from gibench.results.tables import collect_results


@dataclass(frozen=True)
class Claim:
    paper: str
    statement: str
    regularizer: str  # a regularizer name (every entry of it is checked)
    evaluator: str
    relation: str  # better | worse | not worse
    dataset: str | None = None  # a dataset name to restrict to (None: every table)


SF = ("Srinivas & Fleuret, Rethinking the role of gradient-based attribution methods for model interpretability "
      "(ICLR 2021)")
SHAH = "Shah, Jain & Netrapalli, Do input gradients highlight discriminative features? (NeurIPS 2021)"
SBL = "Srinivas, Bordt & Lakkaraju, Which models have perceptually-aligned gradients? (NeurIPS 2023)"
CLAIMS = (
    Claim(SF, "score matching is no worse than erm on GAN-test", "score_matching", "gan_test", "not worse"),
    Claim(SF, "score matching is no worse than erm on pixel perturbation", "score_matching", "pixel_perturbation",
          "not worse"),
    Claim(SF, "anti-score-matching is worse than erm on GAN-test", "anti_score_matching", "gan_test", "worse"),
    Claim(SF, "anti-score-matching is worse than erm on pixel perturbation", "anti_score_matching",
          "pixel_perturbation", "worse"),
    Claim(SHAH, "adversarial training beats erm on BlockMNIST's signal attribution", "pgd", "blockmnist", "better",
          "blockmnist"),
    Claim(SBL, "the gradient-norm penalty raises alignment with the data score", "gradient_norm", "score_alignment",
          "better"),
    Claim(SBL, "Gaussian-noise training raises alignment with the data score", "gaussian_noise", "score_alignment",
          "better"),
    Claim(SBL, "adversarial training raises alignment with the data score", "pgd", "score_alignment", "better"),
)


def verdict(relation: str, delta: float, low: float, high: float, higher_is_better: bool) -> str:
    """The verdict of one Δ against erm (see the module docstring)."""
    if math.isnan(delta):
        return "no Δ"
    if math.isnan(low) or math.isnan(high):
        return "not resolved (one seed)"
    better = low > 0 if higher_is_better else high < 0
    worse = high < 0 if higher_is_better else low > 0
    if relation == "better":
        return "holds" if better else "contradicted" if worse else "not resolved"
    if relation == "worse":
        return "holds" if worse else "contradicted" if better else "not resolved"
    return "contradicted" if worse else "holds (better)" if better else "holds (no difference)"


def check_claims(stats: pd.DataFrame, claims=CLAIMS) -> pd.DataFrame:
    """One row per claim × table × matching variant of ``stats`` (a judged summary)."""
    rows = []
    headline = stats[stats["headline"]]
    for claim in claims:
        found = headline[(headline["regularizer"] == claim.regularizer) & (headline["evaluator"] == claim.evaluator)]
        if claim.dataset is not None:
            found = found[found["dataset"].str.split("(").str[0] == claim.dataset]
        if found.empty:
            rows.append({"paper": claim.paper, "claim": claim.statement, "table": "—", "variant": "—",
                         "metric": claim.evaluator, "erm": "", "row": "", "delta": "", "verdict": "not run"})
        for r in found.itertuples():
            erm = headline[(headline["regularizer"] == "erm") & (headline["dataset"] == r.dataset)
                           & (headline["backbone"] == r.backbone) & (headline["backbone_params"] == r.backbone_params)
                           & (headline["train_hash"] == r.train_hash) & (headline["evaluator"] == r.evaluator)
                           & (headline["evaluator_params"] == r.evaluator_params) & (headline["metric"] == r.metric)]
            state = ("collapsed: " + str(r.collapse_reason)) if r.collapse == "collapsed" else \
                verdict(claim.relation, r.delta_vs_erm, r.delta_low, r.delta_high, bool(r.higher_is_better))
            rows.append({
                "paper": claim.paper, "claim": claim.statement,
                "table": f"{r.dataset} × {r.backbone}{_params(r.backbone_params)}", "variant": r.variant,
                "metric": f"{r.evaluator}: {r.metric} {'↑' if r.higher_is_better else '↓'}",
                "erm": _mean(erm.iloc[0]) if len(erm) else "", "row": _mean(r._asdict()),
                "delta": _delta(r.delta_vs_erm, r.delta_low, r.delta_high), "verdict": state})
    return pd.DataFrame(rows)


def _params(params: str) -> str:
    values = json.loads(params or "{}")
    return f"({', '.join(f'{k}={v}' for k, v in values.items())})" if values else ""


def _mean(row) -> str:
    row = dict(row)
    text = f"{row['mean']:.3f}"
    if not math.isnan(row["ci_low"]):
        text += f" ± {(row['ci_high'] - row['ci_low']) / 2:.3f} ({int(row['n_ok'])})"
    return text


def _delta(delta: float, low: float, high: float) -> str:
    if math.isnan(delta):
        return "—"
    return f"{delta:+.3f}" + ("" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]")


def markdown(table: pd.DataFrame) -> str:
    columns = ["claim", "table", "variant", "metric", "erm", "row", "delta", "verdict"]
    lines = []
    for paper, rows in table.groupby("paper", sort=False):
        lines += [f"**{paper}**", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(str(getattr(r, c)) for c in columns) + " |" for r in rows.itertuples()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--backbone-params", action="append", help="keep these backbone variants (JSON each)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    frame = collect_results(args.runs_dir)
    rule, suites = rule_of_runs(args.runs_dir)
    stats = judged_summary(frame, rule=rule, suites=suites)
    if args.backbone_params:
        wanted = [json.dumps(json.loads(p), sort_keys=True) for p in args.backbone_params]
        stats = stats[stats["backbone_params"].isin(wanted)]
    text = markdown(check_claims(stats))
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
