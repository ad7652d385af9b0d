"""Foundations every layer builds on: errors, config building and the shared field types, atomic files, claims
and quarantine, identity hashes. Nothing here imports torch or any other part of gibench."""

__all__: list[str] = []  # a namespace of modules; import from them
