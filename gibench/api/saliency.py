"""The explained quantity and how pixel scores are aggregated from it.

The explained quantity (docs/architecture.md, "Saliency") is the input-gradient of the **label logit** f_y(x) (not
log-softmax, not the loss), per sample: sum f_{y_b}(x_b) over the batch, then take one gradient (samples do not
interact unless the model mixes them, e.g. BatchNorm in train mode; at explanation time models are in eval mode).

Axiomatic attributions (Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks", NeurIPS 2021)
share one baseline, :func:`attribution_baseline`. gibench models are ``Sequential(normalize=Normalize(mean, std),
backbone)`` with inputs in pixel space [0, 1]; an X-DNN is the *backbone*, nonnegatively homogeneous in normalized
space, as in the paper, where normalization happens in the data transform. The zero baseline therefore lies at zero
in normalized space, which is the dataset's mean colour ``model.normalize.mean`` in raw pixels (not black); a model
without a ``Normalize`` layer gets the all-zeros baseline. X-Gradient is ``(x - baseline) ⊙ ∇x f_y(x)``; on an
X-DNN it equals Integrated Gradients from that same baseline exactly (the gradient is constant along the straight
path because the ReLU/max-pool pattern does not change when the input is scaled by α > 0).

The saliency *method* is an evaluator option, declared once: :class:`SaliencyOptions` holds ``saliency`` and
``ig_steps`` (types, defaults, validation and help text), and every evaluator that reads a map inherits its Config from
it. The options become ``ctx.saliency`` here and nowhere else (:meth:`SaliencyOptions.saliency_function`,
:func:`saliency_for`), and they say what a map costs (:attr:`SaliencyOptions.input_gradients_per_map`):

* ``input_gradient`` (default; docs/architecture.md, "Saliency"): ∇x f_y(x).
* ``x_gradient``: (x − baseline) ⊙ ∇x f_y(x), :func:`x_gradient`.
* ``integrated_gradients``: captum's ``IntegratedGradients`` (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep
  Networks", ICML 2017) of the label logit from :func:`attribution_baseline`, ``multiply_by_inputs=True``,
  Gauss-Legendre quadrature (captum's default and the method of Hesse et al.'s comparison, which uses 128 steps) with
  ``ig_steps`` = 32 nodes by default (on an X-DNN any number is exact; 32 keeps an evaluation at 32 forward/backward
  passes per image), one step's batch at a time (``internal_batch_size`` = the batch), so memory is that of one
  input-gradient. captum multiplies the gradients by its quadrature weights as a float32 tensor, so even in float64
  IG is exact only to ~1e-6 relative. Not differentiable (captum offers no ``create_graph``); attribution priors
  train through :func:`x_gradient`.

Measured (CPU, float64 unless stated; ``tests/test_saliency_methods.py``'s 16×16 gibench_cnn, width 4): relative L1
distance Σ|XG − IG| / Σ|IG| (Hesse et al.'s ``--compare_attribution``) 4.7e-9 at 32 steps on the X-DNN (7e-8 in
float32) and 0.58 with biases; gibench_cnn trained 3 epochs on mnist_subset (erm, seed 0, float32, 64 test digits):
4.2e-7 for the X-DNN, 0.13 for its biased ReLU twin.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_IG_STEPS", "PixelReduction", "SALIENCY_METHODS", "SaliencyFunction", "SaliencyOptions",
    "attribution_baseline", "input_gradient", "integrated_gradients", "label_logit", "leaf_logits_and_input_gradient",
    "logits_and_input_gradient", "mask_mass_share", "pixel_scores", "saliency_for", "saliency_function",
    "saliency_options", "x_gradient",
]

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gibench.core.config_types import IGSteps, SaliencyMethod, plugin_config

PixelReduction = Literal["abs_sum", "channel_std", "abs"]


def label_logit(logits: Tensor, y: Tensor) -> Tensor:
    """f_y(x) for every sample: ``logits[b, y[b]]``, shape (N,)."""
    return logits.gather(1, y.view(-1, 1)).squeeze(1)


def leaf_logits_and_input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass and the gradient of the label logits with respect to the input.

    Returns ``(leaf, logits, grad)``: ``leaf`` is the detached copy of ``x`` the gradient was taken against (a
    Hessian-vector product must differentiate ``grad`` against it again), ``grad`` has the shape of ``x``. With
    ``create_graph=True`` the gradient is itself differentiable (double backward), as gradient penalties need, and
    ``logits`` can be reused for the cross-entropy so that no second forward pass is needed.
    """
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(leaf)
        (grad,) = torch.autograd.grad(label_logit(logits, y).sum(), leaf, create_graph=create_graph)
    return leaf, logits, grad


def logits_and_input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """``(logits, ∇x f_y(x))`` from one forward pass; see :func:`leaf_logits_and_input_gradient`."""
    _, logits, grad = leaf_logits_and_input_gradient(model, x, y, create_graph=create_graph)
    return logits, grad


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
    """∇x f_y(x), per sample, same shape as ``x``. The model's train/eval mode is left as it is."""
    _, grad = logits_and_input_gradient(model, x, y, create_graph=create_graph)
    return grad if create_graph else grad.detach()


def attribution_baseline(model: nn.Module, x: Tensor) -> Tensor:
    """The zero baseline of X-Gradient and Integrated Gradients, in pixel space, broadcastable against ``x``.

    Zero in normalized space (Hesse et al.: normalization is outside their X-DNN), i.e. the per-channel mean colour
    ``model.normalize.mean`` of shape (1, C, 1, 1) for a gibench model; zeros of shape (1, C, 1, 1) for a model
    without a :class:`~gibench.training.models.Normalize` ``normalize`` layer. Same dtype and device as ``x``; never
    requires grad.
    """
    normalize = getattr(model, "normalize", None)
    mean = getattr(normalize, "mean", None)
    if isinstance(mean, Tensor):
        return mean.detach().to(device=x.device, dtype=x.dtype)
    return torch.zeros((1, x.shape[1]) + (1,) * (x.dim() - 2), device=x.device, dtype=x.dtype)


def x_gradient(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
    """X-Gradient ``(x - baseline) ⊙ ∇x f_y(x)`` (Hesse et al., 2021), same shape as ``x``, from one backward pass.

    ``baseline`` is :func:`attribution_baseline`. With ``create_graph=True`` the result is differentiable with
    respect to the parameters (attribution priors train through it); otherwise it is detached.
    """
    _, grad = logits_and_input_gradient(model, x, y, create_graph=create_graph)
    attribution = (x - attribution_baseline(model, x)) * grad
    return attribution if create_graph else attribution.detach()


def integrated_gradients(model: nn.Module, x: Tensor, y: Tensor, steps: int = 32) -> Tensor:
    """Integrated Gradients of f_y from :func:`attribution_baseline` to ``x`` (captum), detached, shape of ``x``.

    ``steps`` Gauss-Legendre nodes; see the module docstring for the settings. The model's mode is left as it is.
    """
    from captum.attr import IntegratedGradients

    baseline = attribution_baseline(model, x).expand_as(x).contiguous()
    with torch.enable_grad():
        attribution = IntegratedGradients(model, multiply_by_inputs=True).attribute(
            x.detach(), baselines=baseline, target=y, n_steps=steps, method="gausslegendre",
            internal_batch_size=x.shape[0])
    return attribution.detach()


SaliencyFunction = Callable[[nn.Module, Tensor, Tensor], Tensor]

#: The saliency methods an evaluator's ``saliency`` option names (``gibench.core.config_types.SaliencyMethod``).
SALIENCY_METHODS: tuple[str, ...] = ("input_gradient", "x_gradient", "integrated_gradients")
#: Default number of integration steps of ``integrated_gradients``.
DEFAULT_IG_STEPS = 32


def saliency_function(method: str = "input_gradient", ig_steps: int = DEFAULT_IG_STEPS) -> SaliencyFunction:
    """The ``saliency(model, x, y)`` callable of a method name: the module-level function itself for
    ``input_gradient`` and ``x_gradient`` (so identities that name it, such as DiffROAR's cache keys, stay what they
    were), ``functools.partial(integrated_gradients, steps=ig_steps)`` for ``integrated_gradients``."""
    if method == "input_gradient":
        return input_gradient
    if method == "x_gradient":
        return x_gradient
    if method == "integrated_gradients":
        if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
            raise ValueError(f"ig_steps must be a positive integer, got {ig_steps!r}")
        return functools.partial(integrated_gradients, steps=ig_steps)
    raise ValueError(f"unknown saliency method {method!r}; use one of {', '.join(SALIENCY_METHODS)}")


@plugin_config(kw_only=True)
class SaliencyOptions:
    """The saliency options of an evaluator that explains a saliency map: inherit them, ``class
    MyConfig(SaliencyOptions)`` under ``@plugin_config``, rather than declaring the fields again.

    The two fields are keyword-only (:func:`gibench.core.config_types.plugin_config`), so a subclass's own fields
    keep their positions and may go without a default. They are listed first by ``gibench list`` (a dataclass lists
    its bases' fields first). They enter an evaluation's identity only when they differ from their default
    (:data:`gibench.core.config_types.IDENTITY_UNLESS_DEFAULT`).
    """

    saliency: SaliencyMethod = "input_gradient"
    """The saliency map explained: input_gradient, x_gradient or integrated_gradients (gibench.api.saliency)."""
    ig_steps: IGSteps = DEFAULT_IG_STEPS
    """Integration steps of saliency=integrated_gradients (captum, Gauss-Legendre)."""

    def saliency_function(self) -> SaliencyFunction:
        """The ``saliency(model, x, y)`` callable these options name (:func:`saliency_function`); the runner hands it
        to the evaluator as ``ctx.saliency``."""
        return saliency_function(self.saliency, self.ig_steps)

    def saliency_map(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The saliency map of the batch ``x`` (N, C, H, W) for the labels ``y`` (N,) with the chosen method:
        detached, the shape of ``x``. The model's train/eval mode is left as it is."""
        return self.saliency_function()(model, x, y)

    @property
    def input_gradients_per_map(self) -> int:
        """How many input-gradient passes (forward + backward over the batch) one map costs: ``ig_steps`` for
        ``integrated_gradients`` (captum runs one forward and backward per quadrature node, at the batch's size with
        ``internal_batch_size`` = the batch), 1 for ``input_gradient`` and ``x_gradient`` (one input gradient; the
        product with x − baseline is not counted)."""
        return self.ig_steps if self.saliency == "integrated_gradients" else 1


#: The names of :class:`SaliencyOptions`' fields.
_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(SaliencyOptions))


def saliency_options(config: Any) -> SaliencyOptions:
    """The saliency options of an evaluator config: the config itself when it inherits :class:`SaliencyOptions`;
    the defaults (``input_gradient``) for a config without the options.

    Deprecated, for one release: a dataclass Config that declares a ``saliency`` field itself, without inheriting
    :class:`SaliencyOptions`, still gets the method it names (read through ``dataclasses.asdict``), with a
    ``DeprecationWarning`` asking it to inherit the options.
    """
    if isinstance(config, SaliencyOptions):
        return config
    declared = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    if "saliency" not in declared:
        return SaliencyOptions()
    warnings.warn(f"{type(config).__qualname__} declares the saliency option itself; inherit "
                  f"gibench.api.saliency.SaliencyOptions instead (a Config that does not will explain with "
                  f"input_gradient from the next release)", DeprecationWarning, stacklevel=3)
    values = dataclasses.asdict(config)
    return SaliencyOptions(**{name: values[name] for name in _OPTION_NAMES if name in declared})


def saliency_for(config: Any) -> SaliencyFunction:
    """The saliency function an evaluator config asks for (:func:`saliency_options`, then
    :meth:`SaliencyOptions.saliency_function`): ``input_gradient`` for a config without the options."""
    return saliency_options(config).saliency_function()


def pixel_scores(grad: Tensor, reduction: PixelReduction = "abs_sum") -> Tensor:
    """Aggregate a (N, C, H, W) gradient into per-pixel scores.

    ``abs_sum`` (default): Σ_c |g_c|, shape (N, H, W). ``channel_std``: the standard deviation of the signed gradient
    across channels, as Srinivas & Fleuret's code does on RGB (zero for one channel, so it falls back to |g| there),
    shape (N, H, W). ``abs``: per-coordinate |g|, shape (N, C, H, W), as DiffROAR ranks coordinates.
    """
    if reduction == "abs_sum":
        return grad.abs().sum(dim=1)
    if reduction == "channel_std":
        if grad.shape[1] == 1:
            return grad.abs()[:, 0]
        return grad.std(dim=1, unbiased=False)
    if reduction == "abs":
        return grad.abs()
    raise ValueError(f"unknown pixel reduction {reduction!r}; use 'abs_sum', 'channel_std' or 'abs'")


def mask_mass_share(scores: Tensor, mask: Tensor) -> Tensor:
    """Per image the share of the pixel-score mass inside the mask, Σ_mask s / Σ s, (N,) float64; an all-zero map
    gets the mask's share of the pixels (a uniform map's). ``scores`` (N, H, W) non-negative, ``mask`` (N, H, W) bool.
    ``blockmnist``'s signal share and ``decoy_reliance``'s decoy share."""
    flat, m = scores.flatten(1), mask.flatten(1)
    total = flat.sum(1)
    inside = torch.where(m, flat, 0.0).sum(1)
    uniform = m.sum(1).to(flat.dtype) / m.shape[1]
    share = torch.where(total > 0, inside / total.clamp_min(torch.finfo(flat.dtype).tiny), uniform)
    return share.double()
