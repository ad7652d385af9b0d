"""A suite's selection protocol: the ``validation``, ``sweep`` and ``select`` keys of a suite file, validated.

The protocol follows "In Search of Lost Domain Generalization" (Gulrajani & Lopez-Paz, ICLR 2021; public code
facebookresearch/DomainBed): every regularizer declares its strength knob and the settings to try
(:class:`gibench.api.regularizer.Sweep`, like ``domainbed/hparams_registry.py``), each gets the same search, and the
setting is chosen on a validation split held out of the training split, never on the test split
(``domainbed/model_selection.py``). In a suite file::

    validation: {fraction: 0.1, seed: 0}   # optional; this is the default of a suite with `select`
    sweep:                                 # optional; defaults shown
      seeds: [0]                           # the training seeds of the sweep (default: the suite's first seed)
      values: {"pgd(norm=linf)": [0.01, 0.03, 0.1]}   # optional: replace declared values (strongest last), by
                                                       # regularizer name or entry label (the label wins)
    select: {rule: max_drop, max_drop: 0.02}   # or {rule: all}

``rule: max_drop``: per dataset, backbone and regularizer entry, the strongest swept setting whose mean validation
accuracy over the sweep's seeds is at most ``max_drop`` below ``erm``'s (the accuracy budget papers use implicitly);
only that setting is then trained with the suite's seeds and scored by its evaluators. ``rule: all``: every swept
setting is trained with the suite's seeds and scored (the whole curve; no sweep phase).

Choices the protocol leaves open, made here: the sweep is a grid of one knob (declared by the plugin), not random
search; the sweep's seeds default to one (the suite's first); when no setting meets the budget the weakest is chosen
and marked as over budget, so the row stays visible and says so; a setting whose training failed does not meet it.
"""

from __future__ import annotations

__all__ = ["RULES", "SELECT_KEYS", "SWEEP_KEYS", "SelectionPlan", "VALIDATION_KEYS", "parse_selection_plan"]

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gibench.core.errors import ConfigError
from gibench.core.params import did_you_mean
from gibench.data.validation import DEFAULT_VALIDATION, ValidationSplit

RULES = ("max_drop", "all")
SELECT_KEYS = ("rule", "max_drop")
SWEEP_KEYS = ("seeds", "values")
VALIDATION_KEYS = ("fraction", "seed")


@dataclass(frozen=True)
class SelectionPlan:
    """How a suite selects: the rule, the accuracy budget, the sweep's seeds and any replaced sweep values.

    ``values`` holds (regularizer name or entry label, values in increasing strength) pairs that replace the plugin's
    declared values; a label (``pgd(norm=linf)``) names one entry, a name every entry of that regularizer.
    """

    rule: str
    max_drop: float | None
    seeds: tuple[int, ...]
    values: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def values_for(self, name: str, label: str | None = None) -> tuple[float, ...] | None:
        """The replaced sweep values of the entry ``label`` of regularizer ``name``, or None (its declared ones)."""
        replaced = dict(self.values)
        return replaced.get(label) if label in replaced else replaced.get(name)

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "max_drop": self.max_drop, "seeds": list(self.seeds),
                "values": {name: list(values) for name, values in self.values}}


def parse_selection_plan(raw: Mapping[str, Any], suite_seeds: tuple[int, ...],
                         source: str) -> tuple[ValidationSplit | None, SelectionPlan | None]:
    """The suite's validation split and selection plan (None, None for a suite without the keys).

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    select, sweep = raw.get("select"), raw.get("sweep")
    if sweep is not None and select is None:
        raise ConfigError(f"{source}: `sweep` needs `select`: add `select: {{rule: max_drop, max_drop: 0.02}}` (the "
                          "strongest setting within 0.02 of erm's validation accuracy) or `select: {rule: all}`.")
    validation = _validation(raw.get("validation"), source)
    if select is None:
        return validation, None
    rule, max_drop = _select(select, source)
    seeds, values = _sweep(sweep or {}, suite_seeds, source)
    return validation or DEFAULT_VALIDATION, SelectionPlan(rule, max_drop, seeds, values)


def _validation(value: Any, source: str) -> ValidationSplit | None:
    if value is None:
        return None
    where = f"{source}: validation"
    options = _mapping(value, where, VALIDATION_KEYS)
    fraction = options.get("fraction", DEFAULT_VALIDATION.fraction)
    seed = options.get("seed", DEFAULT_VALIDATION.seed)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not (math.isfinite(fraction) and 0 < fraction <= 0.5):
        raise ConfigError(f"{where}.fraction: expected a number in (0, 0.5] (the share of each class's training "
                          f"images held out for selection), got {fraction!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}.seed: expected a non-negative integer, got {seed!r}.")
    return ValidationSplit(float(fraction), seed)


def _select(value: Any, source: str) -> tuple[str, float | None]:
    where = f"{source}: select"
    if value == "all":
        value = {"rule": "all"}
    options = _mapping(value, where, SELECT_KEYS)
    rule = options.get("rule")
    if rule not in RULES:
        raise ConfigError(f"{where}.rule: expected one of {', '.join(RULES)}, got {rule!r}."
                          f"{did_you_mean(str(rule), RULES)} max_drop: the strongest setting within `max_drop` of "
                          "erm's validation accuracy; all: every setting (the whole curve).")
    max_drop = options.get("max_drop")
    if rule == "all":
        if max_drop is not None:
            raise ConfigError(f"{where}.max_drop: `rule: all` keeps every setting and takes no max_drop; remove it, "
                              "or use `rule: max_drop`.")
        return rule, None
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) \
            or not (math.isfinite(max_drop) and 0 <= max_drop < 1):
        raise ConfigError(f"{where}.max_drop: expected a number in [0, 1), the validation accuracy a setting may lose "
                          f"against erm's (e.g. 0.02 for two points), got {max_drop!r}.")
    return rule, float(max_drop)


def _sweep(value: Any, suite_seeds: tuple[int, ...],
           source: str) -> tuple[tuple[int, ...], tuple[tuple[str, tuple[float, ...]], ...]]:
    where = f"{source}: sweep"
    options = _mapping(value, where, SWEEP_KEYS)
    seeds = options.get("seeds", [suite_seeds[0]])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}.seeds: expected a non-empty list of distinct non-negative integers (the seeds "
                          f"each swept setting is trained with), got {options.get('seeds')!r}.")
    replaced = []
    for name, values in _mapping(options.get("values") or {}, f"{where}.values", None).items():
        place = f"{where}.values.{name}"
        if not isinstance(values, list) or len(values) < 2 \
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            raise ConfigError(f"{place}: expected a list of at least two numbers in increasing strength, got "
                              f"{values!r}.")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ConfigError(f"{place}: the values must increase strictly (weakest first, strongest last), got "
                              f"{values!r}.")
        replaced.append((str(name), tuple(float(v) for v in values)))
    return tuple(seeds), tuple(replaced)


def _mapping(value: Any, where: str, keys: tuple[str, ...] | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        expected = f" with the keys {', '.join(keys)}" if keys else ""
        raise ConfigError(f"{where}: expected a mapping{expected}, got {value!r}.")
    for key in value if keys else ():
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), keys)} Valid keys: "
                              f"{', '.join(keys)}.")
    return value
