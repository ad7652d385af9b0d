"""Cost of the ``gan_test`` evaluator against its floor, and the judge's one-off training.

Run (CPU, one thread, a few minutes)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/gan_test_cost.py [--num-samples 100] [--steps 100] \\
        [--batch-size 256] [--repeats 3] [--datasets mnist_subset blockmnist gaussian_mixture] [--jobs 13] \\
        [--json out.json]

Protocol:

* Model: ``gibench_cnn`` with ``act: softplus`` (the standard suite's backbone) behind its normalization layer,
  untrained, seed 0: the cost of a forward + backward does not depend on the weights.
* Floor: what GAN-test cannot avoid, ``steps`` input-gradients (one forward + one backward of Σ_b f_{y_b}(x_b)) per
  batch of ``--batch-size`` samples, on the same start images and targets, with no update, clamp or scoring.
* Evaluator: ``GANTest.evaluate`` with the judge already stored (the judge is trained once per dataset and runs
  directory, so every job but the first finds it): sampling, the judge's and the model's forwards on the samples, the
  judge's forwards on the real test images, the sample grid and the curves.
* Judge: one ``get_judge`` on an empty store (the default judge: ``gibench_mlp``, 5 epochs, Adam, batch 64), timed
  once; its clean test accuracy is printed too. "Judge share" is its training time divided by ``--jobs`` (13 jobs
  share each dataset's judge in the standard suite).
* Every timed measurement but the judge is repeated ``--repeats`` times, floor and evaluator interleaved, and the
  minimum is reported. Both wall time and the process's CPU time (``time.process_time``) are taken; on a shared
  machine the CPU time (with one thread) is the stable figure, so the ratio and the per-step cost use it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import gibench
from gibench.api.artifacts import batches
from gibench.api.plugin import DatasetBundle
from gibench.api.saliency import input_gradient
from gibench.evaluators.gan_test import GANTest, balanced_targets, get_judge, initial_images
from gibench.store.auxiliary import AuxiliaryModels
from gibench.testing import make_eval_context
from gibench.training.models import build_model


def floor(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int) -> None:
    for sl in batches(len(y), batch_size):
        x, yb = x0[sl], y[sl]
        for _ in range(steps):
            input_gradient(model, x, yb)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, float | str]:
    bundle: DatasetBundle = gibench.load_dataset(name)
    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"act": "softplus"}, bundle).eval()
    cfg = GANTest.Config(num_samples=args.num_samples, steps=args.steps)
    aux = AuxiliaryModels(workdir / name / "aux")
    ctx = make_eval_context(model, bundle, workdir / name / "artifacts", batch_size=args.batch_size, aux=aux)
    judge_seconds, judge_cpu = timed(lambda: get_judge(ctx, cfg))
    judge = get_judge(ctx, cfg)
    targets = balanced_targets(cfg.num_samples, bundle.num_classes)
    x0 = initial_images(cfg.num_samples, tuple(bundle.test.x.shape[1:]), cfg, 0)
    evaluator = GANTest(cfg)
    floor_s, eval_s = [], []
    for _ in range(args.repeats):
        floor_s.append(timed(lambda: floor(model, x0, targets, cfg.steps, args.batch_size)))
        eval_s.append(timed(lambda: evaluator.evaluate(ctx)))
    if aux.trained != [judge.hash]:
        raise SystemExit(f"{name}: the judge was trained {len(aux.trained)} times; it must be trained once")
    floor_best, eval_best = min(w for w, _ in floor_s), min(w for w, _ in eval_s)
    floor_cpu, eval_cpu = min(c for _, c in floor_s), min(c for _, c in eval_s)
    per_pass = floor_cpu / (cfg.steps * cfg.num_samples)
    return {
        "dataset": name, "image": "x".join(str(s) for s in bundle.test.x.shape[1:]),
        "num_samples": cfg.num_samples, "steps": cfg.steps, "floor_s": floor_best, "evaluator_s": eval_best,
        "floor_cpu_s": floor_cpu, "evaluator_cpu_s": eval_cpu, "ratio_cpu": eval_cpu / floor_cpu,
        "ratio_wall": eval_best / floor_best, "us_per_sample_step": 1e6 * per_pass,
        "default_settings_cpu_s": per_pass * 500 * 1000,
        "judge_train_s": judge_seconds, "judge_train_cpu_s": judge_cpu,
        "judge_accuracy": judge.quality["test_accuracy"], "judge_share_cpu_s": judge_cpu / args.jobs,
    }


def markdown(rows: list[dict[str, float | str]], jobs: int) -> str:
    head = ("| dataset | image | samples × steps | floor CPU (s) | gan_test CPU (s) | ratio (CPU) | ratio (wall) "
            "| µs CPU / sample·step | floor at 1000 × 500 (CPU s, extrapolated) | judge training CPU (s, once) "
            f"| judge accuracy | judge share at {jobs} jobs (CPU s) |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['image']} | {r['num_samples']} × {r['steps']} | {r['floor_cpu_s']:.2f} "
            f"| {r['evaluator_cpu_s']:.2f} | {r['ratio_cpu']:.2f}× | {r['ratio_wall']:.2f}× "
            f"| {r['us_per_sample_step']:.0f} | {r['default_settings_cpu_s']:.0f} | {r['judge_train_cpu_s']:.1f} "
            f"| {r['judge_accuracy']:.3f} | {r['judge_share_cpu_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["mnist_subset", "blockmnist", "gaussian_mixture"])
    parser.add_argument("--jobs", type=int, default=13, help="jobs sharing one dataset's judge")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, args, Path(tmp)) for name in args.datasets]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"batch {args.batch_size}, best of {args.repeats}\n")
    print(markdown(rows, args.jobs))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
