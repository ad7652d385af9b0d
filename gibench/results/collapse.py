"""Collapsed models: rows whose clean accuracy fell so far toward chance that their other numbers no longer describe
the explanations of a working classifier. Collapse is a state, not a score: such a row is shown apart, with its
reason, and is never ranked, never marked best, and left out of evaluator agreement and of the sanity gate.

**The rule.** A row (one exact configuration, :data:`gibench.results.tables.ROW_KEYS` less the metric keys: dataset,
backbone and options, training config, regularizer and options; over its seeds, and per submission on the site) is
judged on the headline of the ``accuracy`` evaluator (its seed mean) against the ``erm`` row of the same table (same
``by`` keys, dataset, backbone and options, training config, accuracy evaluator version and options)::

    collapsed  when  accuracy < chance + keep_fraction × (accuracy of erm − chance),    chance = 1 / number of classes

that is, when the row kept less than ``keep_fraction`` of what ``erm`` learned above guessing. The default
``keep_fraction`` is :data:`KEEP_FRACTION` = 0.75; a suite file may declare its own (``collapse: {keep_fraction:
0.5}``, validated by :func:`gibench.suites.suite.collapse_option`), read back from the suites a runs directory or a
submission recorded (:func:`rule_of`; of several different floors, the strictest applies). Every report, summary
CSV and site table states the floor it used (the ``collapse_*`` columns, :attr:`CollapseRule.text`).

Choices:

* **Against erm and chance**, not an absolute accuracy: 0.4 is four times chance on ten digits and below chance on
  two classes. The margin over chance is what a classifier learned; ``erm`` of the same table is what this backbone
  and training config learn without a regularizer.
* **0.75, from the reference** ``standard`` **submission** (softplus ``gibench_cnn``, 3 epochs, one seed, 1,000 test
  images; erm 0.968 on ``mnist_subset`` and 0.892 on ``blockmnist``, 10 classes, and 1.000 on ``gaussian_mixture``,
  3 classes: floors 0.751, 0.694 and 0.833). It flags five rows: ``sliced_score_matching`` 0.525 and
  ``denoising_score_matching`` 0.724 on ``mnist_subset`` (49 % and 72 % of erm's margin over chance),
  ``denoising_score_matching`` 0.228 on ``blockmnist`` (16 %), and ``pgd`` (l2, ε = 1; linf, ε = 0.1) at 0.346 on the
  3-class ``gaussian_mixture`` (2 %: chance is 0.333). The score-matching ones score like broken models on the
  other evaluators too (GAN-test 0.10 on ``mnist_subset``, density ratios of −2487 to −4762, random-logit ≈ 1), the
  pgd ones are at chance. Every other row of it keeps at least 82 %: ``sliced_score_matching`` (0.746, 82 %) and
  ``score_matching_antithetic`` (0.754, 83 %) on ``blockmnist`` lost 14–15 points, ``fooled`` there 10 (87 %; the
  sanity control keeps its accuracy by design), the rest at most 8 (90 % or more). The two on ``blockmnist`` differ
  by less than one binomial standard error of a 1,000-image test set (≈ 0.014), so no accuracy floor tells them
  apart: both are ranked, with their poor scores. At 0.5 (the midpoint of chance and erm) ``denoising_score_matching``
  on ``mnist_subset`` would stay ranked and ``sliced_score_matching`` there would lie within one standard error of the
  floor; at 0.75 the nearest rows lie 2.7 points below (0.724 against 0.751) and 5.2 points above (0.746 against
  0.694) their floors. That was the reference as first made, at the papers' defaults; made again at defaults that
  train (sliced and denoising score matching at λ = 1e-4, PGD at half the radius on the mixture), it flags no row,
  and its lowest, ``score_matching_antithetic`` at 0.783 on ``blockmnist``, keeps 86 % of erm's margin.
* **Means, not intervals**: a row with one seed has no interval, and the floor is a declared line, not a test.
* **The accuracy setting**: the ``accuracy`` evaluator with its default options (the whole test split) where the row
  and erm both have it, else the first setting both have (by version, then options).
* **Not judged**, and said so (``collapse`` = ``not judged`` with the reason), never silently fine: a row without an
  accuracy result; a table without exactly one ``erm`` row with that accuracy (erm with two sets of options is
  ambiguous, as for Δ); a dataset whose number of classes is unknown here; ``erm`` not above chance. Such rows are
  ranked as before. ``erm`` itself is the reference (``baseline``), never collapsed.
* **The number of classes** is the dataset plugin's :meth:`~gibench.api.dataset.Dataset.sizes`, with the options the
  recorded suites give the dataset's label (:func:`dataset_classes`; a label without options is the dataset with its
  defaults): the results table does not hold it, and the submission's own recorded suites name the dataset exactly.

Where it acts: :func:`judge` adds the ``collapse_*`` columns to a summary and ranks again without the collapsed rows
(:func:`gibench.results.tables.add_ranks` and :func:`~gibench.results.tables.agreement_table` skip rows whose
``collapse`` is ``collapsed``); :func:`sanity_gate` leaves a collapsed ``fooled`` row out of the gate and lists it.
"""

from __future__ import annotations

__all__ = [
    "ACCURACY", "BASELINE_STATE", "COLLAPSED", "COLLAPSE_COLUMNS", "CollapseRule", "KEEP_FRACTION", "KEPT",
    "NOT_JUDGED", "collapse_verdicts", "dataset_classes", "judge", "judged_summary", "rule_of", "rule_of_runs",
    "sanity_gate", "without_collapsed",
]

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.results.tables import (
    BASELINE,
    TABLE_KEYS,
    VARIANT_KEYS,
    add_ranks,
    complete,
    sanity_table,
    summarize,
)
from gibench.suites.suite import collapse_option

#: The evaluator (and its metric) whose headline a row is judged on.
ACCURACY = "accuracy"
#: The default share of erm's accuracy above chance a row must keep (see the module docstring for why 0.75).
KEEP_FRACTION = 0.75
COLLAPSED, KEPT, BASELINE_STATE, NOT_JUDGED = "collapsed", "kept", "baseline", "not judged"
#: What :func:`judge` adds to each summary row (the same values on every metric row of a variant).
COLLAPSE_COLUMNS = ["collapse", "collapse_reason", "collapse_accuracy", "collapse_erm_accuracy", "collapse_chance",
                    "collapse_floor", "collapse_keep_fraction"]


@dataclass(frozen=True)
class CollapseRule:
    """The accuracy floor: ``chance + keep_fraction × (erm − chance)``; ``source`` says where ``keep_fraction`` came
    from (``default``, or the suites that declared it)."""

    keep_fraction: float = KEEP_FRACTION
    source: str = "default"

    def __post_init__(self) -> None:
        if not 0 <= self.keep_fraction < 1:
            raise ValueError(f"keep_fraction must lie in [0, 1), got {self.keep_fraction!r}")

    def floor(self, erm: float, chance: float) -> float:
        return chance + self.keep_fraction * (erm - chance)

    @property
    def text(self) -> str:
        """``accuracy floor: chance + 0.75 × (erm − chance) (default)``."""
        return f"accuracy floor: chance + {self.keep_fraction:g} × (erm − chance) ({self.source})"


def rule_of(suites: Iterable[Mapping[str, Any]]) -> CollapseRule:
    """The floor of results made by ``suites`` (parsed suite files, as a manifest or a submission records them): the
    default unless a suite declares ``collapse.keep_fraction``; of several different floors (a suite without the key
    counts as the default), the strictest (the highest fraction), and the source says so."""
    fractions: dict[str, float | None] = {}
    for raw in suites:
        name = str(raw.get("name", "?"))
        fractions[name] = collapse_option(raw.get("collapse"), f"suite {name!r}")
    if all(f is None for f in fractions.values()):
        return CollapseRule()
    values = {KEEP_FRACTION if f is None else f for f in fractions.values()}
    strictest = max(values)
    named = sorted(n for n, f in fractions.items() if f is not None and f == strictest)
    source = f"suite {', '.join(named)}" if named else "default"
    if len(values) > 1:
        source += f"; the strictest of the suites' {', '.join(f'{v:g}' for v in sorted(values))}"
    return CollapseRule(strictest, source)


def rule_of_runs(runs_dir: Path, job_hashes: set[str] | None = None) -> tuple[CollapseRule, list[dict[str, Any]]]:
    """The floor of a runs directory (:func:`rule_of` of the suites its manifest records for the runs that made
    ``job_hashes``, or for every run) and those suites (for :func:`dataset_classes`)."""
    from gibench.store.runs import RunStore

    runs = RunStore(Path(runs_dir), repair=False, warn=lambda message: None).manifest().runs
    suites = [dict(r.suite) for r in runs if job_hashes is None or job_hashes & set(r.jobs)]
    return rule_of(suites), suites


def dataset_classes(labels: Iterable[str], suites: Iterable[Mapping[str, Any]] = ()) -> dict[str, int | None]:
    """Dataset label → its number of classes (None: unknown here), from the installed dataset plugin's ``sizes()``
    with the options the recorded ``suites`` give that label (a label without options: the dataset's defaults)."""
    from gibench.api import registry

    options: dict[str, tuple[str, dict[str, Any]]] = {}
    for raw in suites:
        for grid in [raw, *(g for g in raw.get("extra_grids") or [] if isinstance(g, Mapping))]:
            for name, point in _dataset_points(grid.get("datasets") or [], registry):
                options.setdefault(_canonical(_label(name, point)), (name, point))
    found: dict[str, int | None] = {}
    for label in dict.fromkeys(labels):
        name, params = options.get(_canonical(label), (label, {}) if "(" not in label else (None, {}))
        try:
            sizes = registry.datasets.create(name, **params).sizes() if name else None
        except Exception:  # not installed here, or options it no longer takes: the count is unknown
            sizes = None
        found[label] = sizes.num_classes if sizes is not None else None
    return found


def _dataset_points(entries: Any, registry: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, options) of every grid point of a suite's ``datasets`` list, expanded as a suite file's are."""
    from gibench.core.params import config_fields, field_types, is_sequence_type
    from gibench.suites.suite import expand_grid

    points = []
    for item in [entries] if isinstance(entries, (str, Mapping)) else list(entries):
        name, given = (item, {}) if isinstance(item, str) else next(iter(item.items()), (None, {}))
        if not isinstance(name, str) or not isinstance(given or {}, Mapping):
            continue
        try:
            config = registry.datasets.get(name).Config
            types = field_types(config)
            sequences = {k for k in config_fields(config) if is_sequence_type(types[k])}
            points.extend((name, point) for point in expand_grid(dict(given or {}), sequences))
        except Exception:  # a dataset not installed here: its label stays unknown
            continue
    return points


def _canonical(label: str) -> str:
    """A label with its options in sorted order: a recorded suite may hold its options sorted (a submission stores
    canonical JSON) while a job's label keeps the order the suite file gave them."""
    if not label.endswith(")") or "(" not in label:
        return label
    name, inner = label[:-1].split("(", 1)
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return f"{name}({', '.join(sorted(parts))})"


def _label(name: str, params: Mapping[str, Any]) -> str:
    from gibench.training.specs import PluginSpec

    return PluginSpec.of(name, params, {}).label


def collapse_verdicts(stats: pd.DataFrame, classes: Mapping[str, int | None], rule: CollapseRule | None = None,
                      baseline: str = BASELINE, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per variant of ``stats`` (a :func:`gibench.results.tables.summarize` table): ``by``,
    :data:`~gibench.results.tables.TABLE_KEYS`, :data:`~gibench.results.tables.VARIANT_KEYS` and
    :data:`COLLAPSE_COLUMNS` (``collapse``: ``collapsed``, ``kept``, ``baseline`` or ``not judged``; the reason; the
    accuracy, erm's, chance and the floor, NaN where not judged; the keep fraction)."""
    rule = rule or CollapseRule()
    by = list(by)
    keys, table_keys = [*by, *TABLE_KEYS, *VARIANT_KEYS], [*by, *TABLE_KEYS]
    accuracy = stats[(stats["evaluator"] == ACCURACY) & (stats["metric"] == ACCURACY) & (stats["n_ok"] > 0)]
    setting = ["evaluator_version", "evaluator_params"]
    erm = accuracy[accuracy["regularizer"] == baseline].drop_duplicates([*table_keys, *setting], keep=False)
    erm_mean = {tuple(r[k] for k in [*table_keys, *setting]): float(r["mean"]) for r in erm.to_dict("records")}
    own: dict[tuple, list[tuple[bool, str, str, float]]] = {}
    for r in accuracy.to_dict("records"):
        own.setdefault(tuple(r[k] for k in keys), []).append(
            (r["evaluator_params"] != "{}", str(r["evaluator_version"]), str(r["evaluator_params"]), float(r["mean"])))
    rows = []
    for key in stats[keys].drop_duplicates().itertuples(index=False, name=None):
        record = dict(zip(keys, key))
        table = tuple(record[k] for k in table_keys)
        paired = [(acc, erm_mean[(*table, version, params)]) for _, version, params, acc in sorted(own.get(key, []))
                  if (*table, version, params) in erm_mean]
        state, reason, numbers = _verdict(record, paired, bool(own.get(key)), classes.get(record["dataset"]), rule,
                                          baseline)
        rows.append(record | dict(zip(COLLAPSE_COLUMNS, (state, reason, *numbers, rule.keep_fraction))))
    return pd.DataFrame(rows, columns=[*keys, *COLLAPSE_COLUMNS])


def _verdict(record: dict, paired: list[tuple[float, float]], has_accuracy: bool, classes: int | None,
             rule: CollapseRule, baseline: str) -> tuple[str, str, tuple[float, float, float, float]]:
    nan = (math.nan,) * 4
    if record["regularizer"] == baseline:
        return BASELINE_STATE, "baseline: erm is the reference of the accuracy floor", nan
    if not has_accuracy:
        return NOT_JUDGED, "not judged: no accuracy result", nan
    if not paired:
        return NOT_JUDGED, "not judged: no single erm row with an accuracy result in this table", nan
    if not classes:
        return NOT_JUDGED, f"not judged: the number of classes of {record['dataset']} is unknown here", nan
    (accuracy, erm), chance = paired[0], 1.0 / classes
    if erm <= chance:
        return NOT_JUDGED, f"not judged: erm's accuracy {erm:.3f} is not above chance {chance:.3f}", nan
    floor = rule.floor(erm, chance)
    numbers = (accuracy, erm, chance, floor)
    if accuracy < floor:
        return COLLAPSED, (f"collapsed: accuracy {accuracy:.3f} vs erm {erm:.3f} (floor {floor:.3f}: chance "
                           f"{chance:.3f} + {rule.keep_fraction:g} × (erm − chance))"), numbers
    return KEPT, f"kept: accuracy {accuracy:.3f} vs erm {erm:.3f} (floor {floor:.3f})", numbers


def judge(stats: pd.DataFrame, verdicts: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``stats`` with :data:`COLLAPSE_COLUMNS` from ``verdicts`` (:func:`collapse_verdicts`), ranked again so that a
    collapsed row holds no rank and takes none from the others."""
    keys = [*by, *TABLE_KEYS, *VARIANT_KEYS]
    merged = stats.drop(columns=[c for c in COLLAPSE_COLUMNS if c in stats.columns]).merge(
        verdicts[[*keys, *COLLAPSE_COLUMNS]], on=keys, how="left")
    merged["collapse"] = merged["collapse"].fillna(NOT_JUDGED)
    merged["collapse_reason"] = merged["collapse_reason"].fillna("not judged: no verdict for this row")
    return add_ranks(merged)


def judged_summary(frame: pd.DataFrame, classes: Mapping[str, int | None] | None = None,
                   rule: CollapseRule | None = None, baseline: str = BASELINE, by: Sequence[str] = (),
                   suites: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """:func:`gibench.results.tables.summarize` of ``frame`` with every row judged (:func:`judge`); ``classes``
    default to :func:`dataset_classes` of the frame's datasets with ``suites``."""
    stats = summarize(frame, baseline, by)
    if classes is None:
        classes = dataset_classes(stats["dataset"].astype(str), suites)
    return judge(stats, collapse_verdicts(stats, classes, rule, baseline, by), by)


def without_collapsed(frame: pd.DataFrame, verdicts: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of a long results table whose variant ``verdicts`` does not call collapsed."""
    keys = [*by, *TABLE_KEYS, *VARIANT_KEYS]
    frame = complete(frame)
    gone = verdicts.loc[verdicts["collapse"] == COLLAPSED, keys].drop_duplicates()
    if gone.empty:
        return frame
    marked = frame.merge(gone.assign(_collapsed=True), on=keys, how="left")
    return frame[~marked["_collapsed"].fillna(False).astype(bool).to_numpy()]


def sanity_gate(frame: pd.DataFrame, classes: Mapping[str, int | None] | None = None,
                rule: CollapseRule | None = None, control: str = "fooled",
                baseline: str = BASELINE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`gibench.results.tables.sanity_table` without the collapsed ``control`` rows (a model that no longer
    classifies cannot tell whether an evaluator sees the fooling), and the verdicts of those left out."""
    frame = complete(frame)
    pair = frame[frame["regularizer"].isin([baseline, control])]
    stats = summarize(pair[(pair["evaluator"] == ACCURACY) & (pair["metric"] == ACCURACY)], baseline)
    if classes is None:
        classes = dataset_classes(stats["dataset"].astype(str))
    verdicts = collapse_verdicts(stats, classes, rule, baseline)
    collapsed = verdicts[(verdicts["regularizer"] == control) & (verdicts["collapse"] == COLLAPSED)]
    return sanity_table(without_collapsed(pair, verdicts), control, baseline), collapsed.reset_index(drop=True)
