"""Turn user-supplied hyper-parameters into a plugin's validated ``Config``, and describe a Config's parameters.

The same path serves the suite file, the CLI and the Python API, so every bad value gets the same kind of message:
where it came from, which key, the bad value, and what is allowed. Two kinds of Config are accepted:

* a frozen **pydantic dataclass** (every built-in; see :mod:`gibench.core.config_types`): the class validates itself and
  :func:`build_config` translates pydantic's errors into one :class:`~gibench.core.errors.ConfigError`;
* a plain **stdlib dataclass** whose ``__post_init__`` raises ``ValueError`` (for example through :func:`check`):
  :func:`build_config` coerces each value to its annotated type first (so YAML's ``1e-3``, which PyYAML reads as a
  string, becomes a float), then constructs it.

:func:`describe_config` reads either kind into :class:`ParamInfo` rows (name, type, default, range, help), which is
what ``gibench list`` prints (:mod:`gibench.core.param_info`, re-exported here).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic.dataclasses import is_pydantic_dataclass

from gibench.core.config_types import RULE_ERROR
from gibench.core.errors import ConfigError
from gibench.core.param_info import (
    ParamInfo,
    declared_bounds,
    describe_config,
    field_info,
    is_union,
    number_text,
    range_text,
    type_text,
)

__all__ = [
    "ParamInfo", "build_config", "check", "config_fields", "describe_config", "did_you_mean", "field_types",
    "is_sequence_type", "jsonable", "range_text", "type_text",
]


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """The hyper-parameters of a plugin's Config dataclass, by name."""
    return {f.name: f for f in dataclasses.fields(config_cls)}


def field_types(config_cls: type) -> dict[str, Any]:
    """Resolved annotations of a Config dataclass (string annotations included), without ``Annotated`` metadata."""
    return typing.get_type_hints(config_cls)


def is_sequence_type(tp: Any) -> bool:
    """True when a field's type is itself a list/tuple, so a YAML list is one value rather than a grid."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        return True
    if is_union(tp):
        return any(is_sequence_type(arg) for arg in typing.get_args(tp) if arg is not type(None))
    return False


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean …?' suffix for an unknown name, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check(condition: bool, message: str) -> None:
    """For use in Config.__post_init__: raise ValueError(message) unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def jsonable(value: Any) -> Any:
    """Plain JSON values for hashing and storing configs (tuples become lists, dataclasses dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------------------------
# Building


def build_config(config_cls: type, params: Mapping[str, Any], where: str) -> Any:
    """Validate ``params`` against ``config_cls`` and return the config instance.

    ``where`` names the place for error messages, e.g. ``"suite.yaml: regularizers[1].gradient_norm"``. Every
    failure is one :class:`ConfigError` whose message names the place, the key, the bad value and what is allowed
    (a range, the choices, the valid keys with a did-you-mean), never a pydantic traceback.
    """
    fields = config_fields(config_cls)
    unknown = [k for k in params if k not in fields]
    if unknown:
        key = unknown[0]
        valid = ", ".join(sorted(fields)) or "(none: this plugin takes no parameters)"
        raise ConfigError(
            f"{where}: unknown parameter {key!r}.{did_you_mean(key, list(fields))} Valid parameters: {valid}."
        )
    if is_pydantic_dataclass(config_cls):
        return _build_pydantic(config_cls, params, where)
    return _build_plain(config_cls, params, where)


def _build_pydantic(config_cls: type, params: Mapping[str, Any], where: str) -> Any:
    try:
        return config_cls(**params)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{where}: {_explain_all(config_cls, exc.errors(include_url=False), params)}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _build_plain(config_cls: type, params: Mapping[str, Any], where: str) -> Any:
    types_ = field_types(config_cls)
    coerced = {}
    for key, value in params.items():
        try:
            coerced[key] = pydantic.TypeAdapter(types_[key]).validate_python(value)
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise ConfigError(
                f"{where}: parameter {key!r} = {value!r} has the wrong type ({problem}); expected "
                f"{type_text(types_[key])}."
            ) from None
    try:
        return config_cls(**coerced)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


_BOUND_ERRORS = {
    "greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"), "less_than_equal": ("le", "<="),
}


def _explain_all(config_cls: type, errors: list[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """pydantic's errors as one message: a sentence per error, grouped by key, each key's help text once."""
    locs = [tuple(e["loc"]) for e in errors]
    by_key: dict[str, list[str]] = {}
    for error, loc in zip(errors, locs):
        if error["type"] == "too_short" and any(other[: len(loc)] == loc and other != loc for other in locs):
            continue  # pydantic counts only the elements that validated: the element errors are the real problem
        by_key.setdefault(str(loc[0]) if loc else "", []).append(_explain(config_cls, error, params))
    sentences = []
    for key, problems in by_key.items():
        info = field_info(config_cls, key) if key else None
        help_ = f" ({key}: {info.help.rstrip('.')})" if info and info.help else ""
        sentences.append("; ".join(problems) + help_)
    return "; ".join(sentences)


def _explain(config_cls: type, error: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """One pydantic error as gibench's sentence: '<key> must be <what is allowed>, got <value>'."""
    loc, kind = tuple(error["loc"]), error["type"]
    if not loc:  # a rule across fields (__post_init__ or a model validator): its own message is the sentence
        return str((error.get("ctx") or {}).get("error", error["msg"]))
    key = str(loc[0])
    place = key + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
    value = params.get(key, error["input"]) if len(loc) == 1 else error["input"]
    requirement = _requirement(config_cls, error, loc)
    if requirement:
        return f"{place} must {requirement}, got {value!r}{_choice_hint(config_cls, error, loc, value)}"
    if kind in ("missing", "missing_argument"):
        return f"{place} is required (it has no default); give it a value"
    if kind == "value_error":
        return f"{place} = {value!r} is not valid: {error['ctx']['error']}"
    info = field_info(config_cls, key)
    detail = f"{place}: {error['msg']}" if len(loc) > 1 else error["msg"]
    return (f"parameter {key!r} = {params.get(key, error['input'])!r} has the wrong type ({detail}); expected "
            f"{info.type if info else 'a valid value'}")


def _requirement(config_cls: type, error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    """What a constraint error says the value must do ('be >= 0', 'be in (0, 1]', 'hold at least 1 value'); '' for
    errors that are not a constraint (a wrong type, a missing value)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUND_ERRORS:
        name, symbol = _BOUND_ERRORS[kind]
        return f"be {declared_bounds(config_cls, loc) or f'{symbol} {number_text(ctx[name])}'}"
    if kind == "multiple_of":
        return f"be a multiple of {number_text(ctx['multiple_of'])}"
    if kind in ("too_short", "string_too_short"):
        count = ctx["min_length"]
        if count == 1 and kind.startswith("string"):
            return "not be empty"
        return f"hold at least {count} {_items(count, kind)}"
    if kind in ("too_long", "string_too_long"):
        return f"hold at most {ctx['max_length']} {_items(ctx['max_length'], kind)}"
    if kind == RULE_ERROR:
        return f"be {ctx['rule']}"
    if kind == "literal_error":
        return f"be one of {_choices_text(config_cls, loc) or ctx['expected']}"
    return ""


def _choices_text(config_cls: type, loc: tuple[Any, ...]) -> str:
    """The declared choices of a top-level Literal field, as "'a', 'b', 'c'"; '' elsewhere."""
    info = field_info(config_cls, str(loc[0])) if len(loc) == 1 else None
    return ", ".join(repr(c) for c in info.choices) if info and info.choices else ""


def _choice_hint(config_cls: type, error: Mapping[str, Any], loc: tuple[Any, ...], value: Any) -> str:
    """'. Did you mean …?' for a misspelt choice of a Literal field, else ''."""
    if error["type"] != "literal_error" or len(loc) != 1:
        return ""
    info = field_info(config_cls, str(loc[0]))
    hint = did_you_mean(str(value), [str(c) for c in info.choices]) if info and info.choices else ""
    return f".{hint}" if hint else ""


def _items(count: int, kind: str) -> str:
    unit = "character" if kind.startswith("string") else "value"
    return unit if count == 1 else unit + "s"
