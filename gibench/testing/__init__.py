"""Test helpers for plugin authors: a tiny model and dataset, an ``EvalContext`` factory, in-process registration, and
the conformance checks gibench runs on its own plugins.

Put the checks in your plugin's test suite (CI included); they need neither a GPU nor gibench's source checkout::

    from gibench.testing import check_evaluator, check_regularizer

    def test_my_regularizer_conforms():
        check_regularizer("my_regularizer")          # by its registered name (your entry point) ...

    def test_my_evaluator_conforms():
        check_evaluator(MyEvaluator, params={"max_images": 32})   # ... or by class, registered or not

Each check runs on the CPU in seconds on :func:`tiny_model` and :func:`tiny_bundle`, collects every failure and
raises one :class:`ConformanceError` (an ``AssertionError``, so pytest reports it as a failed test) listing them all.

What :func:`check_regularizer` checks (the ``gibench.Regularizer`` contract): the class's declarations (as the
registry checks them when it loads, its ``sweep`` included); the default config round-trips through the registry and
is JSON-able; the total is a finite 0-dim tensor whose gradient reaches every parameter, finite and not all zero, at
the defaults and at the weakest and the strongest value of the declared ``sweep`` (unless ``sweep = None``);
``parts`` are non-empty, detached, finite 0-dim tensors; every module's train/eval flag and BatchNorm's
``track_running_stats`` are as they arrived (a frozen BatchNorm inside a training model included); the input batch is
not modified; no tensor value is read on the host inside a step (``.item()``, ``.tolist()``, ``.cpu()``,
``.numpy()``, ``bool``/``float``/``int`` of a tensor; the first call may build caches and is exempt); and
``zero_strength`` reproduces the ``erm`` loss exactly (bit for bit, gradients to 1e-6), unless the class declares
``zero_strength = None``; and ``passes_per_step()`` equals the model passes a step runs, training backward included,
counted with hooks by :func:`gibench.testing.passes.count_passes` at the defaults, the ends of the sweep and zero
strength.

What :func:`check_evaluator` checks (the ``gibench.Evaluator`` contract): the declarations (exactly one headline
metric, unique metric names, known capabilities, a dataclass ``Config``, a docstring); the dataset offers what the
evaluator requires; each metric's ``read_beside`` names a registered evaluator's headline metric that reads beside
nothing itself; ``evaluate`` returns an :class:`gibench.EvalResult` whose ``scalars`` are exactly the declared
metrics, each a finite Python float, whose curves have x and y of equal length, and whose artifacts are non-empty
files inside ``ctx.artifact_dir`` (PNGs that open, JSON that parses; no temporary files left); the model under
evaluation is left in eval mode with unchanged parameters; the same seed gives the same numbers; and the numbers do
not depend on the evaluation batch size (relative tolerance 1e-5).

The package's modules: :mod:`~gibench.testing.fixtures` (the tiny model and dataset, a trained model, the context
factory), :mod:`~gibench.testing.registration` (:func:`registered`), :mod:`~gibench.testing.conformance` (what the
checks share), :mod:`~gibench.testing.regularizer_checks`, :mod:`~gibench.testing.evaluator_checks` and
:mod:`~gibench.testing.passes` (counting a computation's model passes with hooks).
"""

from __future__ import annotations

from gibench.testing.conformance import ConformanceError
from gibench.testing.evaluator_checks import check_evaluator
from gibench.testing.fixtures import make_eval_context, tiny_bundle, tiny_model, trained_model
from gibench.testing.registration import registered
from gibench.testing.regularizer_checks import HOST_READS, check_regularizer  # noqa: F401  (HOST_READS importable here)

__all__ = [
    "ConformanceError", "check_evaluator", "check_regularizer", "make_eval_context", "registered", "tiny_bundle",
    "tiny_model", "trained_model",
]

#: The examples in the re-exported functions' docstrings, for ``doctest.testmod(gibench.testing)``.
__test__ = {name: globals()[name] for name in __all__}
