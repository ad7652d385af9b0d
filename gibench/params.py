"""Turn user-supplied hyper-parameters into a plugin's validated ``Config``.

The same path serves the suite file, the CLI and the Python API, so every bad value gets the same kind of message:
where it came from, which key, the bad value, and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

import pydantic

from gibench.errors import ConfigError


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """The hyper-parameters of a plugin's Config dataclass, by name."""
    return {f.name: f for f in dataclasses.fields(config_cls)}


def field_types(config_cls: type) -> dict[str, Any]:
    """Resolved annotations of a Config dataclass (string annotations included)."""
    return typing.get_type_hints(config_cls)


def is_sequence_type(tp: Any) -> bool:
    """True when a field's type is itself a list/tuple, so a YAML list is one value rather than a grid."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        return True
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(is_sequence_type(arg) for arg in typing.get_args(tp) if arg is not type(None))
    return False


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean …?' suffix for an unknown name, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def build_config(config_cls: type, params: Mapping[str, Any], where: str) -> Any:
    """Validate ``params`` against ``config_cls`` and return the config instance.

    ``where`` names the place for error messages, e.g. ``"suite.yaml: regularizers[1] 'gradient_norm'"``.
    Values are coerced to the annotated type (so YAML's ``1e-3``, which PyYAML reads as a string, becomes a float);
    the Config's own ``__post_init__`` checks ranges and raises ``ValueError``, which is re-raised as ConfigError.
    """
    fields = config_fields(config_cls)
    types = field_types(config_cls)
    unknown = [k for k in params if k not in fields]
    if unknown:
        key = unknown[0]
        valid = ", ".join(sorted(fields)) or "(none: this plugin takes no parameters)"
        raise ConfigError(
            f"{where}: unknown parameter {key!r}.{did_you_mean(key, list(fields))} Valid parameters: {valid}."
        )
    coerced = {}
    for key, value in params.items():
        try:
            coerced[key] = pydantic.TypeAdapter(types[key]).validate_python(value)
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise ConfigError(
                f"{where}: parameter {key!r} = {value!r} has the wrong type ({problem}); expected {_type_name(types[key])}."
            ) from None
    try:
        return config_cls(**coerced)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def jsonable(value: Any) -> Any:
    """Plain JSON values for hashing and storing configs (tuples become lists, dataclasses dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def check(condition: bool, message: str) -> None:
    """For use in Config.__post_init__: raise ValueError(message) unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)
