"""A suite's work in floating-point operations, and the device-hours that gives at a stated sustained rate.

Run (seconds; builds each backbone once on the CPU, trains nothing)::

    python benchmarks/derived_gpu_hours.py --suite full [--suite paper.yaml ...] --data-root EMPTY \\
        [--sustained-tflops 76.9]

``gibench run --estimate`` counts a suite's work in model passes (forward-equivalents: forwards + 2 × backwards, per
image) and prices them by a calibration on the device. Where no such device is at hand, this script prices the same
passes in operations: each unit of work (a training step, a forward or saliency pass) runs on a backbone at an image
shape, and one forward of that backbone at that shape costs a number of multiply-accumulates counted here with
forward hooks on every convolution and linear layer (2 operations each; normalisations, activations and pooling are
left out, a few per cent on these networks). A forward-equivalent then costs 2 × MACs operations, so

    hours = Σ forward-equivalents × 2 × MACs(backbone, shape) / (sustained operations per second) / 3600.

Work an evaluator declares as its own (``PluginWork``, e.g. score alignment's denoiser) names no backbone; it is
left out and its share of the forward-equivalents is printed.

The default rate is a derived anchor, not a measurement: the airbench README (github.com/KellerJordan/cifar10-airbench)
reports its "standard ResNet-18 training" reaching 96 % on CIFAR-10 in 7 minutes on one A100 with 32.3 PFLOPs, that
is 32.3e15 / 420 s ≈ 76.9 TFLOP/s sustained in mixed precision on a well-fed ResNet-18. A calibration on the device
(``gibench run --suite S --estimate --device cuda``, or ``benchmarks/gpu_check.py``) replaces it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

#: 32.3 PFLOPs in 7 minutes on one A100 (airbench README, "standard ResNet-18 training"), in TFLOP/s
AIRBENCH_A100_TFLOPS = 32.3e15 / 420 / 1e12


def forward_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one image's forward through ``model``'s convolutions and linear layers."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def backbone_macs(backbone, shape: tuple[int, int, int], num_classes: int, cache: dict) -> int:
    """:func:`forward_macs` of the model gibench builds for ``backbone`` (a PluginSpec) at ``shape``."""
    key = (backbone.label, shape, num_classes)
    if key not in cache:
        from gibench.running.calibration import random_bundle
        from gibench.training.models import build_model

        bundle = random_bundle(shape, num_classes, 2)
        cache[key] = forward_macs(build_model(backbone.name, backbone.config, bundle), shape)
    return cache[key]


def suite_operations(suite, data_root: Path | None) -> tuple[dict, float, float]:
    """({(backbone label, shape): [forward-equivalents, Σ forward-equivalents × MACs per forward]}, forward-equivalents
    left out, all forward-equivalents) of ``suite`` planned from an empty runs directory. Each unit is priced with the
    MACs of its own model (its class count sizes the last layer, so CIFAR-10 and CIFAR-100 differ slightly)."""
    from gibench.running.estimate import plan, unit_passes

    with tempfile.TemporaryDirectory() as empty:
        counted = plan(suite, Path(empty), data_root=data_root)
    cache: dict = {}
    priced: dict = defaultdict(lambda: [0.0, 0.0])
    left_out = everything = 0.0
    for row in [*counted.rows, *counted.auxiliary]:
        for work in (row.train_work, row.eval_work):
            for unit, count in work.items():
                passes = unit_passes(unit)
                if passes is None:
                    continue
                forward_equivalents = passes.forward_equivalents * count
                everything += forward_equivalents
                backbone = getattr(unit, "backbone", None)
                if backbone is None:
                    left_out += forward_equivalents
                    continue
                entry = priced[(backbone.label, unit.shape)]
                entry[0] += forward_equivalents
                entry[1] += forward_equivalents * backbone_macs(backbone, unit.shape, unit.num_classes, cache)
    return dict(priced), left_out, everything


def markdown(name: str, priced: dict, left_out: float, everything: float, tflops: float) -> str:
    lines = [f"**{name}** at {tflops:.1f} TFLOP/s sustained", "",
             "| backbone | image | forward-equivalents | GMACs per forward | PFLOP | hours |",
             "| --- | --- | --- | --- | --- | --- |"]
    total_flop = 0.0
    for (backbone, shape), (forward_equivalents, mac_total) in sorted(priced.items(), key=lambda kv: -kv[1][1]):
        flop = 2 * mac_total
        total_flop += flop
        per_forward = mac_total / forward_equivalents if forward_equivalents else 0.0  # the mean over units' models
        lines.append(f"| {backbone} | {'×'.join(map(str, shape))} | {forward_equivalents:.3g} | "
                     f"{per_forward / 1e9:.3g} | {flop / 1e15:.3g} | {flop / (tflops * 1e12) / 3600:.3g} |")
    lines += [f"| total | | {everything - left_out:.3g} | | {total_flop / 1e15:.3g} | "
              f"{total_flop / (tflops * 1e12) / 3600:.3g} |", "",
              f"left out (work that names no backbone): {left_out:.3g} forward-equivalents, "
              f"{left_out / everything if everything else 0:.2%} of {everything:.3g}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", required=True, help="a shipped suite's name or a suite file")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="where the datasets are (an empty folder will do: the plan sizes them without loading)")
    parser.add_argument("--sustained-tflops", type=float, default=AIRBENCH_A100_TFLOPS,
                        help="the device's sustained rate in TFLOP/s (default: the airbench A100 anchor, derived)")
    args = parser.parse_args()
    if args.sustained_tflops <= 0:
        parser.error("--sustained-tflops must be positive")
    import gibench
    from gibench.core.errors import GibenchError

    for name in args.suite:
        try:
            priced, left_out, everything = suite_operations(gibench.load_suite(name), args.data_root)
        except GibenchError as exc:  # a suite that does not load, or a dataset the plan cannot size
            parser.error(str(exc))
        print(markdown(name, priced, left_out, everything, args.sustained_tflops))


if __name__ == "__main__":
    main()
