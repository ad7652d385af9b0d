"""Backbones through timm, the in-tree nets, input normalization and the smoothness heuristic."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import gibench
from gibench.api.saliency import input_gradient
from gibench.core.errors import ConfigError, UnknownPluginError
from gibench.data.tensors import make_bundle
from gibench.testing import trained_model
from gibench.training.models import (
    GibenchCNN,
    Normalize,
    Softplus10,
    build_model,
    create_backbone,
    in_tree_backbones,
    is_piecewise_linear,
)


def _toy_bundle(c: int = 3, size: int = 16, n: int = 6):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, c, size, size, generator=g) * torch.linspace(0.2, 1.0, c).view(1, c, 1, 1)
    y = torch.arange(n) % 3
    return make_bundle("toy", x, y, x[:2], y[:2], num_classes=3)


def test_in_tree_nets_are_registered_with_timm() -> None:
    assert in_tree_backbones() == ["cifar_resnet18", "cifar_vgg11_bn", "gibench_cnn", "gibench_linear", "gibench_mlp"]
    for name in in_tree_backbones():
        assert timm.is_model(name) and name in timm.list_models()
    model = timm.create_model("gibench_cnn", num_classes=7, in_chans=2)
    assert isinstance(model, GibenchCNN) and model(torch.rand(3, 2, 28, 28)).shape == (3, 7)


@pytest.mark.parametrize("size", [16, 28, 32, 56])
def test_gibench_cnn_accepts_any_input_size(size: int) -> None:
    model = create_backbone("gibench_cnn", num_classes=10, in_chans=3)
    assert model(torch.rand(2, 3, size, size)).shape == (2, 10)
    assert model(torch.rand(2, 3, 56, 28)).shape == (2, 10)  # BlockMNIST's 56×28


def test_resnet18_softplus_has_no_relu() -> None:
    model = create_backbone("resnet18", num_classes=10, in_chans=3, act="softplus")
    kinds = {type(m) for m in model.modules()}
    assert Softplus10 in kinds
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert not is_piecewise_linear(model)
    softplus = next(m for m in model.modules() if isinstance(m, Softplus10))
    assert softplus.beta == 10.0
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert is_piecewise_linear(create_backbone("resnet18", num_classes=10, in_chans=3))  # ReLU + max-pool + BN


@pytest.mark.parametrize("act", ["relu", "softplus", "gelu", "silu", "tanh"])
def test_in_tree_activations(act: str) -> None:
    model = create_backbone("gibench_cnn", num_classes=10, in_chans=1, act=act)
    assert is_piecewise_linear(model) == (act == "relu")
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    mlp = create_backbone("gibench_mlp", num_classes=4, in_chans=1, act=act, img_size=20)
    assert is_piecewise_linear(mlp) == (act == "relu") and mlp(torch.rand(2, 1, 20, 20)).shape == (2, 4)


def test_softplus10_matches_formula_and_ignores_inplace() -> None:
    act = Softplus10(inplace=True)
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(act(x), torch.log1p(torch.exp(10 * x)) / 10)


def test_piecewise_linear_heuristic() -> None:
    assert is_piecewise_linear(create_backbone("gibench_cnn", num_classes=10, in_chans=1))
    assert is_piecewise_linear(create_backbone("gibench_linear", num_classes=10, in_chans=1))  # no activation
    piecewise = nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(), nn.ReLU6(), nn.Hardtanh(), nn.MaxPool1d(1))
    assert is_piecewise_linear(piecewise)
    for smooth in (nn.Sigmoid(), nn.ELU(), nn.LayerNorm(2), nn.Softplus()):
        assert not is_piecewise_linear(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), smooth))


def test_unknown_backbone_suggests_names() -> None:
    with pytest.raises(UnknownPluginError, match="resnet18") as info:
        create_backbone("resnet81", num_classes=10, in_chans=3)
    assert "Did you mean" in str(info.value)
    with pytest.raises(UnknownPluginError, match="gibench_cnn"):
        create_backbone("gibench_cn", num_classes=10, in_chans=1)


def test_unknown_option_names_backbone_and_option() -> None:
    with pytest.raises(ConfigError, match=r"'gibench_cnn'.*'depht'"):
        create_backbone("gibench_cnn", num_classes=10, in_chans=1, depht=3)
    with pytest.raises(ConfigError, match=r"'resnet18'.*'not_an_option'"):
        create_backbone("resnet18", num_classes=10, in_chans=3, not_an_option=1)
    with pytest.raises(ConfigError, match=r"'gibench_linear'.*'act'"):  # the linear net has no activation
        create_backbone("gibench_linear", num_classes=10, in_chans=1, act="relu")
    with pytest.raises(ConfigError, match=r"'gibench_cnn' could not be built.*width must be a positive integer"):
        create_backbone("gibench_cnn", num_classes=10, in_chans=1, width="wide")
    with pytest.raises(ConfigError, match=r"'resnet18' could not be built.*'output_stride': 3"):  # timm asserts
        create_backbone("resnet18", num_classes=10, in_chans=3, output_stride=3)
    with pytest.raises(ConfigError, match="Valid activations"):
        create_backbone("gibench_cnn", num_classes=10, in_chans=1, act="swishy")


def test_pretrained_and_hub_sources_are_rejected() -> None:
    with pytest.raises(ConfigError, match="does not download weights"):
        create_backbone("resnet18", num_classes=10, in_chans=3, pretrained=True)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        timm.create_model("gibench_cnn", pretrained=True)
    with pytest.raises(ConfigError, match="hf-hub"):
        create_backbone("hf-hub:timm/resnet18.a1_in1k", num_classes=10, in_chans=3)
    assert create_backbone("gibench_cnn", num_classes=10, in_chans=1, pretrained=False) is not None


def test_public_api_create_backbone() -> None:
    model = gibench.create_backbone("gibench_mlp", num_classes=5, in_chans=2, img_size=12, act="tanh")
    assert model(torch.rand(3, 2, 12, 12)).shape == (3, 5)


def test_build_model_normalizes_first() -> None:
    bundle = _toy_bundle()
    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"act": "softplus", "width": 4}, bundle).double()
    names = [name for name, _ in model.named_children()]
    assert names == ["normalize", "backbone"]
    assert isinstance(model[0], Normalize) and model.normalize.mean.shape == (1, 3, 1, 1)
    x = bundle.test.x.double()
    mean = torch.tensor(bundle.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = model.backbone((x - mean) / std)
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-9)  # buffers were stored in float32
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_build_model_sizes_flattening_nets_from_the_dataset() -> None:
    bundle = _toy_bundle(c=2, size=10)
    model = build_model("gibench_linear", {}, bundle)
    assert model.backbone.fc.in_features == 2 * 10 * 10 and model.backbone.fc.out_features == 3
    assert model(bundle.train.x).shape == (6, 3)


def test_normalize_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))(torch.rand(1, 1, 4, 4))


def test_linear_saliency_equals_weight_row() -> None:
    torch.manual_seed(0)
    net = create_backbone("gibench_linear", num_classes=4, in_chans=2, img_size=5).double()
    x = torch.rand(6, 2, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 2, 1])
    grad = input_gradient(net, x, y)
    expected = net.fc.weight.detach()[y].view(6, 2, 5, 5)
    assert torch.equal(grad, expected)
    # through the normalization layer the pixel-space gradient is W_y / std (chain rule, per channel)
    bundle = make_bundle("lin", x.float(), y, x.float()[:2], y[:2], num_classes=4)
    model = nn.Sequential(Normalize(bundle.mean, bundle.std), net).double()
    std = torch.tensor(bundle.std, dtype=torch.float64).float().double().view(1, 2, 1, 1)
    torch.testing.assert_close(input_gradient(model, x, y), expected / std, rtol=1e-12, atol=0)



def test_gibench_cnn_learns_mnist_subset_in_one_epoch(one_thread: None) -> None:
    """Cheap check: one epoch (92-94% over seeds 0-2 when measured); the 3-epoch figure is in
    gibench.training.models."""
    bundle = gibench.load_dataset("mnist_subset")
    model = trained_model(bundle, "gibench_cnn", epochs=1)
    with torch.no_grad():
        accuracy = (model(bundle.test.x).argmax(1) == bundle.test.y).float().mean().item()
    assert accuracy > 0.85
