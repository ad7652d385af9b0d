"""What every conformance check shares: the error listing a plugin's failed checks, the runner that collects them,
the plugin under check (by registered name or by class), and the check of its declarations."""

from __future__ import annotations

from collections.abc import Callable

from gibench.api import Plugin, registry
from gibench.testing.registration import REGISTRIES

__all__ = ["Checks", "ConformanceError", "assert_declarations", "resolve_plugin"]


class ConformanceError(AssertionError):
    """A plugin breaks its contract; ``failures`` lists every failed check, one sentence each."""

    def __init__(self, plugin: str, failures: list[str]) -> None:
        self.plugin, self.failures = plugin, list(failures)
        lines = "\n".join(f"  - {failure}" for failure in self.failures)
        super().__init__(f"{plugin} fails {len(self.failures)} conformance check(s):\n{lines}")


class Checks:
    """Runs named checks, collecting failures instead of stopping at the first."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.failures: list[str] = []

    def run(self, what: str, check: Callable[[], None]) -> bool:
        try:
            check()
        except Exception as exc:  # a failed assertion, or the plugin raising: both are failures of this check
            detail = str(exc).strip() or type(exc).__name__
            reason = detail if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {detail}"
            self.failures.append(f"{what}: {reason}")
            return False
        return True

    def finish(self) -> None:
        if self.failures:
            raise ConformanceError(self.plugin, self.failures)


def resolve_plugin(kind: str, name_or_class: str | type[Plugin]) -> tuple[str, type[Plugin]]:
    """(a label naming the plugin in messages, its class) for a registered name or a class of ``kind``."""
    reg = REGISTRIES[kind]
    if isinstance(name_or_class, str):
        return f"{kind} {name_or_class!r}", reg.get(name_or_class)
    if not (isinstance(name_or_class, type) and issubclass(name_or_class, reg.base)):
        raise TypeError(f"expected a registered {kind} name or a subclass of gibench.{reg.base.__name__}, got "
                        f"{name_or_class!r}")
    return f"{kind} {name_or_class.__qualname__}", name_or_class


def assert_declarations(cls: type[Plugin]) -> None:
    """The class's declarations pass the checks the registry runs when it loads a plugin."""
    problems = registry.declaration_problems(cls)
    assert not problems, "; ".join(problems)
