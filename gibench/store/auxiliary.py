"""Auxiliary models: the judges, denoisers and retrained models that some evaluators train for themselves.

An auxiliary model is stored like a job (docs/architecture.md, "Identity hashes"): one folder per content hash of
everything that determines its weights, under ``runs_dir/aux/``::

    aux/<kind>-<hash>/identity.json    kind + identity (what the hash covers) + code version
    aux/<kind>-<hash>/checkpoint.pt    state_dict (loads with weights_only=True)
    aux/<kind>-<hash>/quality.json     its own quality figures (a judge's clean accuracy, a denoiser's held-out loss)
    aux/<kind>-<hash>/status.json      {"state": "trained", checkpoint size and SHA-256}; written last, the commit
                                       point (``gibench doctor`` checks the checkpoint against it)
    aux/.locks/<kind>-<hash>.lock      held (an OS file lock) by the one process that is training it

Evaluators reach it through ``EvalContext.aux``: :meth:`AuxiliaryModels.get_or_train` returns the stored model when
there is one and trains it otherwise, so a model is trained once per runs directory, across evaluations, jobs,
suites and reruns. Two processes asking for the same model at once serialize on the lock file; the second one loads
what the first saved. The lock is an ``fcntl`` lock (``filelock``), which the operating system releases when its
owner dies, so a SIGKILL while a model trains leaves no stale claim: the next run trains it again, and everything
committed before is untouched. A damaged checkpoint or record is moved aside into ``runs_dir/quarantine/`` (never
deleted) and the model is trained again.

Training runs inside :func:`torch.random.fork_rng`, so whether an auxiliary model was trained or loaded never changes
the random state an evaluator sees afterwards: an evaluation gives the same numbers on a first run and on a rerun.

Every model handed out during one evaluation is recorded (:meth:`AuxiliaryModels.tracking`); the runner writes those
records (kind, hash, quality) into the evaluation's result file, and ``gibench report`` shows them next to the numbers
that depend on them.
"""

from __future__ import annotations

__all__ = [
    "AUX_CODE_VERSION", "AuxModel", "AuxiliaryModels", "Quality", "aux_key", "classifier", "require_quality",
    "tensors_sha256", "test_accuracy",
]

import datetime as dt
import hashlib
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from gibench.api.plugin import set_default_aux_store
from gibench.core.errors import GibenchError
from gibench.core.fsio import atomic_write_bytes, atomic_write_json, quarantine, read_json
from gibench.core.identity import identity_hash
from gibench.core.params import jsonable
from gibench.store.runs import state_dict_bytes

#: Bump when a change to this module changes the weights an auxiliary model gets for the same identity.
AUX_CODE_VERSION = "1"

Quality = Mapping[str, float]


@dataclass
class AuxModel:
    """A trained auxiliary model (eval mode, on the evaluation device) and what it is."""

    kind: str
    hash: str
    model: nn.Module
    quality: dict[str, float]
    identity: dict[str, Any]
    folder: Path | None = None

    def record(self) -> dict[str, Any]:
        """What a result file says about the auxiliary model its numbers depend on."""
        return {"kind": self.kind, "hash": self.hash, "quality": dict(self.quality),
                "folder": f"aux/{self.folder.name}" if self.folder else None}


@dataclass
class AuxiliaryModels:
    """Get-or-train access to the auxiliary models of one runs directory (``root`` = ``runs_dir/aux``).

    With ``root=None`` models live in memory only (handy in tests and notebooks). ``trained`` lists the hashes this
    object trained (rather than loaded), in order; tests assert on it and on the store. With a store, at most
    ``max_in_memory`` models stay loaded (least recently used first out; a suite's DiffROAR retrainings alone are
    2 × levels × seeds models per job, too many to keep on a GPU); an evicted one is loaded again from disk.
    """

    root: Path | None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    trained: list[str] = field(default_factory=list)
    max_in_memory: int = 8
    _memory: OrderedDict[str, AuxModel] = field(default_factory=OrderedDict, repr=False)
    _used: list[AuxModel] | None = field(default=None, repr=False)

    def get_or_train(
        self,
        kind: str,
        identity: Mapping[str, Any],
        build: Callable[[], nn.Module],
        train: Callable[[], tuple[nn.Module, Quality]],
    ) -> AuxModel:
        """The auxiliary model of ``kind`` named by ``identity``, trained by ``train`` only if none is stored.

        ``identity`` must hold everything that determines the weights (data and its options, architecture, training
        config, seed, the evaluator's own code version); it is hashed with ``kind`` and :data:`AUX_CODE_VERSION`.
        ``build()`` returns the untrained architecture (to load stored weights into); ``train()`` returns the trained
        model and its quality figures (plain floats). Raise :class:`gibench.core.errors.GibenchError` from ``train``
        when training fails; nothing is stored then.
        """
        if not kind.replace("_", "").isalnum():
            raise ValueError(f"auxiliary model kind must be a simple name, got {kind!r}")
        identity = jsonable(dict(identity))
        key = aux_key(kind, identity)
        if key not in self._memory:
            self._memory[key] = self._load_or_train(kind, key, identity, build, train)
        self._memory.move_to_end(key)
        aux = self._memory[key]
        while self.root is not None and len(self._memory) > self.max_in_memory:
            self._memory.popitem(last=False)
        if self._used is not None and all(u.hash != aux.hash for u in self._used):
            self._used.append(aux)
        return aux

    @contextmanager
    def tracking(self) -> Iterator[list[AuxModel]]:
        """Collect every auxiliary model handed out inside the ``with`` block (for one evaluation's result file)."""
        previous, self._used = self._used, []
        try:
            yield self._used
        finally:
            self._used = previous

    # -- storage -------------------------------------------------------------------------------------------------------

    def _load_or_train(self, kind: str, key: str, identity: dict[str, Any], build, train) -> AuxModel:
        if self.root is None:
            return self._train(kind, key, identity, train, folder=None)
        folder = self.root / f"{kind}-{key}"
        loaded = self._try_load(kind, key, identity, folder, build)
        if loaded is not None:
            return loaded
        (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".locks" / f"{kind}-{key}.lock")):
            loaded = self._try_load(kind, key, identity, folder, build)  # another process may have finished it
            if loaded is not None:
                return loaded
            return self._train(kind, key, identity, train, folder)

    def _try_load(self, kind: str, key: str, identity: dict[str, Any], folder: Path, build) -> AuxModel | None:
        if not (folder / "status.json").exists():
            return None
        try:
            if read_json(folder / "status.json").get("state") != "trained":
                return None
            quality = {k: float(v) for k, v in read_json(folder / "quality.json").items()}
            state = torch.load(folder / "checkpoint.pt", map_location=self.device, weights_only=True)
            with torch.random.fork_rng(devices=_rng_devices(self.device)):
                model = build()
            model.load_state_dict(state)
        except Exception as exc:  # damaged or stale files: move them aside and train again
            quarantine(folder, self.root.parent, f"unreadable auxiliary model ({type(exc).__name__}: {exc})")
            return None
        return AuxModel(kind, key, model.to(self.device).eval(), quality, identity, folder)

    def _train(self, kind: str, key: str, identity: dict[str, Any], train, folder: Path | None) -> AuxModel:
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            model, quality = train()
        quality = {k: float(v) for k, v in quality.items()}
        if folder is not None:
            if folder.exists():  # leftovers of a killed training: nothing in it was committed
                shutil.rmtree(folder)
            atomic_write_json(folder / "identity.json", {"kind": kind, "hash": key, "identity": identity,
                                                         "aux_code_version": AUX_CODE_VERSION})
            data = state_dict_bytes(model)
            atomic_write_bytes(folder / "checkpoint.pt", data)
            atomic_write_json(folder / "quality.json", quality)
            atomic_write_json(folder / "status.json", {"state": "trained", "finished": _now(),
                                                       "checkpoint_sha256": hashlib.sha256(data).hexdigest(),
                                                       "checkpoint_bytes": len(data)})
        self.trained.append(key)
        return AuxModel(kind, key, model.to(self.device).eval(), quality, identity, folder)


def _in_memory(device: torch.device) -> AuxiliaryModels:
    """The store of an EvalContext built without one: in memory, on the context's device."""
    return AuxiliaryModels(None, device)


set_default_aux_store(_in_memory)  # EvalContext's default: a hook, since gibench.api must not import this module


def aux_key(kind: str, identity: Mapping[str, Any], aux_code_version: str | None = None,
            hash_fn: Callable[[Any], str] = identity_hash) -> str:
    """The key of an auxiliary model: the identity hash (:mod:`gibench.core.identity`) of its kind, identity and
    :data:`AUX_CODE_VERSION` (or the code version an older store recorded; ``hash_fn`` another rule, for
    :mod:`gibench.store.rekey`)."""
    return hash_fn({"kind": kind, "identity": jsonable(dict(identity)),
                    "aux_code_version": aux_code_version or AUX_CODE_VERSION})


def require_quality(aux: AuxModel, metric: str, floor: float, what: str) -> None:
    """Raise a clear error when an auxiliary model is too poor for the numbers that depend on it to mean anything."""
    value = aux.quality.get(metric)
    if value is None or not value >= floor:
        raise GibenchError(
            f"the {aux.kind} ({aux.folder or 'in memory'}) reached {metric} = {value}, below the floor {floor} that "
            f"{what} requires, so its numbers would be meaningless. Train it longer (the evaluator's "
            f"{aux.kind} options) or lower the floor if you accept a weaker {aux.kind}."
        )


def tensors_sha256(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 (hex) of the shapes, dtypes and bytes of ``tensors``, in order, on any device: names the data of an
    auxiliary model when there is no job spec to name it (an evaluator used outside a suite)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def classifier(
    aux: AuxiliaryModels,
    kind: str,
    bundle: Any,
    data_identity: Mapping[str, Any],
    backbone: Any,
    train: Any,
    seed: int,
    regularizer: Any = None,
) -> AuxModel:
    """Get or train a classifier on ``bundle.train`` with gibench's own training loop (``gibench.training.train.fit``).

    ``data_identity`` names the data (for a dataset: its name, version and resolved options; for derived data such as
    DiffROAR's masked images: everything the derivation depends on). ``backbone`` is a ``PluginSpec``, ``train`` a
    ``TrainConfig``, ``regularizer`` a ``PluginSpec`` (default ``erm``). Quality: ``test_accuracy`` on
    ``bundle.test`` (clean) and ``train_seconds``. A training that fails (non-finite loss) raises a GibenchError.
    """
    import time

    from gibench.api import registry
    from gibench.suites.jobs import training_identity
    from gibench.training.models import build_model
    from gibench.training.specs import PluginSpec
    from gibench.training.train import fit

    regularizer = regularizer or PluginSpec.of("erm", {}, {})
    identity = training_identity("data", data_identity, backbone, regularizer, train, seed)

    def build() -> nn.Module:
        return build_model(backbone.name, backbone.config, bundle)

    def run_training() -> tuple[nn.Module, Quality]:
        loss = registry.regularizers.create(regularizer.name, **regularizer.params)
        start = time.perf_counter()
        outcome = fit(bundle, backbone, loss, train, seed, aux.device)
        if outcome.failure:
            raise GibenchError(f"training the {kind} failed: {outcome.failure}")
        seconds = time.perf_counter() - start
        return outcome.model, {"test_accuracy": test_accuracy(outcome.model, bundle, aux.device),
                               "train_seconds": round(seconds, 3)}

    return aux.get_or_train(kind, identity, build, run_training)


@torch.no_grad()
def test_accuracy(model: nn.Module, bundle: Any, device: torch.device, batch_size: int = 512) -> float:
    """Clean accuracy of ``model`` on ``bundle.test`` (eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(bundle.test), batch_size):
        x = bundle.test.x[start:start + batch_size].to(device)
        y = bundle.test.y[start:start + batch_size].to(device)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(len(bundle.test), 1)
