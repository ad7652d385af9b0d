"""benchmarks/derived_gpu_hours.py: the multiply-accumulates it counts per forward, and the hours they give."""

from __future__ import annotations

from torch import nn

from benchmarks.derived_gpu_hours import AIRBENCH_A100_TFLOPS, backbone_macs, forward_macs, markdown
from gibench.suites.suite import PluginSpec


def test_the_count_is_every_convolution_and_linear_layers_multiply_accumulates():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(), nn.Conv2d(2, 4, 3, padding=1, groups=2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    conv1 = (2 * 4 * 4) * (1 * 3 * 3)      # 32 outputs, 9 products each
    grouped = (4 * 4 * 4) * (1 * 3 * 3)    # 64 outputs; each group sees 2 // 2 = 1 input channel
    linear = 3 * 64
    assert forward_macs(net, (1, 4, 4)) == conv1 + grouped + linear == 288 + 576 + 192


def test_the_cifar_resnet18_costs_the_published_half_gigamac_per_image():
    # the kuangliu-style CIFAR ResNet-18 (stride-1 stem, no max-pool) is commonly counted at 0.56 GMACs per 32x32 image
    macs = backbone_macs(PluginSpec.of("cifar_resnet18", {"act": "softplus"}, {"act": "softplus"}), (3, 32, 32), 10, {})
    assert 0.55e9 < macs < 0.56e9


def test_hours_are_two_operations_per_mac_per_forward_equivalent_at_the_stated_rate():
    priced = {("net", (1, 8, 8)): [1e12, 1e12 * 1e9]}  # 1e12 forward-equivalents of a 1-GMAC network: 2e21 operations
    text = markdown("s", priced, 0.0, 1e12, 100.0)
    assert "| net | 1×8×8 | 1e+12 | 1 | 2e+06 | 5.56e+03 |" in text  # 2e21 / 1e14 per s = 2e7 s = 5,556 h
    assert round(AIRBENCH_A100_TFLOPS, 1) == 76.9
