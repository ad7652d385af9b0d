"""gibench's version, in a module of its own so that gibench's modules can read it without importing the facade.

The facade (``gibench/__init__.py``) imports nearly every module of the package, lazily, so a module that reads
``gibench.__version__`` closes an import circle with it; reading :data:`__version__` from here does not.
``gibench.__version__`` must equal it (tests/test_import_cycles.py checks).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
