"""The checks of a submission's free-text fields (name, authors, description, links, suite names), all of which the
site shows.

Free-text fields must be plain visible text: a character of Unicode category Cc (control: NUL, ESC, ...) or Cf
(format: the right-to-left override U+202E, zero-width spaces, ...) is rejected, because such characters can hide or
reorder what the site shows; only the description may contain line breaks and tabs. Links must be ``http(s)://`` URLs
(they become ``href`` attributes on the site).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = ["PLAIN_TEXT_FIX", "author_name", "control_character", "json_strings", "plain_text", "web_link"]

#: How to fix a field holding an invisible character.
PLAIN_TEXT_FIX = "remove it; names, authors, descriptions, links and suite names must be plain visible text"


def control_character(text: str, allow: str = "") -> tuple[int, str] | None:
    """(position, ``U+XXXX (NAME)``) of the first Cc/Cf character of ``text`` not in ``allow``, or None."""
    for position, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cf") and char not in allow:
            name = unicodedata.name(char, "control character")
            return position, f"U+{ord(char):04X} ({name})"
    return None


def plain_text(value: str, allow: str = "") -> str:
    """``value`` itself; a ValueError naming its first Cc/Cf character not in ``allow``, and the fix."""
    found = control_character(value, allow)
    if found:
        raise ValueError(f"contains the invisible character {found[1]} at position {found[0]}. Fix: {PLAIN_TEXT_FIX}")
    return value


def author_name(value: str) -> str:
    """An author's name, stripped; blank or invisible characters are a ValueError."""
    if not value.strip():
        raise ValueError("the author is blank. Fix: give each author's name, e.g. --author \"A. Person\"")
    return plain_text(value.strip())


def web_link(value: str) -> str:
    """``value`` itself when it is plain text and an http(s) URL, else a ValueError."""
    plain_text(value)
    if not re.fullmatch(r"https?://[^\s/]+\S*", value):
        raise ValueError("not an http:// or https:// URL; links become href attributes on the site, so no other "
                         "scheme (javascript:, data:, file:) is accepted. Fix: give a web address such as "
                         "--link https://arxiv.org/abs/1234.5678")
    return value


def json_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, text) of every string (keys too) inside a JSON value."""
    if isinstance(value, str):
        return [(path or "value", value)]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found += json_strings(str(key), f"key {where!r}") + json_strings(item, where)
        return found
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in json_strings(item, f"{path}[{i}]")]
    return []
