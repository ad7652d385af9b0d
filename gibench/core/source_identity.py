"""The identity of the code an object runs, so that a measurement of it (a calibrated step time) is reused exactly as
long as that code is unchanged.

:func:`source_identity` of a module is the SHA-256 over the source of the module and of every module it imports,
transitively, found by reading the source (:mod:`ast`): imports at module level and inside functions, absolute and
relative, ``import a.b`` and ``from a import b`` (``a.b`` when that is a module, else ``a``). The walk follows
gibench's own modules and any module that no installed distribution provides (a plugin folder, a test file); an
installed third-party package (torch, timm, diffusers, a plugin package installed from its own distribution) is
identified by its name and version instead of its files, and the standard library is left out. Importing a
submodule also runs its parent packages' ``__init__`` files; those are not followed (gibench's facade imports every
layer, and following it would tie every measurement to every file).

So editing the command line, the report or the store leaves the calibrations of the training step alone, while
editing the training loop, a regularizer, the saliency pass or anything they import recalibrates them; no hand-kept
list of "modules not in a step" is needed.
"""

from __future__ import annotations

__all__ = ["code_closure", "imported_modules", "source_identity"]

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _is_followed(top: str) -> bool:
    """gibench itself, and local code no installed distribution provides."""
    return top == "gibench" or (top not in sys.stdlib_module_names and top not in _distributions())


def _version(top: str) -> str:
    versions = []
    for dist in _distributions().get(top, []):
        try:
            versions.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist}==?")
    return f"{top} {' '.join(sorted(set(versions)))}"


@functools.cache
def _source_file(name: str) -> Path | None:
    """The ``.py`` file of module ``name``, or None (not found, not Python source)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    origin = getattr(spec, "origin", None) if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _is_package(name: str) -> bool:
    path = _source_file(name)
    return path is not None and path.name == "__init__.py"


def imported_modules(name: str) -> set[str]:
    """The modules module ``name``'s source imports (module level and inside functions), as absolute names."""
    path = _source_file(name)
    if path is None:
        return set()
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, node.module, node.level)
            if base is None or base == "__future__":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                followed = _is_followed(candidate.split(".")[0])
                out.add(candidate if followed and _source_file(candidate) is not None else base)
    return out


def _absolute(name: str, module: str | None, level: int) -> str | None:
    if level == 0:
        return module
    package = name if _is_package(name) else name.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        return None
    base = ".".join(parts[:len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def code_closure(name: str) -> tuple[set[str], set[str]]:
    """The modules whose source module ``name`` runs (itself included) and the third-party packages it imports, as
    ``"name dist==version"``."""
    seen: set[str] = set()
    third_party: set[str] = set()
    queue = [name]
    while queue:
        module = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        for imported in imported_modules(module):
            top = imported.split(".")[0]
            if _is_followed(top):
                queue.append(imported)
            elif top not in sys.stdlib_module_names:
                third_party.add(_version(top))
    return seen, third_party


@functools.cache
def source_identity(name: str) -> str:
    """SHA-256 (16 hex digits) of the code module ``name`` runs (see the module docstring)."""
    seen, third_party = code_closure(name)
    digest = hashlib.sha256()
    for module in sorted(seen):
        path = _source_file(module)
        if path is not None:
            digest.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    for entry in sorted(third_party):
        digest.update(entry.encode() + b"\0")
    return digest.hexdigest()[:16]
