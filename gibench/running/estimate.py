"""``gibench run --estimate``: the device time a suite still needs, from a short calibration on the actual device.

Nothing trains and nothing downloads. The estimate is a sum of *work units* times their calibrated cost:

* **Training step**: one step of gibench's own training loop (:func:`gibench.training.train.fit`, so augmentation,
  autocast, the regularizer's extra passes and the optimizer are all in it) for one backbone × regularizer × input shape
  × class count × step-relevant training options. Calibration runs ``fit`` on random images of that shape in [0, 1]
  (random labels) for ``warmup + timed + 1`` steps and takes the median of the ``timed`` step intervals after the
  ``warmup`` steps (the last step, which reads the logged losses back, is left out). On CUDA every step is followed
  by a synchronization for the timing (the real loop has none); on the CPU each interval is the smaller of its wall
  time and the process's CPU time, so other processes sharing the cores do not inflate it (with one thread that is
  the wall time the step takes on a core of its own).
* **Evaluation passes**, per image at ``--eval-batch-size``: a *forward* (no gradient, eval mode) and a *saliency
  pass* (forward + input-gradient backward, :func:`gibench.api.saliency.input_gradient`), per backbone and input shape.
* **Denoiser** (the learned score of ``score_alignment``): one training step of :mod:`gibench.evaluators._denoiser`'s
  U-Net at its batch size, and one forward per image.

Rules (n = the evaluated test images: ``max_images``, 0 = the whole split; N = the train images used):

* a job's training: ``epochs × ⌈N / batch_size⌉`` steps (the last, smaller batch is costed as a full one);
* ``accuracy``: n forwards; ``pixel_perturbation``: n saliency passes and n·(1 + 2·fractions) forwards;
  ``density_ratio``: n·(1 + sigmas·num_draws) forwards; ``blockmnist``: n saliency passes (0 without a signal mask);
* ``score_alignment``: 2n saliency passes (label logit and logsumexp); with the learned score also 2n denoiser
  forwards per job, and once per dataset and denoiser config ``denoiser_epochs × ⌈N / denoiser_batch_size⌉``
  denoiser steps plus 2 × the test split in denoiser forwards (its quality check); 0 where it would be skipped;
* ``gan_test``: num_samples × steps saliency passes (the ascent) and num_samples model forwards per job, plus
  num_samples + test-split judge forwards; once per dataset and judge config the judge's training
  (``judge_epochs × ⌈N / judge_batch_size⌉`` erm steps of the judge backbone) and a judge forward over the test
  split;
* ``diffroar``: saliency passes over its train subset and the test split, then 2 × levels × retrain seeds
  retrainings (each ``epochs × ⌈N_sub / batch⌉`` steps of the retraining backbone, regularizer and train config,
  :func:`gibench.evaluators.diffroar.retraining`) and one test-split forward per retrained model;
* ``random_logit``: 2n saliency passes (the label and a random other class); ``complexity``: n saliency passes;
* ``sensitivity``: n·(1 + num_samples) saliency passes and as many forwards (the prediction-flip check);
* ``infidelity``: n saliency passes and n·2·(1 + num_samples) forwards (F(x) and the perturbed inputs, for each of
  the Gaussian and noisy-baseline perturbations);
* ``randomisation``: 3n saliency passes (the trained model and its fully and top-layer re-initialized copies, the
  same backbone, so the same unit), plus n per re-initializable module of the built model with ``cascade``;
* ``road``: n saliency passes and n·(1 + 3·fractions) forwards (the clean prediction, then MoRF, LeRF and random
  order at every fraction); the CPU linear solve of the 3·fractions imputed images per image is not counted;
* ``keep_remove``: n saliency passes and n·6·fractions forwards (keep/remove × positive/negative/absolute);
* the saliency method multiplies every rule's saliency passes: ``ig_steps`` with ``saliency: integrated_gradients``
  (one input-gradient pass per step, :func:`saliency_cost`), 1 for ``input_gradient`` and ``x_gradient`` (the
  elementwise product is not counted);
* other (plugin) evaluators are not estimated; they are listed by name with the estimate.

Not counted: starting Python and importing torch, loading the datasets, the preflight, writing checkpoints and
results, the report and the local leaderboard page (seconds per run, not per job; ``docs/benchmarks.md`` compares the
estimate with measured runs).

Done work is left out: a job trained in the runs directory costs no training, and an evaluation whose result is
stored costs nothing. Auxiliary models (judges, denoisers) are counted once per dataset whenever a remaining
evaluation needs them, even if an earlier run stored them already (an overestimate of at most one per dataset).

Sizes come from :data:`KNOWN_SPLITS` for the torchvision datasets (and BlockMNIST built from full MNIST), so no file
needs to be present; other datasets (the bundled subset, synthetic mixtures, plugins) are loaded, without download.

Calibrations are cached in a JSON file (default ``$XDG_CACHE_HOME/gibench/calibration.json``), one entry per hash
of everything that changes a step's cost: device name, torch/CUDA versions, CPU threads, gibench's version, the
SHA-256 of the code that runs the step (:func:`code_identity`), the backbone and its options, the regularizer, its
version and config, input shape, class count, batch size and every training option except those that only change the
schedule (epochs, lr, schedule, milestones, gamma, momentum, weight decay, log interval). A damaged cache file is
ignored and rewritten.
"""

from __future__ import annotations

__all__ = ["Calibration", "CalibrationCache", "SuiteEstimate", "default_cache_path", "estimate_suite", "plan_suite"]

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from gibench.api import registry
from gibench.api.plugin import ANALYTIC_SCORE, SIGNAL_MASK
from gibench.core.errors import GibenchError
from gibench.core.fsio import DamagedFileError, atomic_write_json, canonical_hash, canonical_json, read_json
from gibench.suites.suite import PluginSpec, Suite, TrainConfig

WARMUP_STEPS = 3
TIMED_STEPS = 5
CACHE_FORMAT = 1
#: TrainConfig fields that change the schedule of a training, not the cost of one step (left out of cache keys)
SCHEDULE_ONLY_FIELDS = frozenset({"epochs", "lr", "schedule", "milestones", "gamma", "momentum", "weight_decay",
                                  "log_every"})

#: (channels, height, width, classes, train images, test images) of the datasets that need files. Sources: MNIST,
#: LeCun et al. (1998); Fashion-MNIST, Xiao et al. (2017); CIFAR-10/100, Krizhevsky (2009); SVHN cropped digits
#: without the extra split, Netzer et al. (2011); the same numbers as torchvision's loaders and gibench's docstrings.
KNOWN_SPLITS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mnist": (1, 28, 28, 10, 60_000, 10_000),
    "fashion_mnist": (1, 28, 28, 10, 60_000, 10_000),
    "cifar10": (3, 32, 32, 10, 50_000, 10_000),
    "cifar100": (3, 32, 32, 100, 50_000, 10_000),
    "svhn": (3, 32, 32, 10, 73_257, 26_032),
}
#: images per digit 0..9 in MNIST's train and test files (the counts of the files' labels), for BlockMNIST subsets
MNIST_DIGITS = {"train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)}


# ----------------------------------------------------------------------------------------------------------------------
# Dataset sizes


@dataclass(frozen=True)
class DataShape:
    """What the cost of a dataset's jobs depends on: image shape, classes, split sizes and capabilities."""

    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    n_train: int
    n_test: int
    capabilities: frozenset[str] = frozenset()


def data_shape(spec: PluginSpec, data_root: Path | None = None) -> DataShape:
    """The size of dataset ``spec``: from :data:`KNOWN_SPLITS` when it is a file dataset, else by loading it."""
    from gibench.data.blockmnist import BlockMNIST
    from gibench.data.torchvision_sets import TorchvisionDataset

    dataset = registry.datasets.create(spec.name, **spec.params)
    if isinstance(dataset, TorchvisionDataset) and dataset.folder in KNOWN_SPLITS:
        c, h, w, k, n_train, n_test = KNOWN_SPLITS[dataset.folder]
        return DataShape((c, h, w), k, _limited(n_train, dataset.config.train_limit),
                         _limited(n_test, dataset.config.test_limit))
    if isinstance(dataset, BlockMNIST) and dataset.config.source == "mnist":
        digits = tuple(dataset.config.classes) or tuple(range(10))
        return DataShape((1, 56, 28), len(digits), sum(MNIST_DIGITS["train"][d] for d in digits),
                         sum(MNIST_DIGITS["test"][d] for d in digits), frozenset({SIGNAL_MASK}))
    from gibench.running.options import RunOptions, load_bundle

    try:
        bundle = load_bundle(spec, RunOptions(data_root=data_root, download=False))
    except GibenchError as exc:
        raise GibenchError(f"the estimate cannot size dataset {spec.label}: {exc}") from None
    return DataShape(tuple(bundle.train.x.shape[1:]), bundle.num_classes, len(bundle.train), len(bundle.test),
                     frozenset(bundle.capabilities))


def _limited(n: int, limit: int) -> int:
    return n if limit <= 0 else min(n, limit)


# ----------------------------------------------------------------------------------------------------------------------
# Work units and their calibration


@dataclass(frozen=True)
class TrainStep:
    """One training step of ``fit`` (seconds per step)."""

    backbone: PluginSpec
    regularizer: PluginSpec
    train: TrainConfig
    shape: tuple[int, int, int]
    num_classes: int


@dataclass(frozen=True)
class ModelPass:
    """One evaluation pass per image (seconds per image): ``forward`` or ``saliency`` (forward + input gradient)."""

    kind: str
    backbone: PluginSpec
    shape: tuple[int, int, int]
    num_classes: int
    batch_size: int


@dataclass(frozen=True)
class DenoiserWork:
    """The learned-score denoiser: ``step`` (seconds per training step) or ``forward`` (seconds per image)."""

    kind: str
    training_json: str  # the DenoiserTraining as JSON
    shape: tuple[int, int, int]
    num_classes: int
    batch_size: int


Unit = TrainStep | ModelPass | DenoiserWork
Work = dict[Unit, float]  # unit -> how many (steps or images)


#: core modules that never run inside a training step or an evaluation pass (left out of the code identity, so that
#: editing them keeps the calibrations)
NOT_IN_A_STEP = frozenset({"cli.py", "estimate.py", "preflight.py", "doctor.py", "results.py", "submission.py",
                           "ray_executor.py", "progress.py"})


@functools.cache
def _folder_sha(folder: str) -> str:
    """SHA-256 of the ``*.py`` files in ``folder`` (not recursive, without :data:`NOT_IN_A_STEP`), in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.py")):
        if path.name in NOT_IN_A_STEP:
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def code_identity(*objects: Any) -> list[str]:
    """What identifies the code that runs a unit: for each object (module, class or function), the SHA of every
    Python file in its folder (gibench's core, the regularizer's package), or the version of timm or diffusers for
    their own code."""
    out = []
    for obj in objects:
        module = obj if inspect.ismodule(obj) else inspect.getmodule(obj)
        top = module.__name__.split(".")[0]
        if top != "gibench":
            out.append(f"{top} {importlib.metadata.version(top)}")
        else:
            out.append(_folder_sha(str(Path(inspect.getsourcefile(module)).parent)))
    return out


def device_identity(device: torch.device) -> dict[str, Any]:
    """What about the machine changes a step's cost (part of every cache key)."""
    from gibench.store.provenance import device_name
    from gibench.version import __version__

    return {"device": device.type, "name": device_name(str(device)), "torch": torch.__version__,
            "cuda": torch.version.cuda, "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "gibench": __version__}


def unit_key(unit: Unit, device: torch.device) -> dict[str, Any]:
    """The cache key of ``unit`` on ``device`` (see the module docstring)."""
    from timm.models import model_entrypoint

    from gibench.evaluators import _denoiser
    from gibench.training import models, train  # noqa: F401 (importing models registers gibench's backbones with timm)

    key: dict[str, Any] = {"machine": device_identity(device), "shape": list(unit.shape),
                           "num_classes": unit.num_classes}
    if isinstance(unit, TrainStep):
        reg_cls = registry.regularizers.get(unit.regularizer.name)
        key.update(kind="train_step", backbone=[unit.backbone.name, unit.backbone.config],
                   regularizer=[unit.regularizer.name, reg_cls.version, unit.regularizer.config],
                   train={k: v for k, v in dataclasses.asdict(unit.train).items() if k not in SCHEDULE_ONLY_FIELDS},
                   code=code_identity(train, reg_cls, model_entrypoint(unit.backbone.name)))
    elif isinstance(unit, ModelPass):
        key.update(kind=unit.kind, backbone=[unit.backbone.name, unit.backbone.config], batch_size=unit.batch_size,
                   code=code_identity(train, model_entrypoint(unit.backbone.name)))
    else:
        key.update(kind=f"denoiser_{unit.kind}", training=unit.training_json, batch_size=unit.batch_size,
                   code=code_identity(_denoiser, importlib.import_module("diffusers")))
    return key


def random_bundle(shape: tuple[int, ...], num_classes: int, n_train: int, n_test: int = 2):
    """Uniform random images in [0, 1] with random labels: a stand-in of the right shape for timing."""
    from gibench.data.tensors import make_bundle

    gen = torch.Generator().manual_seed(0)
    return make_bundle("calibration", torch.rand(n_train, *shape, generator=gen),
                       torch.randint(0, num_classes, (n_train,), generator=gen),
                       torch.rand(n_test, *shape, generator=gen), torch.randint(0, num_classes, (n_test,),
                                                                                generator=gen), num_classes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stamp(device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds now, after the device has finished its queued work."""
    _sync(device)
    return time.perf_counter(), time.process_time()


def _median_interval(stamps: list[tuple[float, float]], warmup: int, timed: int, device: torch.device) -> float:
    """The median duration of the ``timed`` intervals after ``warmup``; on the CPU each interval is the smaller of
    its wall and CPU time, so other processes on the same cores do not inflate it."""
    intervals = []
    for (wall_a, cpu_a), (wall_b, cpu_b) in zip(stamps[warmup - 1:], stamps[warmup:warmup + timed]):
        wall = wall_b - wall_a
        intervals.append(wall if device.type == "cuda" else min(wall, cpu_b - cpu_a))
    return statistics.median(intervals)


def time_train_step(unit: TrainStep, device: torch.device, warmup: int, timed: int) -> float:
    """Seconds per step of ``fit`` for ``unit`` (median over ``timed`` steps after ``warmup``)."""
    from gibench.training.train import fit

    batch = unit.train.batch_size
    bundle = random_bundle(unit.shape, unit.num_classes, batch * (warmup + timed + 1))
    stamps: list[tuple[float, float]] = []

    def on_step(done: int, total: int) -> None:
        stamps.append(_stamp(device))

    regularizer = registry.regularizers.create(unit.regularizer.name, **unit.regularizer.params)
    train = dataclasses.replace(unit.train, epochs=1)
    fit(bundle, unit.backbone, regularizer, train, seed=0, device=device, on_step=on_step)
    return _median_interval(stamps, warmup, timed, device)


def _time_calls(call: Callable[[], Any], device: torch.device, warmup: int, timed: int) -> float:
    stamps = []
    for _ in range(warmup + timed):
        call()
        stamps.append(_stamp(device))
    return _median_interval(stamps, warmup, timed, device)


def time_model_pass(unit: ModelPass, device: torch.device, warmup: int, timed: int) -> float:
    """Seconds per image of a forward or a saliency pass of the backbone in eval mode."""
    from gibench.api.saliency import input_gradient
    from gibench.training.models import build_model

    bundle = random_bundle(unit.shape, unit.num_classes, unit.batch_size)
    model = build_model(unit.backbone.name, unit.backbone.config, bundle).to(device).eval()
    x, y = bundle.train.x.to(device), bundle.train.y.to(device)
    if unit.kind == "forward":
        def call():
            with torch.no_grad():
                model(x)
    else:
        def call():
            input_gradient(model, x, y)
    return _time_calls(call, device, warmup, timed) / unit.batch_size


def time_denoiser(unit: DenoiserWork, device: torch.device, warmup: int, timed: int) -> float:
    """Seconds per training step (the operations of ``_denoiser.train``'s loop) or per image of a forward."""
    import json

    from gibench.evaluators import _denoiser

    cfg = _denoiser.DenoiserTraining(**json.loads(unit.training_json))
    bundle = random_bundle(unit.shape, unit.num_classes, unit.batch_size)
    model = _denoiser.build(bundle, cfg).to(device)
    x, y = bundle.train.x.to(device), bundle.train.y.to(device)
    if unit.kind == "forward":
        model.eval()

        def call():
            with torch.no_grad():
                model(x, y)
        return _time_calls(call, device, warmup, timed) / unit.batch_size
    optimizer = torch.optim.Adam(model.train().parameters(), lr=cfg.lr)

    def step():
        loss = model.loss(x, y, torch.randn_like(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return _time_calls(step, device, warmup, timed)


def measure(unit: Unit, device: torch.device, warmup: int = WARMUP_STEPS, timed: int = TIMED_STEPS) -> float:
    """Time one unit on ``device`` (global RNG state and warnings left as they were)."""
    timer = {TrainStep: time_train_step, ModelPass: time_model_pass, DenoiserWork: time_denoiser}[type(unit)]
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return timer(unit, device, warmup, timed)
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
    return f"a denoiser {unit.kind} at {shape}"


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


def default_cache_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gibench" / "calibration.json"


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

    def seconds(self, unit: Unit) -> float:
        key = unit_key(unit, self.device)
        cached = self.cache.get(key)
        if cached is not None:
            self.reused += 1
            return cached
        start = time.perf_counter()
        value = measure(unit, self.device, self.warmup, self.timed)
        self.measure_seconds += time.perf_counter() - start
        self.measured += 1
        self.cache.put(key, value)
        return value


# ----------------------------------------------------------------------------------------------------------------------
# The work of a suite


@dataclass(frozen=True)
class EvalWork:
    """What one evaluation of one job costs: per-job work, and auxiliary work shared per dataset (by its key)."""

    per_job: Work = field(default_factory=dict)
    shared: dict[str, tuple[str, Work]] = field(default_factory=dict)  # key -> (what, work)


def training_steps(train: TrainConfig, n_train: int) -> int:
    return train.epochs * math.ceil(n_train / train.batch_size)


def _add(work: Work, unit: Unit, count: float) -> None:
    if count > 0:
        work[unit] = work.get(unit, 0.0) + count


def _n(max_images: int, available: int) -> int:
    return available if max_images <= 0 else min(max_images, available)


def evaluation_work(spec: PluginSpec, job: Any, data: DataShape, eval_batch: int) -> EvalWork | None:
    """The work of evaluator ``spec`` on ``job`` (see the module docstring's rules); None for an unknown evaluator."""
    rule = _RULES.get(spec.name)
    if rule is None:
        return None
    cfg = registry.evaluators.create(spec.name, **spec.params).config
    forward = ModelPass("forward", job.backbone, data.shape, data.num_classes, eval_batch)
    saliency = dataclasses.replace(forward, kind="saliency")
    work = rule(cfg, job, data, eval_batch, forward, saliency)
    per_pass = saliency_cost(cfg)
    if per_pass != 1 and saliency in work.per_job:
        work.per_job[saliency] *= per_pass
    return work


def saliency_cost(cfg: Any) -> int:
    """Input-gradient passes per saliency map of an evaluator config's ``saliency`` method: ``ig_steps`` for
    integrated_gradients (captum runs one forward + backward per step over a batch of the same size), 1 for
    input_gradient and x_gradient (one input gradient and an elementwise product)."""
    if getattr(cfg, "saliency", "input_gradient") == "integrated_gradients":
        return int(cfg.ig_steps)
    return 1


def _accuracy(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    return EvalWork({forward: _n(cfg.max_images, data.n_test)})


def _pixel_perturbation(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    n = _n(cfg.max_images, data.n_test)
    return EvalWork({saliency: n, forward: n * (1 + 2 * len(cfg.fractions))})


def _density_ratio(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    n = _n(cfg.max_images, data.n_test)
    return EvalWork({forward: n * (1 + len(cfg.sigmas) * cfg.num_draws)})


def _blockmnist(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    return EvalWork({saliency: _n(cfg.max_images, data.n_test)} if SIGNAL_MASK in data.capabilities else {})


def _score_alignment(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    analytic = ANALYTIC_SCORE in data.capabilities
    if cfg.score == "analytic" and not analytic:
        return EvalWork()  # recorded as skipped
    n = _n(cfg.max_images, data.n_test)
    work: Work = {saliency: 2 * n}
    if cfg.score == "analytic" or (cfg.score == "auto" and analytic):
        return EvalWork(work)
    training = cfg.denoiser_training()
    as_json = canonical_json(dataclasses.asdict(training))
    step = DenoiserWork("step", as_json, data.shape, data.num_classes, training.batch_size)
    den_forward = DenoiserWork("forward", as_json, data.shape, data.num_classes, eval_batch)
    work[den_forward] = 2 * n
    n_train = _n(training.max_train, data.n_train)
    shared = {step: training.epochs * math.ceil(n_train / training.batch_size), den_forward: 2 * data.n_test}
    key = canonical_hash({"denoiser": as_json, "dataset": job.dataset.config_json, "name": job.dataset.name})
    return EvalWork(work, {key: (f"score_alignment denoiser (σ = {training.sigma:g})", shared)})


def _gan_test(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    from gibench.evaluators.gan_test import judge_spec

    judge_backbone, judge_train = judge_spec(cfg)
    judge_forward = ModelPass("forward", judge_backbone, data.shape, data.num_classes, eval_batch)
    work: Work = {saliency: cfg.num_samples * cfg.steps, forward: cfg.num_samples}
    _add(work, judge_forward, cfg.num_samples + data.n_test)
    judge_step = TrainStep(judge_backbone, PluginSpec.of("erm", {}, {}), judge_train, data.shape, data.num_classes)
    shared = {judge_step: training_steps(judge_train, data.n_train), judge_forward: data.n_test}
    key = canonical_hash({"judge": [judge_backbone.name, judge_backbone.config, dataclasses.asdict(judge_train),
                                    cfg.judge_seed], "dataset": job.dataset.config_json, "name": job.dataset.name})
    return EvalWork(work, {key: (f"gan_test judge ({judge_backbone.label})", shared)})


def _diffroar(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    from gibench.evaluators.diffroar import retraining

    spec = retraining(cfg, SimpleNamespace(job=job))
    n_sub = _n(cfg.max_train_images, data.n_train)
    models = 2 * len(cfg.levels) * len(cfg.retrain_seeds)
    regularizer = spec.regularizer or PluginSpec.of("erm", {}, {})
    step = TrainStep(spec.backbone, regularizer, spec.train, data.shape, data.num_classes)
    retrained_forward = dataclasses.replace(forward, backbone=spec.backbone)
    work: Work = {saliency: n_sub + data.n_test, step: models * training_steps(spec.train, n_sub)}
    _add(work, retrained_forward, models * data.n_test)
    return EvalWork(work)


def _random_logit(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    return EvalWork({saliency: 2 * _n(cfg.max_images, data.n_test)})  # the label's and a random other class's


def _complexity(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    return EvalWork({saliency: _n(cfg.max_images, data.n_test)})


def _sensitivity(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    n = _n(cfg.max_images, data.n_test)  # the clean map and num_samples draws; one prediction of each (flips)
    return EvalWork({saliency: n * (1 + cfg.num_samples), forward: n * (1 + cfg.num_samples)})


def _infidelity(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    from gibench.evaluators.infidelity import KINDS

    n = _n(cfg.max_images, data.n_test)  # per perturbation kind: F(x) and num_samples F(x − I)
    return EvalWork({saliency: n, forward: n * len(KINDS) * (1 + cfg.num_samples)})


def _randomisation(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    n = _n(cfg.max_images, data.n_test)  # trained, fully and top-layer re-initialized copies (same backbone)
    maps = 3 + (_resettable_layers(job.backbone, data.shape, data.num_classes) if cfg.cascade else 0)
    return EvalWork({saliency: n * maps})


@functools.lru_cache(maxsize=64)
def _resettable_layers(backbone: PluginSpec, shape: tuple[int, int, int], num_classes: int) -> int:
    """The cascade's steps: the modules of the built model that randomisation re-initializes (built once per
    backbone and input shape, on the CPU)."""
    from gibench.evaluators.randomisation import resettable_modules
    from gibench.training.models import build_model

    bundle = random_bundle(shape, num_classes, 2)
    return len(resettable_modules(build_model(backbone.name, backbone.config, bundle)))


def _road(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    from gibench.evaluators.road import ORDERS

    n = _n(cfg.max_images, data.n_test)  # the clean prediction, then one per order and fraction
    return EvalWork({saliency: n, forward: n * (1 + len(ORDERS) * len(cfg.fractions))})


def _keep_remove(cfg, job, data, eval_batch, forward, saliency) -> EvalWork:
    from gibench.evaluators.keep_remove import CURVES

    n = _n(cfg.max_images, data.n_test)  # one forward per curve (mode × sign) and fraction
    return EvalWork({saliency: n, forward: n * len(CURVES) * len(cfg.fractions)})


_RULES: dict[str, Callable[..., EvalWork]] = {
    "accuracy": _accuracy, "pixel_perturbation": _pixel_perturbation, "density_ratio": _density_ratio,
    "blockmnist": _blockmnist, "score_alignment": _score_alignment, "gan_test": _gan_test, "diffroar": _diffroar,
    "random_logit": _random_logit, "complexity": _complexity, "sensitivity": _sensitivity,
    "infidelity": _infidelity, "randomisation": _randomisation, "road": _road, "keep_remove": _keep_remove,
}


# ----------------------------------------------------------------------------------------------------------------------
# The estimate


@dataclass
class Row:
    """One dataset × backbone × regularizer (over seeds), or one dataset's auxiliary model (what, as
    ``regularizer``)."""

    dataset: str
    backbone: str
    regularizer: str
    jobs: int = 0
    jobs_left: int = 0
    train_work: Work = field(default_factory=dict)
    eval_work: Work = field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds


@dataclass
class SuiteEstimate:
    suite: str
    device: str
    device_name: str | None
    rows: list[Row]
    auxiliary: list[Row]
    not_estimated: list[str]  # evaluators without a cost rule
    calibration: Calibration

    @property
    def jobs(self) -> int:
        return sum(r.jobs for r in self.rows)

    @property
    def jobs_left(self) -> int:
        return sum(r.jobs_left for r in self.rows)

    @property
    def train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.rows)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rows) + sum(r.seconds for r in self.auxiliary)


def plan_suite(suite: Suite, runs_dir: Path, *, data_root: Path | None = None,
               eval_batch_size: int = 256) -> tuple[list[Row], list[Row], list[str]]:
    """The work ``suite`` still needs in ``runs_dir``, not yet priced: rows per dataset × backbone × regularizer,
    rows of shared auxiliary models, and the evaluators without a cost rule. Reads only."""
    from gibench.store.runs import RunStore
    from gibench.suites.jobs import expand

    shapes = {spec: data_shape(spec, data_root) for spec in suite.datasets}
    store = RunStore(Path(runs_dir), repair=False)
    rows: dict[tuple, Row] = {}
    shared: dict[str, Row] = {}
    not_estimated: set[str] = set()
    for job in expand(suite):
        row = rows.setdefault((job.dataset, job.backbone, job.regularizer),
                              Row(job.dataset.label, job.backbone.label, job.regularizer.label))
        row.jobs += 1
        row.jobs_left += _add_job(job, shapes[job.dataset], store.job(job.hash), row, shared, eval_batch_size,
                                  not_estimated)
    return list(rows.values()), list(shared.values()), sorted(not_estimated)


def estimate_suite(suite: Suite, runs_dir: Path, *, device: str | None = None, data_root: Path | None = None,
                   eval_batch_size: int = 256, cache_path: Path | None = None, warmup: int = WARMUP_STEPS,
                   timed: int = TIMED_STEPS) -> SuiteEstimate:
    """The device time ``suite`` still needs in ``runs_dir`` (read only; nothing is written there)."""
    from gibench.running.options import resolve_device
    from gibench.store.provenance import device_name

    torch_device = resolve_device(device)
    rows, shared, not_estimated = plan_suite(suite, runs_dir, data_root=data_root, eval_batch_size=eval_batch_size)
    calibration = Calibration(torch_device, CalibrationCache(cache_path or default_cache_path()), warmup, timed)
    costs: dict[Unit, float] = {}
    for row in [*rows, *shared]:
        row.train_seconds = _cost(row.train_work, calibration, costs)
        row.eval_seconds = _cost(row.eval_work, calibration, costs)
    return SuiteEstimate(suite.name, str(torch_device), device_name(str(torch_device)), rows, shared, not_estimated,
                         calibration)


def _add_job(job: Any, data: DataShape, folder: Any, row: Row, shared: dict[str, Row], eval_batch: int,
             not_estimated: set[str]) -> int:
    """Add the remaining work of ``job`` to ``row`` (and the shared auxiliary rows); 1 if anything remains, else 0."""
    from gibench.store.runs import evaluation_key

    remaining = False
    if not folder.is_trained():
        remaining = True
        step = TrainStep(job.backbone, job.regularizer, job.train, data.shape, data.num_classes)
        _add(row.train_work, step, training_steps(job.train, data.n_train))
    for spec in job.evaluators:
        evaluator = registry.evaluators.get(spec.name)
        if folder.has_result(evaluation_key(spec.name, evaluator.version, spec.config)):
            continue
        remaining = True
        work = evaluation_work(spec, job, data, eval_batch)
        if work is None:
            not_estimated.add(spec.name)
            continue
        for unit, count in work.per_job.items():
            _add(row.eval_work, unit, count)
        for key, (what, aux) in work.shared.items():
            if key not in shared:
                shared[key] = Row(job.dataset.label, "", what, eval_work=dict(aux))
    return int(remaining)


def _cost(work: Work, calibration: Calibration, costs: dict[Unit, float]) -> float:
    total = 0.0
    for unit, count in work.items():
        if unit not in costs:
            costs[unit] = calibration.seconds(unit)
        total += costs[unit] * count
    return total
