"""Turn user-supplied hyper-parameters into a plugin's validated ``Config``, and describe a Config's parameters.

The same path serves the suite file, the CLI and the Python API, so every bad value gets the same kind of message:
where it came from, which key, the bad value, and what is allowed. Two kinds of Config are accepted:

* a frozen **pydantic dataclass** (every built-in; see :mod:`gibench.core.config_types`): the class validates itself and
  :func:`build_config` translates pydantic's errors into one :class:`~gibench.core.errors.ConfigError`;
* a plain **stdlib dataclass** whose ``__post_init__`` raises ``ValueError`` (for example through :func:`check`):
  :func:`build_config` coerces each value to its annotated type first (so YAML's ``1e-3``, which PyYAML reads as a
  string, becomes a float), then constructs it.

:func:`describe_config` reads either kind into :class:`ParamInfo` rows (name, type, default, range, help), which is
what ``gibench list`` prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

import annotated_types
import pydantic
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo

from gibench.core.config_types import RULE_ERROR, Rule
from gibench.core.errors import ConfigError

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
    if _is_union(tp):
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
        info = _field_info(config_cls, key) if key else None
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
    info = _field_info(config_cls, key)
    detail = f"{place}: {error['msg']}" if len(loc) > 1 else error["msg"]
    return (f"parameter {key!r} = {params.get(key, error['input'])!r} has the wrong type ({detail}); expected "
            f"{info.type if info else 'a valid value'}")


def _requirement(config_cls: type, error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    """What a constraint error says the value must do ('be >= 0', 'be in (0, 1]', 'hold at least 1 value'); '' for
    errors that are not a constraint (a wrong type, a missing value)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUND_ERRORS:
        name, symbol = _BOUND_ERRORS[kind]
        return f"be {_declared_bounds(config_cls, loc) or f'{symbol} {_number(ctx[name])}'}"
    if kind == "multiple_of":
        return f"be a multiple of {_number(ctx['multiple_of'])}"
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
    info = _field_info(config_cls, str(loc[0])) if len(loc) == 1 else None
    return ", ".join(repr(c) for c in info.choices) if info and info.choices else ""


def _choice_hint(config_cls: type, error: Mapping[str, Any], loc: tuple[Any, ...], value: Any) -> str:
    """'. Did you mean …?' for a misspelt choice of a Literal field, else ''."""
    if error["type"] != "literal_error" or len(loc) != 1:
        return ""
    info = _field_info(config_cls, str(loc[0]))
    hint = did_you_mean(str(value), [str(c) for c in info.choices]) if info and info.choices else ""
    return f".{hint}" if hint else ""


def _declared_bounds(config_cls: type, loc: tuple[Any, ...]) -> str:
    """The whole declared interval at ``loc`` ('in (0, 1)', '>= 0'), so a message states both ends; '' if unknown."""
    try:
        tp = typing.get_type_hints(config_cls, include_extras=True)[str(loc[0])]
    except Exception:
        return ""
    for part in loc[1:]:  # into a sequence's element type
        inner = _strip(tp)
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        if not (isinstance(part, int) and typing.get_origin(inner) in (tuple, list) and args):
            return ""
        tp = args[min(part, len(args) - 1)]
    bounds = _bounds(_metadata(tp)[0])
    text = _bounds_text(bounds) if bounds else ""
    return _as_membership(text) if text else ""


def _number(bound: Any) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _items(count: int, kind: str) -> str:
    unit = "character" if kind.startswith("string") else "value"
    return unit if count == 1 else unit + "s"


# ----------------------------------------------------------------------------------------------------------------------
# Describing


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """One hyper-parameter of a plugin, as ``gibench list`` shows it.

    ``type`` is the annotation as text (``float``, ``tuple[float, ...]``, ``str`` for a ``Literal``); ``default`` the
    default value itself (``required`` when there is none); ``range`` the constraints as text (``>= 0``,
    ``each in (0, 1]; strictly increasing``, ``one of 'l2', 'linf'``), empty when any value of the type is allowed;
    ``choices`` the allowed values of a ``Literal`` field; ``help`` the field's description.
    """

    name: str
    type: str
    default: Any = None
    required: bool = False
    range: str = ""
    choices: tuple[Any, ...] = ()
    help: str = ""


def describe_config(config_cls: type) -> list[ParamInfo]:
    """The parameters of a Config dataclass (pydantic or stdlib), in declaration order.

    Help texts come from pydantic field descriptions (attribute docstrings; a subclass inherits its bases'), or for a
    stdlib dataclass from ``field(metadata={"help": ...})``.
    """
    hints = typing.get_type_hints(config_cls, include_extras=True)
    return [_param_info(config_cls, f, hints[f.name]) for f in dataclasses.fields(config_cls)]


def _field_info(config_cls: type, name: str) -> ParamInfo | None:
    try:
        return next((p for p in describe_config(config_cls) if p.name == name), None)
    except Exception:  # a Config whose annotations do not resolve still gets its error message
        return None


def _param_info(config_cls: type, f: dataclasses.Field, annotation: Any) -> ParamInfo:
    if f.default is not dataclasses.MISSING:
        default, required = f.default, False
    elif f.default_factory is not dataclasses.MISSING:
        default, required = f.default_factory(), False
    else:
        default, required = None, True
    return ParamInfo(name=f.name, type=type_text(annotation), default=default, required=required,
                     range=range_text(annotation), choices=_literal_choices(annotation), help=_help(config_cls, f))


def _help(config_cls: type, f: dataclasses.Field) -> str:
    for klass in config_cls.__mro__:
        info = (getattr(klass, "__pydantic_fields__", None) or {}).get(f.name)
        if info is not None and info.description:
            return " ".join(info.description.split())
    return str(f.metadata.get("help", f.metadata.get("description", "")))


def type_text(tp: Any) -> str:
    """A readable name of an annotation: ``float``, ``tuple[float, ...]``, ``float | None``; a Literal's value type."""
    tp = _strip(tp)
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if tp is Ellipsis:
        return "..."
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(dict.fromkeys(type(v).__name__ for v in typing.get_args(tp)))
    if _is_union(tp):
        return " | ".join(type_text(arg) for arg in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(a) for a in args)}]"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def range_text(tp: Any) -> str:
    """The constraints of an annotation as text, '' when there are none (see :class:`ParamInfo`)."""
    metadata, inner = _metadata(tp)
    parts = []
    if typing.get_origin(inner) is typing.Literal:
        parts.append("one of " + ", ".join(repr(v) for v in typing.get_args(inner)))
    elif _is_union(inner):
        options = [arg for arg in typing.get_args(inner) if arg is not type(None)]
        texts = [range_text(arg) for arg in options]
        if any(texts):
            parts.append(" or ".join(t or type_text(a) for t, a in zip(texts, options)))
            if len(options) < len(typing.get_args(inner)):
                parts[-1] += ", or None"
    elif typing.get_origin(inner) in (tuple, list) and typing.get_args(inner):
        element = typing.get_args(inner)[0]
        if range_text(element):
            parts.append(f"each {_as_membership(range_text(element))}")
    parts += _constraint_texts(metadata, inner)
    return "; ".join(parts)


def _as_membership(text: str) -> str:
    """'each' reads 'each in (0, 1]' for an interval and 'each >= 0' for a bound."""
    return f"in {text}" if text[:1] in "([" else text


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    """The ``gt``/``ge``/``lt``/``le`` bounds among annotated_types constraints."""
    return {attr: getattr(item, attr) for item in metadata for attr in ("gt", "ge", "lt", "le")
            if isinstance(item, getattr(annotated_types, attr.capitalize()))}


def _constraint_texts(metadata: list[Any], inner: Any) -> list[str]:
    bounds = _bounds(metadata)
    texts = []
    for item in metadata:
        if isinstance(item, annotated_types.MultipleOf):
            texts.append(f"multiple of {_number(item.multiple_of)}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length:
            texts.append(_length_text("at least", item.min_length, inner))
        elif isinstance(item, annotated_types.MaxLen):
            texts.append(_length_text("at most", item.max_length, inner))
        elif isinstance(item, Rule):
            texts.append(item.text)
    return ([_bounds_text(bounds)] if bounds else []) + texts


def _length_text(relation: str, count: int, inner: Any) -> str:
    if (relation, count) == ("at least", 1):
        return "non-empty"
    return f"{relation} {count} {'characters' if inner is str else 'values'}"


def _bounds_text(bounds: dict[str, Any]) -> str:
    low = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds else None
    high = (")", bounds["lt"]) if "lt" in bounds else ("]", bounds["le"]) if "le" in bounds else None
    if low and high:
        return f"{low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {_number(low[1])}"
    return f"{'<' if high[0] == ')' else '<='} {_number(high[1])}"


def _metadata(tp: Any) -> tuple[list[Any], Any]:
    """The flattened constraint objects of an ``Annotated`` type (FieldInfos expanded) and the bare type inside."""
    metadata: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        for item in tp.__metadata__:
            metadata += item.metadata if isinstance(item, FieldInfo) else [item]
        tp = tp.__origin__
    return metadata, tp


def _strip(tp: Any) -> Any:
    return _metadata(tp)[1]


def _literal_choices(tp: Any) -> tuple[Any, ...]:
    inner = _strip(tp)
    return typing.get_args(inner) if typing.get_origin(inner) is typing.Literal else ()


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Union or isinstance(tp, types.UnionType)
