"""The regularizer contract: a training objective returning a :class:`TrainingLoss`. Part of the contracts
(:mod:`gibench.api.plugin`)."""

from __future__ import annotations

__all__ = ["Regularizer", "TrainingLoss"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from gibench.api.plugin_base import Plugin


@dataclass(frozen=True)
class TrainingLoss:
    """The full training loss of one batch.

    ``total`` is the scalar to back-propagate. ``parts`` are detached 0-dim tensors to log (cross-entropy, penalty
    terms, estimator values); they stay on the device so that a training step never synchronizes with the host; the
    training loop reads them every few steps.
    """

    total: Tensor
    parts: Mapping[str, Tensor] = field(default_factory=dict)


class Regularizer(Plugin):
    """A training objective: cross-entropy plus (optionally) a penalty, possibly with its own forward passes.

    Subclasses implement :meth:`training_loss`. The model arrives in train mode and must be left in train mode.
    """

    #: True when the penalty is zero almost everywhere for piecewise-linear networks (it involves input Hessians);
    #: the trainer then warns if the backbone has no smooth activation.
    needs_smooth_activation: ClassVar[bool] = False

    #: Hyper-parameters that turn this regularizer into plain ``erm`` (same loss value on the same batch). The
    #: conformance tests use it; a regularizer without a ``weight`` (noise augmentation, PGD) overrides it, and one
    #: that has no such setting declares ``None`` (the zero-strength conformance test then skips it).
    zero_strength: ClassVar[Mapping[str, Any]] = {"weight": 0.0}

    #: True promises that reduced precision keeps this loss's numbers: under bfloat16 autocast (and with TF32
    #: convolutions and matmuls) the loss and the parameter gradients stay within 2 % (relative) of true float32
    #: on the same batch and weights, as tests/test_precision.py checks for the built-ins that set it. The trainer
    #: uses autocast (on CUDA, with ``train.amp``) only for such regularizers and runs every other one in true
    #: float32 with TF32 off. False (the default) is always safe; it only costs speed.
    amp_safe: ClassVar[bool] = False

    #: The kind of method, for grouping and filtering on the leaderboard: ``baseline``, ``gradient penalty``,
    #: ``score matching``, ``noise``, ``adversarial``, ``control`` (sanity controls), or any other short label.
    family: ClassVar[str] = "other"

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        """The full training loss of one batch: cross-entropy plus this regularizer's penalty.

        Args:
            model: the classifier, in train mode, on the batch's device. It may be called as often as the method
                needs (noisy copies, attack steps); every module's train/eval flag must be as it arrived on return.
            x: the images, float (N, C, H, W) in [0, 1] pixel units.
            y: the labels, int64 (N,).

        Returns:
            A :class:`TrainingLoss`: ``total`` is a finite 0-dim tensor whose graph reaches the model's parameters
            (the trainer calls ``total.backward()``); ``parts`` are detached 0-dim tensors to log, left on the device
            (never ``.item()`` inside a step: it synchronizes with the host and stalls a GPU).

        Example:
            >>> import torch.nn.functional as F
            >>> from gibench import Regularizer, TrainingLoss, logits_and_input_gradient
            >>> class GradientL1(Regularizer):
            ...     def training_loss(self, model, x, y):
            ...         logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
            ...         ce = F.cross_entropy(logits, y)
            ...         penalty = grad.abs().flatten(1).sum(1).mean()
            ...         return TrainingLoss(ce + self.config.weight * penalty,
            ...                             {"cross_entropy": ce.detach(), "gradient_l1": penalty.detach()})
        """
        raise NotImplementedError

