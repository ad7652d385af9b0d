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
registry checks them when it loads); the default config round-trips through the registry and is JSON-able; the total
is a finite 0-dim tensor whose gradient reaches every parameter, finite and not all zero; ``parts`` are non-empty,
detached, finite 0-dim tensors; every module's train/eval flag and BatchNorm's ``track_running_stats`` are as they
arrived (a frozen BatchNorm inside a training model included); the input batch is not modified; no tensor value is
read on the host inside a step (``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``bool``/``float``/``int``
of a tensor; the first call may build caches and is exempt); and ``zero_strength`` reproduces the ``erm`` loss
exactly (bit for bit, gradients to 1e-6), unless the class declares ``zero_strength = None``.

What :func:`check_evaluator` checks (the ``gibench.Evaluator`` contract): the declarations (exactly one headline
metric, unique metric names, known capabilities, a dataclass ``Config``, a docstring); the dataset offers what the
evaluator requires; each metric's ``read_beside`` names a registered evaluator's headline metric that reads beside
nothing itself; ``evaluate`` returns an :class:`gibench.EvalResult` whose ``scalars`` are exactly the declared
metrics, each a finite Python float, whose curves have x and y of equal length, and whose artifacts are non-empty
files inside ``ctx.artifact_dir`` (PNGs that open, JSON that parses; no temporary files left); the model under
evaluation is left in eval mode with unchanged parameters; the same seed gives the same numbers; and the numbers do
not depend on the evaluation batch size (relative tolerance 1e-5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gibench.api import (
    ANALYTIC_SCORE,
    SIGNAL_MASK,
    Curve,
    DatasetBundle,
    EvalContext,
    EvalResult,
    Evaluator,
    Plugin,
    Regularizer,
    registry,
)
from gibench.api.saliency import SaliencyFunction, input_gradient, saliency_for, saliency_function
from gibench.core.errors import GibenchError
from gibench.core.params import build_config
from gibench.data.gaussian_mixture import GaussianMixtureDensity
from gibench.data.tensors import make_bundle
from gibench.store.auxiliary import AuxiliaryModels

__all__ = [
    "ConformanceError", "check_evaluator", "check_regularizer", "make_eval_context", "registered", "tiny_bundle",
    "tiny_model", "trained_model",
]

#: Tensor methods that read a value on the host (a device synchronization on a GPU).
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class ConformanceError(AssertionError):
    """A plugin breaks its contract; ``failures`` lists every failed check, one sentence each."""

    def __init__(self, plugin: str, failures: list[str]) -> None:
        self.plugin, self.failures = plugin, list(failures)
        lines = "\n".join(f"  - {failure}" for failure in self.failures)
        super().__init__(f"{plugin} fails {len(self.failures)} conformance check(s):\n{lines}")


# ----------------------------------------------------------------------------------------------------------------------
# A tiny model and a tiny dataset


def tiny_model(
    bundle: DatasetBundle | None = None, *, in_chans: int = 1, num_classes: int = 3,
    image_size: tuple[int, int] = (6, 6), batch_norm: bool = True, seed: int = 0,
) -> nn.Module:
    """Conv(3×3, 4 channels) → BatchNorm → Softplus(β = 10) → Linear: a smooth classifier that trains in a blink.

    The BatchNorm exercises a regularizer's handling of extra forward passes (noisy copies must not corrupt the
    running statistics); the softplus makes input Hessians non-zero (score-matching penalties vanish on ReLU nets).

    Args:
        bundle: take ``in_chans``, ``num_classes`` and ``image_size`` from this dataset instead.
        in_chans, num_classes, image_size: the input channels, output classes and (H, W).
        batch_norm: include the BatchNorm layer.
        seed: the parameters' initialization seed (the global RNG state is left as it was).

    Returns:
        The model in train mode, on the CPU.

    Example:
        >>> model = tiny_model(in_chans=3, num_classes=10, image_size=(8, 8))
        >>> model(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """
    if bundle is not None:
        in_chans, num_classes, image_size = bundle.in_chans, bundle.num_classes, bundle.image_size
    h, w = image_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Conv2d(in_chans, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if batch_norm else [])
        layers += [nn.Softplus(beta=10), nn.Flatten(), nn.Linear(4 * h * w, num_classes)]
        return nn.Sequential(*layers).train()


def trained_model(
    bundle: DatasetBundle, backbone: str = "gibench_cnn", options: Mapping[str, Any] | None = None, *,
    epochs: int = 1, max_images: int | None = None, seed: int = 0, device: torch.device | str = "cpu",
) -> nn.Module:
    """A model of ``backbone`` trained with plain cross-entropy by gibench's own loop
    (:func:`gibench.training.train.fit`): Adam, lr 1e-3, batch 64, constant schedule, as the shipped suites train; for
    tests and benchmarks that need a model that has learned something (the conformance checks use an untrained
    :func:`tiny_model`).

    Args:
        bundle: the dataset to train on (for example ``gibench.load_dataset("mnist_subset")``).
        backbone: a registered backbone name, built behind the dataset's normalization as every job's model is.
        options: the backbone's options, e.g. ``{"act": "softplus"}`` or ``{"bias": False}``.
        epochs: passes over the training split.
        max_images: train on the first this many training images only (None: all of them).
        seed: the initialization and data-order seed.
        device: where to train.

    Returns:
        The trained model in eval mode, on ``device``.

    Example:
        >>> model = trained_model(tiny_bundle(), "gibench_linear", epochs=1)
        >>> model.training
        False
    """
    from gibench.regularizers.erm import ERM
    from gibench.suites.suite import PluginSpec, TrainConfig
    from gibench.training.train import fit

    if max_images is not None:
        bundle = make_bundle(bundle.name, bundle.train.x[:max_images], bundle.train.y[:max_images], bundle.test.x,
                             bundle.test.y, bundle.num_classes)
    options = dict(options or {})
    spec = PluginSpec.of(backbone, options, options)
    outcome = fit(bundle, spec, ERM(), TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3), seed,
                  device)
    if outcome.failure:
        raise GibenchError(f"training {backbone} on {bundle.name} failed: {outcome.failure}")
    return outcome.model.eval()


def tiny_bundle(
    *, num_classes: int = 3, channels: int = 1, image_size: tuple[int, int] = (8, 8), train_size: int = 240,
    test_size: int = 60, sigma: float = 0.05, seed: int = 0,
) -> DatasetBundle:
    """A synthetic dataset with every capability, so that every evaluator can run on it: ``SIGNAL_MASK`` and
    ``ANALYTIC_SCORE``.

    Class k is the Gaussian N(μ_k, σ²I) over the C×H×W pixels, prior 1/K. The class means differ only in the top
    half of the image (the signal block): class k's level, one of K evenly spaced values in [0.3, 0.7] (assigned to
    the classes in random order), plus a per-pixel jitter U(−0.05, 0.05). In the bottom half all classes share one
    mean (per pixel U(0.25, 0.75)), and σ is the same for every class, so the bottom half carries no information
    about the label: the test split's ``signal_mask`` (True in the top half) marks exactly where the label signal
    lives. The score is exact (``extras["score"](x, y=None)``, from
    :class:`gibench.data.gaussian_mixture.GaussianMixtureDensity`, as are ``log_prob``, ``bayes_logits`` and
    ``density``). With the defaults neighbouring class means lie 0.2 apart in each of 32 signal pixels against
    σ = 0.05, so a small classifier reaches near-perfect accuracy in one epoch. Samples are clipped to [0, 1] (every
    mean lies ≥ 0.25 = 5σ inside, so the clip touches a vanishing tail). Labels are balanced (i mod K, shuffled).
    Deterministic in ``seed``.

    Args:
        num_classes, channels, image_size: the shape of the data; the image height must be at least 2.
        train_size, test_size: the number of images per split.
        sigma: the per-pixel standard deviation, at most 0.05 so that samples stay in [0, 1].
        seed: the seed of the means and the samples.

    Returns:
        A :class:`gibench.DatasetBundle` named ``"tiny"``.

    Example:
        >>> bundle = tiny_bundle()
        >>> sorted(bundle.capabilities), bundle.test.extras["signal_mask"].shape
        (['analytic_score', 'signal_mask'], torch.Size([60, 1, 8, 8]))
    """
    h, w = image_size
    if h < 2 or not 0 < sigma <= 0.05:
        raise ValueError(f"tiny_bundle needs an image height >= 2 and 0 < sigma <= 0.05, got {image_size}, {sigma}")
    generator = torch.Generator().manual_seed(seed)
    shape = (num_classes, channels, h, w)
    means = torch.full(shape, 0.5, dtype=torch.float64)
    shared = torch.rand((1, channels, h - h // 2, w), generator=generator, dtype=torch.float64)
    means[:, :, h // 2:] = 0.25 + 0.5 * shared
    signal = torch.linspace(0.3, 0.7, num_classes, dtype=torch.float64).view(-1, 1, 1, 1)
    means[:, :, : h // 2] = signal[torch.randperm(num_classes, generator=generator)].expand(-1, channels, h // 2, w)
    means[:, :, : h // 2] += 0.1 * (torch.rand((num_classes, channels, h // 2, w), generator=generator,
                                               dtype=torch.float64) - 0.5)
    density = GaussianMixtureDensity(means, torch.full(shape, float(sigma), dtype=torch.float64),
                                     torch.full((num_classes,), -math.log(num_classes), dtype=torch.float64))

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=generator)]
        eps = torch.randn((n, *shape[1:]), generator=generator, dtype=torch.float64)
        return (means[y] + sigma * eps).clamp(0, 1).float(), y

    (train_x, train_y), (test_x, test_y) = draw(train_size), draw(test_size)
    mask = torch.zeros((test_size, 1, h, w), dtype=torch.bool)
    mask[:, :, : h // 2] = True
    return make_bundle(
        "tiny", train_x, train_y, test_x, test_y, num_classes=num_classes,
        class_names=tuple(str(k) for k in range(num_classes)), capabilities={SIGNAL_MASK, ANALYTIC_SCORE},
        extras={"score": density.score, "log_prob": density.log_prob, "bayes_logits": density.bayes_logits,
                "density": density},
        test_extras={"signal_mask": mask},
    )


def make_eval_context(
    model: nn.Module, bundle: DatasetBundle, artifact_dir: str | Path, *, batch_size: int = 64, seed: int = 0,
    saliency: SaliencyFunction | str = input_gradient, device: str | torch.device = "cpu",
    **fields: Any,
) -> EvalContext:
    """An :class:`gibench.EvalContext` for ``model`` on ``bundle``, as the runner builds it for a job.

    Args:
        model: the model to evaluate; it is moved to ``device`` and put in eval mode.
        bundle: the dataset (for example :func:`tiny_bundle` or ``gibench.load_dataset("mnist_subset")``).
        artifact_dir: where the evaluator writes its artifacts (created if missing).
        batch_size: the evaluation batch size.
        seed: the evaluation seed.
        saliency: the explained quantity: a function ``(model, x, y) -> map``, or a saliency method's name
            (``"input_gradient"``, the default; ``"x_gradient"``; ``"integrated_gradients"`` with 32 steps), resolved
            by :func:`gibench.api.saliency.saliency_function` as the runner resolves an evaluator's ``saliency`` option.
        device: the device of the model and of the evaluation.
        **fields: further :class:`gibench.EvalContext` fields (``job``, ``fit``, ``aux``, ``cache``).

    Returns:
        The context. Without ``aux`` its auxiliary models live in memory, as long as the context.

    Example:
        >>> ctx = make_eval_context(tiny_model(tiny_bundle()), tiny_bundle(), tempfile.mkdtemp())
        >>> ctx.model.training, ctx.batch_size
        (False, 64)
    """
    device = torch.device(device)
    if isinstance(saliency, str):
        saliency = saliency_function(saliency)
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    fields.setdefault("aux", AuxiliaryModels(None, device))  # explicit, not EvalContext's registered default
    return EvalContext(model=model.to(device).eval(), data=bundle, saliency=saliency, device=device, seed=seed,
                       artifact_dir=artifact_dir, batch_size=batch_size, **fields)


# ----------------------------------------------------------------------------------------------------------------------
# In-process registration


_REGISTRIES = {"regularizer": registry.regularizers, "evaluator": registry.evaluators, "dataset": registry.datasets}


@contextlib.contextmanager
def registered(kind: str, name: str, cls: type[Plugin]) -> Iterator[type[Plugin]]:
    """Register ``cls`` as plugin ``name`` of ``kind`` inside the block, and remove it afterwards, even on error.

    Inside the block the class is usable by name everywhere a plugin is (``gibench.create_regularizer``, suite files
    loaded in this process, ``gibench list`` run in-process), exactly as if an installed distribution declared it.

    Args:
        kind: ``"regularizer"``, ``"evaluator"`` or ``"dataset"`` (plurals accepted).
        name: the plugin name to register; a name another plugin already has is a ``PluginLoadError``.
        cls: the plugin class.

    Returns:
        A context manager yielding ``cls``.

    Example:
        >>> from gibench import Regularizer, create_regularizer
        >>> class Plain(Regularizer):
        ...     zero_strength = None
        >>> with registered("regularizer", "plain", Plain):
        ...     type(create_regularizer("plain")).__name__
        'Plain'
    """
    key = kind[:-1] if kind.endswith("s") else kind
    if key not in _REGISTRIES:
        raise ValueError(f"kind must be one of {', '.join(_REGISTRIES)}, got {kind!r}")
    reg = _REGISTRIES[key]
    reg.register(name, cls)
    try:
        yield cls
    finally:
        reg.unregister(name)


# ----------------------------------------------------------------------------------------------------------------------
# Conformance checks


class _Checks:
    """Runs named checks, collecting failures instead of stopping at the first."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.failures: list[str] = []

    def run(self, what: str, check: Callable[[], None]) -> bool:
        try:
            check()
        except Exception as exc:  # a failed assertion, or the plugin raising: both are failures of this check
            detail = str(exc).strip() or type(exc).__name__
            reason = detail if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {detail}"
            self.failures.append(f"{what}: {reason}")
            return False
        return True

    def finish(self) -> None:
        if self.failures:
            raise ConformanceError(self.plugin, self.failures)


def _plugin_class(kind: str, name_or_class: str | type[Plugin]) -> tuple[str, type[Plugin]]:
    reg = _REGISTRIES[kind]
    if isinstance(name_or_class, str):
        return f"{kind} {name_or_class!r}", reg.get(name_or_class)
    if not (isinstance(name_or_class, type) and issubclass(name_or_class, reg.base)):
        raise TypeError(f"expected a registered {kind} name or a subclass of gibench.{reg.base.__name__}, got "
                        f"{name_or_class!r}")
    return f"{kind} {name_or_class.__qualname__}", name_or_class


def _declarations(cls: type[Plugin]) -> None:
    problems = registry.declaration_problems(cls)
    assert not problems, "; ".join(problems)


@contextlib.contextmanager
def _forbid_host_reads(plugin: str) -> Iterator[None]:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{plugin} reads a tensor value on the host (a GPU synchronization) inside a step")

    saved = {method: getattr(torch.Tensor, method) for method in HOST_READS}
    try:
        for method in HOST_READS:
            setattr(torch.Tensor, method, forbidden)
        yield
    finally:
        for method, original in saved.items():
            setattr(torch.Tensor, method, original)


def _default_batch() -> tuple[Tensor, Tensor]:
    """8 images of 1×6×6 and labels in {0, 1, 2}: the input :func:`tiny_model`'s defaults expect."""
    generator = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 6, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def check_regularizer(
    regularizer: str | type[Regularizer], *, params: Mapping[str, Any] | None = None,
    model_factory: Callable[[], nn.Module] = tiny_model, batch: tuple[Tensor, Tensor] | None = None,
) -> None:
    """Run gibench's regularizer conformance checks (listed in the module docstring) on one regularizer.

    Args:
        regularizer: a registered name, or a :class:`gibench.Regularizer` subclass (registered or not).
        params: hyper-parameters for every check (default: the Config's defaults); the zero-strength check applies
            ``zero_strength`` on top of them.
        model_factory: builds a fresh model in train mode for each check (default :func:`tiny_model`, with BatchNorm).
        batch: ``(x, y)``, images in [0, 1] and labels, matching the model (default: 8 random 1×6×6 images and
            labels in {0, 1, 2}, what the default model takes).

    Returns:
        None when every check passes.

    Raises:
        ConformanceError: listing every failed check.

    Example:
        >>> check_regularizer("gradient_norm", params={"weight": 0.1})
    """
    plugin, cls = _plugin_class("regularizer", regularizer)
    checks = _Checks(plugin)
    if not checks.run("declarations", lambda: _declarations(cls)):
        checks.finish()
    params = dict(params or {})
    x, y = batch if batch is not None else _default_batch()

    def make(**overrides: Any) -> Regularizer:
        return cls(build_config(cls.Config, {**params, **overrides}, plugin))

    def loss_of(model: nn.Module, reg: Regularizer | None = None, seed: int = 0):
        torch.manual_seed(seed)
        return (reg or make()).training_loss(model, x, y)

    def config_round_trip() -> None:
        config = make().config
        json.dumps(dataclasses.asdict(config))
        assert make(**dataclasses.asdict(config)).config == config, "Config(**asdict(config)) != config"

    def total_and_gradients() -> None:
        model = model_factory().train()
        total = loss_of(model).total
        assert isinstance(total, Tensor) and total.dim() == 0, f"total is not a 0-dim tensor: {total!r}"
        assert torch.isfinite(total), f"total = {total}"
        assert total.requires_grad, "total has no autograd graph (detached?): no gradient reaches the parameters"
        total.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"no gradient reaches parameter(s) {missing}"
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradient on {bad}"
        assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0, "every gradient is zero"

    def parts() -> None:
        logged = loss_of(model_factory().train()).parts
        assert logged, "parts is empty: log at least the cross-entropy"
        for key, value in logged.items():
            assert isinstance(value, Tensor) and value.dim() == 0, f"part {key!r} is not a 0-dim tensor: {value!r}"
            assert not value.requires_grad, f"part {key!r} is not detached (use .detach())"
            assert torch.isfinite(value), f"part {key!r} = {value}"

    def modes_restored() -> None:
        model = model_factory().train()
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            norms[0].eval()  # a frozen BatchNorm inside a training model must stay frozen
        before = [m.training for m in model.modules()]
        tracking = [m.track_running_stats for m in norms]
        loss_of(model)
        assert [m.training for m in model.modules()] == before, "module train/eval flags changed"
        assert [m.track_running_stats for m in norms] == tracking, "BatchNorm track_running_stats changed"

    def inputs_unchanged() -> None:
        x0, y0 = x.clone(), y.clone()
        loss_of(model_factory().train())
        assert torch.equal(x, x0) and torch.equal(y, y0), "training_loss modified its input batch in place"

    def no_host_reads() -> None:
        model, reg = model_factory().train(), make()
        loss_of(model, reg)  # the first call may build caches
        with _forbid_host_reads(plugin):
            total = loss_of(model, reg).total
        assert torch.isfinite(total), f"total = {total}"

    def zero_strength_is_erm() -> None:
        erm = registry.regularizers.get("erm")()
        model = model_factory().train()
        reference = loss_of(model, erm)
        reference.total.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        loss = loss_of(model, make(**cls.zero_strength))
        assert torch.equal(loss.total.detach(), reference.total.detach()), (
            f"zero_strength {dict(cls.zero_strength)} gives total {float(loss.total.detach())}, erm gives "
            f"{float(reference.total.detach())}")
        loss.total.backward()
        for (pname, p), g in zip(model.named_parameters(), grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7, msg=f"gradient on {pname} differs from erm")

    checks.run("config round trip", config_round_trip)
    checks.run("finite scalar total with gradients on every parameter", total_and_gradients)
    checks.run("parts are detached finite 0-dim tensors", parts)
    checks.run("module modes restored", modes_restored)
    checks.run("input batch unchanged", inputs_unchanged)
    checks.run("no host synchronization in a step", no_host_reads)
    if cls.zero_strength is not None:
        checks.run("zero strength equals erm exactly", zero_strength_is_erm)
    checks.finish()


def check_evaluator(
    evaluator: str | type[Evaluator], *, params: Mapping[str, Any] | None = None, bundle: DatasetBundle | None = None,
    model: nn.Module | None = None, artifact_dir: str | Path | None = None, batch_size: int = 16,
) -> EvalResult | None:
    """Run gibench's evaluator conformance checks (listed in the module docstring) on one evaluator.

    Args:
        evaluator: a registered name, or a :class:`gibench.Evaluator` subclass (registered or not).
        params: the evaluator's hyper-parameters (default: the Config's defaults). Keep it cheap: it runs three
            times (the determinism and batch-size checks).
        bundle: the dataset (default :func:`tiny_bundle`, which has every capability).
        model: the model to evaluate (default :func:`tiny_model` for the bundle).
        artifact_dir: where the evaluations write, in the subfolders ``first``, ``again`` and ``other`` (default: a
            temporary folder, removed afterwards).
        batch_size: the evaluation batch size; the batch-size check also runs at ``batch_size // 2 + 1``.

    Returns:
        The result of the first evaluation (its artifacts lie in ``artifact_dir / "first"``), when every check passes.

    Raises:
        ConformanceError: listing every failed check.

    Example:
        >>> check_evaluator("accuracy").scalars["accuracy"] <= 1.0
        True
    """
    plugin, cls = _plugin_class("evaluator", evaluator)
    checks = _Checks(plugin)
    checks.run("declarations", lambda: _declarations(cls))
    checks.run("docstring", lambda: _assert(bool((cls.__doc__ or "").strip()), "the class has no docstring"))
    checks.run("companions", lambda: _companions(cls))
    bundle = bundle if bundle is not None else tiny_bundle()
    model = model if model is not None else tiny_model(bundle)
    instance: list[Evaluator] = []
    if not checks.run("construction", lambda: instance.append(cls(build_config(cls.Config, dict(params or {}),
                                                                                  plugin)))):
        checks.finish()
    instance_ = instance[0]
    missing = sorted(set(instance_.requires) - bundle.capabilities)
    if missing:
        checks.failures.append(f"capabilities: the dataset lacks {missing}, which the evaluator requires; pass a "
                               "bundle that has them")
        checks.finish()
    with contextlib.ExitStack() as stack:
        if artifact_dir is None:
            artifact_dir = stack.enter_context(tempfile.TemporaryDirectory())
        root = Path(artifact_dir)
        result = _evaluate_checks(checks, instance_, model, bundle, root, batch_size)
    checks.finish()
    return result


def _companions(cls: type[Evaluator]) -> None:
    """Each ``read_beside`` names a registered evaluator's headline metric, which reads beside nothing itself."""
    problems = []
    for metric in cls.metrics:
        if not metric.read_beside or metric.read_beside.count(".") != 1:
            continue  # none, or a malformed one (the declarations check reports it)
        evaluator, name = metric.read_beside.split(".")
        try:
            companion = next((m for m in registry.evaluators.get(evaluator).metrics if m.name == name), None)
        except GibenchError as error:  # an unknown or broken evaluator: say which and why
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, but evaluator "
                            f"{evaluator!r} cannot be loaded: {str(error).splitlines()[0]}")
            continue
        if companion is None:
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, but evaluator "
                            f"{evaluator!r} declares no metric {name!r}")
        elif companion.read_beside:
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, which itself reads beside "
                            f"{companion.read_beside!r}; name a metric that stands on its own")
        elif not companion.headline:
            problems.append(f"metric {metric.name!r} reads beside {metric.read_beside!r}, which is not the headline "
                            f"of {evaluator!r} (the site hides secondary columns until chosen, and this one with "
                            "them); name the headline")
    assert not problems, "; ".join(problems)


def _assert(condition: bool, message: str) -> None:
    assert condition, message


def _evaluate_checks(checks: _Checks, evaluator: Evaluator, model: nn.Module, bundle: DatasetBundle, root: Path,
                     batch_size: int) -> EvalResult | None:
    saliency = saliency_for(evaluator.config)  # the evaluator's `saliency` option, as the runner wires it
    first = make_eval_context(model, bundle, root / "first", batch_size=batch_size, saliency=saliency)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results: dict[str, EvalResult] = {}

    def evaluate(label: str, ctx: EvalContext) -> None:
        result = evaluator.evaluate(ctx)
        assert isinstance(result, EvalResult), f"evaluate returned {type(result).__name__}, not EvalResult"
        results[label] = result

    if not checks.run("evaluate", lambda: evaluate("first", first)):
        return None
    result = results["first"]
    checks.run("declared metrics returned as finite floats", lambda: _metrics_returned(evaluator, result))
    checks.run("curves", lambda: _curves_valid(result))
    checks.run("artifacts written where declared", lambda: _artifacts_written(result, first.artifact_dir))
    checks.run("model left in eval mode and unchanged", lambda: _model_unchanged(model, state))
    again = make_eval_context(model, bundle, root / "again", batch_size=batch_size, aux=first.aux, cache=first.cache,
                              saliency=saliency)
    other = make_eval_context(model, bundle, root / "other", batch_size=batch_size // 2 + 1, aux=first.aux,
                              cache=first.cache, saliency=saliency)
    if checks.run("evaluate again with the same seed", lambda: evaluate("again", again)):
        checks.run("same seed, same numbers", lambda: _same_scalars(result, results["again"], 0.0))
    if checks.run(f"evaluate at batch size {other.batch_size}", lambda: evaluate("other", other)):
        checks.run("independent of the batch size", lambda: _same_scalars(result, results["other"], 1e-5))
    return result


def _metrics_returned(evaluator: Evaluator, result: EvalResult) -> None:
    declared = {m.name for m in evaluator.metrics}
    returned = set(result.scalars)
    assert returned == declared, (f"scalars {sorted(returned)} differ from the declared metrics {sorted(declared)} "
                                  f"(missing {sorted(declared - returned)}, undeclared {sorted(returned - declared)})")
    for metric in evaluator.metrics:
        assert isinstance(metric.higher_is_better, bool), f"metric {metric.name!r}: higher_is_better is not a bool"
        value = result.scalars[metric.name]
        assert type(value) is float, f"metric {metric.name!r} is a {type(value).__name__}, not a float"
        assert math.isfinite(value), f"metric {metric.name!r} = {value}"


def _curves_valid(result: EvalResult) -> None:
    for name, curve in result.curves.items():
        assert isinstance(curve, Curve), f"curve {name!r} is a {type(curve).__name__}, not a gibench.Curve"
        assert len(curve.x) == len(curve.y) > 0, f"curve {name!r}: {len(curve.x)} x values, {len(curve.y)} y values"
        assert all(isinstance(v, float) for v in (*curve.x, *curve.y)), f"curve {name!r} holds non-float values"


def _artifacts_written(result: EvalResult, folder: Path) -> None:
    for name, filename in result.artifacts.items():
        path = (folder / filename).resolve()
        assert path.parent == folder.resolve(), f"artifact {name!r} ({filename!r}) is not a file name inside " \
                                                "ctx.artifact_dir"
        assert path.is_file() and path.stat().st_size > 0, f"artifact {name!r}: {filename!r} is missing or empty"
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    leftovers = sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".tmp"))
    assert not leftovers, f"temporary files left in the artifact folder: {leftovers}"


def _model_unchanged(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    assert not any(m.training for m in model.modules()), "the model was left in train mode"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert not changed, f"evaluate changed the model's {changed}"


def _same_scalars(a: EvalResult, b: EvalResult, rel: float) -> None:
    """Every scalar of ``b`` equals that of ``a`` (exactly for ``rel=0``, else to ``rel`` relative, 1e-6 absolute)."""
    differ = {}
    for key, value in a.scalars.items():
        other = b.scalars.get(key, math.nan)
        if not (other == value or (rel > 0 and math.isclose(value, other, rel_tol=rel, abs_tol=1e-6))):
            differ[key] = (value, other)
    assert not differ, f"metric (first, second) values differ: {differ}"
