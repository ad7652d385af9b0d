"""How well a cheap protocol keeps an expensive protocol's regularizer rankings.

A *protocol* is everything that decides a number except the regularizer and the seed: the training recipe and each
evaluator's settings (its budget). Two protocols are compared on the same regularizer variants and seeds, per
evaluator, on its headline metric, in each table (dataset, backbone and options); the training config is part of the
protocol, so it is not matched.

Per (table, evaluator, candidate evaluator settings) :func:`protocol_agreement` reports:

* **Kendall's τ** (τ-b, :func:`scipy.stats.kendalltau`; ties count as neither concordant nor discordant) between the
  variants' mean headline over seeds under the reference and under the candidate. Its interval is the percentile
  interval of the **seed bootstrap**: the seeds common to every variant are resampled with replacement, the same
  resample for both protocols and every variant (a seed fixes a job's initial weights and data order for all of
  them, as in :func:`gibench.results.stats.difference_interval`'s pairing), and τ is recomputed. With few seeds
  the resamples are enumerated exactly (all nⁿ of them, each equally likely; n = 3 gives 27) rather than drawn, so
  the interval is deterministic; it is then coarse, and says how far τ rests on one seed.
* **Orderings kept**: a pair of variants is *resolved* by the reference when the paired-by-seed interval of their
  difference (:func:`gibench.results.stats.difference_interval`, 95 %) excludes zero; it is *kept* when the
  candidate's mean difference has the same sign (a tie under the candidate is not kept). The share kept carries a
  Wilson score interval over the resolved pairs. *Reversed* counts the resolved pairs whose candidate interval
  excludes zero on the other side: a cheap protocol that is confidently wrong. *Missing* counts the resolved pairs
  with a variant that has no value under the candidate (its training diverged, its evaluation failed, a seed is
  absent): they are resolved and not kept, because the cheap protocol cannot reproduce them. *Candidate resolved*
  says how many of the ``compared`` pairs (both variants scored under both protocols) the candidate itself still
  resolves (what the cheap protocol loses in power).

τ and the kept orderings compare the variants that have an ``ok`` headline under both protocols, on the seeds
common to all of them (a variant present under one protocol only is counted in ``left_out``). Variants that the
caller marks as collapsed (by :mod:`gibench.results.collapse`, judged under the reference) are left out everywhere:
a collapsed model has no place in a ranking.
"""

from __future__ import annotations

__all__ = ["AGREEMENT_COLUMNS", "kendall_tau", "protocol_agreement", "seed_bootstrap_resamples", "wilson_interval"]

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from gibench.results.stats import CONFIDENCE, difference_interval
from gibench.results.tables import complete

#: Exact enumeration of the seed bootstrap up to this many resamples (nⁿ: n ≤ 5 seeds), else seeded Monte Carlo.
EXACT_RESAMPLES_MAX = 5 ** 5
MONTE_CARLO_RESAMPLES = 4000

AGREEMENT_COLUMNS = [
    "dataset", "backbone", "backbone_params", "evaluator", "metric", "higher_is_better", "reference_params",
    "candidate_params", "variants", "seeds", "left_out", "kendall_tau", "tau_low", "tau_high", "pairs",
    "resolved", "kept", "kept_share", "kept_low", "kept_high", "reversed", "missing", "compared", "candidate_resolved",
]
_TABLE = ["dataset", "backbone", "backbone_params"]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b of two equally long sequences; NaN when either is constant or shorter than 2."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(scipy.stats.kendalltau(a, b).statistic)


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (NaN, NaN for no trials)."""
    if trials == 0:
        return math.nan, math.nan
    z = float(scipy.stats.norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_bootstrap_resamples(seeds: Sequence[int], rng_seed: int = 0) -> list[tuple[int, ...]]:
    """Every resample (with replacement, ordered) of ``seeds`` when there are at most :data:`EXACT_RESAMPLES_MAX`,
    else :data:`MONTE_CARLO_RESAMPLES` drawn by a generator seeded with ``rng_seed``."""
    seeds = list(seeds)
    if len(seeds) ** len(seeds) <= EXACT_RESAMPLES_MAX:
        return list(itertools.product(seeds, repeat=len(seeds)))
    rng = np.random.default_rng(rng_seed)
    return [tuple(seeds[i] for i in rng.integers(0, len(seeds), len(seeds))) for _ in range(MONTE_CARLO_RESAMPLES)]


def protocol_agreement(reference: pd.DataFrame, candidate: pd.DataFrame, collapsed: Iterable[tuple] = (),
                       confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per table, evaluator and candidate evaluator settings (:data:`AGREEMENT_COLUMNS`; see the module
    docstring). ``reference`` and ``candidate`` are results tables (:func:`gibench.results.collect_results`) of one
    protocol each; ``collapsed`` holds (dataset, backbone, backbone_params, variant) keys to leave out.

    Raises ``ValueError`` when one protocol holds two results for one (table, variant, seed, evaluator settings), for
    example two training configs of the same table: a protocol must be one exact configuration.
    """
    collapsed = set(collapsed)
    ref, cand = _headlines(reference, "reference"), _headlines(candidate, "candidate")
    ref_groups = dict(iter(ref.groupby([*_TABLE, "evaluator"], sort=True)))
    rows = []
    for key, cand_group in cand.groupby([*_TABLE, "evaluator"], sort=True):
        if key not in ref_groups:
            continue
        ref_group, evaluator = ref_groups[key], key[-1]
        ref_settings = ref_group["evaluator_params"].unique()
        if len(ref_settings) > 1:
            raise ValueError(f"the reference protocol scores {evaluator!r} with {len(ref_settings)} settings in "
                             f"{key[:2]}: {', '.join(ref_settings)}; a reference needs exactly one")
        for params, group in cand_group.groupby("evaluator_params", sort=True):
            rows.append(_compare(key, ref_group, group, ref_settings[0], params, collapsed, confidence))
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def _headlines(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The ok headline values, one per (table, variant, seed, evaluator, settings), options in one JSON spelling
    (:func:`gibench.results.tables.complete`); the protocol's name in errors."""
    frame = complete(frame)
    ok = frame[frame["headline"].astype(bool) & (frame["status"] == "ok") & frame["value"].notna()]
    keys = [*_TABLE, "variant", "seed", "evaluator", "evaluator_params"]
    duplicated = ok[ok.duplicated(keys, keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        raise ValueError(
            f"the {name} protocol has {int(duplicated.duplicated(keys).sum()) + 1} results for {first['dataset']} / "
            f"{first['backbone']} / {first['variant']} / seed {first['seed']} / {first['evaluator']} (two training "
            "configs, or two evaluator versions, of one table); pass one protocol's jobs only")
    return ok


def _compare(key: tuple, ref_group: pd.DataFrame, cand_group: pd.DataFrame, ref_params: str, cand_params: str,
             collapsed: set, confidence: float) -> dict:
    table, evaluator = key[:3], key[3]
    ref_values = {v: seeds for v, seeds in _by_variant(ref_group).items() if (*table, v) not in collapsed}
    cand_values = _by_variant(cand_group)
    variants = sorted(set(ref_values) & set(cand_values))
    seeds = sorted(set.intersection(*(set(ref_values[v]) & set(cand_values[v]) for v in variants))) if variants else []
    variants = [v for v in variants if seeds]
    missing = sorted(set(ref_values) - set(variants))  # scored under the reference only
    left_out = len(set(ref_values) | {v for v in cand_values if (*table, v) not in collapsed}) - len(variants)
    ref_seeds = {v: {s: ref_values[v][s] for s in seeds} for v in variants}
    cand_seeds = {v: {s: cand_values[v][s] for s in seeds} for v in variants}
    tau, tau_low, tau_high = _tau_with_interval(ref_seeds, cand_seeds, seeds, confidence)
    counts = _pair_counts(ref_seeds, cand_seeds, confidence)
    missing_pairs, missing_resolved = _lost_pairs(ref_values, variants, missing, confidence)
    counts.update(pairs=counts["compared"] + missing_pairs, resolved=counts["resolved"] + missing_resolved,
                  missing=missing_resolved)
    low, high = wilson_interval(counts["kept"], counts["resolved"], confidence)
    return {
        "dataset": table[0], "backbone": table[1], "backbone_params": table[2], "evaluator": evaluator,
        "metric": str(cand_group["metric"].iloc[0]), "higher_is_better": bool(cand_group["higher_is_better"].iloc[0]),
        "reference_params": ref_params, "candidate_params": cand_params, "variants": len(variants),
        "seeds": len(seeds), "left_out": left_out, "kendall_tau": tau, "tau_low": tau_low, "tau_high": tau_high,
        **counts, "kept_share": counts["kept"] / counts["resolved"] if counts["resolved"] else math.nan,
        "kept_low": low, "kept_high": high,
    }


def _by_variant(group: pd.DataFrame) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for variant, seed, value in zip(group["variant"], group["seed"], group["value"]):
        out.setdefault(str(variant), {})[int(seed)] = float(value)
    return out


def _means(values: dict[str, dict[int, float]], resample: Sequence[int]) -> list[float]:
    return [math.fsum(values[v][s] for s in resample) / len(resample) for v in values]


def _tau_with_interval(ref: dict, cand: dict, seeds: list[int], confidence: float) -> tuple[float, float, float]:
    if len(ref) < 2:
        return math.nan, math.nan, math.nan
    tau = kendall_tau(_means(ref, seeds), _means(cand, seeds))
    if len(seeds) < 2:
        return tau, math.nan, math.nan
    taus = [kendall_tau(_means(ref, r), _means(cand, r)) for r in seed_bootstrap_resamples(seeds)]
    taus = [t for t in taus if not math.isnan(t)]
    if not taus:
        return tau, math.nan, math.nan
    tail = (1 - confidence) / 2
    return tau, float(np.quantile(taus, tail)), float(np.quantile(taus, 1 - tail))


def _pair_counts(ref: dict, cand: dict, confidence: float) -> dict[str, int]:
    """Over the pairs of variants scored under both protocols (``compared``)."""
    counts = {"compared": 0, "resolved": 0, "kept": 0, "reversed": 0, "candidate_resolved": 0}
    for a, b in itertools.combinations(list(ref), 2):
        counts["compared"] += 1
        ref_diff = difference_interval(ref[a], ref[b], confidence)
        cand_diff = difference_interval(cand[a], cand[b], confidence)
        counts["candidate_resolved"] += cand_diff.excludes_zero()
        if not ref_diff.excludes_zero():
            continue
        counts["resolved"] += 1
        sign = math.copysign(1.0, ref_diff.estimate)
        counts["kept"] += cand_diff.estimate * sign > 0
        counts["reversed"] += cand_diff.excludes_zero() and cand_diff.estimate * sign < 0
    return counts


def _lost_pairs(ref_values: dict, variants: list[str], missing: list[str], confidence: float) -> tuple[int, int]:
    """The pairs with a variant the candidate has no value for (its training or evaluation failed, or a seed is
    missing), and how many of them the reference resolves: each of those counts as resolved and not kept
    (``missing``), since the cheap protocol cannot reproduce it. The reference's interval here uses the seeds each
    pair has under the reference."""
    lost = pairs = 0
    for a in missing:
        for b in [*variants, *[m for m in missing if m > a]]:
            pairs += 1
            lost += difference_interval(ref_values[a], ref_values[b], confidence).excludes_zero()
    return pairs, lost
