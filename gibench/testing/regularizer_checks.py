"""The conformance checks of a regularizer (the ``gibench.Regularizer`` contract), run on the CPU on
:func:`gibench.testing.tiny_model` and a batch of random images; what they check is listed in the docstring of
:mod:`gibench.testing`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gibench.api import IRRELEVANT_MASK, TRAINING_ANNOTATIONS, Regularizer, registry
from gibench.api.passes import Passes
from gibench.core.params import build_config
from gibench.testing.conformance import Checks, assert_declarations, resolve_plugin
from gibench.testing.fixtures import tiny_model
from gibench.testing.passes import count_passes

__all__ = ["HOST_READS", "check_regularizer", "default_annotations"]

#: Tensor methods that read a value on the host (a device synchronization on a GPU).
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


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


def default_annotations(requires: frozenset[str], x: Tensor) -> dict[str, Tensor]:
    """Annotations for the batch ``x`` of each training annotation in ``requires``: ``IRRELEVANT_MASK`` marks the
    left half of every image, as a decoy region would be."""
    unknown = sorted(set(requires) - TRAINING_ANNOTATIONS)
    if unknown:
        raise ValueError(f"no default annotations for {unknown}; pass annotations=... to check_regularizer")
    mask = torch.zeros(x.shape[0], 1, *x.shape[2:], dtype=torch.bool)
    mask[..., : x.shape[-1] // 2] = True
    return {IRRELEVANT_MASK: mask} if IRRELEVANT_MASK in requires else {}


def check_regularizer(
    regularizer: str | type[Regularizer], *, params: Mapping[str, Any] | None = None,
    model_factory: Callable[[], nn.Module] = tiny_model, batch: tuple[Tensor, Tensor] | None = None,
    annotations: Mapping[str, Tensor] | None = None,
) -> None:
    """Run gibench's regularizer conformance checks (listed in :mod:`gibench.testing`) on one regularizer.

    Args:
        regularizer: a registered name, or a :class:`gibench.Regularizer` subclass (registered or not).
        params: hyper-parameters for every check (default: the Config's defaults); the zero-strength check applies
            ``zero_strength`` on top of them, and the sweep checks the ends of the declared ``sweep``.
        model_factory: builds a fresh model in train mode for each check (default :func:`tiny_model`, with BatchNorm).
        batch: ``(x, y)``, images in [0, 1] and labels, matching the model (default: 8 random 1×6×6 images and
            labels in {0, 1, 2}, what the default model takes).
        annotations: for a regularizer that ``requires`` training annotations, the batch's (passed as
            ``training_loss(model, x, y, annotations=...)``; default :func:`default_annotations`).

    Returns:
        None when every check passes.

    Raises:
        ConformanceError: listing every failed check.

    Example:
        >>> check_regularizer("gradient_norm", params={"weight": 0.1})
    """
    plugin, cls = resolve_plugin("regularizer", regularizer)
    checks = Checks(plugin)
    if not checks.run("declarations", lambda: assert_declarations(cls)):
        checks.finish()
    params = dict(params or {})
    x, y = batch if batch is not None else _default_batch()
    if cls.requires and annotations is None:
        annotations = default_annotations(frozenset(cls.requires), x)

    def make(**overrides: Any) -> Regularizer:
        return cls(build_config(cls.Config, {**params, **overrides}, plugin))

    def loss_of(model: nn.Module, reg: Regularizer | None = None, seed: int = 0):
        torch.manual_seed(seed)
        reg = reg or make()
        if reg.requires:
            return reg.training_loss(model, x, y, annotations=dict(annotations or {}))
        return reg.training_loss(model, x, y)

    def config_round_trip() -> None:
        config = make().config
        json.dumps(dataclasses.asdict(config))
        assert make(**dataclasses.asdict(config)).config == config, "Config(**asdict(config)) != config"

    def total_and_gradients(**overrides: Any) -> None:
        model = model_factory().train()
        total = loss_of(model, make(**overrides)).total
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
        masks = {key: value.clone() for key, value in (annotations or {}).items()}
        loss_of(model_factory().train())
        assert torch.equal(x, x0) and torch.equal(y, y0), "training_loss modified its input batch in place"
        assert all(torch.equal(annotations[key], value) for key, value in masks.items()), (
            "training_loss modified its annotations in place")

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

    def declared_passes() -> None:
        settings = [("the defaults", {})]
        if cls.sweep is not None:
            settings += [(f"{cls.sweep.parameter} = {v!r}", {cls.sweep.parameter: v})
                         for v in (cls.sweep.values[0], cls.sweep.values[-1])]
        if cls.zero_strength is not None:
            settings.append((f"zero strength {dict(cls.zero_strength)}", dict(cls.zero_strength)))
        wrong = []
        for where, overrides in settings:
            reg = make(**overrides)
            declared = reg.passes_per_step()
            assert isinstance(declared, Passes), (
                f"passes_per_step() returned {declared!r}; it must return gibench.Passes")
            model = model_factory().train()
            with count_passes(model) as count:
                loss_of(model, reg).total.backward()
            counted = count.per_image(len(x))
            if not (math.isclose(declared.forward, counted.forward, abs_tol=1e-9)
                    and math.isclose(declared.backward, counted.backward, abs_tol=1e-9)):
                wrong.append(f"at {where} it declares {declared.forward:g} forward(s) and {declared.backward:g} "
                             f"backward(s) per image, a step ran {counted.forward:g} and {counted.backward:g}")
        assert not wrong, ("passes_per_step() does not match the model passes of a step (training backward "
                           "included; a backward through a create_graph gradient's graph counts as one): "
                           + "; ".join(wrong))

    checks.run("config round trip", config_round_trip)
    checks.run("finite scalar total with gradients on every parameter", total_and_gradients)
    if cls.sweep is not None:  # the declaration is valid here: the ends of the sweep are valid settings
        name, values = cls.sweep.parameter, cls.sweep.values
        for end, value in (("weakest", values[0]), ("strongest", values[-1])):
            checks.run(f"finite scalar total with gradients at the {end} sweep value ({name} = {value!r})",
                       lambda value=value: total_and_gradients(**{name: value}))
    checks.run("parts are detached finite 0-dim tensors", parts)
    checks.run("module modes restored", modes_restored)
    checks.run("input batch unchanged", inputs_unchanged)
    checks.run("no host synchronization in a step", no_host_reads)
    if cls.zero_strength is not None:
        checks.run("zero strength equals erm exactly", zero_strength_is_erm)
    checks.run("passes_per_step matches the passes a step runs", declared_passes)
    checks.finish()
