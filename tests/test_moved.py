"""Modules that moved into the layered subpackages keep importing under their old names for one release, with a
DeprecationWarning that names the new module, and hand back the very same module object."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from gibench._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_name_warns_and_is_the_new_module(old: str) -> None:
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        moved = importlib.import_module(old)
    assert moved is new
    assert moved.__spec__.name == MOVED[old]  # the real module keeps its own spec


#: where the installed packages' files are (pyproject.toml's [tool.setuptools.package-dir])
FOLDERS = {"gibench.evaluators": "evaluators", "gibench.regularizers": "regularizers"}


def test_no_old_module_file_is_left_beside_the_new_ones() -> None:
    for old in MOVED:
        package, name = old.rsplit(".", 1)
        folder = FOLDERS.get(package, package.replace(".", "/"))
        assert not (ROOT / folder / f"{name}.py").exists(), old


def test_from_old_import_name_works_in_a_fresh_process() -> None:
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "import gibench\n"
            "try:\n    from gibench.runner import run_suite\nexcept DeprecationWarning as w:\n    print(w)\n"
            "from gibench.running.runner import run_suite as new\n"
            "warnings.simplefilter('ignore')\nfrom gibench.runner import run_suite\nprint(run_suite is new)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gibench.runner moved to gibench.running.runner; import it from there (the old name goes in the next release)",
        "True"]
