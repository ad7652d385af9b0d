"""Identity hashes that every machine agrees on (gibench.core.identity): the canonical-value rule, every key of every
shipped suite unchanged when any float in its resolved configs moves by one ulp, auxiliary-model keys unchanged when
any float in their identities does, and the pinned keys the same with NumPy's AVX-512 paths on and off.

NumPy's SIMD ``power`` on AVX-512 gives 0.056234132519034905 for the tenth of ``np.logspace(-2, 0, 25)`` (pixel
perturbation's default fractions) where its scalar path gives 0.05623413251903491; before the rule, that one ulp
changed the key of every pixel-perturbation result between machines.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gibench.api import registry
from gibench.core.identity import SIGNIFICANT_DIGITS, canonical_float, canonical_values, identity_hash
from gibench.store.auxiliary import aux_key
from gibench.store.runs import result_key
from gibench.suites.jobs import rebuildable_jobs
from gibench.suites.suite import PluginSpec, Suite, TrainConfig, load_suite, shipped_suites

ROOT = Path(__file__).resolve().parents[1]

#: SHA-256 (16 hex digits) of every job key and every "<job key>/<result key>" of each shipped suite, in order.
PINNED_SUITE_KEYS = {"smoke": "765dc35f179a7867", "standard": "319db03fde988d8e", "full": "5b41ad4333658251",
                     "tuned": "73baa53fb5b6cc32"}


def suite_keys(suite: Suite) -> list[str]:
    """Every job key of ``suite`` (of a suite that selects: its sweep and every setting it could score) and, after each,
    the result key of each of its evaluations."""
    keys = []
    for job in rebuildable_jobs(suite):
        keys.append(job.hash)
        for spec in job.evaluators:
            version = registry.evaluators.get(spec.name).version
            keys.append(f"{job.hash}/{result_key(spec.name, version, identity_hash(spec.config))}")
    return keys


def digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------------
# The rule


def test_short_floats_keep_their_value_and_long_ones_are_rounded_to_ten_significant_digits() -> None:
    assert SIGNIFICANT_DIGITS == 10
    for value in (0.1, 1e-3, 0.5, 41.0, 3e-8, 1.0e300, -2.5):
        assert canonical_float(value) == value
    assert canonical_float(41 / 224) == 0.1830357143
    assert canonical_float(0.05623413251903491) == canonical_float(0.056234132519034905) == 0.05623413252
    assert canonical_float(-0.0) == 0.0 and math.copysign(1, canonical_float(-0.0)) == 1
    assert canonical_float(5e-324) == 0.0 == canonical_float(-5e-324)
    assert math.isnan(canonical_float(float("nan"))) and canonical_float(float("-inf")) == float("-inf")


def test_canonical_values_keep_integers_booleans_and_strings_exact() -> None:
    values = canonical_values({"n": 12345678901234567, "flag": True, "name": "0.1234567890123",
                               "levels": (0.1, 1 / 3), "np": np.float32(0.1), "nested": [{"x": 2 / 3}]})
    assert values == {"n": 12345678901234567, "flag": True, "name": "0.1234567890123",
                      "levels": [0.1, 0.3333333333], "np": 0.1000000015, "nested": [{"x": 0.6666666667}]}
    assert isinstance(values["flag"], bool)


def test_settings_a_user_could_mean_keep_distinct_keys() -> None:
    for a, b in ((1e-3, 1.1e-3), (0.1, 0.10000001), (1e-12, 1.0000001e-12), (0.0, 1e-300), (1.0, -1.0)):
        assert identity_hash({"lr": a}) != identity_hash({"lr": b})


# ----------------------------------------------------------------------------------------------------------------------
# One ulp


def nudge(value: Any, direction: int) -> Any:
    """``value`` with every float moved by one ulp towards +inf (``direction`` 1) or -inf (-1); 0 leaves it."""
    if direction == 0 or isinstance(value, bool) or not isinstance(value, (float, dict, list, tuple)):
        return value
    if isinstance(value, float):
        return math.nextafter(value, math.inf * direction) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: nudge(v, direction) for k, v in value.items()}
    return type(value)(nudge(v, direction) for v in value)


def _nudged_spec(spec: PluginSpec, direction: int) -> PluginSpec:
    return PluginSpec(spec.name, spec.params_json, json.dumps(nudge(spec.config, direction), sort_keys=True))


def _nudged_train(train: TrainConfig, direction: int) -> TrainConfig:
    """Every float field moved by one ulp, without the range checks (0.0 - 1 ulp is below weight_decay's 0)."""
    moved = copy.copy(train)
    for f in dataclasses.fields(train):
        object.__setattr__(moved, f.name, nudge(getattr(train, f.name), direction))
    return moved


def nudged_suite(suite: Suite, direction: int) -> Suite:
    """``suite`` with every float in every resolved config (datasets' options, backbones', regularizers',
    evaluators', the train config and each per-dataset train config) moved by one ulp."""
    def specs(group):
        return tuple(_nudged_spec(s, direction) for s in group)

    grids = tuple(dataclasses.replace(g, datasets=specs(g.datasets), backbones=specs(g.backbones),
                                      regularizers=specs(g.regularizers), evaluators=specs(g.evaluators))
                  for g in suite.grids)
    return dataclasses.replace(
        suite, datasets=specs(suite.datasets), backbones=specs(suite.backbones),
        regularizers=specs(suite.regularizers), evaluators=specs(suite.evaluators),
        train=_nudged_train(suite.train, direction), grids=grids,
        train_per_dataset=tuple((label, _nudged_train(t, direction)) for label, t in suite.train_per_dataset))


def _floats(value: Any) -> int:
    if isinstance(value, float):
        return 1
    if isinstance(value, dict):
        return sum(_floats(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_floats(v) for v in value)
    return 0


@pytest.mark.parametrize("name", shipped_suites())
@pytest.mark.parametrize("direction", [1, -1])
def test_every_job_and_result_key_survives_one_ulp_in_every_config_float(name: str, direction: int) -> None:
    suite = load_suite(name)
    moved = nudged_suite(suite, direction)
    assert moved.train != suite.train or not _floats(dataclasses.asdict(suite.train))
    assert any(a.config != b.config for a, b in zip(moved.evaluators, suite.evaluators))  # the test moves something
    assert suite_keys(moved) == suite_keys(suite)


@pytest.mark.parametrize("direction", [0, 1, -1])
def test_the_pinned_keys_of_every_shipped_suite(direction: int) -> None:
    found = {name: digest(suite_keys(nudged_suite(load_suite(name), direction))) for name in PINNED_SUITE_KEYS}
    assert found == PINNED_SUITE_KEYS


class _Captured(Exception):
    pass


class RecordingAux:
    """Stands in for AuxiliaryModels: records the first auxiliary model an evaluator asks for, and stops it there."""

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")
        self.requests: list[tuple[str, dict]] = []

    def get_or_train(self, kind, identity, build, train):
        from gibench.core.params import jsonable

        self.requests.append((kind, jsonable(dict(identity))))
        raise _Captured


def _auxiliary_requests(suite_name: str, tmp_path: Path) -> list[tuple[str, str, dict]]:
    """(evaluator label, kind, identity) of the first auxiliary model each auxiliary-model evaluator of the suite asks
    for, on one job per dataset (an untrained model: keys never depend on weights)."""
    from gibench.api.plugin import ANALYTIC_SCORE
    from gibench.api.saliency import saliency_for
    from gibench.running.runner import RunOptions, load_bundle
    from gibench.testing import make_eval_context
    from gibench.training.models import build_model

    suite, found, seen = load_suite(suite_name), [], set()
    for job in rebuildable_jobs(suite):
        for spec in job.evaluators:
            evaluator = registry.evaluators.create(spec.name, **spec.params)
            if spec.name not in ("gan_test", "diffroar", "score_alignment") or (job.dataset, spec) in seen:
                continue
            bundle = load_bundle(job.dataset, RunOptions(device="cpu"))
            if spec.name == "score_alignment" and (evaluator.config.score == "analytic" or (
                    evaluator.config.score == "auto" and ANALYTIC_SCORE in bundle.capabilities)):
                continue  # the dataset's own score: no denoiser
            seen.add((job.dataset, spec))
            model = build_model(job.backbone.name, job.backbone.config, bundle)
            aux = RecordingAux()
            ctx = make_eval_context(model, bundle, tmp_path / f"{len(seen)}", aux=aux, job=job,
                                    saliency=saliency_for(evaluator.config), batch_size=512)
            with pytest.raises(_Captured):
                evaluator.evaluate(ctx)
            found += [(spec.label, kind, identity) for kind, identity in aux.requests]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("suite_name", ["smoke", "standard"])
def test_every_auxiliary_model_key_survives_one_ulp_in_every_float_of_its_identity(suite_name: str,
                                                                                  tmp_path: Path) -> None:
    requests = _auxiliary_requests(suite_name, tmp_path)
    kinds = {kind for _, kind, _ in requests}
    assert {"gan_test_judge", "diffroar_retrain"} <= kinds
    assert suite_name == "smoke" or "denoiser" in kinds
    for label, kind, identity in requests:
        assert _floats(identity), f"{label}: no float in the identity, so this check would be empty"
        for direction in (1, -1):
            assert aux_key(kind, nudge(identity, direction)) == aux_key(kind, identity), label


# ----------------------------------------------------------------------------------------------------------------------
# NumPy's AVX-512 paths off


def _avx512_targets() -> list[str]:
    """NumPy's dispatch targets that use AVX-512 on this CPU (empty where it has none)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    if not __cpu_features__.get("AVX512F"):
        return []
    return [t for t in __cpu_dispatch__ if "512" in t or t == "X86_V4"]


_SUBPROCESS = """
import json, numpy as np
from gibench.suites.suite import load_suite
from tests.test_identity import digest, suite_keys
print(json.dumps({"tenth_fraction": float(np.logspace(-2, 0, 25)[9]),
                  "keys": {name: digest(suite_keys(load_suite(name)))
                           for name in ("smoke", "standard", "full", "tuned")}}))
"""


@pytest.mark.skipif(not _avx512_targets(), reason="this CPU has no AVX-512: NumPy runs one path only")
def test_the_pinned_keys_are_the_same_with_numpys_avx512_paths_off() -> None:
    off = " ".join(_avx512_targets())
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": off}
    done = subprocess.run([sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    without = json.loads(done.stdout.strip().splitlines()[-1])
    assert without["keys"] == PINNED_SUITE_KEYS
    assert {name: digest(suite_keys(load_suite(name))) for name in PINNED_SUITE_KEYS} == without["keys"]
    # The two paths are there to be had: the raw default fraction is what the scalar path computes.
    assert without["tenth_fraction"] == 0.05623413251903491


# ----------------------------------------------------------------------------------------------------------------------
# Data drawn at run time: hashed by content, and the same bytes on torch's scalar and vectorized paths

#: tensors_sha256 (16 hex digits) of train x, train y, test x, test y of each bundled dataset
PINNED_DATA = {"mnist_subset": "e9bbc71ea1dc0966", "blockmnist": "1557d79fee83ce33",
               "gaussian_mixture": "76fb2c6ed95ee199"}

_DATA_SUBPROCESS = """
import json
from gibench.api import registry
from gibench.store.auxiliary import tensors_sha256
found = {}
for name in ("mnist_subset", "blockmnist", "gaussian_mixture"):
    b = registry.datasets.create(name).load(None)
    found[name] = tensors_sha256([b.train.x, b.train.y, b.test.x, b.test.y])[:16]
print(json.dumps(found))
"""


@pytest.mark.parametrize("capability", ["", "default"])  # "": the best this CPU has
def test_the_bundled_datasets_are_the_same_bytes_on_every_cpu_path(capability: str) -> None:
    """Outside a suite an auxiliary model names its data by a content hash (tensors_sha256): the bundled and synthetic
    datasets must give the same bytes whichever of torch's CPU kernels draws them (``ATEN_CPU_CAPABILITY=default``
    is the scalar one) and with NumPy's AVX-512 paths off."""
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(_avx512_targets())}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", _DATA_SUBPROCESS], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == PINNED_DATA
