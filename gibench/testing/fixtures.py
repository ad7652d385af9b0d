"""Fixtures for plugin tests: a tiny smooth classifier, a tiny synthetic dataset with every capability, a model
trained by gibench's own loop, and an ``EvalContext`` built as the runner builds it for a job."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gibench.api import (
    ANALYTIC_SCORE,
    DECOY_SHORTCUT,
    IRRELEVANT_MASK,
    SIGNAL_MASK,
    DatasetBundle,
    EvalContext,
    registry,
)
from gibench.api.saliency import SaliencyFunction, input_gradient, saliency_function
from gibench.core.errors import GibenchError
from gibench.data.gaussian_mixture import GaussianMixtureDensity
from gibench.data.tensors import make_bundle
from gibench.store.auxiliary import AuxiliaryModels

__all__ = ["make_eval_context", "tiny_bundle", "tiny_model", "trained_model"]


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
        >>> import torch
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
    from gibench.training.specs import PluginSpec, TrainConfig
    from gibench.training.train import fit

    if max_images is not None:
        bundle = make_bundle(bundle.name, bundle.train.x[:max_images], bundle.train.y[:max_images], bundle.test.x,
                             bundle.test.y, bundle.num_classes)
    options = dict(options or {})
    spec = PluginSpec.of(backbone, options, options)
    erm = registry.regularizers.create("erm")  # by its registered name: gibench's core imports no plugin module
    outcome = fit(bundle, spec, erm, TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3), seed,
                  device)
    if outcome.failure:
        raise GibenchError(f"training {backbone} on {bundle.name} failed: {outcome.failure}")
    return outcome.model.eval()


def tiny_bundle(
    *, num_classes: int = 3, channels: int = 1, image_size: tuple[int, int] = (8, 8), train_size: int = 240,
    test_size: int = 60, sigma: float = 0.05, seed: int = 0,
) -> DatasetBundle:
    """A synthetic dataset with every capability, so that every evaluator can run on it: ``SIGNAL_MASK``,
    ``ANALYTIC_SCORE``, ``IRRELEVANT_MASK`` and ``DECOY_SHORTCUT``.

    Class k is the Gaussian N(μ_k, σ²I) over the C×H×W pixels, prior 1/K. The class means differ only in the top
    half of the image (the signal block): class k's level, one of K evenly spaced values in [0.3, 0.7] (assigned to
    the classes in random order), plus a per-pixel jitter U(−0.05, 0.05). In the bottom half all classes share one
    mean (per pixel U(0.25, 0.75)), and σ is the same for every class, so the bottom half carries no information
    about the label: the test split's ``signal_mask`` (True in the top half) marks exactly where the label signal
    lives, and ``irrelevant_mask`` (True in the bottom half, rows H//2 and below, in both splits) marks the pixels
    annotated as irrelevant. The score is exact (``extras["score"](x, y=None)``, from
    :class:`gibench.data.gaussian_mixture.GaussianMixtureDensity`, as are ``log_prob``, ``bayes_logits`` and
    ``density``). With the defaults neighbouring class means lie 0.2 apart in each of 32 signal pixels against
    σ = 0.05, so a small classifier reaches near-perfect accuracy in one epoch. Samples are clipped to [0, 1] (every
    mean lies ≥ 0.25 = 5σ inside, so the clip touches a vanishing tail). Labels are balanced (i mod K, shuffled).
    Deterministic in ``seed``.

    The test split's ``decoy_shortcut`` holds the test images with a decoy that encodes the label: the bottom-left
    corner of the bottom half, max(1, H//4) rows × max(1, W//4) columns in every channel (2×2 of 8×8), set to
    (k + 1)/(K + 1) for label k. The decoy lies inside the irrelevant mask and is absent from both splits' images, so
    no model here learns it (a model's accuracy on those images measures how it reacts to an unseen patch).

    Args:
        num_classes, channels, image_size: the shape of the data; the image height must be at least 2.
        train_size, test_size: the number of images per split.
        sigma: the per-pixel standard deviation, at most 0.05 so that samples stay in [0, 1].
        seed: the seed of the means and the samples.

    Returns:
        A :class:`gibench.DatasetBundle` named ``"tiny"``.

    Example:
        >>> bundle = tiny_bundle()
        >>> sorted(bundle.capabilities)
        ['analytic_score', 'decoy_shortcut', 'irrelevant_mask', 'signal_mask']
        >>> bundle.test.extras["signal_mask"].shape, bundle.train.extras["irrelevant_mask"].shape
        (torch.Size([60, 1, 8, 8]), torch.Size([240, 1, 8, 8]))
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
    decoy = test_x.clone()
    decoy[:, :, h - max(1, h // 4):, : max(1, w // 4)] = ((test_y + 1.0) / (num_classes + 1)).view(-1, 1, 1, 1)
    return make_bundle(
        "tiny", train_x, train_y, test_x, test_y, num_classes=num_classes,
        class_names=tuple(str(k) for k in range(num_classes)),
        capabilities={SIGNAL_MASK, ANALYTIC_SCORE, IRRELEVANT_MASK, DECOY_SHORTCUT},
        extras={"score": density.score, "log_prob": density.log_prob, "bayes_logits": density.bayes_logits,
                "density": density},
        train_extras={IRRELEVANT_MASK: _bottom_half(train_size, h, w)},
        test_extras={SIGNAL_MASK: mask, IRRELEVANT_MASK: ~mask, DECOY_SHORTCUT: decoy},
    )


def _bottom_half(n: int, h: int, w: int) -> Tensor:
    """(n, 1, h, w) bool, True from row h // 2 down."""
    mask = torch.zeros((n, 1, h, w), dtype=torch.bool)
    mask[:, :, h // 2:] = True
    return mask


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
        **fields: further :class:`gibench.EvalContext` fields (``job``, ``aux``).

    Returns:
        The context. Without ``aux`` its auxiliary models live in memory, as long as the context.

    Example:
        >>> import tempfile
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
