"""Plugin registries over entry-point groups.

One :class:`Registry` per group (``gibench.regularizers``, ``gibench.evaluators``, ``gibench.datasets``). Rules
(docs/architecture.md, "Registries and plugins"):

* discovery reads entry-point metadata only; a plugin's module is imported the first time it is used;
* the built-ins register through the same entry points as third-party plugins (distribution ``gibench``);
* identical duplicates (same name, same ``module:attr``, as editable installs sometimes produce) are merged;
* a name claimed by two different targets is an error naming both distributions, raised when the name is used;
* a plugin that fails to import raises :class:`PluginLoadError` with its traceback when used, and is listed with that
  error by ``gibench list``, without breaking any other plugin;
* a plugin class whose declarations are wrong is reported the same way, with the reasons instead of a traceback
  (:func:`declaration_problems`: a dataclass ``Config``; for evaluators exactly one headline metric, unique metric
  names and ``requires`` naming known capabilities; for regularizers ``zero_strength`` keys that are Config fields
  and a ``sweep`` whose values are valid settings that contain the default),
  so that a broken plugin fails when it loads, not hours into a run;
* ``GIBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` keeps only the built-ins;
* unknown names get a "did you mean".
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import math
import numbers
import os
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gibench.api.plugin import (
    CAPABILITIES,
    TRAINING_ANNOTATIONS,
    Dataset,
    Evaluator,
    Metric,
    Plugin,
    Regularizer,
    Sweep,
)
from gibench.core.errors import ConfigError, PluginLoadError, UnknownPluginError
from gibench.core.identity import canonical_float
from gibench.core.params import build_config, did_you_mean

__all__ = [
    "AUTOLOAD_ENV", "BUILTIN_DISTRIBUTION", "PluginInfo", "PluginSource", "Registry", "datasets",
    "declaration_problems", "evaluators", "regularizers", "sweep_problems",
]

T = TypeVar("T", bound=Plugin)

BUILTIN_DISTRIBUTION = "gibench"
AUTOLOAD_ENV = "GIBENCH_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: its entry point target and the distribution that declares it."""

    name: str
    target: str  # "module:attr"
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginInfo:
    """What ``gibench list`` shows for one name."""

    name: str
    sources: tuple[PluginSource, ...]
    error: str | None = None  # import traceback, or the collision message

    @property
    def distribution(self) -> str:
        return self.sources[0].distribution

    @property
    def version(self) -> str:
        return self.sources[0].version


def declaration_problems(cls: type[Plugin]) -> list[str]:
    """What is wrong with a plugin class's declarations (empty when nothing is); one sentence with its fix each.

    Checked for every plugin: ``Config`` is a dataclass (standard or pydantic), ``version`` a non-empty string and a
    declared ``history`` (version -> what it changed) contains ``version``.
    Evaluators: ``metrics`` is a non-empty sequence of :class:`gibench.Metric` with unique names and exactly one
    ``headline``, each ``read_beside`` of the form ``"evaluator.metric"`` and with a ``caveat``; ``requires`` names
    only :data:`gibench.CAPABILITIES`. Regularizers: ``requires`` names only :data:`gibench.TRAINING_ANNOTATIONS`; every
    ``zero_strength`` key is
    a field of ``Config`` (``zero_strength = None`` declares that no setting turns the regularizer into ``erm``), and
    a declared ``sweep`` (:class:`gibench.Sweep`) passes :func:`sweep_problems`.
    """
    problems = _config_problems(cls)
    if issubclass(cls, Evaluator):
        problems += _metric_problems(cls.metrics) + _requires_problems(cls.requires)
    if issubclass(cls, Regularizer):
        problems += _requires_problems(cls.requires, TRAINING_ANNOTATIONS, "gibench.TRAINING_ANNOTATIONS")
    if issubclass(cls, Regularizer) and not problems:  # zero_strength and sweep are checked against a valid Config
        problems += _zero_strength_problems(cls) + sweep_problems(cls)
    return problems


def _config_problems(cls: type[Plugin]) -> list[str]:
    problems = []
    config = cls.Config
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        problems.append(f"its Config ({getattr(config, '__qualname__', config)!r}) is not a dataclass; declare it "
                        "with @dataclasses.dataclass(frozen=True) or @pydantic.dataclasses.dataclass(frozen=True)")
    if not (isinstance(cls.version, str) and cls.version):
        problems.append(f"its version must be a non-empty string (bump it when its numbers change), got "
                        f"{cls.version!r}")
    return problems + _history_problems(cls)


def _history_problems(cls: type[Plugin]) -> list[str]:
    history = getattr(cls, "history", {})
    if not isinstance(history, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                   for k, v in history.items()):
        return [f"its history must map version strings to a non-empty line saying what that version changed, got "
                f"{history!r}"]
    if history and cls.version not in history:
        return [f"its history ({', '.join(map(repr, history))}) lacks its current version {cls.version!r}; add "
                f"history[{cls.version!r}] = '<what version {cls.version} changed>' (or leave history empty)"]
    return []


def _metric_problems(metrics: Any) -> list[str]:
    if not isinstance(metrics, (tuple, list)) or not all(isinstance(m, Metric) for m in metrics):
        return [f"its metrics must be a tuple of gibench.Metric, got {metrics!r}"]
    problems = []
    headlines = [m.name for m in metrics if m.headline]
    if not headlines:
        problems.append("it declares no headline metric; mark exactly one Metric with headline=True" if metrics else
                        "it declares no metrics; list what evaluate() returns as Metric(...) with one headline=True")
    elif len(headlines) > 1:
        problems.append(f"it declares {len(headlines)} headline metrics ({', '.join(map(repr, headlines))}); "
                        "exactly one Metric may have headline=True")
    duplicates = sorted(name for name, count in Counter(m.name for m in metrics).items() if count > 1)
    if duplicates:
        problems.append(f"it declares the metric name(s) {', '.join(map(repr, duplicates))} more than once; "
                        "metric names must be unique")
    return problems + [p for m in metrics for p in _companion_problems(m)]


def _companion_problems(metric: Metric) -> list[str]:
    """``read_beside`` is ``""`` or ``"evaluator.metric"`` (two non-empty names without spaces), and comes with a
    ``caveat``; both are strings."""
    read_beside, caveat = metric.read_beside, metric.caveat
    if not isinstance(read_beside, str) or not isinstance(caveat, str):
        return [f"metric {metric.name!r}: read_beside and caveat must be strings, got {read_beside!r} and "
                f"{caveat!r}"]
    if not read_beside:
        return []
    parts = read_beside.split(".")
    if len(parts) != 2 or not all(parts) or any(ch.isspace() for ch in read_beside):
        return [f"metric {metric.name!r}: read_beside {read_beside!r} is not of the form 'evaluator.metric' (e.g. "
                "'infidelity.relative_infidelity_gaussian'); name the evaluator and its metric, joined by one dot"]
    if not caveat.strip():
        return [f"metric {metric.name!r}: it declares read_beside={read_beside!r} without a caveat; add "
                "caveat='<why a reader must see it beside that metric>' (the site shows it with the column)"]
    return []


def _requires_problems(requires: Any, allowed: frozenset[str] = CAPABILITIES,
                       allowed_name: str = "gibench.CAPABILITIES") -> list[str]:
    """``requires`` is a set of capability names from ``allowed`` (all of them for an evaluator; the training
    annotations for a regularizer)."""
    if isinstance(requires, str) or not isinstance(requires, Iterable):
        return [f"its requires must be a frozenset of capability names, got {requires!r}"]
    known = sorted(allowed)
    problems = []
    for cap in sorted(map(str, requires)):
        if cap not in CAPABILITIES:
            problems.append(f"it requires the unknown capability {cap!r}.{did_you_mean(cap, known)} Known "
                            f"capabilities: {', '.join(known)} ({allowed_name})")
        elif cap not in allowed:
            problems.append(f"it requires the capability {cap!r}, which it cannot: it may require only "
                            f"{', '.join(known)} ({allowed_name})")
    return problems


def _zero_strength_problems(cls: type[Regularizer]) -> list[str]:
    declared = cls.zero_strength
    if declared is None:
        return []
    if not isinstance(declared, Mapping):
        return [f"its zero_strength must be a mapping of Config fields to values, or None, got {declared!r}"]
    fields = [f.name for f in dataclasses.fields(cls.Config)]
    return [f"its zero_strength names {key!r}, which its Config lacks.{did_you_mean(str(key), fields)} Config "
            f"fields: {', '.join(fields) or '(none)'}. Name the parameters that turn it into erm, or declare "
            "zero_strength = None if no setting does" for key in declared if key not in fields]


def sweep_problems(cls: type[Regularizer]) -> list[str]:
    """What is wrong with a regularizer's declared ``sweep`` (empty for ``None``): it is a :class:`gibench.Sweep`
    whose ``parameter`` is a Config field and whose ``scale`` is ``"log"`` or ``"linear"``; its ``values`` are at
    least two finite numbers, strictly increasing, positive on a log scale, each a valid setting of the parameter
    (built with :func:`gibench.core.params.build_config` over the other defaults, so the Config's ranges apply), and
    one of them is the Config's default (equal as the job hash compares floats: to ten significant digits). One
    sentence with its fix each; the checks that need a sound declaration stop at the first unsound part."""
    sweep = cls.sweep
    if sweep is None:
        return []
    if not isinstance(sweep, Sweep):
        return [f"its sweep must be a gibench.Sweep or None, got {sweep!r}; declare sweep = Sweep(parameter, values, "
                "scale), or sweep = None if it has no strength knob"]
    fields = [f.name for f in dataclasses.fields(cls.Config)]
    name, values = sweep.parameter, sweep.values
    if name not in fields:
        return [f"its sweep varies {name!r}, which its Config lacks.{did_you_mean(str(name), fields)} Config fields: "
                f"{', '.join(fields) or '(none)'}. Name the parameter that sets its strength, or declare sweep = None "
                "if it has none"]
    if not (isinstance(values, tuple) and len(values) >= 2 and all(_is_finite_number(v) for v in values)):
        return [f"its sweep of {name!r} must list at least two finite numbers, got {values!r}; list the settings "
                "from the weakest to the strongest"]
    problems = []
    if not isinstance(sweep.changes_step_cost, bool):
        problems.append(f"its sweep of {name!r} has changes_step_cost={sweep.changes_step_cost!r}; use True (the "
                        "strength changes the work of a training step) or False")
    if sweep.scale not in ("log", "linear"):
        problems.append(f"its sweep of {name!r} has the scale {sweep.scale!r}; use 'log' (values spaced by factors) "
                        "or 'linear'")
    if any(b <= a for a, b in zip(values, values[1:])):
        problems.append(f"its sweep of {name!r} has the values {values!r}, which are not strictly increasing; list "
                        "each setting once, from the weakest to the strongest")
    if sweep.scale == "log" and any(v <= 0 for v in values):
        problems.append(f"its sweep of {name!r} is on a log scale but holds the value(s) "
                        f"{', '.join(repr(v) for v in values if v <= 0)}; drop them (zero_strength declares the "
                        "setting that is erm) or declare scale='linear'")
    for value in values:
        try:
            build_config(cls.Config, {name: value}, f"its sweep's value {value!r} of {name!r}")
        except Exception as exc:  # a ConfigError, or whatever a plugin's own Config raises
            problems.append(f"{_reason(exc)}; keep every value of the sweep inside the parameter's allowed range")
    try:
        default = getattr(build_config(cls.Config, {}, "its Config's defaults"), name)
    except Exception as exc:
        return [*problems, f"{_reason(exc)}; give every parameter a default, so that the sweep has a default point"]
    if not (_is_finite_number(default) and canonical_float(default) in {canonical_float(v) for v in values}):
        problems.append(f"its sweep of {name!r} does not contain the Config's default {default!r}; add the default "
                        "to the values, so that the default is a point of the sweep")
    return problems


def _reason(exc: Exception) -> str:
    """A ConfigError's message (it names the place), or any other exception's type and message on one line."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ConfigError) else f"building its Config raised {type(exc).__name__}: {text}"


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _entry_point_source(ep: md.EntryPoint) -> PluginSource:
    dist = getattr(ep, "dist", None)
    dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
    dist_version = dist.version if dist is not None else "<unknown>"
    return PluginSource(ep.name, ep.value, dist_name, dist_version)


class Registry(Generic[T]):
    """Named plugins of one kind, discovered from an entry-point group.

    ``entry_points`` may be injected (a callable returning ``(EntryPoint-like, PluginSource)`` pairs) for tests.
    """

    def __init__(
        self,
        group: str,
        base: type[T],
        kind: str,
        entry_points: Callable[[], Iterable[tuple[Any, PluginSource]]] | None = None,
    ) -> None:
        self.group = group
        self.base = base
        self.kind = kind
        self._entry_points = entry_points or self._installed_entry_points
        self._sources: dict[str, list[tuple[Any, PluginSource]]] | None = None
        self._loaded: dict[str, type[T]] = {}
        self._errors: dict[str, str] = {}
        self._shadowed: dict[str, list[tuple[Any, PluginSource]] | None] = {}  # what register() replaced

    # -- discovery ---------------------------------------------------------------------------------------------------

    def _installed_entry_points(self) -> Iterable[tuple[Any, PluginSource]]:
        for ep in md.entry_points(group=self.group):
            yield ep, _entry_point_source(ep)

    def _discover(self) -> dict[str, list[tuple[Any, PluginSource]]]:
        if self._sources is None:
            builtins_only = os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0")
            found: dict[str, list[tuple[Any, PluginSource]]] = {}
            for ep, source in self._entry_points():
                if builtins_only and source.distribution != BUILTIN_DISTRIBUTION:
                    continue
                claims = found.setdefault(source.name, [])
                if all(existing.target != source.target for _, existing in claims):
                    claims.append((ep, source))  # identical duplicates merge
            self._sources = found
        return self._sources

    def register(self, name: str, cls: type[T], distribution: str = "<in-process>", version: str = "") -> None:
        """Register a class directly (tests, notebooks). Conflicts with an existing name are errors."""
        sources = self._discover()
        target = f"{cls.__module__}:{cls.__qualname__}"
        if name in sources and all(s.target != target for _, s in sources[name]):
            raise PluginLoadError(f"{self.kind} {name!r} is already provided by {self._describe(sources[name])}.")
        self._shadowed.setdefault(name, sources.get(name))
        sources[name] = [(cls, PluginSource(name, target, distribution, version))]
        self._loaded.pop(name, None)
        self._errors.pop(name, None)

    def unregister(self, name: str) -> None:
        """Undo :meth:`register`: the name is again what the entry points provide, or unknown."""
        if name not in self._shadowed:
            raise KeyError(f"{self.kind} {name!r} was not registered in-process")
        previous = self._shadowed.pop(name)
        sources = self._discover()
        if previous is None:
            sources.pop(name, None)
        else:
            sources[name] = previous
        self._loaded.pop(name, None)
        self._errors.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._discover())

    # -- loading -----------------------------------------------------------------------------------------------------

    def get(self, name: str) -> type[T]:
        """The plugin class registered under ``name``, imported on first use."""
        if name in self._loaded:
            return self._loaded[name]
        sources = self._discover()
        if name not in sources:
            known = self.names()
            raise UnknownPluginError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} "
                f"Installed {self.kind}s: {', '.join(known) or '(none)'}. "
                f"Run `gibench list {self.kind}s` to see them with their distributions."
            )
        claims = sources[name]
        if len(claims) > 1:
            raise PluginLoadError(
                f"{self.kind} name {name!r} is claimed by more than one distribution: {self._describe(claims)}. "
                "Uninstall one of them, or rename the entry point in one package."
            )
        ep, source = claims[0]
        try:
            cls = ep if isinstance(ep, type) else ep.load()
        except Exception:
            self._errors[name] = traceback.format_exc()
            raise PluginLoadError(
                f"{self.kind} {name!r} from {source.distribution} {source.version} ({source.target}) failed to "
                f"import:\n{self._errors[name]}"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginLoadError(
                f"{self.kind} {name!r} ({source.target}, from {source.distribution}) is not a subclass of "
                f"gibench.{self.base.__name__}."
            )
        problems = declaration_problems(cls)
        if problems:
            self._errors[name] = "; ".join(problems)
            raise PluginLoadError(
                f"{self.kind} {name!r} from {source.distribution} {source.version} ({source.target}) is declared "
                f"wrongly: {self._errors[name]}. Fix the class and re-install the plugin."
            )
        cls.name = name
        self._loaded[name] = cls
        return cls

    def create(self, name: str, where: str | None = None, **params: Any) -> T:
        """An instance of plugin ``name`` with validated hyper-parameters."""
        cls = self.get(name)
        config = build_config(cls.Config, params, where or f"{self.kind} {name!r}")
        return cls(config)

    def source(self, name: str) -> PluginSource:
        """The distribution and entry point behind ``name`` (for provenance records)."""
        self.get(name)
        return self._discover()[name][0][1]

    def info(self, name: str) -> PluginInfo:
        """Load ``name`` and report its provenance and any load error, without raising."""
        claims = tuple(s for _, s in self._discover()[name])
        try:
            self.get(name)
        except PluginLoadError as exc:
            return PluginInfo(name, claims, str(exc))
        return PluginInfo(name, claims)

    def infos(self) -> list[PluginInfo]:
        return [self.info(name) for name in self.names()]

    @staticmethod
    def _describe(claims: list[tuple[Any, PluginSource]]) -> str:
        return " and ".join(f"{s.distribution} {s.version} ({s.target})" for _, s in claims)


regularizers: Registry[Regularizer] = Registry("gibench.regularizers", Regularizer, "regularizer")
evaluators: Registry[Evaluator] = Registry("gibench.evaluators", Evaluator, "evaluator")
datasets: Registry[Dataset] = Registry("gibench.datasets", Dataset, "dataset")
