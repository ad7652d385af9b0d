"""Identity hashes: the one rule by which gibench names a trained model, an evaluation and an auxiliary model.

Every cache, claim, resume, verification and submission check rests on one promise: the same suite gives the same
hashes on every machine. A hash of a float's exact bits breaks that promise, because a float that a library
*computes* at run time (``np.logspace(-2, 0, 25)``, ``41 / 224``, a mean of a tensor) can differ in its last bit
between instruction sets: NumPy's AVX-512 ``power`` gives 0.056234132519034905 for the tenth of those 25 fractions
where its scalar path gives 0.05623413251903491.

**The rule.** An identity is hashed on its *canonical values*: plain JSON (:func:`gibench.core.params.jsonable`) in
which every finite float is rounded to :data:`SIGNIFICANT_DIGITS` significant digits (``float(f"{x:.10g}")``), and then
written as :func:`gibench.core.fsio.canonical_json` (sorted keys, no whitespace). Ten digits are far coarser than the
last bit of a float64 (about 16 digits), so a value that two machines compute a few ulps apart hashes the same; and far
finer than any two settings a user could mean (``lr`` 1e-3 and 1.0000000001e-3 are the same setting). Near zero a
relative rule cannot absorb a last-bit difference, so the subnormal floats (magnitude below 2.2e-308, one ulp away
from zero) and −0.0 are written as 0.0. Integers, strings, booleans, ``None``, NaN and the infinities are hashed
exactly; a float that already has at most ten
significant digits (``0.1``, ``1e-3``, ``41.0``) is written exactly as before, so only identities that hold a longer,
computed float changed their hash when this rule was introduced (:mod:`gibench.store.rekey` moves stores written
before).

What goes through the rule: the job hash (:meth:`gibench.suites.jobs.Job.hash`: dataset, backbone, regularizer and their
resolved configs, seed, training config, training-code version), an evaluation's config hash (the ``<config hash>``
of ``results/<name>__v<version>__<config hash>.json``), an auxiliary model's key (:mod:`gibench.store.auxiliary`) and
the training-config label of a table row. What does not: content hashes, which must see every bit (a checkpoint's or a
results file's SHA-256, a submission's id, a suite file's hash, :func:`gibench.store.auxiliary.tensors_sha256` of data
tensors).
"""

from __future__ import annotations

__all__ = ["SIGNIFICANT_DIGITS", "canonical_float", "canonical_values", "identity_hash"]

import hashlib
import math
import sys
from collections.abc import Mapping
from typing import Any

from gibench.core.fsio import canonical_json
from gibench.core.params import jsonable

#: Significant digits a float keeps in an identity (see the module docstring for why ten).
SIGNIFICANT_DIGITS = 10


def canonical_float(value: float) -> float:
    """``value`` rounded to :data:`SIGNIFICANT_DIGITS` significant digits; subnormal values and −0.0 as 0.0; NaN and
    the infinities unchanged."""
    value = float(value)
    if not math.isfinite(value):
        return value
    if abs(value) < sys.float_info.min:  # subnormal or zero: one ulp away from 0.0, and −0.0
        return 0.0
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def canonical_values(obj: Any) -> Any:
    """Plain JSON of ``obj`` with every float made canonical (:func:`canonical_float`); booleans and integers exact."""
    return _canonical(jsonable(obj))


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) or _is_real_scalar(value):
        return canonical_float(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _is_real_scalar(value: Any) -> bool:
    """A NumPy (or other) floating-point scalar: has ``is_integer`` and converts to float, but is not an int."""
    return hasattr(value, "is_integer") and hasattr(value, "__float__") and not hasattr(value, "__index__")


def identity_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON of the canonical values of ``obj``, first ``length`` hex digits."""
    return hashlib.sha256(canonical_json(canonical_values(obj)).encode()).hexdigest()[:length]
