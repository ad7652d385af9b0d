"""Describe a plugin Config's parameters: :class:`ParamInfo` rows (name, type, default, range, help), which is what
``gibench list`` prints, read from a frozen pydantic dataclass or a plain stdlib dataclass alike, and the text of
types and constraints that :func:`gibench.core.params.build_config`'s error messages reuse.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

from gibench.core.config_types import Rule

__all__ = [
    "ParamInfo", "declared_bounds", "describe_config", "field_info", "is_union", "number_text", "range_text",
    "type_text",
]


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


def field_info(config_cls: type, name: str) -> ParamInfo | None:
    """The :class:`ParamInfo` of parameter ``name``, or None (no such parameter, or annotations that do not resolve)."""
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
    if is_union(tp):
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
    elif is_union(inner):
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
            texts.append(f"multiple of {number_text(item.multiple_of)}")
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
        return f"{low[0]}{number_text(low[1])}, {number_text(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {number_text(low[1])}"
    return f"{'<' if high[0] == ')' else '<='} {number_text(high[1])}"


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


def is_union(tp: Any) -> bool:
    """True for ``X | Y`` and ``typing.Union[X, Y]``."""
    return typing.get_origin(tp) is typing.Union or isinstance(tp, types.UnionType)


def declared_bounds(config_cls: type, loc: tuple[Any, ...]) -> str:
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


def number_text(bound: Any) -> str:
    """A bound as text: ``1e-05`` for a float, ``3`` for an int."""
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
