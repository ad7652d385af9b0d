"""Plugins import only gibench's public API, and gibench imports no plugin (docs/architecture.md, "Plugin imports").

The rule: a plugin module (a file of ``regularizers/`` or ``evaluators/`` whose name does not start with ``_``, so
neither the package ``__init__`` nor a private helper; installed as ``gibench.regularizers.<name>`` and
``gibench.evaluators.<name>``)

* (a) imports no other module of ``regularizers/`` or ``evaluators/``, under any spelling;
* (c) imports from gibench only the facade ``gibench`` (names in its ``__all__``), ``gibench.api.*`` and
  ``gibench.core.*``, never a module whose name starts with ``_``;

and (b) no module of ``gibench/`` imports a module of ``regularizers/`` or ``evaluators/``: gibench reaches plugins
only through entry points (by a computed name, which is not an import statement).

``lint-imports`` checks part of it (pyproject.toml's forbidden contract), but import-linter graphs the plugin folders
as the top-level packages ``regularizers`` and ``evaluators`` and cannot see an import spelled
``gibench.regularizers.x`` or ``gibench.evaluators.x``, which is how the plugins are installed and imported. This test
reads every import statement with :mod:`ast` (module level, inside functions, under ``TYPE_CHECKING``: the walker of
tests/test_import_cycles.py), plus ``importlib.import_module`` and ``__import__`` called with a literal name, and
resolves every spelling of a plugin-folder module: ``gibench.regularizers.x``, ``from gibench.regularizers import
x``, ``from gibench import regularizers``, relative ``.x`` and top-level ``regularizers.x``. An import into the plugin
folders is reported once, by (a), not again by (c). Each failure names the importing file, its line and the imported
module.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_import_cycles import ROOT, ImportStatement, import_statements

#: Plugin folder -> the package it installs as (pyproject.toml's [tool.setuptools.package-dir]).
PLUGIN_FOLDERS = {"regularizers": "gibench.regularizers", "evaluators": "gibench.evaluators"}
FACADE = "gibench"
#: The public subpackages a plugin may import besides the facade.
PUBLIC = ("gibench.api", "gibench.core")


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the repository root
    line: int
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.imported} ({self.reason})"


@dataclass(frozen=True)
class Imported:
    """What one import reaches: ``module`` (installed name), or a ``name`` of the facade (then ``module`` is
    ``gibench``)."""

    line: int
    module: str
    name: str | None = None


def _modules(root: Path, folder: str, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((root / folder).rglob("*.py")):
        parts = list(path.relative_to(root / folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def plugin_modules(root: Path = ROOT) -> dict[str, Path]:
    """Installed name -> file of every plugin module (top-level files of the plugin folders not starting with ``_``)."""
    return {f"{package}.{path.stem}": path for folder, package in PLUGIN_FOLDERS.items()
            for path in sorted((root / folder).glob("*.py")) if not path.name.startswith("_")}


def gibench_modules(root: Path = ROOT) -> dict[str, Path]:
    """Installed name -> file of every module of ``gibench/``."""
    return _modules(root, "gibench", FACADE)


def facade_all(root: Path = ROOT) -> set[str]:
    """The names of the facade's ``__all__`` (a literal list in ``gibench/__init__.py``)."""
    tree = ast.parse((root / "gibench" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("gibench/__init__.py has no literal __all__")


def as_installed(name: str) -> str:
    """``regularizers.x`` (a plugin folder imported as a top-level package) -> ``gibench.regularizers.x``."""
    top, _, rest = name.partition(".")
    return PLUGIN_FOLDERS[top] + (f".{rest}" if rest else "") if top in PLUGIN_FOLDERS else name


def in_plugin_folders(module: str) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in PLUGIN_FOLDERS.values())


def is_module(root: Path, module: str) -> bool:
    """Whether ``module`` (an installed gibench name) is a module or package file under ``root``."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != FACADE:
        return False
    folder = {package: root / folder for folder, package in PLUGIN_FOLDERS.items()}.get(".".join(parts[:2]))
    base, rest = (folder, parts[2:]) if folder is not None else (root / FACADE, parts[1:])
    path = base.joinpath(*rest)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _dynamic_imports(tree: ast.AST) -> Iterator[ImportStatement]:
    """``importlib.import_module("a.b")``, ``import_module("a.b")`` and ``__import__("a.b")`` with a literal name."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        arg = node.args[0]
        if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield ImportStatement(node.lineno, arg.value, None)


def _attribute_reads(tree: ast.AST, bound: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, [a, b, ...])`` for every longest chain ``<bound>.a.b...`` in the source."""
    inner: set[int] = set()
    for node in ast.walk(tree):  # outer attributes come before the ones they contain
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        chain, value = [], node
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            inner.add(id(value))
            value = value.value
        if isinstance(value, ast.Name) and value.id == bound:
            yield node.lineno, chain


def _facade_read(root: Path, line: int, chain: list[str]) -> Imported:
    """What ``gibench.a.b...`` reaches: a plugin-folder module, the longest prefix that is a gibench module, or the
    facade's name ``a``."""
    if chain[0] in PLUGIN_FOLDERS:
        return Imported(line, ".".join([PLUGIN_FOLDERS[chain[0]], *chain[1:2]]))
    for end in range(len(chain), 0, -1):
        module = ".".join([FACADE, *chain[:end]])
        if is_module(root, module):
            return Imported(line, module)
    return Imported(line, FACADE, chain[0])


def imports(module: str, path: Path, root: Path) -> list[Imported]:
    """Everything ``module`` imports, each resolved to the installed module it reaches or the facade name it takes
    (``from p import a``: the module ``p.a`` where it is one, else ``p``; a plugin package holds only modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    statements = [*import_statements(module, tree, path.name == "__init__.py"), *_dynamic_imports(tree)]
    found: dict[Imported, None] = {}
    for statement in statements:
        package = as_installed(statement.module)
        if statement.names is None:
            found[Imported(statement.line, package)] = None
            if package == FACADE:  # `import gibench`: what the module reads as gibench.<name>
                for line, chain in _attribute_reads(tree, statement.asname or FACADE):
                    found[_facade_read(root, line, chain)] = None
            continue
        for name in statement.names:
            if package == FACADE:
                found[_facade_read(root, statement.line, [name])] = None
            elif package in PLUGIN_FOLDERS.values() or is_module(root, f"{package}.{name}"):
                found[Imported(statement.line, f"{package}.{name}")] = None
            else:
                found[Imported(statement.line, package)] = None
    return list(found)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def plugin_to_plugin(root: Path = ROOT) -> list[Violation]:
    """(a): imports by a plugin module of another module of the plugin folders."""
    return [Violation(_relative(path, root), item.line, item.module, "a plugin imports no other module of "
                      "regularizers/ or evaluators/; what plugins share belongs in gibench.api")
            for module, path in plugin_modules(root).items() for item in imports(module, path, root)
            if item.name is None and in_plugin_folders(item.module) and item.module != module]


def gibench_to_plugin(root: Path = ROOT) -> list[Violation]:
    """(b): imports by a module of gibench/ of a module of the plugin folders."""
    return [Violation(_relative(path, root), item.line, item.module, "gibench imports no plugin module; it reaches "
                      "plugins through their entry points")
            for module, path in gibench_modules(root).items() for item in imports(module, path, root)
            if item.name is None and in_plugin_folders(item.module)]


def _public(module: str) -> bool:
    return (module == FACADE or any(module == p or module.startswith(f"{p}.") for p in PUBLIC)) and not any(
        part.startswith("_") for part in module.split("."))


def non_public_imports(root: Path = ROOT) -> list[Violation]:
    """(c): a plugin module's imports of gibench that are not its public API (imports into the plugin folders are
    (a)'s)."""
    exported = facade_all(root)
    found = []
    for module, path in plugin_modules(root).items():
        for item in imports(module, path, root):
            if item.name is not None:
                if item.name not in exported:
                    found.append(Violation(_relative(path, root), item.line, f"{FACADE}.{item.name}",
                                           "not in gibench.__all__"))
            elif item.module.split(".")[0] == FACADE and not in_plugin_folders(item.module) and not _public(
                    item.module):
                found.append(Violation(_relative(path, root), item.line, item.module, "not gibench's public API: "
                                       "gibench (its __all__), gibench.api.* and gibench.core.*, no private module"))
    return found


def _report(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


def test_the_checker_sees_every_plugin_and_gibench_module():
    plugins, core = plugin_modules(), gibench_modules()
    assert {"gibench.regularizers.score_matching", "gibench.regularizers.score_matching_antithetic",
            "gibench.evaluators.accuracy"} <= set(plugins)
    assert not any(name.rsplit(".", 1)[1].startswith("_") for name in plugins)
    assert {"gibench", "gibench.api.hessian", "gibench.running.runner", "gibench.testing"} <= set(core)
    assert {"Regularizer", "build_model", "__version__"} <= facade_all()


def test_no_plugin_imports_another_plugin_module():
    violations = plugin_to_plugin()
    assert not violations, "plugin -> plugin imports:\n" + _report(violations)


def test_gibench_imports_no_plugin_module():
    violations = gibench_to_plugin()
    assert not violations, "gibench -> plugin imports:\n" + _report(violations)


def test_plugins_import_only_the_public_api():
    violations = non_public_imports()
    assert not violations, "plugin imports outside gibench's public API:\n" + _report(violations)


FAKE = {
    "gibench/__init__.py": "__all__ = ['Regularizer', 'build_model']\n",
    "gibench/api/__init__.py": "",
    "gibench/api/plugin.py": "",
    "gibench/api/_private.py": "",
    "gibench/core/__init__.py": "",
    "gibench/core/errors.py": "",
    "gibench/training/__init__.py": "",
    "gibench/training/train.py": "",
    "gibench/store/__init__.py": "",
    "gibench/store/runs.py": "",
    "gibench/running/__init__.py": "",
    "gibench/running/estimate.py": "import torch\n\ndef price():\n    from gibench.evaluators.e import X\n"
                                   "    import regularizers.good\n    from gibench.api import plugin\n",
    "regularizers/__init__.py": "",
    "regularizers/good.py": "import gibench\nfrom gibench import Regularizer, build_model\n"
                            "from gibench.api.plugin import TrainingLoss\nfrom gibench.api import plugin\n"
                            "from gibench.core.errors import ConfigError\nimport torch\nR = gibench.Regularizer\n",
    "regularizers/other.py": "thing = 1\n",
    "regularizers/bad.py": "import gibench\n"  # 1
                           "from gibench import Regularizer, create_everything\n"  # 2
                           "from gibench.training.train import fit\n"  # 3
                           "from . import other\n"  # 4
                           "from .other import thing\n"  # 5
                           "import regularizers.other\n"  # 6
                           "from gibench.regularizers.other import thing\n"  # 7
                           "from gibench import regularizers\n"  # 8
                           "from gibench.api._private import x\n"  # 9
                           "\n"  # 10
                           "def lazy():\n"  # 11
                           "    from gibench.store import runs\n"  # 12
                           "    return gibench.secret, importlib.import_module('gibench.evaluators.e')\n",  # 13
    "evaluators/__init__.py": "",
    "evaluators/_helper.py": "from gibench.training.train import fit\n",  # private: not a plugin module
    "evaluators/e.py": "from gibench.evaluators import _helper\nfrom gibench.api.plugin import X\n",
}


def test_the_checker_catches_every_spelling_of_a_forbidden_import(tmp_path):
    for name, text in FAKE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    def found(violations: list[Violation]) -> set[tuple[str, int, str]]:
        return {(v.path, v.line, v.imported) for v in violations}

    bad = "regularizers/bad.py"
    assert found(plugin_to_plugin(tmp_path)) == {
        (bad, 4, "gibench.regularizers.other"), (bad, 5, "gibench.regularizers.other"),
        (bad, 6, "gibench.regularizers.other"), (bad, 7, "gibench.regularizers.other"),
        (bad, 8, "gibench.regularizers"), (bad, 13, "gibench.evaluators.e"),
        ("evaluators/e.py", 1, "gibench.evaluators._helper")}
    assert found(non_public_imports(tmp_path)) == {
        (bad, 2, "gibench.create_everything"), (bad, 3, "gibench.training.train"), (bad, 9, "gibench.api._private"),
        (bad, 12, "gibench.store.runs"), (bad, 13, "gibench.secret")}
    assert found(gibench_to_plugin(tmp_path)) == {
        ("gibench/running/estimate.py", 4, "gibench.evaluators.e"),
        ("gibench/running/estimate.py", 5, "gibench.regularizers.good")}
    message = _report(non_public_imports(tmp_path))
    assert "regularizers/bad.py:3: imports gibench.training.train (not gibench's public API" in message


@pytest.mark.parametrize("spelling", ["from gibench.regularizers import score_matching",
                                      "from gibench.regularizers.score_matching import ScoreMatching",
                                      "from .score_matching import ScoreMatching",
                                      "import regularizers.score_matching as sm",
                                      "import gibench\nX = gibench.regularizers.score_matching"])
def test_a_plugin_importing_score_matching_is_caught_under_every_spelling(tmp_path, spelling):
    for name in ("gibench/__init__.py", "regularizers/__init__.py", "regularizers/score_matching.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("__all__ = []\n" if name == "gibench/__init__.py" else "")
    (tmp_path / "regularizers" / "variant.py").write_text("def f():\n" + textwrap.indent(spelling, "    ") + "\n")
    assert [str(v).split(" (")[0] for v in plugin_to_plugin(tmp_path)] == [
        f"regularizers/variant.py:{2 if 'X =' not in spelling else 3}: imports gibench.regularizers.score_matching"]


def test_the_forbidden_contract_names_every_layer_but_api_and_core():
    """pyproject.toml's forbidden contract stays in step with the layers contract when a layer is added."""
    tomllib = pytest.importorskip("tomllib")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert set(contracts["root_packages"]) == {"gibench", *PLUGIN_FOLDERS}
    layers = next(c for c in contracts["contracts"] if c["type"] == "layers")["layers"]
    every = {name.strip() for layer in layers for name in layer.split("|")}
    forbidden = next(c for c in contracts["contracts"] if c["type"] == "forbidden")
    assert set(forbidden["source_modules"]) == set(PLUGIN_FOLDERS)
    assert set(forbidden["forbidden_modules"]) == every - set(PUBLIC)
    assert forbidden.get("allow_indirect_imports") is True and "ignore_imports" not in forbidden
