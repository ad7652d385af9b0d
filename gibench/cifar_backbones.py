"""The CIFAR backbones of the seed papers: ResNet-18 with a 3×3 stride-1 stem, and VGG-11 with BatchNorm.

Both follow the CIFAR models that Srinivas & Fleuret (idiap/rethinking-saliency, ``models/resnet.py`` and
``models/vgg.py``) and most CIFAR work take from kuangliu/pytorch-cifar; :mod:`gibench.models` registers them with
timm as ``cifar_resnet18`` and ``cifar_vgg11_bn`` (options ``act``, ``in_chans``, ``num_classes``), where ``act`` is
resolved to an activation class exactly as for every gibench backbone (``act: softplus`` is ``Softplus(beta=10)``).

:class:`CifarResNet18` is timm's :class:`~timm.models.resnet.ResNet` (BasicBlock, layers [2, 2, 2, 2], widths
64-128-256-512, 1×1-convolution + BatchNorm shortcuts, global average pool, linear head) with the ImageNet stem
(7×7 stride-2 convolution and 3×3 stride-2 max-pool, which shrink a 32×32 image to 1×1 by the last stage) replaced
by one 3×3 stride-1 convolution without bias, followed by timm's BatchNorm and activation; no max-pool. 11,173,962
parameters for 10 classes and 3 channels, as kuangliu's. Feature maps on 32×32: 32, 32, 16, 8, 4 (28×28: 28, 28,
14, 7, 4). Choices the papers' code leaves open or does differently, stated: weights are initialized by timm
(Kaiming-normal fan-out for convolutions, BatchNorm γ = 1, β = 0) rather than PyTorch's per-layer defaults, and the
last BatchNorm of each block starts at γ = 1 (timm's ``zero_init_last`` is off, as in kuangliu's code).

:class:`CifarVGG11BN`: VGG-11 configuration [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M], each number a
3×3 convolution with padding 1 (with bias, as kuangliu's) followed by BatchNorm and the activation, each M a 2×2
max-pool with stride 2, then a global average pool and one linear layer 512 → classes (kuangliu's head; the
ImageNet VGG's 4096-wide MLP head is not used). 9,231,114 parameters for 10 classes and 3 channels. The pools use
``ceil_mode=True`` so that 28×28 inputs work: 28 → 14 → 7 → 4 → 2 → 1 (at 32×32, 32 → 16 → 8 → 4 → 2 → 1, identical
to floor mode, so the CIFAR network is unchanged); the global average pool makes the head independent of the input
size (it is the identity on the final 1×1 map at 28 and 32 px).
"""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import Tensor, nn

__all__ = ["CifarResNet18", "CifarVGG11BN", "VGG11_LAYERS"]

#: The VGG-11 ("A") configuration: output channels of each 3×3 convolution, "M" for a 2×2 max-pool.
VGG11_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class CifarResNet18(ResNet):
    """timm's ResNet-18 with the CIFAR stem: 3×3 stride-1 convolution, no max-pool (see the module docstring)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans, act_layer=act_layer,
                         zero_init_last=False)
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits the others
        self.maxpool = nn.Identity()
        for info in self.feature_info:  # the stem no longer downsamples by 4
            info["reduction"] = max(1, info["reduction"] // 4)


class CifarVGG11BN(nn.Module):
    """VGG-11 with BatchNorm after every convolution and a linear head (see the module docstring)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act_layer: type[nn.Module] = nn.ReLU,
                 layers: tuple[int | str, ...] = VGG11_LAYERS) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(*_vgg_features(in_chans, act_layer, layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        widths = [w for w in layers if w != "M"]
        self.head = nn.Linear(int(widths[-1]), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _vgg_features(in_chans: int, act_layer: type[nn.Module], layers: tuple[int | str, ...]) -> list[nn.Module]:
    modules: list[nn.Module] = []
    channels = in_chans
    for item in layers:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        width = int(item)
        modules += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width),
                    act_layer(inplace=True)]
        channels = width
    return modules
