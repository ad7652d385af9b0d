"""The run store (docs/architecture.md, "The store's commit points"): job folders and their records, auxiliary
models, re-keying, and ``gibench doctor``.

The job store itself is :mod:`gibench.store.runs`, re-exported here so that ``from gibench.store import RunStore``
reads as before; :mod:`~gibench.store.records` (what each file holds), :mod:`~gibench.store.auxiliary`,
:mod:`~gibench.store.rekey` and :mod:`~gibench.store.doctor` sit beside it.
"""

from gibench.store.runs import *  # noqa: F401,F403  (see gibench.store.runs.__all__)
from gibench.store.runs import __all__  # noqa: F401
