"""The CIFAR backbones of the seed papers: ResNet-18 with a 3×3 stride-1 stem, and VGG-11 with BatchNorm.

Both follow the CIFAR models that Srinivas & Fleuret (idiap/rethinking-saliency, ``models/resnet.py`` and
``models/vgg.py``) and most CIFAR work take from kuangliu/pytorch-cifar; :mod:`gibench.training.models` registers them
with timm as ``cifar_resnet18`` and ``cifar_vgg11_bn`` (options ``act``, ``in_chans``, ``num_classes``), where ``act``
is resolved to an activation class exactly as for every gibench backbone (``act: softplus`` is ``Softplus(beta=10)``).

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

X variants (``bias: false``; Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks", NeurIPS
2021, code ``visinf/fast-axiomatic-attribution``), nonnegatively homogeneous with ReLU:

* :class:`CifarXResNet18`: the paper's X-ResNet (``xfixup_resnet``) in the CIFAR layout above: no BatchNorm
  anywhere, every convolution and the classifier without bias, and none of Fixup's scalar biases nor its ``scale``
  multiplier (the paper removes both; ``scale`` is not needed for homogeneity but is dropped as they do). Blocks:
  conv3×3 → ReLU → conv3×3, plus the identity or, where the shape changes, a bias-free 1×1 stride-2 convolution,
  then ReLU. Fixup initialisation (Zhang, Dauphin & Ma, ICLR 2019) as in the paper's code: the first convolution of
  each residual branch N(0, 2/(out·k²))·L^-1/2 with L = 8 blocks, the second zero, the 1×1 shortcut
  N(0, 2/(out·k²)), the classifier weight zero; the stem keeps PyTorch's default initialisation (as theirs). Every
  residual branch starts as zero, so the untrained net is the stem followed by ReLUs and pools. 11,164,352
  parameters for 10 classes and 3 channels (the BatchNorm ResNet's 11,173,962 less its 9,600 BatchNorm parameters and
  its 10 classifier biases).
* :class:`CifarVGG11BN` with ``bias=False``: the same configuration with bias-free convolutions and classifier and no
  BatchNorm (the paper's X-VGG has none: BatchNorm's shift and running mean are additive constants). Without
  BatchNorm, initialisation follows torchvision's VGG, which the paper's X-VGG inherits: Kaiming-normal (fan-out,
  ReLU) convolutions, classifier N(0, 0.01²). 9,222,848 parameters for 10 classes and 3 channels (the BatchNorm
  VGG's 9,231,114 less 5,504 BatchNorm parameters and 2,762 biases).
"""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import Tensor, nn

__all__ = ["CifarResNet18", "CifarVGG11BN", "CifarXResNet18", "VGG11_LAYERS", "XBasicBlock"]

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


def _fixup_normal_(conv: nn.Conv2d, scale: float = 1.0) -> None:
    """Fixup's He initialisation by fan-out: N(0, 2 / (out_channels · k_h · k_w)) times ``scale``."""
    fan_out = conv.weight.shape[0] * conv.weight.shape[2] * conv.weight.shape[3]
    nn.init.normal_(conv.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5 * scale)


class XBasicBlock(nn.Module):
    """conv3×3 → act → conv3×3, plus the identity or a bias-free 1×1 convolution, then act; no bias, no BatchNorm."""

    def __init__(self, in_planes: int, planes: int, stride: int, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.downsample = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                           if stride != 1 or in_planes != planes else None)
        self.act2 = act_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act2(self.conv2(self.act1(self.conv1(x))) + shortcut)


class CifarXResNet18(nn.Module):
    """Hesse et al.'s X-ResNet-18 (Fixup, no BatchNorm, no biases) with the CIFAR stem; see the module docstring."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act_layer: type[nn.Module] = nn.ReLU,
                 bias: bool = False) -> None:
        super().__init__()
        if bias:
            raise ValueError("CifarXResNet18 has no biases; use CifarResNet18 for the regular network")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.act1 = act_layer(inplace=True)
        stages, in_planes = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(XBasicBlock(in_planes, width, stride, act_layer),
                                        XBasicBlock(width, width, 1, act_layer)))
            in_planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes, bias=False)
        blocks = [m for m in self.modules() if isinstance(m, XBasicBlock)]
        for block in blocks:
            _fixup_normal_(block.conv1, len(blocks) ** -0.5)
            nn.init.zeros_(block.conv2.weight)
            if block.downsample is not None:
                _fixup_normal_(block.downsample)
        nn.init.zeros_(self.fc.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.act1(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


class CifarVGG11BN(nn.Module):
    """VGG-11 with BatchNorm after every convolution and a linear head (see the module docstring).

    ``bias=False``: the X-VGG-11, without BatchNorm and without any bias (torchvision's VGG initialisation).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act_layer: type[nn.Module] = nn.ReLU,
                 layers: tuple[int | str, ...] = VGG11_LAYERS, bias: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(*_vgg_features(in_chans, act_layer, layers, bias))
        self.pool = nn.AdaptiveAvgPool2d(1)
        widths = [w for w in layers if w != "M"]
        self.head = nn.Linear(int(widths[-1]), num_classes, bias=bias)
        if not bias:
            for module in self.features:
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.normal_(self.head.weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _vgg_features(in_chans: int, act_layer: type[nn.Module], layers: tuple[int | str, ...],
                  bias: bool = True) -> list[nn.Module]:
    """Convolution (+ BatchNorm with biases) + activation per width, 2×2 max-pool per "M"."""
    modules: list[nn.Module] = []
    channels = in_chans
    for item in layers:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        width = int(item)
        modules += [nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=bias)]
        modules += [nn.BatchNorm2d(width)] if bias else []
        modules += [act_layer(inplace=True)]
        channels = width
    return modules
