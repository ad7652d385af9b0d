"""In-process registration: a plugin class usable by name inside a ``with`` block, as if an installed distribution
declared it, and the registry of each plugin kind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gibench.api import Plugin, registry

__all__ = ["REGISTRIES", "registered"]

#: The registry of each plugin kind, by the kind's singular name.
REGISTRIES = {"regularizer": registry.regularizers, "evaluator": registry.evaluators, "dataset": registry.datasets}


@contextlib.contextmanager
def registered(kind: str, name: str, cls: type[Plugin]) -> Iterator[type[Plugin]]:
    """Register ``cls`` as plugin ``name`` of ``kind`` inside the block, and remove it afterwards, even on error.

    Inside the block the class is usable by name everywhere a plugin is (``gibench.create_regularizer``, suite files
    loaded in this process, ``gibench list`` run in-process), exactly as if an installed distribution declared it.

    Args:
        kind: ``"regularizer"``, ``"evaluator"`` or ``"dataset"`` (plurals accepted).
        name: the plugin name to register; a name another plugin already has is a ``PluginLoadError``.
        cls: the plugin class.

    Returns:
        A context manager yielding ``cls``.

    Example:
        >>> from gibench import Regularizer, create_regularizer
        >>> class Plain(Regularizer):
        ...     zero_strength = None
        >>> with registered("regularizer", "plain", Plain):
        ...     type(create_regularizer("plain")).__name__
        'Plain'
    """
    key = kind[:-1] if kind.endswith("s") else kind
    if key not in REGISTRIES:
        raise ValueError(f"kind must be one of {', '.join(REGISTRIES)}, got {kind!r}")
    reg = REGISTRIES[key]
    reg.register(name, cls)
    try:
        yield cls
    finally:
        reg.unregister(name)
