"""Suite files: YAML → validated, frozen objects.

A suite file has the top-level keys ``name``, ``description``, ``datasets``, ``backbones``, ``regularizers``,
``evaluators``, ``seeds``, ``train`` (docs/architecture.md, "Suite file") and ``train_per_dataset`` (``{<dataset name or
label>: {<train keys>}}``, merged over ``train`` for the jobs of that dataset, e.g. ``augment: crop_flip`` for CIFAR
only). Each of the four plugin lists holds names, or one-key mappings of a name to its options; a list of values for an
option is a grid (unless the option itself is a list, such as a tuple of fractions: then a list of lists is the grid).
Grids are expanded here, and every grid point is validated against its plugin's ``Config``, so a suite that loads is a
suite whose every job can be built.

``extra_grids`` (optional) is a list of further cross products in the same suite, each a mapping with any of
``datasets``, ``backbones``, ``regularizers`` and ``evaluators`` (a key left out is the top-level list) and
``add_evaluators`` (appended to the grid's evaluators) and ``evaluator_options`` (``{<evaluator name>: {<option>:
<value>}}``, merged into every entry of that evaluator in the grid, so that a grid changes one option, such as
GAN-test's judge for a grid whose model is the default judge's architecture, without copying the evaluator list),
for jobs that belong in the suite but not in its main grid: an X-DNN backbone (``bias: false``) with only the
regularizers that suit it, scored by the top-level evaluators plus extra evaluator options such as ``saliency:
x_gradient``. A job that two grids produce is one job,
scored by the evaluators of both. The suite's ``datasets``/``backbones``/``regularizers``/``evaluators`` are the
union over all grids (what preflight and provenance see); :meth:`Suite.all_grids` keeps them apart for
:func:`gibench.suites.jobs.expand`. An X-DNN backbone with a regularizer that needs a smooth activation (the
score-matching family) is an error in any grid.

``limits`` (optional): ``{job_timeout_s: s, eval_timeout_s: s}``, the time limits of a job and of one evaluation
under process isolation (:mod:`gibench.running.isolation`; ``--job-timeout`` and ``--eval-timeout`` win over them); a
suite without it is hashed as before.

``collapse`` (optional): ``{keep_fraction: f}``, the accuracy floor below which a row is reported as collapsed
(:mod:`gibench.results.collapse`, which holds the default); a suite without it is hashed as before.

``validation``, ``sweep`` and ``select`` (optional): the selection protocol (:mod:`gibench.suites.selection_plan`):
a validation split held out of every job's training split, the strength sweep of every regularizer that declares one,
and the rule that picks the setting to score. In a suite that selects, every regularizer must declare its sweep
(``erm`` and ``fooled`` declare none and are trained as they are), a regularizer entry may not set its swept
parameter (the rule does), and ``rule: max_drop`` needs ``erm`` in every grid (it is the accuracy reference).

Every error names the file, the place (``regularizers[1].gradient_norm.weight``), the bad value and what is allowed.
"""

from __future__ import annotations

__all__ = [
    "COLLAPSE_KEYS", "EXTRA_GRID_KEYS", "GRID_KEYS", "Grid", "PluginSpec", "REQUIRED_KEYS", "Suite", "TOP_LEVEL_KEYS",
    "TrainConfig", "collapse_option", "expand_grid", "identity_config", "load_suite",
    "parse_suite", "resolve_suite_path", "shipped_suites",
]

import dataclasses
import importlib.resources
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gibench.api import registry
from gibench.core import fsio
from gibench.core.config_types import IDENTITY_UNLESS_DEFAULT
from gibench.core.errors import ConfigError, GibenchError
from gibench.core.params import build_config, config_fields, did_you_mean, field_types, is_sequence_type, jsonable
from gibench.data.validation import ValidationSplit
from gibench.suites.selection_plan import SelectionPlan, parse_selection_plan
from gibench.training.presets import expand_preset
from gibench.training.specs import HASHED_UNLESS_DEFAULT, PluginSpec, TrainConfig  # noqa: F401  (re-exported)

TOP_LEVEL_KEYS = ("name", "description", "datasets", "backbones", "regularizers", "evaluators", "seeds", "train",
                  "train_per_dataset", "extra_grids", "collapse", "validation", "sweep", "select", "limits")
GRID_KEYS = ("datasets", "backbones", "regularizers", "evaluators")
EXTRA_GRID_KEYS = GRID_KEYS + ("add_evaluators", "evaluator_options")
REQUIRED_KEYS = ("name", "datasets", "backbones", "regularizers", "evaluators")
COLLAPSE_KEYS = ("keep_fraction",)
LIMITS_KEYS = ("job_timeout_s", "eval_timeout_s")


@dataclass(frozen=True)
class Grid:
    """One cross product of a suite: datasets × backbones × regularizers (× the suite's seeds), scored by evaluators."""

    datasets: tuple[PluginSpec, ...]
    backbones: tuple[PluginSpec, ...]
    regularizers: tuple[PluginSpec, ...]
    evaluators: tuple[PluginSpec, ...]


@dataclass(frozen=True)
class Suite:
    """A validated suite: every plugin list already expanded into grid points.

    The four plugin tuples are the union over the main grid and ``extra_grids``; ``grids`` (main grid first) keeps
    the grids apart and is empty for a suite built by hand, which is then one grid of the four tuples.
    """

    name: str
    description: str
    datasets: tuple[PluginSpec, ...]
    backbones: tuple[PluginSpec, ...]
    regularizers: tuple[PluginSpec, ...]
    evaluators: tuple[PluginSpec, ...]
    seeds: tuple[int, ...]
    train: TrainConfig
    source: str = ""  # the file it came from
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the parsed YAML, for provenance
    #: (dataset label, merged TrainConfig) for the datasets that ``train_per_dataset`` names; the others use ``train``
    train_per_dataset: tuple[tuple[str, TrainConfig], ...] = ()
    grids: tuple[Grid, ...] = ()
    #: ``collapse.keep_fraction`` as the file declares it; None: the default of :mod:`gibench.results.collapse`
    collapse_keep_fraction: float | None = None
    #: the validation split every job holds out (``validation``, or the default of a suite with ``select``); None: jobs
    #: train on the whole training split
    validation: ValidationSplit | None = None
    #: ``sweep`` and ``select`` (:mod:`gibench.suites.selection_plan`); None: regularizers are scored as listed
    selection: SelectionPlan | None = None
    #: ``limits``: (key, seconds) of the time limits the file sets (job_timeout_s, eval_timeout_s); the run's options
    #: (``--job-timeout``, ``--eval-timeout``) win over them
    limits: tuple[tuple[str, float], ...] = ()

    def all_grids(self) -> tuple[Grid, ...]:
        """The suite's cross products, main grid first (see the module docstring)."""
        return self.grids or (Grid(self.datasets, self.backbones, self.regularizers, self.evaluators),)

    @property
    def hash(self) -> str:
        return canonical_hash(jsonable(self.raw))

    def train_for(self, dataset: PluginSpec) -> TrainConfig:
        """The training config of the jobs of ``dataset``: ``train`` merged with its ``train_per_dataset`` entry."""
        return dict(self.train_per_dataset).get(dataset.label, self.train)


canonical_hash = fsio.canonical_hash  # kept importable from here; gibench.core.fsio owns it


# ----------------------------------------------------------------------------------------------------------------------
# Loading


def shipped_suites() -> list[str]:
    """Names of the suites that ship with gibench (``gibench/suites/*.yaml``)."""
    folder = importlib.resources.files("gibench.suites")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the name of a shipped suite."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    if str(name_or_path) in shipped_suites():
        return Path(str(importlib.resources.files("gibench.suites") / f"{name_or_path}.yaml"))
    hint = did_you_mean(str(name_or_path), shipped_suites())
    raise ConfigError(
        f"no suite file {str(name_or_path)!r}: it is neither an existing file nor a shipped suite.{hint} "
        f"Shipped suites: {', '.join(shipped_suites())}. Pass a path to your own YAML file, or one of those names."
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """Read, validate and expand a suite file (a path or a shipped suite's name)."""
    path = resolve_suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_suite(raw, source=str(path))


def parse_suite(raw: Any, source: str = "<suite>") -> Suite:
    """Validate an already-parsed suite mapping (see :func:`load_suite`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a suite file must be a mapping with the keys {', '.join(TOP_LEVEL_KEYS)}.")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{source}: unknown top-level key {key!r}.{did_you_mean(str(key), TOP_LEVEL_KEYS)} "
                f"Valid keys: {', '.join(TOP_LEVEL_KEYS)}."
            )
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise ConfigError(f"{source}: missing required key {key!r}. A suite needs {', '.join(REQUIRED_KEYS)}.")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: 'name' must be a non-empty string, got {name!r}.")
    main = _grid(raw, source)
    grids = (main,) + tuple(_grid(entry, f"{source}: extra_grids[{i}]", main)
                            for i, entry in enumerate(_extra_grids(raw, source)))
    for i, grid in enumerate(grids):
        _check_xdnn_pairs(grid, source if i == 0 else f"{source}: extra_grids[{i - 1}]")
    union = [_union(getattr(g, key) for g in grids) for key in GRID_KEYS]
    seeds = _seeds(raw.get("seeds", [0]), source)
    validation, selection = parse_selection_plan(raw, seeds, source)
    if selection is not None:
        _check_selection(grids, selection, source)
    return Suite(
        name=name,
        description=str(raw.get("description") or ""),
        datasets=union[0],
        backbones=union[1],
        regularizers=union[2],
        evaluators=union[3],
        seeds=seeds,
        train=_train_config(raw.get("train") or {}, f"{source}: train"),
        source=source,
        raw=dict(raw),
        train_per_dataset=_train_per_dataset(raw, union[0], source),
        grids=grids if len(grids) > 1 else (),
        collapse_keep_fraction=collapse_option(raw.get("collapse"), source),
        validation=validation,
        selection=selection,
        limits=limits_option(raw.get("limits"), source),
    )


def _check_selection(grids: tuple[Grid, ...], plan: SelectionPlan, source: str) -> None:
    """Every regularizer of a suite that selects declares its sweep and leaves the swept parameter to the rule;
    ``max_drop`` needs ``erm`` in every grid; replaced values name a swept regularizer of the suite."""
    from gibench.api.regularizer import declares_sweep

    swept = set()
    for i, grid in enumerate(grids):
        where = source if i == 0 else f"{source}: extra_grids[{i - 1}]"
        names = [spec.name for spec in grid.regularizers]
        if plan.rule == "max_drop" and "erm" not in names:
            raise ConfigError(f"{where}: `select: {{rule: max_drop}}` compares every setting's validation accuracy "
                              "with erm's, but erm is not among this grid's regularizers; add erm, or use "
                              "`select: {rule: all}`.")
        for spec in grid.regularizers:
            cls = registry.regularizers.get(spec.name)
            if not declares_sweep(cls):
                raise ConfigError(f"{where}: regularizer {spec.name!r} declares no sweep, so a suite that selects "
                                  "cannot choose its strength. Declare one in the plugin (`sweep = Sweep(parameter, "
                                  "values, scale)`, gibench.Sweep; `sweep = None` for a method without a strength "
                                  "knob), or leave it out of this suite.")
            if cls.sweep is None:
                continue
            swept.update((spec.name, spec.label))
            if cls.sweep.parameter in spec.params:
                raise ConfigError(f"{where}: {spec.label} sets {cls.sweep.parameter!r}, the parameter its sweep "
                                  f"varies; in a suite that selects the rule chooses it. Remove "
                                  f"{cls.sweep.parameter!r} from the entry (replace the values with "
                                  f"`sweep: {{values: {{{spec.name}: [...]}}}}`), or drop `select`.")
    for name, _ in plan.values:
        if name not in swept:
            raise ConfigError(f"{source}: sweep.values.{name}: {name!r} is not a swept regularizer (name or entry "
                              f"label) of this suite.{did_you_mean(name, sorted(swept))} Swept here: "
                              f"{', '.join(sorted(swept)) or 'none'}.")


_GRID_PARSERS = {"datasets": registry.datasets, "regularizers": registry.regularizers,
                 "evaluators": registry.evaluators}


def _grid(raw: Mapping[str, Any], source: str, defaults: Grid | None = None) -> Grid:
    """The four plugin lists of a grid; a key missing from ``raw`` is taken from ``defaults`` (the main grid)."""
    lists = {}
    for key in GRID_KEYS:
        if defaults is not None and key not in raw:
            lists[key] = getattr(defaults, key)
        elif key == "backbones":
            lists[key] = _backbone_list(raw, source)
        else:
            lists[key] = _plugin_list(raw, key, source, _GRID_PARSERS[key])
    if "add_evaluators" in raw:
        added = _plugin_list(raw, "add_evaluators", source, registry.evaluators)
        lists["evaluators"] = _union([lists["evaluators"], added])
    if "evaluator_options" in raw:
        lists["evaluators"] = _with_options(lists["evaluators"], raw["evaluator_options"],
                                            f"{source}.evaluator_options")
    return Grid(**lists)


def _with_options(specs: tuple[PluginSpec, ...], overrides: Any, where: str) -> tuple[PluginSpec, ...]:
    """``specs`` with each ``{name: {option: value}}`` of ``overrides`` merged into every entry of that evaluator (the
    entry's own options first, in their order, then the new ones: the label reads as if the entry had been written
    with them). One value per option: a grid of options belongs in the evaluator's entry."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: expected a mapping of evaluator names to their options, e.g. "
                          f"{{gan_test: {{judge_backbone: gibench_cnn}}}}, got {overrides!r}.")
    names = [spec.name for spec in specs]
    for name, options in overrides.items():
        if name not in names:
            raise ConfigError(f"{where}: {name!r} is not an evaluator of this grid.{did_you_mean(str(name), names)} "
                              f"Its evaluators: {', '.join(dict.fromkeys(names))}.")
        _mapping(options, f"{where}.{name}")
    merged = []
    for spec in specs:
        if spec.name not in overrides:
            merged.append(spec)
            continue
        cls = registry.evaluators.get(spec.name)
        point = {**spec.params, **overrides[spec.name]}
        if len(expand_grid(point, _sequence_options(cls.Config))) != 1:
            raise ConfigError(f"{where}.{spec.name}: one value per option here; a grid of options belongs in the "
                              f"evaluator's own entry in `evaluators`.")
        config = build_config(cls.Config, point, f"{where}.{spec.name}")
        merged.append(PluginSpec.of(spec.name, point, identity_config(config)))
    return _union([merged])


def _extra_grids(raw: Mapping[str, Any], source: str) -> list[Mapping[str, Any]]:
    entries = raw.get("extra_grids") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: extra_grids must be a list of mappings with any of "
                          f"{', '.join(EXTRA_GRID_KEYS)}, got {entries!r}.")
    for i, entry in enumerate(entries):
        where = f"{source}: extra_grids[{i}]"
        _mapping(entry, where)
        for key in entry:
            if key not in EXTRA_GRID_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), EXTRA_GRID_KEYS)} A grid "
                                  f"takes {', '.join(EXTRA_GRID_KEYS)} (a list left out is the top-level one; "
                                  "add_evaluators are appended to the grid's evaluators; evaluator_options are merged "
                                  "into the grid's entries of the evaluators they name).")
        if not entry:
            raise ConfigError(f"{where}: an empty grid repeats the main grid; give at least one of "
                              f"{', '.join(EXTRA_GRID_KEYS)}.")
    return entries


def _union(lists: Any) -> tuple[PluginSpec, ...]:
    return tuple(dict.fromkeys(spec for specs in lists for spec in specs))


def _check_xdnn_pairs(grid: Grid, where: str) -> None:
    """An X-DNN backbone (``bias: false``, ReLU) cannot train with a regularizer that needs a smooth activation."""
    for backbone in grid.backbones:
        if backbone.config.get("bias", True) is not False:
            continue
        smooth = [r.label for r in grid.regularizers
                  if registry.regularizers.get(r.name).needs_smooth_activation]
        if smooth:
            raise ConfigError(
                f"{where}: backbone {backbone.label} is an X-DNN (`bias: false`, ReLU only) and cannot be trained "
                f"with {', '.join(smooth)}: these need a smooth activation (softplus) for a non-zero input Hessian, "
                "while an X-DNN must be piecewise linear to be homogeneous (softplus(α·z) ≠ α·softplus(z)). Put the "
                "X backbone in an `extra_grids` entry with regularizers that do not need smoothness (erm, "
                "gradient_norm, attribution_prior, pgd, ...)."
            )


def _train_config(value: Any, where: str) -> TrainConfig:
    """The train section, its ``preset`` (if any) expanded (:func:`gibench.training.presets.expand_preset`); booleans
    are refused for numeric options (pydantic would read ``epochs: true`` as 1)."""
    options = expand_preset(_mapping(value, where), where)
    types = field_types(TrainConfig)
    for key, option in options.items():
        if isinstance(option, bool) and types.get(key) not in (bool, None):
            raise ConfigError(f"{where}: parameter {key!r} = {option!r} is a boolean, but {key} is a number "
                              f"({_type_label(types[key])}); write a value such as {getattr(TrainConfig(), key)!r}.")
    return build_config(TrainConfig, options, where)


def _train_per_dataset(raw: Mapping[str, Any], datasets: tuple[PluginSpec, ...],
                       source: str) -> tuple[tuple[str, TrainConfig], ...]:
    """``train_per_dataset: {<dataset name or label>: {<train keys>}}``, each merged over ``train``.

    A dataset name applies to every grid point of that dataset, a label (``blockmnist(placement_seed=1)``) to one; where
    both name a dataset, the label's keys win. A ``preset`` in ``train`` or in an entry stands for its keys there
    (:func:`gibench.training.presets.expand_preset`); every preset sets the whole recipe
    (:data:`gibench.training.presets.RECIPE_KEYS`), so an entry's preset replaces it and keeps the other keys of
    ``train`` (``amp``, ``grad_clip``, ...). Returns (label, merged config) for every dataset that an entry names.
    """
    where = f"{source}: train_per_dataset"
    entries = _mapping(raw.get("train_per_dataset") or {}, where)
    known = list(dict.fromkeys([d.name for d in datasets] + [d.label for d in datasets]))
    for key in entries:
        if key not in known:
            raise ConfigError(
                f"{where}: {key!r} is not a dataset of this suite.{did_you_mean(str(key), known)} "
                f"Name one of the suite's datasets (by name or label): {', '.join(known)}."
            )
    expanded = {key: expand_preset(_mapping(overrides or {}, f"{where}.{key}"), f"{where}.{key}")
                for key, overrides in entries.items()}
    base = expand_preset(_mapping(raw.get("train") or {}, f"{source}: train"), f"{source}: train")
    merged = []
    for dataset in datasets:
        keys = [k for k in (dataset.name, dataset.label) if k in entries]
        if keys:
            options = {**base, **{k: v for key in keys for k, v in expanded[key].items()}}
            merged.append((dataset.label, _train_config(options, f"{where}.{keys[-1]}")))
    return tuple(merged)


def limits_option(value: Any, source: str) -> tuple[tuple[str, float], ...]:
    """``limits: {job_timeout_s: s, eval_timeout_s: s}``: positive seconds (process isolation's time limits,
    :mod:`gibench.running.isolation`); empty when the key is absent or null."""
    if value is None:
        return ()
    where = f"{source}: limits"
    options = _mapping(value, where)
    limits = []
    for key, seconds in options.items():
        if key not in LIMITS_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), LIMITS_KEYS)} Valid keys: "
                              f"{', '.join(LIMITS_KEYS)}.")
        if seconds is None:
            continue
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise ConfigError(f"{where}.{key}: expected a positive number of seconds, got {seconds!r}.")
        limits.append((key, float(seconds)))
    return tuple(limits)


def collapse_option(value: Any, source: str) -> float | None:
    """``collapse: {keep_fraction: f}``: f in [0, 1), the share of ``erm``'s accuracy above chance a row must keep not
    to be reported as collapsed (:mod:`gibench.results.collapse`); None when the key is absent or null."""
    if value is None:
        return None
    where = f"{source}: collapse"
    options = _mapping(value, where)
    for key in options:
        if key not in COLLAPSE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), COLLAPSE_KEYS)} Valid keys: "
                              f"{', '.join(COLLAPSE_KEYS)}.")
    fraction = options.get("keep_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"{where}.keep_fraction: expected a number in [0, 1) (the share of erm's accuracy above "
                          f"chance a row must keep), got {fraction!r}.")
    return float(fraction)


def _type_label(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of option names to values, got {value!r}.")
    return value


def _entries(raw: Mapping[str, Any], key: str, source: str) -> list[tuple[str, Mapping[str, Any], str]]:
    """Split a plugin list into (name, options, place) triples."""
    items = raw[key]
    if isinstance(items, (str, Mapping)):
        items = [items]
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: {key!r} must be a non-empty list of names or one-key mappings, got {items!r}.")
    entries = []
    for i, item in enumerate(items):
        place = f"{source}: {key}[{i}]"
        if isinstance(item, str):
            entries.append((item, {}, place))
        elif isinstance(item, Mapping) and len(item) == 1:
            (name, options), = item.items()
            entries.append((str(name), _mapping(options or {}, f"{place} ({name})"), place))
        else:
            raise ConfigError(
                f"{place}: expected a name or a one-key mapping {{name: {{option: value}}}}, got {item!r}."
            )
    return entries


def _plugin_list(raw: Mapping[str, Any], key: str, source: str, reg: registry.Registry) -> tuple[PluginSpec, ...]:
    specs = []
    for name, options, place in _entries(raw, key, source):
        try:
            cls = reg.get(name)
        except GibenchError as exc:
            raise type(exc)(f"{place}: {exc}") from None
        for point in expand_grid(options, _sequence_options(cls.Config)):
            where = f"{place}.{name}"
            config = build_config(cls.Config, point, where)
            specs.append(PluginSpec.of(name, point, identity_config(config)))
    return tuple(specs)


def _sequence_options(config_cls: type) -> set[str]:
    """The options of a plugin Config whose own type is a sequence (a list there is one value, not a grid axis)."""
    types = field_types(config_cls)
    return {k for k in config_fields(config_cls) if is_sequence_type(types[k])}


def identity_config(config: Any) -> dict[str, Any]:
    """A plugin config as JSON for its identity (hashes), without the fields of
    :data:`~gibench.core.config_types.IDENTITY_UNLESS_DEFAULT` that keep their class default (added after results were
    first stored: the hash of a config that does not use them is what it was before they existed)."""
    values = jsonable(config)
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name in IDENTITY_UNLESS_DEFAULT:
        if name in values and name in defaults and values[name] == jsonable(defaults[name]):
            del values[name]
    return values


def _backbone_list(raw: Mapping[str, Any], source: str) -> tuple[PluginSpec, ...]:
    """Backbones are timm models: names are checked against timm, options by building the model once on the CPU."""
    from gibench.training.models import create_backbone

    specs = []
    for name, options, place in _entries(raw, "backbones", source):
        for point in expand_grid(options, set()):
            try:
                create_backbone(name, num_classes=10, in_chans=3, **point)
            except GibenchError as exc:
                raise type(exc)(f"{place}: {exc}") from None
            specs.append(PluginSpec.of(name, point, point))
    return tuple(specs)


def expand_grid(options: Mapping[str, Any], sequence_keys: set[str]) -> list[dict[str, Any]]:
    """The cross product of every option whose value is a list (the grid axes), in the order given.

    For an option whose own type is a sequence, a list is one value, and only a list of lists is a grid.
    """
    axes = []
    for key, value in options.items():
        is_grid = isinstance(value, list) and (
            key not in sequence_keys or (value and all(isinstance(v, list) for v in value))
        )
        axes.append([(key, v) for v in value] if is_grid else [(key, value)])
        if is_grid and not value:
            raise ConfigError(f"option {key!r}: an empty list gives an empty grid; give at least one value.")
    return [dict(point) for point in itertools.product(*axes)]


def _seeds(value: Any, source: str) -> tuple[int, ...]:
    seeds = value if isinstance(value, list) else [value]
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad or not seeds:
        raise ConfigError(f"{source}: seeds must be a non-empty list of non-negative integers, got {value!r}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: seeds contains duplicates: {value!r}.")
    return tuple(seeds)
