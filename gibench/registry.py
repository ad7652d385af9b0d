"""Plugin registries over entry-point groups.

One :class:`Registry` per group (``gibench.regularizers``, ``gibench.evaluators``, ``gibench.datasets``). Rules
(DESIGN §3):

* discovery reads entry-point metadata only; a plugin's module is imported the first time it is used;
* the built-ins register through the same entry points as third-party plugins (distribution ``gibench``);
* identical duplicates (same name, same ``module:attr``, as editable installs sometimes produce) are merged;
* a name claimed by two different targets is an error naming both distributions, raised when the name is used;
* a plugin that fails to import raises :class:`PluginLoadError` with its traceback when used, and is listed with that
  error by ``gibench list``, without breaking any other plugin;
* ``GIBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` keeps only the built-ins;
* unknown names get a "did you mean".
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gibench.api import Dataset, Evaluator, Plugin, Regularizer
from gibench.errors import PluginLoadError, UnknownPluginError
from gibench.params import build_config, did_you_mean

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
        sources[name] = [(cls, PluginSource(name, target, distribution, version))]
        self._loaded.pop(name, None)

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
