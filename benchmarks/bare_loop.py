"""``erm`` training throughput of gibench's ``fit`` against a bare PyTorch loop on the same model, data and batch.

Both run in this process on the same device, alternating (fit, bare, bare, fit, ...) for ``--repeats`` rounds so that
load changes on a shared machine hit both alike. Each run trains a fresh model of ``--backbone`` (softplus, as the
suites use it) with the same seed on the same random images in [0, 1] (1×28×28 for gibench_cnn, 3×32×32 for the
CIFAR backbones; 10 classes), resident on the device, ``--steps`` batches of ``--batch-size`` in the same seeded
order: SGD (lr 0.1, momentum 0.9, weight decay 5e-4), cross-entropy, and on CUDA bfloat16 autocast around the forward
and ``cudnn.benchmark`` on in both (``erm`` is ``amp_safe``, so that is what ``fit`` does there). The bare loop is what
one would write by hand: index the resident tensors, forward, loss, ``zero_grad``, ``backward``, ``step``.

Time: from the end of step ``--warmup`` to the end of the last step (fit's ``on_step`` callback marks both; on CUDA
the device is synchronized at those two points only), so model construction and the first steps (allocation,
cuDNN autotuning) are left out of both. Throughput = timed steps × batch / seconds; the ratio is the median fit
throughput over the median bare throughput (target on a GPU: ≥ 0.90).

``--backbone gibench_linear`` (one linear layer: a step costs almost nothing) isolates fit's own per-step overhead.

Run: ``python benchmarks/bare_loop.py --device cpu|cuda --backbone gibench_cnn|cifar_resnet18 [--steps 60]
[--warmup 5] [--repeats 3] [--batch-size 128] [--channels-last]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gibench.data.tensors import make_bundle
from gibench.regularizers.erm import ERM
from gibench.suites.suite import PluginSpec, TrainConfig
from gibench.training.models import build_model
from gibench.training.train import cudnn_benchmark, fit

SHAPES = {"gibench_cnn": (1, 28), "gibench_linear": (1, 28), "cifar_resnet18": (3, 32), "cifar_vgg11_bn": (3, 32)}
SEED = 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(backbone: str, n: int):
    channels, size = SHAPES[backbone]
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, channels, size, size, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return make_bundle("random", x, y, x[:10], y[:10], num_classes=10)


def train_config(args: argparse.Namespace) -> TrainConfig:
    return make_train_config(args.batch_size, args.channels_last)


def make_train_config(batch_size: int, channels_last: bool = False) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.1, momentum=0.9,
                       weight_decay=5e-4, log_every=10**9, channels_last=channels_last)


def backbone_spec(backbone: str) -> PluginSpec:
    """The backbone as the suites use it: softplus (the linear net has no activation)."""
    options = {} if backbone == "gibench_linear" else {"act": "softplus"}
    return PluginSpec.of(backbone, options, options)


def run_fit(bundle, spec: PluginSpec, train: TrainConfig, device: torch.device, warmup: int) -> float:
    """Images per second of gibench's fit after ``warmup`` steps."""
    marks: dict[str, float] = {}

    def on_step(step: int, total: int) -> None:
        if step == warmup or step == total:
            sync(device)
            marks["start" if step == warmup else "end"] = time.perf_counter()

    fit(bundle, spec, ERM(), train, seed=SEED, device=device, on_step=on_step)
    steps = len(bundle.train) // train.batch_size - warmup
    return steps * train.batch_size / (marks["end"] - marks["start"])


def run_bare(bundle, spec: PluginSpec, train: TrainConfig, device: torch.device, warmup: int) -> float:
    """Images per second of a hand-written loop on the same model, data, order and precision."""
    torch.manual_seed(SEED)
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    model = build_model(spec.name, spec.config, bundle).to(device).to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                                weight_decay=train.weight_decay)
    x_all = bundle.train.x.to(device).contiguous(memory_format=memory_format)
    y_all = bundle.train.y.to(device)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(SEED)).to(device)
    steps = len(y_all) // train.batch_size
    with cudnn_benchmark(device):
        for step in range(steps):
            if step == warmup:
                sync(device)
                start = time.perf_counter()
            index = order[step * train.batch_size : (step + 1) * train.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x_all[index]), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
    return (steps - warmup) * train.batch_size / (time.perf_counter() - start)


def compare(backbone: str, device: torch.device, *, batch_size: int = 128, steps: int = 60, warmup: int = 5,
            repeats: int = 3, channels_last: bool = False, deadline: float | None = None,
            log: Callable[[str], None] | None = print) -> dict:
    """fit against the bare loop, alternating (fit, bare, bare, fit, ...) for ``repeats`` rounds: the images per
    second of every run and the ratio of the medians. With a ``deadline`` (a ``time.perf_counter()`` value), no
    further round starts once it has passed (the first round always runs)."""
    bundle = make_data(backbone, steps * batch_size)
    spec = backbone_spec(backbone)
    train = make_train_config(batch_size, channels_last)
    rates: dict[str, list[float]] = {"fit": [], "bare": []}
    for repeat in range(repeats):
        if repeat and deadline is not None and time.perf_counter() > deadline:
            break
        order = ("fit", "bare") if repeat % 2 == 0 else ("bare", "fit")
        for which in order:
            run = run_fit if which == "fit" else run_bare
            rates[which].append(run(bundle, spec, train, device, warmup))
            if log:
                log(f"  repeat {repeat + 1} {which:4s}: {rates[which][-1]:9.1f} images/s")
    fit_rate, bare_rate = statistics.median(rates["fit"]), statistics.median(rates["bare"])
    return {"backbone": backbone, "channels_last": channels_last, "batch_size": batch_size, "steps": steps,
            "warmup": warmup, "repeats": len(rates["fit"]), "fit_images_per_s": rates["fit"],
            "bare_images_per_s": rates["bare"], "fit_median": fit_rate, "bare_median": bare_rate,
            "ratio": fit_rate / bare_rate}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="gibench_cnn", choices=sorted(SHAPES))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {name}, device {device}, threads {torch.get_num_threads()}, {args.backbone}, "
          f"batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), {args.repeats} repeats, "
          f"channels_last {args.channels_last}")
    result = compare(args.backbone, device, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                     repeats=args.repeats, channels_last=args.channels_last, log=lambda line: print(line, flush=True))
    print(f"median: fit {result['fit_median']:.1f} images/s, bare loop {result['bare_median']:.1f} images/s, "
          f"ratio {result['ratio']:.3f} (target on a GPU: >= 0.90)")


if __name__ == "__main__":
    main()
