"""Parsing a submission's JSON into its pydantic models, with errors that name the file, each bad field and how to
fix it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from gibench.core.errors import SubmissionError

__all__ = ["parse_model"]


def parse_model(model: type[BaseModel], value: Any, where: str) -> Any:
    """``model.model_validate(value)``; a SubmissionError naming ``where``, each bad field and how to fix it."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SubmissionError(_describe_errors(where, exc)) from None


def _describe_errors(where: str, exc: ValidationError) -> str:
    errors = exc.errors()
    lines = []
    for err in errors[:8]:
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        message = str(err["msg"]).removeprefix("Value error, ")
        if "Fix:" in message:  # our validators say how to fix it themselves
            text, fix = message.split(" Fix: ", 1) if " Fix: " in message else (message, "")
            lines.append(f"{where}: field '{loc}': {text.rstrip('.')}{got}. Fix: {fix.rstrip('.')}.")
        else:
            lines.append(f"{where}: field '{loc}': {message}{got}. Fix: {_fix(err)}")
    if len(errors) > 8:
        lines.append(f"{where}: ... and {len(errors) - 8} more problem(s)")
    return "\n".join(lines)


def _fix(err: Any) -> str:
    name = str(err["loc"][-1]) if err["loc"] else "the value"
    if err["type"] == "missing":
        return f"add '{name}' (the format is described by gibench.submissions.build.submission_json_schema())."
    if err["type"] == "extra_forbidden":
        return f"remove '{name}'; the schema has no such field (check its spelling)."
    return f"set '{name}' to a valid value (see submission_json_schema()), or re-create it with `gibench submit`."


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
