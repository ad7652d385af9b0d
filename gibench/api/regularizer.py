"""The regularizer contract: a training objective returning a :class:`TrainingLoss`. Part of the contracts
(:mod:`gibench.api.plugin`)."""

from __future__ import annotations

__all__ = ["Regularizer", "Sweep", "TrainingLoss", "declares_sweep"]

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from gibench.api.passes import Passes
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


@dataclass(frozen=True)
class Sweep:
    """A regularizer's strength knob and the settings to compare it at, from nearly ``erm`` to clearly strong.

    A fair comparison of training methods compares each at an operating point chosen by a rule declared in advance
    from settings declared in advance (Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021:
    ``domainbed/hparams_registry.py`` in facebookresearch/DomainBed declares a default and a random distribution for
    each hyper-parameter of each algorithm). Here a regularizer declares a grid of its one strength knob, once, as
    :attr:`Regularizer.sweep`; the registry checks it when the plugin loads.

    Attributes:
        parameter: the ``Config`` field that sets the strength (``weight`` for a penalty, ``sigma`` for noise,
            ``epsilon`` for an attack). One parameter: an option that must move with it follows from the Config's
            own rule (PGD's step size is ``2.5·epsilon/steps`` unless set), and every other option keeps the
            value the suite gives it (its default unless given), so the values are those of the default setting of
            every other option.
        values: the settings, in increasing strength (strictly increasing numbers, at least two), in the units of
            the parameter (pixel units for noise levels and attack radii); the Config's default must be one of them,
            so the default is a point of the sweep. A list (or any other iterable) is stored as a tuple.
        scale: ``"log"`` (the values are spaced by factors, and must be positive) or ``"linear"`` (spaced by
            differences): how the values are spaced, and so how a curve over the sweep spaces its x axis.
        note: where the values come from (a paper's own grid, or the reasoning), one line; the plugin's docstring
            says it in full.
        changes_step_cost: whether the strength changes the work of a training step (a knob that is a number of
            attack or sampling steps would). False, the usual case (a penalty weight, a noise level, an attack
            radius): ``gibench run --estimate`` then times one training step for every nonzero strength instead of
            one per sweep point (zero is timed apart: a regularizer may skip its extra work there).

    Example:
        >>> Sweep("weight", [1e-4, 1e-3, 1e-2], "log", "decades around the default").values
        (0.0001, 0.001, 0.01)
    """

    parameter: str
    values: tuple[float, ...]
    scale: Literal["log", "linear"]
    note: str = ""
    changes_step_cost: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.values, Iterable) and not isinstance(self.values, (str, bytes, tuple)):
            object.__setattr__(self, "values", tuple(self.values))  # a list or an array, kept hashable


def declares_sweep(cls: type[Regularizer]) -> bool:
    """True when ``cls`` (or a base class of its own below :class:`Regularizer`) assigns ``sweep``, to a
    :class:`Sweep` or to ``None``; False when it only inherits :class:`Regularizer`'s default, which does not say
    whether the regularizer has a strength knob (``gibench list`` shows "sweep: not declared" then)."""
    own = [base for base in cls.__mro__ if base is not Regularizer and issubclass(base, Regularizer)]
    return any("sweep" in vars(base) for base in own)


class Regularizer(Plugin):
    """A training objective: cross-entropy plus (optionally) a penalty, possibly with its own forward passes.

    Subclasses implement :meth:`training_loss`. The model arrives in train mode and must be left in train mode.
    One whose step is not one forward and one backward per image (plain cross-entropy's) declares its model passes
    in :meth:`passes_per_step`, the work ``gibench run --estimate`` counts.

    A regularizer with a strength knob declares it and the settings to compare it at as :attr:`sweep`, a
    :class:`Sweep` (checked when the plugin loads: the parameter is a Config field, the values are strictly
    increasing, each builds a valid Config, the default is one of them, a log scale has positive values); one
    without a strength knob declares ``sweep = None`` (``erm``, the ``fooled`` control):

    >>> from gibench import Sweep, plugin_config
    >>> @plugin_config
    ... class PenaltyConfig:
    ...     weight: float = 1e-3
    >>> class Penalty(Regularizer):
    ...     Config = PenaltyConfig
    ...     sweep = Sweep("weight", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "log", "decades around the default")
    >>> from gibench.api.registry import declaration_problems
    >>> declaration_problems(Penalty)
    []
    >>> Penalty.sweep = Sweep("weight", (1e-2, 1e-1), "log")  # the default 1e-3 is not a point of it
    >>> declaration_problems(Penalty)  # doctest: +ELLIPSIS
    ["its sweep of 'weight' does not contain the Config's default 0.001; ..."]
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

    #: The strength knob and the settings to compare the regularizer at (:class:`Sweep`), or ``None`` when it has
    #: none (``erm``, sanity controls). The default ``None`` inherited from here is read as "not declared"
    #: (:func:`declares_sweep`); every built-in assigns it in its own class body.
    sweep: ClassVar[Sweep | None] = None

    #: Dataset capabilities this regularizer reads while training: per-sample annotations of the training split,
    #: only from :data:`gibench.TRAINING_ANNOTATIONS` (``IRRELEVANT_MASK``; checked when the plugin loads). The trainer
    #: calls a regularizer that requires some as ``training_loss(model, x, y, annotations=...)``, ``annotations``
    #: mapping each capability to the batch's rows of it (moved with ``x`` by a geometric ``train.augment``); one
    #: that requires none is called ``training_loss(model, x, y)``, so its jobs are unchanged. A suite that trains
    #: it on a dataset without them is a preflight error naming the datasets that have them.
    requires: ClassVar[frozenset[str]] = frozenset()

    def passes_per_step(self) -> Passes:
        """The model passes of one training step with this config, per image of the batch: what
        ``gibench run --estimate`` counts as the work of a training (steps × batch size × these passes).

        The default, one forward and one backward, is plain cross-entropy's; a regularizer that calls the model more
        often, or back-propagates through a gradient, overrides it. The counting rules, checked by
        :func:`gibench.testing.check_regularizer` against the passes a step really runs (counted with hooks,
        :func:`gibench.testing.passes.count_passes`), the trainer's ``total.backward()`` included:

        * **forward**: every call of the model counts its images, with or without gradient, in train or eval mode
          (an attack step's forward, a no-grad reference forward, a noisy copy; a call on a batch of k·N images, such
          as N images × k references, counts k per image).
        * **backward**: every passage of a gradient back through one graph of the model counts one per image: through
          a forward's graph (the training backward, an input gradient, an attack or sampler step) and through a
          backward's graph (a gradient built with ``create_graph=True`` and differentiated again). One backward call
          passes each graph once however many terms of the loss reach it: the training backward of cross-entropy
          plus a gradient penalty passes the forward's graph once and the input gradient's graph once. So a
          **double backward counts as one backward**, and a gradient penalty's step is 1 forward and 3 backwards
          (the ``create_graph`` input gradient, then the training backward through the forward's graph and through
          the input gradient's graph); a Hessian-vector product with ``create_graph`` adds the graphs it passes and
          builds.

        Weighting a backward as two forwards (:attr:`gibench.api.passes.Passes.forward_equivalents`), the count
        matches the arithmetic of a step: the second backward of a gradient penalty differentiates an input gradient
        (no weight gradients, about one forward's arithmetic) and so costs about one backward. It overcounts
        input-only backwards (an attack step's input gradient has about half a training backward's arithmetic), as
        the adversarial-training literature's "K + 1 forward-backward passes" of K-step PGD does.

        Returns:
            :class:`~gibench.api.passes.Passes` per image of the batch (depending on ``self.config`` where the count
            does: attack or sampler steps, noise draws, a zero strength that skips work).

        Example:
            >>> from gibench import Passes, plugin_config
            >>> @plugin_config
            ... class TwoViewsConfig:
            ...     views: int = 2
            >>> class TwoViews(Regularizer):  # cross-entropy on `views` noisy copies of the batch
            ...     Config = TwoViewsConfig
            ...     def passes_per_step(self):
            ...         return Passes(forward=self.config.views, backward=self.config.views)
            >>> TwoViews().passes_per_step().forward_equivalents
            6
        """
        return Passes(forward=1, backward=1)

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

