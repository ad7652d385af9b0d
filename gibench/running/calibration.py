"""The calibration behind ``gibench run --estimate``: the seconds one work unit (:mod:`gibench.api.cost`) takes on the
actual device, measured once and cached.

* **Training step** (:class:`~gibench.api.cost.TrainStep`): one step of gibench's own training loop
  (:func:`gibench.training.train.fit`, so augmentation, autocast, the regularizer's extra passes and the optimizer are
  all in it) on random images of the unit's shape in [0, 1] (random labels, and a random mask for each training
  annotation the regularizer requires), for ``warmup + timed + 1`` steps; the
  median of the ``timed`` step intervals after the ``warmup`` steps (the last step, which reads the logged losses
  back, is left out).
* **Model pass** (:class:`~gibench.api.cost.ModelPass`), per image at the evaluation batch size: a *forward* (no
  gradient, eval mode) or a *saliency pass* (forward + input-gradient backward,
  :func:`gibench.api.saliency.input_gradient`).
* **Plugin work** (:class:`~gibench.api.cost.PluginWork`): timed by its evaluator's ``time_work`` with a
  :class:`Timer` (random images, the same median of intervals).

On CUDA every timed call is followed by a synchronization (the real loop has none); on the CPU each interval is the
smaller of its wall time and the process's CPU time, so other processes sharing the cores do not inflate it (with
one thread that is the wall time the step takes on a core of its own).

Calibrations are cached in a JSON file (default ``calibration.json`` in gibench's user cache folder,
:func:`gibench.core.paths.user_cache_root`), one entry per hash of everything that changes a unit's cost: device name,
torch/CUDA versions, CPU threads, gibench's version, the identity of the code that runs the unit
(:func:`gibench.core.source_identity.source_identity` of the training loop, the regularizer's module, the backbone's
module, the saliency pass or the evaluator's module), the backbone and its options, the regularizer, its version and
config, input shape, class count, batch size and every training option except those that only change the schedule
(epochs, lr, schedule, milestones, gamma, momentum, weight decay, log interval). A regularizer's declared strength
(its :class:`~gibench.api.regularizer.Sweep` parameter) enters the key only as zero or nonzero, unless the sweep
says that it ``changes_step_cost``: a penalty weight or a radius does not change what a step computes, so a suite
that sweeps strengths times one step per regularizer, not one per sweep point. A damaged cache file is ignored and
rewritten.
"""

from __future__ import annotations

__all__ = ["Calibration", "CalibrationCache", "Timer", "default_cache_path", "describe", "measure", "unit_key"]

import dataclasses
import inspect
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gibench.api import registry
from gibench.api.cost import ModelPass, PluginWork, TrainStep, Unit
from gibench.core.errors import GibenchError
from gibench.core.fsio import DamagedFileError, atomic_write_json, canonical_hash, read_json
from gibench.core.paths import user_cache_root
from gibench.core.source_identity import source_identity

WARMUP_STEPS = 3
TIMED_STEPS = 5
CACHE_FORMAT = 2  # 2: code identified by the modules each unit imports (format 1 hashed whole folders)
#: TrainConfig fields that change the schedule of a training, not the cost of one step (left out of cache keys)
SCHEDULE_ONLY_FIELDS = frozenset({"epochs", "lr", "schedule", "milestones", "gamma", "momentum", "weight_decay",
                                  "log_every"})


def default_cache_path() -> Path:
    return user_cache_root() / "calibration.json"


def code_identity(*objects: Any) -> list[str]:
    """What identifies the code behind each object (module, class or function): the source identity of its module
    (:func:`gibench.core.source_identity.source_identity`: the module and everything it imports)."""
    out = []
    for obj in objects:
        module = obj if inspect.ismodule(obj) else inspect.getmodule(obj)
        out.append(source_identity(module.__name__))
    return out


def device_identity(device: torch.device) -> dict[str, Any]:
    """What about the machine changes a unit's cost (part of every cache key)."""
    from gibench.store.provenance import device_name
    from gibench.version import __version__

    return {"device": device.type, "name": device_name(str(device)), "torch": torch.__version__,
            "cuda": torch.version.cuda, "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "gibench": __version__}


def unit_key(unit: Unit, device: torch.device) -> dict[str, Any]:
    """The cache key of ``unit`` on ``device`` (see the module docstring)."""
    from timm.models import model_entrypoint

    from gibench.api import saliency
    from gibench.training import models, train  # importing models registers gibench's backbones with timm

    key: dict[str, Any] = {"machine": device_identity(device), "shape": list(unit.shape),
                           "num_classes": unit.num_classes}
    if isinstance(unit, TrainStep):
        reg_cls = registry.regularizers.get(unit.regularizer.name)
        key.update(kind="train_step", backbone=[unit.backbone.name, unit.backbone.config],
                   regularizer=[unit.regularizer.name, reg_cls.version, _step_cost_config(reg_cls, unit.regularizer)],
                   train={k: v for k, v in dataclasses.asdict(unit.train).items() if k not in SCHEDULE_ONLY_FIELDS},
                   code=code_identity(train, reg_cls, model_entrypoint(unit.backbone.name)))
    elif isinstance(unit, ModelPass):
        key.update(kind=unit.kind, backbone=[unit.backbone.name, unit.backbone.config], batch_size=unit.batch_size,
                   code=code_identity(models, saliency, model_entrypoint(unit.backbone.name)))
    else:
        owner = registry.evaluators.get(unit.owner)
        key.update(kind="plugin_work", owner=[unit.owner, owner.version], work=unit.kind, options=unit.identity,
                   per=unit.per, batch_size=unit.batch_size, code=code_identity(owner))
    return key


def _step_cost_config(reg_cls: Any, spec: Any) -> Any:
    """The regularizer config as far as it changes a step's cost: a declared strength that does not is kept only as
    zero or nonzero."""
    sweep = getattr(reg_cls, "sweep", None)
    config = spec.config
    if sweep is None or sweep.changes_step_cost or not isinstance(config, dict) or not config.get(sweep.parameter):
        return config
    return {**config, sweep.parameter: "nonzero"}


def random_bundle(shape: tuple[int, ...], num_classes: int, n_train: int, n_test: int = 2,
                  annotations: frozenset[str] = frozenset()):
    """Uniform random images in [0, 1] with random labels: a stand-in of the right shape for timing.

    ``annotations``: the training annotations (:data:`gibench.api.plugin_base.TRAINING_ANNOTATIONS`) the bundle must
    carry, as a regularizer's ``requires`` names them; ``IRRELEVANT_MASK`` is a random mask (each pixel True with
    probability one half) in both splits. What a step costs does not depend on which pixels are marked."""
    from gibench.api.plugin_base import IRRELEVANT_MASK
    from gibench.data.tensors import make_bundle

    unknown = set(annotations) - {IRRELEVANT_MASK}
    if unknown:
        raise GibenchError(f"calibration cannot stand in for the training annotations {sorted(unknown)}; it "
                           f"knows only {IRRELEVANT_MASK!r}")
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.rand(n_train, *shape, generator=gen), torch.rand(n_test, *shape, generator=gen)
    train_y = torch.randint(0, num_classes, (n_train,), generator=gen)
    test_y = torch.randint(0, num_classes, (n_test,), generator=gen)
    train_extras, test_extras = {}, {}
    if IRRELEVANT_MASK in annotations:
        mask_shape = (1, *shape[1:])
        train_extras[IRRELEVANT_MASK] = torch.rand(n_train, *mask_shape, generator=gen) < 0.5
        test_extras[IRRELEVANT_MASK] = torch.rand(n_test, *mask_shape, generator=gen) < 0.5
    return make_bundle("calibration", train_x, train_y, test_x, test_y, num_classes,
                       capabilities=frozenset(annotations), train_extras=train_extras, test_extras=test_extras)


def _stamp(device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds now, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _median_interval(stamps: list[tuple[float, float]], warmup: int, timed: int, device: torch.device) -> float:
    """The median duration of the ``timed`` intervals after ``warmup``; on the CPU each interval is the smaller of
    its wall and CPU time, so other processes on the same cores do not inflate it."""
    intervals = []
    for (wall_a, cpu_a), (wall_b, cpu_b) in zip(stamps[warmup - 1:], stamps[warmup:warmup + timed]):
        wall = wall_b - wall_a
        intervals.append(wall if device.type == "cuda" else min(wall, cpu_b - cpu_a))
    return statistics.median(intervals)


@dataclass
class Timer:
    """Times calls on a device (:class:`gibench.api.cost.WorkTimer`, what an evaluator's ``time_work`` gets)."""

    device: torch.device
    warmup: int = WARMUP_STEPS
    timed: int = TIMED_STEPS

    def random_bundle(self, shape: tuple[int, ...], num_classes: int, n: int):
        return random_bundle(shape, num_classes, n)

    def seconds_per_call(self, call: Callable[[], Any]) -> float:
        stamps = []
        for _ in range(self.warmup + self.timed):
            call()
            stamps.append(_stamp(self.device))
        return _median_interval(stamps, self.warmup, self.timed, self.device)


def time_train_step(unit: TrainStep, timer: Timer) -> float:
    """Seconds per step of ``fit`` for ``unit`` (median over ``timed`` steps after ``warmup``)."""
    from gibench.training.train import fit

    batch = unit.train.batch_size
    regularizer = registry.regularizers.create(unit.regularizer.name, **unit.regularizer.params)
    bundle = random_bundle(unit.shape, unit.num_classes, batch * (timer.warmup + timer.timed + 1),
                           annotations=regularizer.requires)
    stamps: list[tuple[float, float]] = []

    def on_step(done: int, total: int) -> None:
        stamps.append(_stamp(timer.device))

    train = dataclasses.replace(unit.train, epochs=1)
    fit(bundle, unit.backbone, regularizer, train, seed=0, device=timer.device, on_step=on_step)
    return _median_interval(stamps, timer.warmup, timer.timed, timer.device)


def time_model_pass(unit: ModelPass, timer: Timer) -> float:
    """Seconds per image of a forward or a saliency pass of the backbone in eval mode."""
    from gibench.api.saliency import input_gradient
    from gibench.training.models import build_model

    bundle = random_bundle(unit.shape, unit.num_classes, unit.batch_size)
    model = build_model(unit.backbone.name, unit.backbone.config, bundle).to(timer.device).eval()
    x, y = bundle.train.x.to(timer.device), bundle.train.y.to(timer.device)
    if unit.kind == "forward":
        def call():
            with torch.no_grad():
                model(x)
    else:
        def call():
            input_gradient(model, x, y)
    return timer.seconds_per_call(call) / unit.batch_size


def time_plugin_work(unit: PluginWork, timer: Timer) -> float:
    """Seconds of one unit of an evaluator's own work, from the evaluator's ``time_work``."""
    seconds = registry.evaluators.get(unit.owner).time_work(unit, timer)
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise GibenchError(f"evaluator {unit.owner}'s time_work returned {seconds!r} for {unit.kind!r}; it must "
                           "return the positive seconds of one unit")
    return float(seconds)


def measure(unit: Unit, device: torch.device, warmup: int = WARMUP_STEPS, timed: int = TIMED_STEPS) -> float:
    """Time one unit on ``device`` (global RNG state and warnings left as they were)."""
    timing = {TrainStep: time_train_step, ModelPass: time_model_pass, PluginWork: time_plugin_work}[type(unit)]
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return timing(unit, Timer(device, warmup, timed))
        except GibenchError:
            raise
        except Exception as exc:
            raise GibenchError(f"calibrating {describe(unit)} on {device} failed: {type(exc).__name__}: {exc}. "
                               "`gibench run --dry-run` checks every backbone on every dataset.") from None


def describe(unit: Unit) -> str:
    shape = "×".join(map(str, unit.shape))
    if isinstance(unit, TrainStep):
        return f"a {unit.regularizer.label} training step of {unit.backbone.label} at {shape}"
    if isinstance(unit, ModelPass):
        return f"a {unit.kind} pass of {unit.backbone.label} at {shape}"
    return f"{unit.owner}'s {unit.kind} at {shape}"


class CalibrationCache:
    """Measured unit costs in a JSON file; a damaged or unreadable file counts as empty and is rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.problem: str | None = None  # why an existing file was ignored
        self.entries = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = read_json(self.path)
        except (DamagedFileError, OSError) as exc:
            self.problem = f"{exc}; ignored, and rewritten with fresh calibrations"
            return {}
        entries = data.get("entries") if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
        if not isinstance(entries, dict):
            self.problem = (f"{self.path} is not a gibench calibration file (format {CACHE_FORMAT}); ignored, and "
                            "rewritten with fresh calibrations")
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict) and _positive(v.get("seconds"))}

    def get(self, key: dict[str, Any]) -> float | None:
        entry = self.entries.get(canonical_hash(key, length=32))
        return float(entry["seconds"]) if entry else None

    def put(self, key: dict[str, Any], seconds: float) -> None:
        self.entries[canonical_hash(key, length=32)] = {"seconds": seconds, "key": key, "measured": time.time()}
        try:
            atomic_write_json(self.path, {"format": CACHE_FORMAT, "entries": self.entries}, durable=False)
        except OSError as exc:  # a read-only cache folder: the estimate still works, it only recalibrates next time
            self.problem = f"could not write {self.path} ({exc.strerror or exc}); calibrations are not kept"


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass
class Calibration:
    """Unit costs on one device: from the cache, or measured (and cached) on first need."""

    device: torch.device
    cache: CalibrationCache
    warmup: int = WARMUP_STEPS
    timed: int = TIMED_STEPS
    measured: int = 0  # units timed by this object
    reused: int = 0  # units found in the cache
    measure_seconds: float = 0.0
    before_measuring: Callable[[Unit], None] | None = None  # told of each unit just before it is timed

    def key(self, unit: Unit) -> str:
        """The cache key of ``unit`` on this device: units with one key cost the same and are timed once."""
        return canonical_hash(unit_key(unit, self.device), length=32)

    def is_cached(self, unit: Unit) -> bool:
        """Whether ``unit``'s cost on this device is in the cache already (then :meth:`seconds` times nothing)."""
        return self.cache.get(unit_key(unit, self.device)) is not None

    def seconds(self, unit: Unit) -> float:
        key = unit_key(unit, self.device)
        cached = self.cache.get(key)
        if cached is not None:
            self.reused += 1
            return cached
        if self.before_measuring is not None:
            self.before_measuring(unit)
        start = time.perf_counter()
        value = measure(unit, self.device, self.warmup, self.timed)
        self.measure_seconds += time.perf_counter() - start
        self.measured += 1
        self.cache.put(key, value)
        return value
