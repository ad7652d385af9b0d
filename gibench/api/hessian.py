"""Input-Hessian helpers for regularizers: estimators of the trace of the label logit's input Hessian, tr ∇²ₓ f_y(x),
one per sample, and the score-matching objective built on them.

Public API (docs/architecture.md, "Plugin imports"): the built-in score-matching family uses these, and a third-party
regularizer may too. The objective is Hyvärinen's score matching ("Estimation of Non-Normalized Statistical Models by
Score Matching", Aapo Hyvärinen, JMLR 2005) applied to Srinivas & Fleuret's reading of the label logit as an
unnormalized class-conditional log-density, log p(x | y) = f_y(x) − log Z_y ("Rethinking the Role of Gradient-based
Attribution Methods for Model Interpretability", Suraj Srinivas, François Fleuret, ICLR 2021; reference code
idiap/rethinking-saliency). One implementation of each piece (docs/architecture.md, "Saliency"):

Trace estimators

* :func:`taylor_trace`: Srinivas & Fleuret's second-order Taylor estimate
  h = (2/σ²)·(f_y(x+v) − f_y(x)), v ~ N(0, σ²I), averaged over ``num_samples`` draws. Since
  f_y(x+v) − f_y(x) = ∇f_y·v + ½ vᵀ∇²f_y v + O(‖v‖³), E[h] = tr ∇²f_y + O(σ²); the first-order term has mean zero
  but a standard deviation of 2‖∇f_y‖/σ per draw. Cost: one extra forward per draw.
* :func:`antithetic_trace`: (f_y(x+v) + f_y(x−v) − 2 f_y(x))/σ², which cancels the first-order (and every odd)
  term; same expectation as the plain estimate (v and −v have the same law), much lower variance. Antithetic
  pairing is gibench's own choice here, not in the paper. Cost: two extra forwards per draw.
* :func:`hessian_quadratic_form`: vᵀ∇²f_y v by a Hessian-vector product (double backward through the input
  gradient); with E[vvᵀ] = I it is Hutchinson's unbiased estimate of the trace ("A Stochastic Estimator of the Trace
  of the Influence Matrix for Laplacian Smoothing Splines", M. F. Hutchinson, 1989), and the projected Hessian term
  of sliced score matching ("Sliced Score Matching: A Scalable Approach to Density and Score Estimation", Yang Song,
  Sahaj Garg, Jiaxin Shi, Stefano Ermon, UAI 2019). Cost: one extra backward (with ``create_graph``) per draw, and
  the training backward then runs through it.
* :func:`projection`: the random directions v of a Hessian-vector product, Rademacher (±1, the minimum-variance law
  for Hutchinson's estimator) or standard Gaussian; :data:`PROJECTIONS` names them.

The clean label logits f_y(x) always come from the training forward pass; noisy passes run with the BatchNorm mode
``bn_mode`` (see :mod:`gibench.api.passes`) and the global torch RNG, so a seeded trainer is
reproducible. Draw order (relied on by the tests): for each draw, one ``torch.randn_like(x)`` (Taylor estimates) or
one :func:`projection` (Hessian-vector products).

The training forward

* :func:`clean_pass`: the training forward with a differentiable input gradient, ``(x_leaf, logits, ∇x f_y)``.
* :func:`higher_order_batch_norm`: train-mode BatchNorm has no third-order derivative in PyTorch, which a loss built
  on a Hessian-vector product needs; while active, BatchNorm is recomputed from elementary ops (same statistics and
  running-stat update, equal up to rounding).

The objective

* :func:`squared_norm`: ‖t_b‖² per sample over all non-batch dimensions.
* :func:`score_matching_penalty`: Srinivas & Fleuret's penalty mean_b h + ½·mean_b ‖∇x f_y‖² + μ·mean_b h², from
  any trace estimate h.
* :class:`TaylorScoreMatchingConfig` and :func:`taylor_score_matching_loss`: the hyper-parameters (names, ranges,
  defaults and help stated once) and the whole training loss CE + λ·penalty of score matching with a Taylor trace
  estimate, shared by ``score_matching`` (:func:`taylor_trace`) and ``score_matching_antithetic``
  (:func:`antithetic_trace`), which differ only in the estimator they pass (:data:`TraceEstimator`).
"""

from __future__ import annotations

__all__ = [
    "PROJECTIONS", "TaylorScoreMatchingConfig", "TraceEstimator", "antithetic_trace", "clean_pass",
    "hessian_quadratic_form", "higher_order_batch_norm", "projection", "score_matching_penalty", "squared_norm",
    "taylor_score_matching_loss", "taylor_trace",
]

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gibench.api.passes import extra_pass_bn, full_precision
from gibench.api.regularizer import TrainingLoss
from gibench.api.saliency import label_logit, leaf_logits_and_input_gradient, logits_and_input_gradient
from gibench.core.config_types import BNMode, NumSamples, Sigma, Weight, plugin_config

PROJECTIONS: tuple[str, ...] = ("rademacher", "gaussian")


def taylor_trace(
    model: nn.Module, x: Tensor, y: Tensor, f_clean: Tensor, sigma: float, num_samples: int, bn_mode: str
) -> Tensor:
    """Plain Taylor estimate of tr ∇²ₓ f_y, shape (N,). ``f_clean`` = f_y(x) from the training forward (with graph)."""
    diff = torch.zeros_like(f_clean)
    with extra_pass_bn(model, bn_mode):
        for _ in range(num_samples):
            v = torch.randn_like(x) * sigma
            diff = diff + (label_logit(model(x + v), y) - f_clean)
    return diff * (2.0 / (sigma * sigma * num_samples))


def antithetic_trace(
    model: nn.Module, x: Tensor, y: Tensor, f_clean: Tensor, sigma: float, num_samples: int, bn_mode: str
) -> Tensor:
    """Antithetic Taylor estimate (f_y(x+v) + f_y(x−v) − 2 f_y(x))/σ², averaged over draws, shape (N,)."""
    diff = torch.zeros_like(f_clean)
    with extra_pass_bn(model, bn_mode):
        for _ in range(num_samples):
            v = torch.randn_like(x) * sigma
            diff = diff + (label_logit(model(x + v), y) + label_logit(model(x - v), y) - 2.0 * f_clean)
    return diff * (1.0 / (sigma * sigma * num_samples))


def projection(x: Tensor, kind: str) -> Tensor:
    """A random direction with E[vvᵀ] = I, shaped like ``x``: Rademacher (±1) or standard Gaussian."""
    if kind == "rademacher":
        return torch.randint_like(x, 0, 2).mul_(2).sub_(1)
    if kind == "gaussian":
        return torch.randn_like(x)
    raise ValueError(f"unknown projection {kind!r}; use one of {PROJECTIONS}")


def _batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
                bias: Tensor | None = None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``F.batch_norm`` from elementary ops, so that it has derivatives of every order (the native kernel stops at
    the second order in training mode). Same statistics and running-stat update (unbiased variance), same result up to
    rounding."""
    shape = [1, -1] + [1] * (input.dim() - 2)
    if training:
        dims = [0, *range(2, input.dim())]
        mean = input.mean(dims)
        var = input.var(dims, unbiased=False)
        if running_mean is not None and running_var is not None:
            count = input.numel() // input.shape[1]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                running_var.mul_(1 - momentum).add_(var.detach() * (count / max(count - 1, 1)), alpha=momentum)
    else:
        mean, var = running_mean, running_var
    out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


class _HigherOrderBatchNorm(TorchFunctionMode):
    """Route ``F.batch_norm`` (torch's and timm's BatchNorm modules call it) to :func:`_batch_norm`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.batch_norm:
            return _batch_norm(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@contextmanager
def higher_order_batch_norm(enabled: bool = True) -> Iterator[None]:
    """While active, BatchNorm layers compute with elementary ops and support third-order derivatives, which a
    Hessian-vector product inside a training loss needs (train-mode ``F.batch_norm`` raises "does not support 3rd+
    order derivatives"). Only the forward pass needs it; it costs a few microseconds of Python per op."""
    with _HigherOrderBatchNorm() if enabled else nullcontext():
        yield


def clean_pass(model: nn.Module, x: Tensor, y: Tensor, higher_order: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The training forward with a differentiable input gradient: ``(x_leaf, logits, ∇x f_y)``.

    :func:`gibench.api.saliency.leaf_logits_and_input_gradient` with ``create_graph=True``; ``higher_order`` runs the
    forward under :func:`higher_order_batch_norm`, for losses that back-propagate through a Hessian-vector product.
    """
    with higher_order_batch_norm(higher_order):
        return leaf_logits_and_input_gradient(model, x, y, create_graph=True)


def hessian_quadratic_form(leaf: Tensor, grad: Tensor, v: Tensor, create_graph: bool = True) -> Tensor:
    """vᵀ ∇²ₓ f_y v per sample, shape (N,), differentiable in the parameters when ``create_graph`` (double backward).

    ``grad`` = ∇x Σ_b f_{y_b}(x_b) at ``leaf`` built with ``create_graph=True``. Summing grad·v over the batch and
    differentiating once more gives every sample's Hessian-vector product in one backward (samples do not interact
    unless the model mixes them, as train-mode BatchNorm does through its batch statistics).
    """
    (hv,) = torch.autograd.grad((grad * v).sum(), leaf, create_graph=create_graph, retain_graph=True)
    return (hv * v).flatten(1).sum(1)


def squared_norm(t: Tensor) -> Tensor:
    """‖t_b‖² over all non-batch dimensions, shape (N,)."""
    return t.flatten(1).pow(2).sum(1)


def score_matching_penalty(h: Tensor, grad: Tensor, mu: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Srinivas & Fleuret's objective: mean_b h + 0.5·mean_b ‖∇x f_y‖² + μ·mean_b h².

    ``h`` (N,) estimates tr ∇²ₓ f_y (already averaged over draws, then squared for the stability term, as the
    reference does). Returns the penalty and its detached parts for logging.
    """
    trace = h.mean()
    norm = 0.5 * squared_norm(grad).mean()
    stability = h.pow(2).mean()
    penalty = trace + norm + mu * stability
    parts = {"hessian_trace": trace.detach(), "gradient_norm": norm.detach(), "stability": stability.detach()}
    return penalty, parts


# ----------------------------------------------------------------------------------------------------------------------
# Score matching with a Taylor trace estimate (score_matching, score_matching_antithetic)

TraceEstimator = Callable[[nn.Module, Tensor, Tensor, Tensor, float, int, str], Tensor]
"""``(model, x, y, f_clean, sigma, num_samples, bn_mode) -> h`` of shape (N,): :func:`taylor_trace` or
:func:`antithetic_trace`."""


@plugin_config
class TaylorScoreMatchingConfig:
    """The hyper-parameters of score matching with a Taylor estimate of the trace (Srinivas & Fleuret); the
    defaults and the sources of their values are those of ``score_matching``'s docstring."""

    weight: Weight = 1e-3
    """λ on the score-matching penalty (paper; the public scripts use 1e-5)."""
    sigma: Sigma = 0.01
    """Std of the Taylor noise v in pixel units; the estimate divides by σ²."""
    mu: Weight = 1e-4
    """Stability weight on mean h² (poster; the submission and the code use 1e-3)."""
    num_samples: NumSamples = 1
    """Noise draws per step."""
    noisy_bn: BNMode = "train"
    """BatchNorm mode of the noisy pass (train: the reference's)."""


def taylor_score_matching_loss(model: nn.Module, x: Tensor, y: Tensor, config: TaylorScoreMatchingConfig,
                               trace: TraceEstimator) -> TrainingLoss:
    """CE + λ·(mean h + 0.5·mean ‖∇x f_y‖² + μ·mean h²), h = ``trace(...)`` with ``config``'s σ, draws and BatchNorm
    mode; logged parts: ``cross_entropy``, ``penalty`` and those of :func:`score_matching_penalty`.

    One forward pass serves the cross-entropy, ∇x f_y (with ``create_graph``) and the clean f_y(x) of the finite
    difference; the estimator runs its own noisy forwards. Everything inside runs in true float32
    (:func:`gibench.api.passes.full_precision`): a finite difference amplified by 2/σ² is meaningless in half
    precision.
    """
    with full_precision(x):
        logits, grad = logits_and_input_gradient(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y)
        h = trace(model, x, y, label_logit(logits, y), config.sigma, config.num_samples, config.noisy_bn)
        penalty, parts = score_matching_penalty(h, grad, config.mu)
    total = ce + config.weight * penalty
    return TrainingLoss(total=total, parts={"cross_entropy": ce.detach(), "penalty": penalty.detach(), **parts})
