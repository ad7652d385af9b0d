"""The seed papers' CIFAR backbones: cifar_resnet18 (3×3 stride-1 stem, no max-pool) and cifar_vgg11_bn."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from gibench.core.errors import ConfigError
from gibench.training.cifar_backbones import VGG11_LAYERS, CifarResNet18, CifarVGG11BN
from gibench.training.models import Softplus10, build_model, create_backbone, in_tree_backbones, is_piecewise_linear

CIFAR = ("cifar_resnet18", "cifar_vgg11_bn")


def _bn(c: int) -> int:
    return 2 * c  # γ and β


def _expected_resnet18_parameters(in_chans: int, classes: int) -> int:
    """Counted from the architecture: stem, 4 stages of 2 BasicBlocks, 1×1 shortcuts where the shape changes, head."""
    total = 64 * in_chans * 9 + _bn(64)
    c_in = 64
    for width in (64, 128, 256, 512):
        for block in range(2):
            total += c_in * width * 9 + _bn(width) + width * width * 9 + _bn(width)
            if block == 0 and c_in != width:
                total += c_in * width + _bn(width)
            c_in = width
    return total + 512 * classes + classes


def _expected_vgg11_parameters(in_chans: int, classes: int) -> int:
    total, c_in = 0, in_chans
    for item in VGG11_LAYERS:
        if item != "M":
            total += c_in * item * 9 + item + _bn(item)  # conv weight + bias, BatchNorm
            c_in = item
    return total + 512 * classes + classes


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_architecture_and_kuangliu() -> None:
    resnet = create_backbone("cifar_resnet18", num_classes=10, in_chans=3)
    vgg = create_backbone("cifar_vgg11_bn", num_classes=10, in_chans=3)
    assert _count(resnet) == _expected_resnet18_parameters(3, 10) == 11_173_962  # kuangliu/pytorch-cifar ResNet18
    assert _count(vgg) == _expected_vgg11_parameters(3, 10) == 9_231_114
    assert (_count(create_backbone("cifar_resnet18", num_classes=100, in_chans=1))
            == _expected_resnet18_parameters(1, 100))
    assert _count(create_backbone("cifar_vgg11_bn", num_classes=100, in_chans=1)) == _expected_vgg11_parameters(1, 100)


@pytest.mark.parametrize("name", CIFAR)
@pytest.mark.parametrize(("chans", "size"), [(1, 28), (3, 32)])
def test_output_shapes_on_mnist_and_cifar_sizes(name: str, chans: int, size: int) -> None:
    model = create_backbone(name, num_classes=7, in_chans=chans).eval()
    assert model(torch.rand(2, chans, size, size)).shape == (2, 7)


def test_resnet_stem_keeps_the_resolution() -> None:
    model = create_backbone("cifar_resnet18", num_classes=10, in_chans=3).eval()
    assert isinstance(model, CifarResNet18) and isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.bias is None
    assert model.forward_features(torch.rand(1, 3, 32, 32)).shape == (1, 512, 4, 4)  # 32 / 8, not 32 / 32
    assert model.forward_features(torch.rand(1, 3, 28, 28)).shape == (1, 512, 4, 4)
    assert [info["reduction"] for info in model.feature_info] == [1, 1, 2, 4, 8]
    assert timm.create_model("resnet18", num_classes=10).maxpool.__class__ is nn.MaxPool2d  # timm's own unchanged


def test_vgg_pools_reach_one_pixel_at_28_and_32() -> None:
    model = create_backbone("cifar_vgg11_bn", num_classes=10, in_chans=1).eval()
    assert isinstance(model, CifarVGG11BN)
    assert model.features(torch.rand(1, 1, 28, 28)).shape == (1, 512, 1, 1)  # 28, 14, 7, 4, 2, 1 (ceil mode)
    assert model.features(torch.rand(1, 1, 32, 32)).shape == (1, 512, 1, 1)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [w for w in VGG11_LAYERS if w != "M"]
    assert all(isinstance(model.features[i + 1], nn.BatchNorm2d) for i, m in enumerate(model.features)
               if isinstance(m, nn.Conv2d))
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 512


@pytest.mark.parametrize(("name", "activations"), [("cifar_resnet18", 1 + 2 * 8), ("cifar_vgg11_bn", 8)])
def test_softplus_replaces_every_relu(name: str, activations: int) -> None:
    smooth = create_backbone(name, num_classes=10, in_chans=3, act="softplus")
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    softplus = [m for m in smooth.modules() if isinstance(m, Softplus10)]
    assert len(softplus) == activations and all(m.beta == 10.0 for m in softplus)
    assert not is_piecewise_linear(smooth)
    plain = create_backbone(name, num_classes=10, in_chans=3)
    assert sum(isinstance(m, nn.ReLU) for m in plain.modules()) == activations and is_piecewise_linear(plain)


def test_registered_with_timm_and_listed() -> None:
    for name in CIFAR:
        assert timm.is_model(name) and name in in_tree_backbones()
    assert isinstance(timm.create_model("cifar_vgg11_bn", num_classes=5, in_chans=2), CifarVGG11BN)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        timm.create_model("cifar_resnet18", pretrained=True)
    with pytest.raises(ConfigError, match=r"'cifar_resnet18'.*'width'.*Options of cifar_resnet18: act"):
        create_backbone("cifar_resnet18", num_classes=10, in_chans=3, width=32)
    with pytest.raises(ConfigError, match=r"unknown activation act='softpls'.*Did you mean 'softplus'"):
        create_backbone("cifar_vgg11_bn", num_classes=10, in_chans=3, act="softpls")


@pytest.mark.parametrize("name", CIFAR)
def test_forward_backward_through_build_model_on_the_bundled_data(name: str, small_bundle) -> None:
    torch.manual_seed(0)
    model = build_model(name, {"act": "softplus"}, small_bundle).train()
    x, y = small_bundle.train.x[:8], small_bundle.train.y[:8]
    assert x.shape[1:] == (1, 28, 28)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert torch.isfinite(loss) and 1.0 < float(loss.detach()) < 5.0  # near log(10) at initialization
