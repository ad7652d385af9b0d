"""The training loop: one model per job, seeded, with the regularizer computing the whole loss.

Choices (all part of the job hash through TrainConfig and TRAINING_CODE_VERSION):

* Seeding: ``torch.manual_seed(seed)`` before the model is built (weights) and a separate ``torch.Generator`` seeded
  with ``seed`` for the batch order and for the regularizers' noise (they draw from the global generator, which is
  seeded too). On the CPU, with the same thread count, two runs produce identical weights.
* Batches are drawn from tensors resident on the training device (moved there once; datasets here fit in memory);
  the last incomplete batch is kept.
* Augmentation (``train.augment``, :mod:`gibench.training.augment`) is applied to each training batch on the device,
  with its own generator on the device seeded with ``seed + AUGMENT_SEED_OFFSET``: the batch order and the regularizers'
  noise are the same with and without it, and ``augment: none`` calls nothing (training bit-identical to before it
  existed).
* Precision: a regularizer that declares ``amp_safe`` (erm, gaussian_noise, gradient_norm: their loss and parameter
  gradients under bfloat16 autocast stay within 2 % of float32, see tests/test_precision.py; fooled,
  noise_consistency and pgd miss that by their gradients, 3-6 %, and the score-matching family's finite differences
  must not run in reduced precision at all) runs under
  bfloat16 autocast on CUDA when ``train.amp`` is on (never on the CPU), with TF32 as PyTorch is set. Every other
  regularizer, and every regularizer when ``train.amp`` is off, runs its whole step, forward and backward, in true
  float32: no autocast and TF32 off (:func:`gibench.api.passes.tf32_off`; the score-matching family's
  finite differences multiply logit differences by 2/σ² = 2·10⁴, and their parameter gradients are differences of
  gradients amplified the same way). The training log records ``autocast`` ("bfloat16" or None) and ``tf32_off``.
* Speed on CUDA: ``torch.backends.cudnn.benchmark`` is on while the loop runs (restored after; it picks the fastest
  convolution algorithm per shape, so CUDA runs are not bit-reproducible, which they are not anyway);
  ``train.channels_last`` (default off: measure it on a GPU before making it a default, see docs/benchmarks.md)
  stores the model and the batches in channels-last order.
* No host-device synchronization inside a step: loss parts are summed on the device and read every ``log_every``
  steps; the non-finite check rides on the same read. A non-finite loss stops the job with a recorded reason.
* Out of memory inside the loop raises :class:`TrainingOutOfMemory` (a GibenchError) with what to change.
* A regularizer that needs a smooth activation (input Hessians) on a piecewise-linear backbone triggers a warning,
  recorded in the training log too.
* Annotations: a regularizer whose ``requires`` names training annotations (``IRRELEVANT_MASK``, for Right for the
  Right Reasons) gets the batch's rows of each as ``training_loss(..., annotations=...)``. Augmentation moves them
  with the images: the batch and its masks are augmented as one stack of channels (one draw per image, so the images
  are exactly those of the same job without annotations) and a mask pixel stays True where its augmented value is
  above 1/2. Augmentations are geometric (crop, flip), so a mask follows its pixels. Every other regularizer is
  called with (model, x, y) as before.

The seed papers' CIFAR recipe is reachable from a suite: ``train: {optimizer: sgd, lr: 0.1, momentum: 0.9,
weight_decay: 5.0e-4, batch_size: 128, epochs: 200, schedule: multistep, milestones: [0.5, 0.75], augment:
crop_flip}`` (the rate is multiplied by ``gamma`` = 0.1 after 100 and after 150 epochs).
"""

from __future__ import annotations

__all__ = [
    "StepCallback", "TrainOutcome", "TrainingOutOfMemory", "build_optimizer", "build_schedule", "fit",
    "smooth_activation_warning",
]

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gibench.api.dataset import DatasetBundle
from gibench.api.passes import tf32_off
from gibench.api.regularizer import Regularizer
from gibench.core.errors import GibenchError, TrainingError
from gibench.training.augment import augmentation
from gibench.training.specs import PluginSpec, TrainConfig

StepCallback = Callable[[int, int], None]  # (steps done, total steps)

#: Added to the job's seed for the augmentation generator, so that its stream differs from the batch order's.
AUGMENT_SEED_OFFSET = 7919


class TrainingOutOfMemory(GibenchError):
    """The device ran out of memory inside a training loop (a job's, or a retraining an evaluator asked for).

    Raised instead of ``torch.OutOfMemoryError`` so that an evaluation that retrains does not mistake it for an
    evaluation batch that is too large (a smaller evaluation batch would not help a training).
    """


@dataclass
class TrainOutcome:
    model: nn.Module
    log: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None  # None when training finished


def build_optimizer(params: Any, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                               nesterov=train.nesterov)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)


#: ``schedule: onecycle``: the share of the steps that warm up, and the start and end rates as divisors of ``lr``
#: (torch.optim.lr_scheduler.OneCycleLR's defaults; the cosine anneal is its default too).
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1.0e4


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int):
    """A per-step learning-rate schedule (``constant``, ``cosine`` to zero, ``multistep`` at epoch fractions, or
    ``onecycle``).

    ``onecycle`` is :class:`torch.optim.lr_scheduler.OneCycleLR` over all the steps with ``max_lr = lr``: from
    ``lr / 25`` up to ``lr`` over the first 30 % of the steps, then down to ``lr / 25 / 1e4`` (both phases cosine),
    Smith & Topin's one-cycle policy. Momentum is not cycled (``cycle_momentum=False``): ``momentum`` (and Adam's
    betas) stay as configured, so that a config reads the same under every schedule.
    """
    total = train.epochs * steps_per_epoch
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=train.lr, total_steps=total, pct_start=ONECYCLE_PCT_START, anneal_strategy="cos",
            div_factor=ONECYCLE_DIV_FACTOR, final_div_factor=ONECYCLE_FINAL_DIV_FACTOR, cycle_momentum=False)
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if train.schedule == "multistep":
        milestones = sorted({round(m * train.epochs) * steps_per_epoch for m in train.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=train.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def smooth_activation_warning(regularizer: Regularizer, model: nn.Module) -> str | None:
    from gibench.training.models import is_piecewise_linear

    if regularizer.needs_smooth_activation and is_piecewise_linear(model):
        return (
            f"regularizer {regularizer.name!r} estimates input Hessians, but this backbone is piecewise linear "
            "(ReLU-like activations): its Hessian trace is zero almost everywhere, so the penalty is degenerate. "
            "Give the backbone a smooth activation, e.g. `backbones: [{gibench_cnn: {act: softplus}}]`."
        )
    return None


def uses_autocast(regularizer: Regularizer, train: TrainConfig, device: torch.device) -> bool:
    """True when the step runs under bfloat16 autocast: ``train.amp``, a CUDA device and an ``amp_safe`` regularizer."""
    return train.amp and device.type == "cuda" and regularizer.amp_safe


def reduced_precision(regularizer: Regularizer, train: TrainConfig) -> bool:
    """True when the step may use reduced precision (``train.amp`` and an ``amp_safe`` regularizer), False when it
    runs in true float32 (TF32 off for forward and backward)."""
    return train.amp and regularizer.amp_safe


def step_contexts(regularizer: Regularizer, train: TrainConfig,
                  device: torch.device) -> tuple[AbstractContextManager, AbstractContextManager]:
    """(context of the whole step, context of the forward passes only); see the module docstring.

    Autocast wraps only the forward (PyTorch's recommendation: backward ops run in the dtype autocast chose for
    their forward); TF32 is switched off for forward and backward alike.
    """
    if reduced_precision(regularizer, train):
        return nullcontext(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=uses_autocast(regularizer, train, device))
    return tf32_off(), nullcontext()


@contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = True`` for the body on a CUDA device (restored after); nothing elsewhere."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def fit(
    bundle: DatasetBundle,
    backbone: PluginSpec,
    regularizer: Regularizer,
    train: TrainConfig,
    seed: int,
    device: torch.device | str = "cpu",
    on_step: StepCallback | None = None,
) -> TrainOutcome:
    """Train a fresh model of ``backbone`` on ``bundle.train`` with ``regularizer``'s loss."""
    from gibench.training.models import build_model

    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(backbone.name, backbone.config, bundle).to(device)
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    log: dict[str, Any] = {"warnings": [], "entries": [], "autocast": None, "tf32_off": False,
                           "cudnn_benchmark": device.type == "cuda", "channels_last": train.channels_last}
    warning = smooth_activation_warning(regularizer, model)
    if warning:
        warnings.warn(warning, stacklevel=2)
        log["warnings"].append(warning)
    try:
        _train_loop(model, bundle, regularizer, train, seed, device, log, on_step)
    except TrainingError as exc:
        return TrainOutcome(model.eval(), log, failure=str(exc))
    except torch.OutOfMemoryError as exc:
        raise TrainingOutOfMemory(
            f"out of memory while training {backbone.label} with {regularizer.name} on {device} at "
            f"train.batch_size = {train.batch_size}: lower train.batch_size, choose a smaller backbone, keep "
            "train.amp on (bfloat16 on CUDA), or give each job more of the device (--gpus-per-job)."
        ) from exc
    return TrainOutcome(model.eval(), log)


def _train_loop(
    model: nn.Module,
    bundle: DatasetBundle,
    regularizer: Regularizer,
    train: TrainConfig,
    seed: int,
    device: torch.device,
    log: dict[str, Any],
    on_step: StepCallback | None,
) -> None:
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    x_all = bundle.train.x.to(device).contiguous(memory_format=memory_format)
    y_all = bundle.train.y.to(device)
    n = len(y_all)
    steps_per_epoch = math.ceil(n / train.batch_size)
    total_steps = train.epochs * steps_per_epoch
    optimizer = build_optimizer(model.parameters(), train)
    schedule = build_schedule(optimizer, train, steps_per_epoch)
    order_generator = torch.Generator().manual_seed(seed)
    augment = None if train.augment == "none" else augmentation(train.augment)
    augment_generator = torch.Generator(device=device).manual_seed(seed + AUGMENT_SEED_OFFSET)
    annotations_all = training_annotations(regularizer, bundle, device)
    log["autocast"] = "bfloat16" if uses_autocast(regularizer, train, device) else None
    log["tf32_off"] = not reduced_precision(regularizer, train)
    sums: dict[str, Tensor] = {}
    window = 0
    start = time.perf_counter()
    model.train()
    step = 0
    with cudnn_benchmark(device):
        for epoch in range(train.epochs):
            order = torch.randperm(n, generator=order_generator).to(device)
            for batch in range(steps_per_epoch):
                index = order[batch * train.batch_size : (batch + 1) * train.batch_size]
                x = x_all[index]
                annotations = {key: value[index] for key, value in annotations_all.items()}
                if augment is not None:
                    x, annotations = _augmented(augment, augment_generator, x, annotations)
                    x = x.contiguous(memory_format=memory_format)
                lr = _step(model, regularizer, optimizer, train, device, x, y_all[index], sums, step, annotations)
                schedule.step()
                window += 1
                step += 1
                if on_step:
                    on_step(step, total_steps)
                if step % train.log_every == 0 or step == total_steps:
                    _flush(sums, window, epoch, step, lr, start, log)
                    window = 0


def training_annotations(regularizer: Regularizer, bundle: DatasetBundle, device: torch.device) -> dict[str, Tensor]:
    """The training split's annotations the regularizer requires, on the device (empty when it requires none).

    Raises :class:`GibenchError` naming what is missing when the dataset lacks one (the preflight reports it for a
    suite before anything trains; this covers a direct call of :func:`fit`).
    """
    missing = sorted(set(regularizer.requires) - set(bundle.capabilities))
    if missing:
        raise GibenchError(f"regularizer {regularizer.name or type(regularizer).__name__} requires the annotations "
                           f"{missing}, which dataset {bundle.name!r} does not provide; train it on a dataset that "
                           "has them (gibench list datasets shows each dataset's capabilities).")
    return {key: bundle.train.extras[key].to(device) for key in sorted(regularizer.requires)}


def _augmented(augment: Callable[[Tensor, torch.Generator], Tensor], generator: torch.Generator, x: Tensor,
               annotations: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Augment the batch and its masks alike: one call on the images with the masks stacked as extra channels."""
    if not annotations:
        return augment(x, generator), annotations
    keys = sorted(annotations)
    stacked = torch.cat([x] + [annotations[key].to(x.dtype) for key in keys], dim=1)
    out = augment(stacked, generator)
    channels = x.shape[1]
    moved = {key: out[:, channels + i : channels + i + 1] > 0.5 for i, key in enumerate(keys)}
    return out[:, :channels], moved


def _step(model: nn.Module, regularizer: Regularizer, optimizer: torch.optim.Optimizer, train: TrainConfig,
          device: torch.device, x: Tensor, y: Tensor, sums: dict[str, Tensor], step: int,
          annotations: dict[str, Tensor]) -> float:
    """One optimizer step on the batch (x, y); returns the learning rate it used. No host synchronization."""
    whole_step, forward = step_contexts(regularizer, train, device)
    with whole_step:
        with forward:
            if annotations:
                loss = regularizer.training_loss(model, x, y, annotations=annotations)
            else:
                loss = regularizer.training_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
    if train.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
    optimizer.step()
    _accumulate(sums, loss, step)
    return optimizer.param_groups[0]["lr"]


def _accumulate(sums: dict[str, Tensor], loss: Any, step: int) -> None:
    """Add this step's parts to the running sums, on the device (no synchronization)."""
    total = loss.total.detach().float()
    sums["total"] = sums["total"] + total if "total" in sums else total.clone()
    finite = torch.isfinite(total)
    if "first_nonfinite_step" not in sums:
        sums["first_nonfinite_step"] = torch.full_like(total, float("inf"))
    sums["first_nonfinite_step"] = torch.where(
        finite, sums["first_nonfinite_step"], torch.minimum(sums["first_nonfinite_step"], torch.full_like(total, step))
    )
    for name, value in loss.parts.items():
        value = value.detach().float()
        sums[name] = sums[name] + value if name in sums else value.clone()


def _flush(
    sums: dict[str, Tensor], window: int, epoch: int, step: int, lr: float, start: float, log: dict[str, Any],
) -> None:
    """Read the running sums back (one synchronization per ``log_every`` steps) and stop on a non-finite loss."""
    values = {name: float(v) for name, v in sums.items()}
    first_bad = values.pop("first_nonfinite_step")
    entry = {"epoch": epoch, "step": step, "lr": lr,
             "seconds": round(time.perf_counter() - start, 3)}
    entry.update({name: v / window for name, v in values.items()})
    log["entries"].append(entry)
    sums.clear()
    if math.isfinite(first_bad) or not math.isfinite(entry["total"]):  # first_bad stays inf while all is finite
        bad_step = int(first_bad) if math.isfinite(first_bad) else step
        parts = ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k not in ("epoch", "step", "lr", "seconds"))
        raise TrainingError(
            f"non-finite loss at step {bad_step + 1} (epoch {epoch + 1}); mean parts over the last {window} steps: "
            f"{parts}. Lower the learning rate or the regularizer weight, or set train.grad_clip."
        )
