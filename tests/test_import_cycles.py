"""No import circles in gibench, counting every import: module level, inside functions and under TYPE_CHECKING.

A circle held open only by a lazy import still couples the modules on it: neither can be understood, tested or
moved without the other, and the first module-level import that closes it fails with a partially initialised
module. The graph is read statically with :mod:`ast`, so the test needs no import of gibench and sees every branch.

Which edges count:

* ``import gibench.a.b``, ``from gibench.a import b`` (b a submodule) and relative imports name a module; ``from
  gibench.a import name`` names ``gibench.a``. Implicit imports of parent packages are not edges (Python runs a
  package's ``__init__`` before any of its submodules anyway, so they cannot form a circle of their own making).
* The facade ``gibench/__init__.py`` re-exports the public API and imports nearly every module (lazily), so an edge
  into it is resolved to what it names: ``from gibench import registry`` is an import of ``gibench.api.registry``;
  ``from gibench import Regularizer`` (and ``gibench.Regularizer`` after ``import gibench``) of the module the
  facade re-exports ``Regularizer`` from. Only names defined in the facade's own body (its wrapper functions,
  ``__version__``) are edges into the facade itself.
* Those remaining facade edges count for modules of ``gibench/``: they should import from the defining submodule.
  The plugin folders (``regularizers/``, ``evaluators/``, ``leaderboard/``, installed as ``gibench.regularizers``
  and so on) are clients of the public API, reached by the core only through entry points; their edges into the
  facade's own body are left out, since counting them would make every plugin that calls ``gibench.create_*`` look
  circular without any module-level coupling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (pyproject.toml's [tool.setuptools.package-dir]).
PACKAGES = {"gibench": "gibench", "regularizers": "gibench.regularizers", "evaluators": "gibench.evaluators",
            "leaderboard": "gibench.leaderboard"}
PLUGIN_PACKAGES = ("gibench.regularizers", "gibench.evaluators", "gibench.leaderboard")
FACADE = "gibench"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def facade_exports(path: Path) -> dict[str, str]:
    """Public name -> the module the facade takes it from (module-level imports and its ``_LAZY`` table)."""
    exports: dict[str, str] = {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gibench."):
            exports.update({alias.asname or alias.name: node.module for alias in node.names})
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            exports.update(ast.literal_eval(node.value))
    return exports


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class ImportStatement(NamedTuple):
    """One import statement as written: ``import a.b [as c]`` gives ``module="a.b"``, ``names=None``, ``asname="c"``;
    ``from p import a, b`` (relative ones resolved) gives ``module="p"``, ``names=("a", "b")``."""

    line: int
    module: str
    names: tuple[str, ...] | None
    asname: str | None = None


def import_statements(module: str, tree: ast.AST, is_package: bool) -> Iterator[ImportStatement]:
    """Every import statement of ``module`` (whose source parsed to ``tree``), module level, inside functions and
    under ``TYPE_CHECKING`` alike; ``import a, b`` gives one statement per module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportStatement(node.lineno, alias.name, None, alias.asname)
        elif isinstance(node, ast.ImportFrom):
            package = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                       else node.module or "")
            yield ImportStatement(node.lineno, package, tuple(alias.name for alias in node.names))


def _target(name: str, modules: Iterable[str]) -> str | None:
    """``name`` if it is a module of the package, else its nearest ancestor that is (None outside gibench)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: Mapping[str, Path], exports: Mapping[str, str]) -> set[str]:
    """The gibench modules that ``module`` imports anywhere in its source (see the module docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        target = _target(name, modules)
        if target is not None:
            found.add(target)

    def add_from(package: str, names: Iterable[str]) -> None:
        for name in names:
            if f"{package}.{name}" in modules:
                add(f"{package}.{name}")
            elif package == FACADE:
                add(exports.get(name, FACADE))
            else:
                add(package)

    for statement in import_statements(module, tree, is_package):
        if statement.names is not None:
            add_from(statement.module, statement.names)
        elif statement.module == FACADE and statement.asname is None:
            add_from(FACADE, _facade_attributes(tree))
        else:
            add(statement.module)
    found.discard(module)
    return found


def _facade_attributes(tree: ast.AST) -> set[str]:
    """The names a module reads as ``gibench.<name>`` after ``import gibench``."""
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == FACADE}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the gibench modules it imports, with the facade edges of plugins left out (see the docstring)."""
    modules = module_files(root)
    exports = facade_exports(modules[FACADE])
    graph = {}
    for module, path in modules.items():
        edges = imports_of(module, path, modules, exports)
        if module.startswith(PLUGIN_PACKAGES):
            edges.discard(FACADE)
        graph[module] = edges
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it has none (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_a_hand_made_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"d", "b"}, "d": set(), "e": {"a"}}
    assert find_cycle(graph) == ["b", "c", "b"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_reads_lazy_relative_and_facade_imports(tmp_path):
    (tmp_path / "gibench" / "sub").mkdir(parents=True)
    for folder in ("regularizers", "evaluators", "leaderboard"):
        (tmp_path / folder).mkdir()
    files = {
        "gibench/__init__.py": "from gibench.api import Thing\n_LAZY = {'Runner': 'gibench.run'}\n"
                               "def go():\n    from gibench.run import go\n",
        "gibench/api.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gibench.run import X\n",
        "gibench/run.py": "def f():\n    from . import sub\n    from .sub.deep import y\n",
        "gibench/sub/__init__.py": "",
        "gibench/sub/deep.py": "import gibench\nV = gibench.__version__\nfrom gibench import Thing, Runner\n",
        "evaluators/e.py": "from gibench import Thing, go\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["gibench.api"] == {"gibench.run"}
    assert graph["gibench.run"] == {"gibench.sub", "gibench.sub.deep"}
    assert graph["gibench.sub.deep"] == {"gibench", "gibench.api", "gibench.run"}
    assert graph["gibench.evaluators.e"] == {"gibench.api"}  # the facade's own `go` is left out for plugins
    assert find_cycle(graph) == ["gibench", "gibench.api", "gibench.run", "gibench.sub.deep", "gibench"]


def test_gibench_has_no_import_cycle():
    graph = import_graph()
    assert {"gibench", "gibench.running.runner", "gibench.api", "gibench.evaluators.accuracy"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# -- what breaking the circles must keep -------------------------------------------------------------------------


def test_the_version_module_and_the_facade_agree():
    import gibench
    from gibench.version import __version__

    assert gibench.__version__ == __version__


def test_eval_context_without_aux_gets_an_in_memory_store(tmp_path):
    import torch

    import gibench.store.auxiliary  # registers the default, as importing any evaluator that trains one does
    from gibench.api.plugin import AuxiliaryStore, EvalContext, EvaluatedJob
    from gibench.testing import tiny_bundle, tiny_model

    bundle = tiny_bundle()
    ctx = EvalContext(tiny_model(bundle), bundle, lambda m, x, y: x, torch.device("cpu"), 0, tmp_path)
    assert isinstance(ctx.aux, gibench.store.auxiliary.AuxiliaryModels) and ctx.aux.root is None
    assert isinstance(ctx.aux, AuxiliaryStore) and not isinstance(object(), EvaluatedJob)


def test_a_job_is_what_evaluators_may_read(tiny_suite_file):
    from gibench.api.plugin import EvaluatedJob
    from gibench.suites.jobs import expand
    from gibench.suites.suite import load_suite

    assert all(isinstance(job, EvaluatedJob) for job in expand(load_suite(tiny_suite_file)))
