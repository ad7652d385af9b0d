"""Throughput of the model-only evaluators against their floor (the bare passes they cannot avoid) and, for pixel
perturbation, against Quantus' ``PixelFlipping``.

Run (CPU, a few minutes; Quantus is optional, install it for the comparison with ``pip install --no-deps quantus``
plus its import-time dependencies)::

    python benchmarks/evaluator_speed.py [--images 1000] [--repeats 3] [--repeats-cheap 7] [--train-epochs 1] \\
        [--threads N] [--json out.json]

Protocol:

* Data: the first ``--images`` test images of the bundled MNIST subset (``blockmnist`` for the leakage evaluator,
  ``gaussian_mixture`` for score alignment). Model: ``gibench_cnn`` (ReLU, width 32) behind its normalization layer,
  trained for ``--train-epochs`` epochs (``gibench.testing.trained_model``: Adam, lr 1e-3,
  batch 64, seed 0) on the matching train split, so that
  accuracies, and hence the saliency maps, are representative. Speed does not depend on the weights.
* Floors (the bare work each evaluator needs, on the same batches of ``--batch-size`` images, no masking, no
  bookkeeping): pixel perturbation: 1 clean forward + 2 orders × 25 fractions forwards per image (its saliency pass
  is *not* in the floor, so the ratio charges gibench for it); density ratio: 1 clean + 6 noisy forwards per image;
  blockmnist: one input-gradient (forward + backward) per image; score alignment: two input-gradients per image.
* Every measurement is repeated (``--repeats`` for pixel perturbation and Quantus, ``--repeats-cheap`` for the
  others), floors and evaluators interleaved, and the minimum is reported
  (the machine may be shared; the minimum is the least disturbed run). One-time costs (imports: torchvision for the
  PNG artifacts) are paid before timing, as in a real run where many jobs share one process.
* Quantus: ``PixelFlipping(features_in_step=28, perturb_baseline="mean", abs=True, normalise=False)`` on the same
  model, images, labels and attributions (gibench's pixel scores Σ_c|g_c|): 784 / 28 = 28 steps, comparable to
  gibench's 25 fractions. It runs most-salient-first only, so the comparison is per forward pass (per image and step).
  gibench's time includes its saliency pass, Quantus' does not (it gets the attributions precomputed). Quantus'
  floor is the measured per-pass floor times its 28 passes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import gibench
from gibench.api.plugin import DatasetBundle, EvalContext
from gibench.api.saliency import input_gradient, pixel_scores
from gibench.evaluators.blockmnist import BlockMNISTLeakage
from gibench.evaluators.density_ratio import DensityRatio
from gibench.evaluators.pixel_perturbation import PixelPerturbation
from gibench.evaluators.score_alignment import ScoreAlignment, logsumexp_gradient
from gibench.testing import make_eval_context, trained_model


def wall_time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_floor(model: nn.Module, x: torch.Tensor, passes: int, batch_size: int) -> None:
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            for _ in range(passes):
                model(xb)


def gradient_floor(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, logsumexp: bool) -> None:
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        input_gradient(model, xb, yb)
        if logsumexp:
            logsumexp_gradient(model, xb)


def accuracy(model: nn.Module, bundle: DatasetBundle, n: int) -> float:
    with torch.no_grad():
        return float((model(bundle.test.x[:n]).argmax(1) == bundle.test.y[:n]).double().mean())


def measure(pairs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Interleave the callables ``repeats`` times; every wall time of each (the report uses the minimum)."""
    times: dict[str, list[float]] = {k: [] for k in pairs}
    for _ in range(repeats):
        for key, fn in pairs.items():
            times[key].append(wall_time(fn))
    return times


def quantus_pixel_flipping(
    model: nn.Module, bundle: DatasetBundle, n: int, batch_size: int
) -> tuple[Callable[[], object], int] | None:
    """A callable running Quantus' PixelFlipping on gibench's own attributions, and its steps per image."""
    try:
        import quantus
    except ImportError:
        return None
    import warnings

    x, y = bundle.test.x[:n], bundle.test.y[:n]
    scores = torch.cat([pixel_scores(input_gradient(model, x[s : s + batch_size], y[s : s + batch_size]))
                        for s in range(0, n, batch_size)]).unsqueeze(1)
    metric = quantus.PixelFlipping(features_in_step=28, perturb_baseline="mean", abs=True, normalise=False,
                                   disable_warnings=True, display_progressbar=False)

    def run() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=scores.numpy(),
                          channel_first=True, softmax=False, device="cpu", batch_size=batch_size)

    return run, math.ceil(x[0].numel() / 28)


def context(model: nn.Module, bundle: DatasetBundle, folder: str, batch_size: int) -> EvalContext:
    return make_eval_context(model, bundle, folder, batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the pixel-perturbation measurements")
    parser.add_argument("--repeats-cheap", type=int, default=7, help="repeats of the other (cheaper) measurements")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, bs = args.images, args.batch_size
    folder = tempfile.mkdtemp(prefix="gibench_bench_")
    import torchvision.utils  # noqa: F401  (one-time import, used by the artifacts)

    def row(name: str, data: str, passes: str, t: dict[str, list[float]], passes_per_image: int) -> dict[str, object]:
        floor, own = min(t["floor"]), min(t["gibench"])
        return dict(evaluator=name, data=data, passes=passes, floor_s=floor, gibench_s=own,
                    per_pass_ms=1e3 * own / (n * passes_per_image), all_floor_s=t["floor"], all_s=t["gibench"])

    rows: list[dict[str, object]] = []
    mnist = gibench.load_dataset("mnist_subset")
    model = trained_model(mnist, "gibench_cnn", epochs=args.train_epochs)
    pp = PixelPerturbation(PixelPerturbation.Config(max_images=n))
    passes = 1 + 2 * len(pp.config.fractions)
    jobs = {"floor": lambda: forward_floor(model, mnist.test.x[:n], passes, bs),
            "gibench": lambda: pp.evaluate(context(model, mnist, folder, bs))}
    quantus_job = quantus_pixel_flipping(model, mnist, n, bs)
    if quantus_job is not None:
        jobs["quantus"] = quantus_job[0]
    t = measure(jobs, args.repeats)
    rows.append(row("pixel_perturbation", "mnist_subset", f"{passes} fwd", t, passes))
    if quantus_job is not None:
        steps = quantus_job[1]
        floor = [f * steps / passes for f in t["floor"]]  # the same per-pass floor, for Quantus' number of passes
        rows.append(row("quantus.PixelFlipping", "mnist_subset", f"{steps} fwd",
                        {"floor": floor, "gibench": t["quantus"]}, steps))

    dr = DensityRatio(DensityRatio.Config(max_images=n))
    passes = 1 + len(dr.config.sigmas) * dr.config.num_draws
    t = measure({"floor": lambda: forward_floor(model, mnist.test.x[:n], passes, bs),
                 "gibench": lambda: dr.evaluate(context(model, mnist, folder, bs))}, args.repeats_cheap)
    rows.append(row("density_ratio", "mnist_subset", f"{passes} fwd", t, passes))

    block = gibench.load_dataset("blockmnist")
    block_model = trained_model(block, "gibench_cnn", epochs=args.train_epochs)
    bl = BlockMNISTLeakage(BlockMNISTLeakage.Config(max_images=n))
    t = measure({"floor": lambda: gradient_floor(block_model, block.test.x[:n], block.test.y[:n], bs, False),
                 "gibench": lambda: bl.evaluate(context(block_model, block, folder, bs))}, args.repeats_cheap)
    rows.append(row("blockmnist", "blockmnist", "1 fwd+bwd", t, 1))

    mix = gibench.load_dataset("gaussian_mixture")
    mix_model = trained_model(mix, "gibench_cnn", epochs=args.train_epochs)
    sa = ScoreAlignment(ScoreAlignment.Config(max_images=n))
    t = measure({"floor": lambda: gradient_floor(mix_model, mix.test.x[:n], mix.test.y[:n], bs, True),
                 "gibench": lambda: sa.evaluate(context(mix_model, mix, folder, bs))}, args.repeats_cheap)
    rows.append(row("score_alignment", "gaussian_mixture", "2 fwd+bwd", t, 2))

    report(rows, args, {"mnist_subset": accuracy(model, mnist, n), "blockmnist": accuracy(block_model, block, n),
                        "gaussian_mixture": accuracy(mix_model, mix, n)})


def report(rows: list[dict[str, object]], args: argparse.Namespace, accuracies: dict[str, float]) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, {os.cpu_count()} CPUs; "
          f"{args.images} images, batch {args.batch_size}; best of {args.repeats} (pixel perturbation, Quantus) "
          f"and of {args.repeats_cheap} (the others), interleaved")
    print("# trained-model test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()))
    print("| evaluator | data | passes per image | floor (s) | evaluator (s) | ratio to floor | ms per pass-image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['evaluator']} | {r['data']} | {r['passes']} | {r['floor_s']:.2f} | {r['gibench_s']:.2f} | "
              f"{r['gibench_s'] / r['floor_s']:.3f} | {r['per_pass_ms']:.4f} |")
    by_name = {r["evaluator"]: r for r in rows}
    pp = by_name["pixel_perturbation"]
    print(f"pixel_perturbation / floor = {pp['gibench_s'] / pp['floor_s']:.3f} (target <= 1.25)")
    if "quantus.PixelFlipping" in by_name:
        q = by_name["quantus.PixelFlipping"]
        ratio = pp["per_pass_ms"] / q["per_pass_ms"]
        print(f"pixel_perturbation / Quantus, per pass-image = {ratio:.3f} (target <= 1)")
    if args.json:
        settings = {**vars(args), "json": str(args.json)}
        args.json.write_text(json.dumps({"rows": rows, "accuracies": accuracies, "args": settings}, indent=1))


if __name__ == "__main__":
    main()
