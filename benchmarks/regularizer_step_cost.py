"""Step cost of every registered regularizer relative to ``erm``, measured in the same process.

For each backbone (default: ``gibench_cnn`` with softplus at 1×28×28, and ``resnet18`` with softplus at 3×32×32,
both 10 classes, batch 64, a Normalize layer first as in gibench's models) and each regularizer (default: all
registered), a training step is ``zero_grad(set_to_none) → training_loss → backward → SGD step``, each
regularizer on its own copy of the same initial weights and a fixed random batch in [0, 1].

* Time: the median of ``--steps`` timed steps after ``--warmup`` untimed ones. Steps are interleaved round-robin
  across regularizers (one step of each per round), so that load changes on a shared machine hit all of them alike;
  on CUDA the device is synchronized after each timed step (the benchmark synchronizes, the regularizers do not).
* Peak memory of a step, above what is allocated before it (weights, optimizer state, batch): on CUDA
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on the CPU the process's resident-set
  high-water mark (``VmHWM`` in /proc/self/status, reset by writing 5 to /proc/self/clear_refs) minus the resident
  set before the step, measured in a fresh child process whose glibc mmap threshold is fixed at 64 KiB
  (``mallopt``) before any tensor exists, so that freed tensors return to the system. Median of 3 steps per
  regularizer, after one untimed step (optimizer state).

* Precision: each step runs under the trainer's policy for a default ``train`` section (``amp`` on): on CUDA bfloat16
  autocast for the ``amp_safe`` regularizers (erm, gaussian_noise, gradient_norm) and true float32 with TF32 off for
  the others, and ``cudnn.benchmark`` on, as :func:`gibench.training.train.fit` does; on the CPU plain float32.

Run: ``python benchmarks/regularizer_step_cost.py [--device cpu|cuda] [--steps 20]
[--backbones gibench_cnn,resnet18,cifar_resnet18]`` (``--backbone cifar_resnet18`` for one).
It prints a Markdown table (and ``--json PATH`` writes the raw figures with the device and the command, the format
of ``leaderboard/data/regularizer_cost.json`` that the leaderboard's regularizer pages show) and checks the targets of
the papers' public reference code on resnet18-softplus: gradient_norm ≤ 2.7×, score_matching ≤ 3.8×, anti_score_matching
≤ 2.0×.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gibench.api import registry
from gibench.suites.suite import TrainConfig
from gibench.testing.regularizer_checks import default_annotations
from gibench.training.models import Normalize, create_backbone
from gibench.training.train import cudnn_benchmark, step_contexts

BACKBONES = {  # name -> (channels, image size)
    "gibench_cnn": (1, 28),
    "resnet18": (3, 32),
    "cifar_resnet18": (3, 32),
    "cifar_vgg11_bn": (3, 32),
}
TARGETS = {"gradient_norm": 2.7, "score_matching": 3.8, "anti_score_matching": 2.0}  # resnet18, reference code
TARGET_BACKBONES = ("resnet18", "cifar_resnet18")  # the reference code's ResNet-18 is the CIFAR one
#: Rows measured beside the registered names, each one regularizer with options: the other attribution_prior priors
#: and attributions (the registered name alone is its default, Gini on X-Gradient).
VARIANTS = {
    "attribution_prior(total_variation)": ("attribution_prior", {"prior": "total_variation"}),
    "attribution_prior(expected_gradients)": ("attribution_prior", {"attribution": "expected_gradients"}),
}
#: The precision policy of a default suite's training (train.amp on): bf16 autocast on CUDA for amp_safe
#: regularizers, true float32 (TF32 off) for the others; see gibench.training.train.
TRAIN = TrainConfig()


def build(backbone: str, device: torch.device) -> tuple[nn.Module, int, int]:
    channels, size = BACKBONES.get(backbone, (3, 32))
    torch.manual_seed(0)
    net = create_backbone(backbone, num_classes=10, in_chans=channels, act="softplus")
    model = nn.Sequential(Normalize((0.5,) * channels, (0.25,) * channels), net)
    return model.to(device).train(), channels, size


class Runner:
    """One regularizer with its own model copy and optimizer."""

    def __init__(self, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.name = name
        plugin, params = VARIANTS.get(name, (name, {}))
        self.reg = registry.regularizers.create(plugin, **params)
        self.model = copy.deepcopy(model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.x, self.y = x, y
        # a regularizer that trains on annotations (rrr's irrelevant-region mask) gets the conformance checks' mask
        self.annotations = ({key: value.to(x.device) for key, value in default_annotations(self.reg.requires,
                                                                                           x.cpu()).items()}
                            if self.reg.requires else None)

    def step(self) -> None:
        whole_step, forward = step_contexts(self.reg, TRAIN, self.x.device)
        with whole_step:
            self.opt.zero_grad(set_to_none=True)
            with forward:
                if self.annotations is None:
                    loss = self.reg.training_loss(self.model, self.x, self.y)
                else:
                    loss = self.reg.training_loss(self.model, self.x, self.y, annotations=self.annotations)
            loss.total.backward()
        self.opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(runners: list[Runner], device: torch.device, warmup: int, steps: int,
               deadline: float | None = None) -> dict[str, list[float]]:
    """Step times per runner (``name`` → seconds of each timed step), interleaved round-robin. With a ``deadline``
    (a ``time.perf_counter()`` value), no further round starts once it has passed after the first timed round, so
    every runner has the same number of timed steps."""
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for round_ in range(warmup + steps):
        if deadline is not None and round_ > warmup and time.perf_counter() > deadline:
            break
        order = runners[round_ % len(runners):] + runners[: round_ % len(runners)]  # rotate the start
        for runner in order:
            sync(device)
            start = time.perf_counter()
            runner.step()
            sync(device)
            if round_ >= warmup:
                times[runner.name].append(time.perf_counter() - start)
    return times


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak(step: Callable[[], None]) -> float:
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - before) * 1024.0


def _cuda_peak(step: Callable[[], None], device: torch.device) -> float:
    gc.collect()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


def peak_memory(runners: list[Runner], device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Median peak-step memory per runner; every runner has taken at least one step (optimizer state exists)."""
    if device.type == "cpu":
        measure = _cpu_peak
    else:
        measure = lambda step: _cuda_peak(step, device)  # noqa: E731
    return {r.name: statistics.median(measure(r.step) for _ in range(repeats)) for r in runners}


def setup(backbone: str, names: list[str], device: torch.device, batch: int) -> list[Runner]:
    model, channels, size = build(backbone, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    return [Runner(name, model, x, y) for name in names]


def _cpu_memory_child(backbone: str, names: list[str], batch: int) -> dict[str, float]:
    """Runs in a fresh process: glibc's mmap threshold is fixed before any tensor exists, so every freed activation
    goes back to the system and the resident-set high-water mark measures the step (in the timing process, glibc's
    dynamic threshold keeps freed blocks in the heap, which is the realistic setting for timing)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (also disables the dynamic threshold)
    libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    runners = setup(backbone, names, torch.device("cpu"), batch)
    for runner in runners:
        runner.step()  # optimizer state, lazy initializations
    return peak_memory(runners, torch.device("cpu"))


def bench_backbone(backbone: str, names: list[str], device: torch.device, batch: int, warmup: int,
                   steps: int) -> list[dict]:
    runners = setup(backbone, names, device, batch)
    with cudnn_benchmark(device):
        times = time_steps(runners, device, warmup, steps)
        if device.type == "cpu":
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                memory = pool.apply(_cpu_memory_child, (backbone, names, batch))
        else:
            memory = peak_memory(runners, device)
    return make_rows(backbone, names, times, memory)


def make_rows(backbone: str, names: list[str], times: dict[str, list[float]],
              memory: dict[str, float]) -> list[dict]:
    """One row per regularizer: median step time and peak step memory, each also relative to ``erm``'s."""
    base_t, base_m = statistics.median(times["erm"]), memory["erm"]
    channels, size = BACKBONES.get(backbone, (3, 32))
    rows = []
    for name in names:
        median = statistics.median(times[name])
        rows.append({
            "backbone": backbone, "input": f"{channels}x{size}x{size}", "regularizer": name,
            "median_step_ms": 1e3 * median, "time_vs_erm": median / base_t,
            "peak_step_mb": memory[name] / 2**20,
            "memory_vs_erm": memory[name] / base_m if base_m > 0 else float("nan"),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| backbone | input | regularizer | median step (ms) | time × erm | peak step memory (MiB) "
             "| memory × erm |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['input']} | {r['regularizer']} | {r['median_step_ms']:.1f} | "
                     f"{r['time_vs_erm']:.2f} | {r['peak_step_mb']:.1f} | {r['memory_vs_erm']:.2f} |")
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r["backbone"] in TARGET_BACKBONES and r["regularizer"] in TARGETS:
            target = TARGETS[r["regularizer"]]
            verdict = "ok" if r["time_vs_erm"] <= target else "SLOWER than the reference"
            lines.append(f"{r['backbone']} {r['regularizer']}: {r['time_vs_erm']:.2f}× erm (reference code: {target}×) "
                         f"{verdict}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per regularizer (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbones", "--backbone", default="gibench_cnn,resnet18",
                        help=f"comma-separated, of {', '.join(BACKBONES)}")
    parser.add_argument("--regularizers", default="",
                        help=f"comma-separated, registered names or {', '.join(VARIANTS)} (default: every registered "
                             "one and those variants)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    names = [n for n in args.regularizers.split(",") if n] or registry.regularizers.names()
    names = ["erm"] + [n for n in names if n != "erm"]
    if not args.regularizers:
        names += [v for v, (plugin, _) in VARIANTS.items() if plugin in names]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {name}, device {device}, "
          f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed "
          "steps each, interleaved")
    rows = []
    for backbone in [b for b in args.backbones.split(",") if b]:
        started = time.perf_counter()
        rows += bench_backbone(backbone, names, device, args.batch_size, args.warmup, args.steps)
        print(f"{backbone}: {time.perf_counter() - started:.0f} s", flush=True)
    print(markdown(rows))
    for line in check_targets(rows):
        print(line)
    if args.json:  # the leaderboard's regularizer pages read this file (leaderboard/data/regularizer_cost.json)
        command = " ".join(["python benchmarks/regularizer_step_cost.py", *(sys.argv[1:] if argv is None else argv)])
        payload = {"device": f"{device.type}: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                   "command": command, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
