"""Test accuracy and work of training recipes: the ``standard`` suite's constant-rate Adam recipe against presets.

Each recipe trains ``erm`` on ``--backbone`` (``gibench_cnn``, the suites' small CNN, ReLU) over ``--dataset``'s
training split (default: the bundled ``mnist_subset``, 4,000 train / 1,000 test digits) with gibench's own ``fit``, for
every seed of ``--seeds``; the table gives each recipe's epochs (passes over the training split), optimizer steps,
test accuracy (mean ± sample standard deviation over the seeds, and each seed's) and training seconds (median over
the seeds; on a shared machine a rough guide only, the passes are the work); a recipe whose training stops (non-finite
loss) is reported as failed. A recipe is a preset name of
:data:`gibench.training.presets.TRAIN_PRESETS`, ``adam3`` (``{epochs: 3, batch_size: 64, optimizer: adam, lr: 1e-3}``,
the ``standard`` suite's recipe), or ``name:key=value,...`` overriding keys (``short_mnist:epochs=2``).

Run: ``python benchmarks/train_presets.py [--recipes adam3 short_mnist short_mnist:epochs=2] [--seeds 0 1 2]
[--dataset mnist_subset] [--backbone gibench_cnn] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from gibench import load_dataset
from gibench.api import registry
from gibench.suites.suite import PluginSpec, TrainConfig
from gibench.training.presets import TRAIN_PRESETS
from gibench.training.train import fit

#: The ``standard`` suite's recipe.
BASELINES = {"adam3": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-3}}


def recipe(spec: str) -> TrainConfig:
    name, _, overrides = spec.partition(":")
    keys = dict(BASELINES.get(name) or TRAIN_PRESETS[name])
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        keys[key] = type(getattr(TrainConfig(), key))(value) if key != "nesterov" else value == "true"
    return TrainConfig(**keys)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + 500].to(device)).argmax(1).cpu() == y[i:i + 500]).sum().item()
                      for i in range(0, len(y), 500))
    return correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["adam3", "short_mnist", "short_mnist:epochs=2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dataset", default="mnist_subset")
    parser.add_argument("--backbone", default="gibench_cnn")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    bundle = load_dataset(args.dataset)
    backbone = PluginSpec.of(args.backbone, {}, {})
    print(f"{args.dataset} ({len(bundle.train.y)} train / {len(bundle.test.y)} test), {args.backbone}, erm, "
          f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, seeds {args.seeds}")
    print("| recipe | epochs | steps | test accuracy | per seed | train s (median) |")
    print("|---|---|---|---|---|---|")
    for spec in args.recipes:
        train = recipe(spec)
        accuracies, seconds, failures = [], [], []
        for seed in args.seeds:
            regularizer = registry.regularizers.create("erm")
            start = time.perf_counter()
            outcome = fit(bundle, backbone, regularizer, train, seed, device)
            seconds.append(time.perf_counter() - start)
            if outcome.failure:
                failures.append(f"seed {seed}: {outcome.failure.split(';')[0]}")
                continue
            accuracies.append(accuracy(outcome.model, bundle.test.x, bundle.test.y, device))
        steps = train.epochs * math.ceil(len(bundle.train.y) / train.batch_size)
        if failures:
            print(f"| {spec} | {train.epochs} | {steps} | failed | {'; '.join(failures)} | |", flush=True)
            continue
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"| {spec} | {train.epochs} | {steps} | {statistics.mean(accuracies):.4f} ± {spread:.4f} | "
              f"{' '.join(f'{a:.3f}' for a in accuracies)} | {statistics.median(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
