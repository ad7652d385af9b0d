"""Old module names, kept importable for one release: ``import gibench.runner`` still works, with a
``DeprecationWarning`` that names the new module.

gibench's modules moved from one flat folder into subpackages in data-flow order (docs/architecture.md, "Layers").
Rather than a stub file per old name beside the new tree, one import hook (:class:`MovedModules`, installed by
``gibench/__init__.py``) serves every old name in :data:`MOVED`: importing it imports the new module and hands back
that same module object, so ``gibench.runner.run_suite is gibench.running.runner.run_suite`` and a monkeypatch
through either name reaches the same code. Names that became packages (``gibench.api``, ``gibench.store``,
``gibench.results``) need no entry: the packages re-export what the modules held.
"""

from __future__ import annotations

__all__ = ["MOVED", "MovedModules", "install"]

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old module name -> the module it moved to
MOVED: dict[str, str] = {
    "gibench.errors": "gibench.core.errors",
    "gibench.params": "gibench.core.params",
    "gibench.config_types": "gibench.core.config_types",
    "gibench.fsio": "gibench.core.fsio",
    "gibench.identity": "gibench.core.identity",
    "gibench.registry": "gibench.api.registry",
    "gibench.saliency": "gibench.api.saliency",
    "gibench.artifacts": "gibench.api.artifacts",
    "gibench.draws": "gibench.api.draws",
    "gibench.ranks": "gibench.api.ranks",
    "gibench.passes": "gibench.api.passes",
    "gibench.augment": "gibench.training.augment",
    "gibench.homogeneity": "gibench.training.homogeneity",
    "gibench.cifar_backbones": "gibench.training.cifar_backbones",
    "gibench.models": "gibench.training.models",
    "gibench.train": "gibench.training.train",
    "gibench.config": "gibench.suites.suite",
    "gibench.jobs": "gibench.suites.jobs",
    "gibench.records": "gibench.store.records",
    "gibench.auxiliary": "gibench.store.auxiliary",
    "gibench.rekey": "gibench.store.rekey",
    "gibench.doctor": "gibench.store.doctor",
    "gibench.run_options": "gibench.running.options",
    "gibench.job_runner": "gibench.running.job_runner",
    "gibench.run_job": "gibench.running.run_job",
    "gibench.runner": "gibench.running.runner",
    "gibench.preflight": "gibench.running.preflight",
    "gibench.ray_executor": "gibench.running.ray_executor",
    "gibench.progress": "gibench.running.progress",
    "gibench.estimate": "gibench.running.estimate",
    "gibench.stats": "gibench.results.stats",
    "gibench.provenance": "gibench.store.provenance",
    "gibench.submission_schema": "gibench.submissions.schema",
    "gibench.submission_validate": "gibench.submissions.validate",
    "gibench.submission_artifacts": "gibench.submissions.artifacts",
    "gibench.submission_rekey": "gibench.submissions.rekey",
    "gibench.submission": "gibench.submissions.build",
    "gibench.verify": "gibench.submissions.verify",
    # helpers that were private to the built-in plugins and became public in gibench.api
    "gibench.evaluators._artifacts": "gibench.api.artifacts",
    "gibench.evaluators._draws": "gibench.api.draws",
    "gibench.evaluators._masking": "gibench.api.masking",
    "gibench.evaluators._denoiser": "gibench.api.denoiser",
    "gibench.regularizers._passes": "gibench.api.passes",
    "gibench.regularizers._hessian": "gibench.api.hessian",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds every name of :data:`MOVED` and loads it as the module it moved to (see the module docstring)."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old name goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the new one, already executed. The import system has just set its
        ``__spec__`` to the old name's; give it its own back."""
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    """Put the hook on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
