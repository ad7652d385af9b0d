"""The X-DNN check: is a backbone nonnegatively homogeneous, f(α·z) = α·f(z) for α > 0?

Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks" (NeurIPS 2021): a ReLU network without
any additive constant (no convolution or linear bias, no BatchNorm shift or running-mean subtraction) is
nonnegatively homogeneous, and then Integrated Gradients from the zero baseline equals the X-Gradient
x ⊙ ∇x f(x) from one backward pass. gibench checks the property on the **backbone** (normalized space: the
``Normalize`` first layer of every gibench model is affine and stays outside, see :mod:`gibench.api.saliency`), when a
backbone is built with ``bias: false`` (:mod:`gibench.training.models`).

How it is checked (choices the paper leaves open, stated):

* On a float64 **copy whose parameters and floating buffers are redrawn at random** (weights N(0, 1/fan_in), 1-D
  parameters and buffers such as biases, BatchNorm γ/β, running means and variances U(0.5, 1.5)), in eval mode, with
  a private generator (the caller's random state is untouched). Checking the freshly initialised weights would miss
  layers whose additive constant starts at zero (a bias initialised to 0, BatchNorm with β = 0 and running mean 0,
  the zero-initialised Fixup branches and classifier): homogeneity must hold for every value training can reach,
  which is a property of the architecture.
* Inputs: a batch of two N(0, 1) images of shape (C, H, W) (H = W = 16 unless the net needs a fixed size), scaled by
  α ∈ :data:`ALPHAS`; the check fails when max |f(α·z) − α·f(z)| exceeds :data:`RTOL` · α · max |f(z)| (float64
  round-off of a bias-free ReLU net is ~1e-15 relative; a bias, BatchNorm or softplus is off by orders of magnitude
  more).
* Where the check fails, every leaf module that ran is checked alone on the input it received (recorded by a
  forward pre-hook), with the same α and tolerance, and each one that fails is named with its type and the reason
  (found by inspecting the module: a bias, a BatchNorm, a non-homogeneous activation). Operations written in a
  ``forward`` (``x + 1``) are invisible to hooks; then the message says that no single layer fails.
"""

from __future__ import annotations

__all__ = ["ALPHAS", "PROBE_SIZE", "RTOL", "check_homogeneous", "non_homogeneous_layers"]

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gibench.core.errors import ConfigError

#: The scale factors α > 0 at which f(α·z) = α·f(z) is checked.
ALPHAS: tuple[float, ...] = (0.5, 2.0, 3.7)
#: Relative tolerance of the check (float64).
RTOL = 1e-9
#: Image side of the probe batch for nets that accept any size.
PROBE_SIZE = 16


def _randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter and floating buffer in place (see the module docstring for the distributions)."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            if tensor.dim() >= 2:
                fan_in = tensor[0].numel()
                value = torch.randn(tensor.shape, generator=generator, dtype=torch.float64) / fan_in ** 0.5
            else:
                value = torch.rand(tensor.shape, generator=generator, dtype=torch.float64) + 0.5
            tensor.copy_(value)


def _relative_error(out: Tensor, scaled: Tensor, alpha: float) -> float:
    scale = alpha * out.abs().max().item()
    return (scaled - alpha * out).abs().max().item() / max(scale, 1e-300)


def _homogeneous(fn, inputs: tuple[Tensor, ...]) -> bool:
    with torch.no_grad():
        out = fn(*[t.clone() for t in inputs])
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return True  # nothing numeric to compare (e.g. an index output)
        return all(_relative_error(out, fn(*[a * t.clone() for t in inputs]), a) <= RTOL for a in ALPHAS)


def _reason(module: nn.Module) -> str:
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return (f"{type(module).__name__}, whose shift β and eval-mode running-mean subtraction are additive "
                "constants (an X backbone has no BatchNorm)")
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return (f"{type(module).__name__}, whose shift is an additive constant and whose scaling divides by the "
                "input's scale")
    if isinstance(getattr(module, "bias", None), Tensor):
        return f"{type(module).__name__} with a bias, an additive constant (build it with bias=False)"
    return (f"{type(module).__name__}, which is not positively homogeneous (of the activations only ReLU is: "
            "relu(α·z) = α·relu(z); softplus, GELU, SiLU and tanh are not)")


def non_homogeneous_layers(model: nn.Module, sample: Tensor) -> list[tuple[str, str]]:
    """``(qualified name, reason)`` of each leaf module of ``model`` that fails the check on its input from ``sample``.

    ``model`` and ``sample`` must share dtype and device; the model is run once with forward pre-hooks that record
    each leaf module's input.
    """
    inputs: dict[str, tuple[Tensor, ...]] = {}
    leaves = {name: m for name, m in model.named_modules() if not list(m.children())}

    def recorder(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            if name not in inputs and args and all(isinstance(a, Tensor) for a in args):
                inputs[name] = tuple(a.detach().clone() for a in args)
        return hook

    handles = [m.register_forward_pre_hook(recorder(name)) for name, m in leaves.items()]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, _reason(leaves[name])) for name in leaves if name in inputs
            and inputs[name][0].is_floating_point() and not _homogeneous(leaves[name], inputs[name])]


def _names(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return "layer" + ("s " if len(names) > 1 else " ") + ", ".join(names[:shown]) + more


def check_homogeneous(backbone: nn.Module, sample_shape: Sequence[int], name: str) -> None:
    """Raise ConfigError unless ``backbone`` (normalized space) satisfies f(α·z) = α·f(z) for every α in ALPHAS.

    ``sample_shape`` is one input's (C, H, W); ``name`` names the backbone in the message. See the module docstring
    for how parameters and inputs are drawn. The error names each offending layer and why it breaks homogeneity.
    """
    generator = torch.Generator().manual_seed(0)
    probe = copy.deepcopy(backbone).to(device="cpu", dtype=torch.float64).eval()
    _randomize_(probe, generator)
    z = torch.randn((2, *sample_shape), generator=generator, dtype=torch.float64)
    if _homogeneous(probe, (z,)):
        return
    layers = non_homogeneous_layers(probe, z)
    if layers:
        by_reason: dict[str, list[str]] = {}
        for layer, reason in layers:
            by_reason.setdefault(reason, []).append(layer)
        found = "; ".join(f"{_names(names)}: {reason}" for reason, names in by_reason.items())
    else:
        found = ("no single layer fails the check, so an operation inside a module's forward() (a constant added, "
                 "a non-homogeneous function applied) breaks it")
    raise ConfigError(
        f"backbone {name!r} with `bias: false` must be an X-DNN (nonnegatively homogeneous, f(α·x) = α·f(x) for "
        f"α > 0; Hesse et al. 2021), but the numeric check fails: {found}. Use `act: relu` (the default) with "
        "`bias: false`, or drop `bias: false` for a regular network."
    )
