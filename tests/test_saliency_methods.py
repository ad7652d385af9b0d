"""The saliency methods of gibench.saliency: X-Gradient, its baseline, Integrated Gradients and the method option."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from gibench.models import Normalize
from gibench.saliency import attribution_baseline, input_gradient, x_gradient


def _normalized_mlp(bias: bool) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias))
    return nn.Sequential(OrderedDict(normalize=Normalize([0.2, 0.5, 0.7], [0.3, 0.2, 0.25]), backbone=net)).double()


def test_baseline_is_the_mean_colour_and_zero_without_normalize() -> None:
    model = _normalized_mlp(bias=False)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    base = attribution_baseline(model, x)
    assert base.shape == (1, 3, 1, 1) and base.dtype == torch.float64
    torch.testing.assert_close(base.flatten(), torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64))
    # zero in normalized space
    torch.testing.assert_close(model.normalize(base.expand_as(x)), torch.zeros_like(x))
    bare = model.backbone
    torch.testing.assert_close(attribution_baseline(bare, x), torch.zeros(1, 3, 1, 1, dtype=torch.float64))


def test_x_gradient_is_offset_times_input_gradient() -> None:
    model = _normalized_mlp(bias=True)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    mean = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64).view(1, 3, 1, 1)
    expected = (x - mean) * input_gradient(model, x, y)
    torch.testing.assert_close(x_gradient(model, x, y), expected)
    assert not x_gradient(model, x, y).requires_grad


def test_x_gradient_completeness_on_a_homogeneous_backbone() -> None:
    """On a bias-free ReLU backbone, Σ X-Gradient = f_y(x) - f_y(baseline) = f_y(x) (Hesse et al.)."""
    model = _normalized_mlp(bias=False)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    total = x_gradient(model, x, y).flatten(1).sum(1)
    logit = model(x).gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(total, logit, rtol=1e-12, atol=1e-12)


def test_x_gradient_create_graph_reaches_parameters() -> None:
    model = _normalized_mlp(bias=False)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    attribution = x_gradient(model, x, y, create_graph=True)
    (attribution.abs().sum()).backward()
    weight = model.backbone[1].weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
