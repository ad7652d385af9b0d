"""What one evaluation costs, in units that ``gibench run --estimate`` times on the device (docs/architecture.md,
"The estimate").

An evaluator declares its cost with the optional hook :meth:`gibench.api.evaluator.Evaluator.cost`: given a
:class:`CostContext` (the job, the dataset's :class:`~gibench.api.dataset.DataSizes`, the evaluation batch size) it
returns an :class:`EvaluationCost`, a count of work units. The estimate times each distinct unit once on the device
(a short calibration, cached) and sums count × seconds. An evaluator without the hook is listed by name as not
estimated. The units:

* :class:`ModelPass`: one image through the evaluated model (or another backbone) at the evaluation batch size,
  ``forward`` (no gradient, eval mode) or ``saliency`` (a forward plus the input-gradient backward of
  :func:`gibench.api.saliency.input_gradient`). A saliency method that needs several input gradients per map counts
  that many passes (``SaliencyOptions.input_gradients_per_map``).
* :class:`TrainStep`: one step of gibench's training loop for a backbone, regularizer and train config (an evaluator
  that retrains models, or trains a judge classifier, counts its steps; :meth:`CostContext.training_steps`).
* :class:`PluginWork`: work only the evaluator itself can run, such as the training step of its own denoiser. The
  evaluator names it and times it in :meth:`~gibench.api.evaluator.Evaluator.time_work`, with the
  :class:`WorkTimer` the estimate hands it, and says how many passes of its model it runs per image (``passes``).

Besides the device-hours, the estimate counts the work in device-independent units,
:class:`~gibench.api.passes.Passes` (re-exported here): model passes per image, forwards and backwards (a training
step's are its regularizer's :meth:`~gibench.api.regularizer.Regularizer.passes_per_step` × the batch size; a forward
pass is one forward per image, a saliency pass one forward and one backward per image; plugin work's are what it
declares).

Work done once for many jobs (an auxiliary model shared by every job of a dataset) goes into
:attr:`EvaluationCost.shared` under a key (:meth:`CostContext.shared_key`): the estimate counts it once per key.
"""

from __future__ import annotations

__all__ = ["FORWARD", "SALIENCY", "CostContext", "EvaluationCost", "ModelPass", "Passes", "PluginWork", "TrainStep",
           "Unit", "Work", "WorkTimer", "add_work", "work"]

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from gibench.api.dataset import DatasetBundle, DataSizes
from gibench.api.passes import Passes
from gibench.api.protocols import EvaluatedJob
from gibench.core.fsio import canonical_json
from gibench.core.identity import identity_hash

FORWARD, SALIENCY = "forward", "saliency"


@dataclass(frozen=True)
class TrainStep:
    """One step of gibench's training loop (seconds per step). ``backbone`` and ``regularizer`` are
    :class:`gibench.PluginSpec`, ``train`` a :class:`gibench.TrainConfig`; ``shape`` is (C, H, W)."""

    backbone: Any
    regularizer: Any
    train: Any
    shape: tuple[int, int, int]
    num_classes: int


@dataclass(frozen=True)
class ModelPass:
    """One image through a model of ``backbone`` at ``batch_size`` (seconds per image): ``kind`` is
    :data:`FORWARD` or :data:`SALIENCY`."""

    kind: str
    backbone: Any
    shape: tuple[int, int, int]
    num_classes: int
    batch_size: int


@dataclass(frozen=True)
class PluginWork:
    """Work only evaluator ``owner`` can run and time (its ``time_work``): ``kind`` names it (e.g.
    ``denoiser_step``), ``identity`` is the canonical JSON of every option that changes its cost, ``per`` says what
    one unit is (``"step"`` or ``"image"``), ``passes`` the passes of the model it runs per image (a step's are
    ``batch_size`` × these), or None when not declared (the estimate then lists it as not counted in passes)."""

    owner: str
    kind: str
    identity: str
    shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    per: str = "image"
    passes: Passes | None = None

    def options(self) -> dict[str, Any]:
        """``identity`` read back as a dict."""
        import json

        return json.loads(self.identity)


Unit = TrainStep | ModelPass | PluginWork
Work = dict[Unit, float]  # unit -> how many (steps or images)


def work(*counts: tuple[Unit, float]) -> Work:
    """A :data:`Work` from ``(unit, count)`` pairs: counts of the same unit add up, zero counts are left out.

    Example:
        >>> from gibench.api.cost import ModelPass, work
        >>> unit = ModelPass("forward", "net", (1, 8, 8), 2, 16)
        >>> work((unit, 3), (unit, 4), (ModelPass("saliency", "net", (1, 8, 8), 2, 16), 0)) == {unit: 7}
        True
    """
    out: Work = {}
    for unit, count in counts:
        add_work(out, unit, count)
    return out


def add_work(into: Work, unit: Unit, count: float) -> None:
    """Add ``count`` of ``unit`` to ``into`` (a zero count adds nothing): how :func:`work` and the estimate's rows
    accumulate."""
    if count > 0:
        into[unit] = into.get(unit, 0.0) + count


@dataclass(frozen=True)
class EvaluationCost:
    """The work of one evaluation: ``per_job`` is done for every job; ``shared`` maps a key to ``(what, work)``,
    work done once per key however many jobs need it (``what`` names it in the estimate's table)."""

    per_job: Mapping[Unit, float] = field(default_factory=dict)
    shared: Mapping[str, tuple[str, Mapping[Unit, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class CostContext:
    """What the cost of evaluating ``job`` depends on: the job (its dataset, backbone, regularizer and train
    config, as :class:`gibench.api.protocols.EvaluatedJob`), the dataset's sizes and the evaluation batch size."""

    job: EvaluatedJob
    data: DataSizes
    batch_size: int

    def images(self, max_images: int) -> int:
        """The test images an evaluation with ``max_images`` reads (0 = the whole test split)."""
        return self.data.n_test if max_images <= 0 else min(max_images, self.data.n_test)

    def forward(self, backbone: Any = None) -> ModelPass:
        """A forward pass of the job's backbone (or ``backbone``) at the evaluation batch size."""
        return self._pass(FORWARD, backbone)

    def saliency(self, backbone: Any = None) -> ModelPass:
        """A saliency pass (forward + input gradient) of the job's backbone (or ``backbone``)."""
        return self._pass(SALIENCY, backbone)

    def _pass(self, kind: str, backbone: Any) -> ModelPass:
        return ModelPass(kind, backbone or self.job.backbone, self.data.shape, self.data.num_classes, self.batch_size)

    def train_step(self, backbone: Any, regularizer: Any, train: Any) -> TrainStep:
        """A training step of ``backbone`` with ``regularizer`` and ``train`` on this dataset's shape."""
        return TrainStep(backbone, regularizer, train, self.data.shape, self.data.num_classes)

    @staticmethod
    def training_steps(train: Any, n_train: int) -> int:
        """Steps of a training of ``train.epochs`` epochs over ``n_train`` images (a last, smaller batch counts as a
        full one)."""
        return train.epochs * math.ceil(n_train / train.batch_size)

    def plugin_work(self, owner: str, kind: str, options: Mapping[str, Any], *, batch_size: int | None = None,
                    per: str = "image", passes: Passes | None = None) -> PluginWork:
        """A unit of evaluator ``owner``'s own work on this dataset's shape (``batch_size``: the evaluation batch
        size unless given; ``passes``: the passes of its model per image, e.g. ``Passes(1, 1)`` for a training step
        of plain regression)."""
        return PluginWork(owner, kind, canonical_json(dict(options)), self.data.shape, self.data.num_classes,
                          batch_size or self.batch_size, per, passes)

    def shared_key(self, what: Mapping[str, Any]) -> str:
        """The key of work shared by every job of this dataset that needs the same ``what`` (e.g. a judge's
        backbone and training)."""
        dataset = self.job.dataset
        return identity_hash({"what": dict(what), "dataset": [dataset.name, dataset.config]})


class WorkTimer(Protocol):
    """What :meth:`~gibench.api.evaluator.Evaluator.time_work` may use to time a :class:`PluginWork` unit."""

    #: the device the estimate is for
    device: torch.device

    def random_bundle(self, shape: tuple[int, ...], num_classes: int, n: int) -> DatasetBundle:
        """``n`` uniform random images of ``shape`` in [0, 1] with random labels (train split; a stand-in for
        timing)."""
        ...

    def seconds_per_call(self, call: Callable[[], Any]) -> float:
        """The median seconds ``call()`` takes on the device, after warm-up calls (the device synchronized)."""
        ...
