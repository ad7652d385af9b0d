"""The shapes the contracts need of objects that live above them: a trained auxiliary model, the auxiliary-model
store and the evaluated job. Protocols rather than the classes, because the contracts import nothing of gibench
above them (docs/architecture.md, "Layers")."""

from __future__ import annotations

__all__ = ["AuxiliaryModel", "AuxiliaryStore", "EvaluatedJob", "default_aux_store", "set_default_aux_store"]

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class AuxiliaryModel(Protocol):
    """A trained auxiliary model as the store hands it out (:class:`gibench.store.auxiliary.AuxModel`): what it is, the
    model (eval mode, on the store's device) and its quality figures."""

    @property
    def kind(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def model(self) -> nn.Module: ...
    @property
    def quality(self) -> Mapping[str, float]: ...


@runtime_checkable
class AuxiliaryStore(Protocol):
    """What an evaluator may ask of ``EvalContext.aux`` (:class:`gibench.store.auxiliary.AuxiliaryModels` implements
    it).

    A protocol rather than the class, because the contracts import nothing of gibench above them: the store trains
    its classifiers with gibench's training loop, which itself builds on these contracts.
    """

    #: The device the store's models live on (and are trained on).
    device: torch.device
    #: The hashes of the models this store trained (rather than loaded), in order.
    trained: list[str]

    def get_or_train(self, kind: str, identity: Mapping[str, Any], build: Callable[[], nn.Module],
                     train: Callable[[], tuple[nn.Module, Mapping[str, float]]]) -> AuxiliaryModel:
        """The model of ``kind`` named by ``identity``: loaded when stored, else ``train()``-ed and stored."""
        ...


@runtime_checkable
class EvaluatedJob(Protocol):
    """What an evaluator may read of ``EvalContext.job`` (:class:`gibench.suites.jobs.Job` implements it; a protocol for
    the same reason as :class:`AuxiliaryStore`). ``dataset``, ``backbone`` and ``regularizer`` are
    :class:`gibench.suites.suite.PluginSpec`; ``train`` is a :class:`gibench.suites.suite.TrainConfig`."""

    @property
    def hash(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def dataset(self) -> Any: ...
    @property
    def backbone(self) -> Any: ...
    @property
    def regularizer(self) -> Any: ...
    @property
    def train(self) -> Any: ...
    @property
    def label(self) -> str: ...

    def training_spec(self) -> dict[str, Any]:
        """Everything that determines the job's trained weights, as plain JSON (what its hash covers)."""
        ...


_default_aux_store: Callable[[torch.device], AuxiliaryStore] | None = None


def set_default_aux_store(factory: Callable[[torch.device], AuxiliaryStore]) -> None:
    """Set how an :class:`EvalContext` built without ``aux`` gets its in-memory store (``factory(device)``).

    :mod:`gibench.store.auxiliary` registers ``AuxiliaryModels(None, device)`` when it is imported. A hook instead of an
    import, because the contracts must not import the store: it sits above them (see :class:`AuxiliaryStore`).
    """
    global _default_aux_store
    _default_aux_store = factory



def default_aux_store(device: torch.device) -> AuxiliaryStore:
    """A new in-memory auxiliary-model store on ``device``, made by the factory :func:`set_default_aux_store` set."""
    if _default_aux_store is None:
        raise TypeError("EvalContext was built without aux= before gibench.store.auxiliary was imported; "
                        "import it (it registers the in-memory default) or pass "
                        "aux=AuxiliaryModels(None, device).")
    return _default_aux_store(device)
