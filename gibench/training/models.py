"""Backbones and the input-normalizing model wrapper.

Every backbone is built by ``timm.create_model`` (docs/architecture.md, "Layers"): any timm architecture name works, and
gibench's small CPU-friendly nets are registered with timm too (importing this module registers them), so a suite names
both kinds alike:

* ``gibench_cnn``: conv(C→w,3)+act, conv(w→w,3)+act, maxpool 2, conv(w→2w,3)+act, maxpool 2, adaptive average pool
  to 5×5, flatten, linear(50w→hidden)+act, linear(hidden→classes); w = ``width`` = 32 and hidden = 128 by default
  (234k parameters for one channel). Convolutions are unpadded ("valid"): on 28×28 the maps are 26, 24, 12, 10, 5,
  so the adaptive pool is the identity there, and it makes any input ≥ 16 px work (16 px gives 2×2 maps, repeated
  into 5×5 cells). Measured with a plain loop on mnist_subset (4,000 train digits, shuffled batches of 64, Adam
  lr 1e-3, cross-entropy, seeds 0-2, torch 2.14 on CPU): 96.2-96.6% test accuracy after 3 epochs with ReLU,
  96.3-96.8% with softplus; about 3 s (ReLU) / 3.7 s (softplus) per epoch on one CPU thread.
* ``gibench_mlp``: flatten, linear(C·H·W→hidden)+act, linear(hidden→hidden)+act, linear(hidden→classes).
* ``cifar_resnet18`` and ``cifar_vgg11_bn``: the seed papers' CIFAR ResNet-18 (3×3 stride-1 stem, no max-pool) and
  VGG-11 with BatchNorm; see :mod:`gibench.training.cifar_backbones` for their layers and how they handle 28×28 inputs.
  timm's own ``resnet18`` keeps the ImageNet stem and stays usable as any timm model.
* ``gibench_linear``: flatten, one linear layer, no activation. Its input-gradient of logit y is exactly the weight
  row y reshaped to (C, H, W), which makes it a ground truth for saliency tests.

The flattening nets need the input size: ``img_size`` (int or (H, W), default 28); :func:`build_model` fills it in
from the dataset.

Activations (``act``): 'relu', 'softplus' (``nn.Softplus(beta=10)``, as Srinivas & Fleuret replace ReLU so that the
input Hessian is non-zero), 'gelu', 'silu', 'tanh'. For timm models ``act`` becomes ``act_layer=<class>``; this works
for architectures whose constructor takes ``act_layer`` (ResNets, ConvNeXt, ViT, ...), and is a ConfigError for the
others. Classes are chosen to accept ``inplace=`` because timm passes ``inplace=True`` to activation layers.

X-DNNs (Hesse, Schaub-Meyer & Roth, "Fast Axiomatic Attribution for Neural Networks", NeurIPS 2021): every in-tree
backbone takes ``bias`` (default true). ``bias: false`` removes every convolution and linear bias (the classifier's
too) and every BatchNorm: ``cifar_resnet18`` becomes the Fixup X-ResNet-18 and ``cifar_vgg11_bn`` the VGG-11 without
BatchNorm (see :mod:`gibench.training.cifar_backbones`); the others keep their layers without biases. With ReLU (the
default ``act``) the backbone is then nonnegatively homogeneous, f(α·z) = α·f(z) for α ≥ 0, *in normalized space*: the
model stays ``Sequential(normalize=Normalize(mean, std), backbone)``, its affine first layer is outside the X-DNN, and
the zero baseline of X-Gradient and Integrated Gradients is zero in normalized space, the dataset's mean colour in
pixels (:func:`gibench.api.saliency.attribution_baseline`), as in the paper, whose normalization is in the data
transform. Construction with ``bias: false`` checks the property numerically
(:func:`gibench.training.homogeneity.check_homogeneous`) and refuses a net that fails it (``act: softplus``, say) with a
ConfigError naming the offending layer. The option is not passed to timm's own architectures (they reject it as an
unknown option). The regular and X variants of a backbone differ in more than the biases where the regular one has
BatchNorm (``cifar_resnet18``, ``cifar_vgg11_bn``): the paper's regular ResNet is Fixup with biases, gibench's regular
one is the seed papers' BatchNorm ResNet. Measured with ``gibench.training.train.fit`` on mnist_subset (erm, 3 epochs,
Adam lr 1e-3, batch 64, seed 0, CPU): ``gibench_cnn`` X-DNN 96.50 % test accuracy, its biased ReLU twin 96.40 %.

Pretrained weights are out of scope: gibench never downloads weights, so ``pretrained: true`` is a ConfigError, and
so are ``hf-hub:``/``local-dir:`` model sources.

Inputs stay in pixel space [0, 1]: :func:`build_model` puts :class:`Normalize` (train-split channel statistics) as
the model's first layer, so noise levels, attack radii and saliency maps are in pixel units (docs/architecture.md,
"Pixel space").
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from timm.layers import activations as timm_act
from timm.models import register_model
from torch import Tensor, nn

from gibench.api.dataset import DatasetBundle
from gibench.core.errors import ConfigError, UnknownPluginError
from gibench.core.params import did_you_mean
from gibench.training.cifar_backbones import CifarResNet18, CifarVGG11BN, CifarXResNet18
from gibench.training.homogeneity import PROBE_SIZE, check_homogeneous

__all__ = [
    "ACTIVATIONS", "GibenchCNN", "GibenchLinear", "GibenchMLP", "Normalize", "Softplus10", "build_model",
    "create_backbone", "in_tree_backbones", "is_piecewise_linear",
]


class Softplus10(nn.Softplus):
    """``Softplus(beta=10)``, Srinivas & Fleuret's smooth ReLU. Accepts and ignores ``inplace`` (timm passes it)."""

    def __init__(self, beta: float = 10.0, threshold: float = 20.0, inplace: bool = False) -> None:
        super().__init__(beta=beta, threshold=threshold)


#: ``act`` name -> activation class (each accepts ``inplace=``).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": Softplus10,
    "gelu": timm_act.GELU,
    "silu": nn.SiLU,
    "tanh": timm_act.Tanh,
}


def activation_class(act: str | type[nn.Module]) -> type[nn.Module]:
    """The class for an ``act`` option (a name from :data:`ACTIVATIONS`, or a module class)."""
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act
    if isinstance(act, str) and act in ACTIVATIONS:
        return ACTIVATIONS[act]
    raise ConfigError(
        f"unknown activation act={act!r}.{did_you_mean(str(act), list(ACTIVATIONS))} "
        f"Valid activations: {', '.join(ACTIVATIONS)}."
    )


# ----------------------------------------------------------------------------------------------------------------------
# In-tree nets


def _positive_ints(**values: Any) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _image_pixels(in_chans: int, img_size: int | Sequence[int]) -> int:
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(size) != 2:
        raise ValueError(f"img_size must be an integer or (height, width), got {img_size!r}")
    _positive_ints(in_chans=in_chans, img_height=size[0], img_width=size[1])
    return in_chans * size[0] * size[1]


class GibenchCNN(nn.Module):
    """Small CNN for MNIST-scale work on the CPU (see the module docstring for the layers)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, act: str | type[nn.Module] = "relu",
                 width: int = 32, hidden: int = 128, bias: bool = True) -> None:
        super().__init__()
        _positive_ints(num_classes=num_classes, in_chans=in_chans, width=width, hidden=hidden)
        act_cls = activation_class(act)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, bias=bias), act_cls(),
            nn.Conv2d(width, width, 3, bias=bias), act_cls(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, bias=bias), act_cls(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 25, hidden, bias=bias), act_cls(),
            nn.Linear(hidden, num_classes, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class GibenchMLP(nn.Module):
    """Flatten, two hidden layers with activation, linear classifier."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, act: str | type[nn.Module] = "relu",
                 hidden: int = 256, img_size: int | Sequence[int] = 28, bias: bool = True) -> None:
        super().__init__()
        _positive_ints(num_classes=num_classes, hidden=hidden)
        act_cls = activation_class(act)
        self.num_classes = num_classes
        self.img_size = img_size
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_image_pixels(in_chans, img_size), hidden, bias=bias), act_cls(),
            nn.Linear(hidden, hidden, bias=bias), act_cls(),
            nn.Linear(hidden, num_classes, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GibenchLinear(nn.Module):
    """One linear layer on the flattened pixels: logits = W·vec(x) + b."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int | Sequence[int] = 28,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.img_size = img_size
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(_image_pixels(in_chans, img_size), num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(x))


_TIMM_INTERNAL = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # passed by timm.create_model


def _in_tree(cls: type[nn.Module], name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """Build an in-tree net from a timm factory call; unknown options raise TypeError like a constructor would.

    With ``bias=False`` the net must be an X-DNN: :func:`gibench.training.homogeneity.check_homogeneous` runs on it (on
    a ``PROBE_SIZE``² input, or the ``img_size`` attribute of the flattening nets) and refuses it with a ConfigError
    naming the offending layer.
    """
    if pretrained:
        raise ConfigError(f"backbone {name!r} has no pretrained weights; remove `pretrained: true`.")
    for key in _TIMM_INTERNAL:
        kwargs.pop(key, None)
    bias = kwargs.get("bias", True)
    if not isinstance(bias, bool):
        raise ConfigError(f"backbone {name!r}: option `bias` must be true or false, got {bias!r}.")
    model = cls(**kwargs)
    if not bias:
        size = getattr(model, "img_size", PROBE_SIZE)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        check_homogeneous(model, (kwargs.get("in_chans", 1), height, width), name)
    return model


@register_model
def gibench_cnn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, act: str = "relu",
                width: int = 32, bias: bool = True, **kwargs: Any) -> GibenchCNN:
    """timm factory of :class:`GibenchCNN`."""
    return _in_tree(GibenchCNN, "gibench_cnn", pretrained,
                    dict(num_classes=num_classes, in_chans=in_chans, act=act, width=width, bias=bias, **kwargs))


@register_model
def gibench_mlp(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, act: str = "relu",
                hidden: int = 256, bias: bool = True, **kwargs: Any) -> GibenchMLP:
    """timm factory of :class:`GibenchMLP` (pass ``img_size`` unless it is 28)."""
    return _in_tree(GibenchMLP, "gibench_mlp", pretrained,
                    dict(num_classes=num_classes, in_chans=in_chans, act=act, hidden=hidden, bias=bias, **kwargs))


@register_model
def gibench_linear(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, bias: bool = True,
                   **kwargs: Any) -> GibenchLinear:
    """timm factory of :class:`GibenchLinear` (pass ``img_size`` unless it is 28)."""
    return _in_tree(GibenchLinear, "gibench_linear", pretrained,
                    dict(num_classes=num_classes, in_chans=in_chans, bias=bias, **kwargs))


@register_model
def cifar_resnet18(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                   bias: bool = True, **kwargs: Any) -> nn.Module:
    """timm factory of :class:`~gibench.training.cifar_backbones.CifarResNet18` (the seed papers' CIFAR ResNet-18), and
    with ``bias=False`` of :class:`~gibench.training.cifar_backbones.CifarXResNet18` (Hesse et al.'s X-ResNet: Fixup, no
    BatchNorm, no biases)."""
    options = dict(num_classes=num_classes, in_chans=in_chans, act_layer=activation_class(act), **kwargs)
    if bias is False:
        return _in_tree(CifarXResNet18, "cifar_resnet18", pretrained, dict(options, bias=False))
    return _in_tree(CifarResNet18, "cifar_resnet18", pretrained, options)


@register_model
def cifar_vgg11_bn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                   bias: bool = True, **kwargs: Any) -> CifarVGG11BN:
    """timm factory of :class:`~gibench.training.cifar_backbones.CifarVGG11BN` (VGG-11 with BatchNorm, linear head; with
    ``bias=False`` Hesse et al.'s X-VGG: no BatchNorm, no biases)."""
    return _in_tree(CifarVGG11BN, "cifar_vgg11_bn", pretrained,
                    dict(num_classes=num_classes, in_chans=in_chans, act_layer=activation_class(act), bias=bias,
                         **kwargs))


_IN_TREE_OPTIONS = {  # name -> options it takes besides num_classes/in_chans (for error messages)
    "cifar_resnet18": "act, bias",
    "cifar_vgg11_bn": "act, bias",
    "gibench_cnn": "act, width, hidden, bias",
    "gibench_linear": "img_size, bias",
    "gibench_mlp": "act, hidden, img_size, bias",
}
_IN_TREE = tuple(_IN_TREE_OPTIONS)
_NEEDS_IMG_SIZE = ("gibench_linear", "gibench_mlp")


def in_tree_backbones() -> list[str]:
    """The names of gibench's own backbones (all registered with timm)."""
    return list(_IN_TREE)


# ----------------------------------------------------------------------------------------------------------------------
# Building


def create_backbone(name: str, num_classes: int, in_chans: int, act: str | None = None, **options: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=..., in_chans=..., **options)`` with gibench's errors.

    ``act`` goes to the in-tree nets as is and to timm models as ``act_layer=<class>``. Raises UnknownPluginError
    (with a did-you-mean) for a name timm does not know, and ConfigError for ``pretrained: true``, a hub/local model
    source, an unknown activation, an option the architecture rejects (naming backbone and option) or a value its
    constructor rejects (TypeError/ValueError; option values are passed as given, so a suite must write numbers as
    numbers).
    """
    if ":" in name:
        raise ConfigError(
            f"backbone {name!r}: model sources such as 'hf-hub:' or 'local-dir:' are not supported; name a timm "
            "architecture (gibench never downloads weights)."
        )
    if options.pop("pretrained", False):
        raise ConfigError(
            f"backbone {name!r}: `pretrained: true` is not supported; gibench does not download weights and trains "
            "every backbone from scratch. Remove the option."
        )
    if not timm.is_model(name):
        choices = sorted(set(timm.list_models()) | set(_IN_TREE))
        raise UnknownPluginError(
            f"unknown backbone {name!r}.{did_you_mean(name, choices)} Use a timm architecture name "
            "(`python -c 'import timm; print(timm.list_models())'`) or one of gibench's own: "
            f"{', '.join(_IN_TREE)} (`gibench list backbones`)."
        )
    given = dict(options)
    if act is not None:
        given["act"] = act
        act_class = activation_class(act)  # an unknown name is a ConfigError here, for every backbone
        if name in _IN_TREE:
            options["act"] = act
        else:
            options["act_layer"] = act_class
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **options)
    except ConfigError:  # already says what is wrong (the X-DNN check, `pretrained: true`)
        raise
    except (TypeError, ValueError, AssertionError) as exc:  # unknown keyword; bad value (timm asserts on some)
        raise ConfigError(_rejected_option_message(name, given, exc)) from None


def _rejected_option_message(name: str, given: Mapping[str, Any], exc: Exception) -> str:
    match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    if match:
        option = "act" if match.group(1) == "act_layer" and "act" in given else match.group(1)
        what = f"does not accept the option {option!r}"
        if option == "act":
            what += " (this architecture takes no activation argument)"
    else:
        what = f"could not be built with the options {dict(given)!r}"
    valid = f" Options of {name}: {_IN_TREE_OPTIONS[name]}." if name in _IN_TREE_OPTIONS else ""
    return f"backbone {name!r} {what}: {str(exc) or type(exc).__name__}.{valid}"


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: the first layer of every gibench model, so inputs stay in [0, 1].

    ``mean``/``std`` are buffers of shape (1, C, 1, 1) and are saved in the state dict with the weights.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(f"Normalize needs one positive std per channel, got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"Normalize expects (N, {self.mean.shape[1]}, H, W) images, got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def build_model(backbone: str, options: Mapping[str, Any], bundle: DatasetBundle) -> nn.Sequential:
    """``Sequential(normalize=Normalize(bundle.mean, bundle.std), backbone=create_backbone(...))`` for ``bundle``.

    The class count and channel count come from the dataset; the flattening in-tree nets also get ``img_size``.
    """
    options = dict(options)
    if backbone in _NEEDS_IMG_SIZE:
        options.setdefault("img_size", bundle.image_size)
    net = create_backbone(backbone, num_classes=bundle.num_classes, in_chans=bundle.in_chans, **options)
    return nn.Sequential(OrderedDict(normalize=Normalize(bundle.mean, bundle.std), backbone=net))


# ----------------------------------------------------------------------------------------------------------------------
# Smoothness heuristic

_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.PReLU, nn.RReLU, nn.Hardsigmoid,
                     nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                     nn.AdaptiveMaxPool3d)
_SMOOTH = (nn.Softplus, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SELU, nn.CELU, nn.Hardswish,
           nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.MultiheadAttention,
           nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.instancenorm._InstanceNorm)
# class names of smooth modules defined outside torch.nn (timm and others), compared in lower case
_SMOOTH_NAMES = frozenset({
    "gelu", "gelutanh", "quickgelu", "silu", "swish", "swishme", "mish", "mishme", "hardswish", "hardswishme",
    "hardmish", "hardmishme", "sigmoid", "tanh", "softplus", "elu", "selu", "celu", "layernorm", "layernorm2d",
    "rmsnorm", "rmsnorm2d", "groupnorm", "groupnorm1", "attention", "softmax",
})


def is_piecewise_linear(model: nn.Module) -> bool:
    """True when the model has no smooth non-linearity, so its input Hessian is zero almost everywhere.

    Heuristic over module types only: False as soon as one module is a smooth non-linearity: a smooth activation
    (Softplus, GELU, SiLU, Mish, Tanh, Sigmoid, ELU family, Hardswish), a softmax/attention, or an input-dependent
    normalization (LayerNorm, GroupNorm, InstanceNorm, RMSNorm), recognized by ``torch.nn`` type or, for other
    libraries' classes (timm), by class name. Otherwise True: ReLU-family, Hardtanh, max-pooling, linear and
    convolution layers, BatchNorm (affine at explanation time) and a model without any activation (gibench_linear)
    are piecewise linear. Non-linearities applied functionally in ``forward`` (``F.gelu``) are invisible, so such a
    model may be reported piecewise linear; the only consequence is an unneeded warning from the trainer.
    """
    for module in model.modules():
        if isinstance(module, _PIECEWISE_LINEAR):
            continue
        if isinstance(module, _SMOOTH) or type(module).__name__.lower() in _SMOOTH_NAMES:
            return False
    return True
