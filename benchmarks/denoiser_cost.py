"""Cost of ``score_alignment``'s learned score: the denoiser's one-off training and the evaluator's per-job cost.

Run (CPU, minutes; one thread, as in the suites)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/denoiser_cost.py \\
        [--datasets mnist_subset blockmnist gaussian_mixture] [--images 1000] [--repeats 3] \\
        [--epochs 5] [--width 16] [--sigma 0.25] [--json out.json]

Protocol, per dataset:

* The denoiser is trained once through the evaluator itself (``score: learned``, the given denoiser options) into a
  fresh auxiliary-model store; ``train_s`` is the wall time of that first evaluation minus one evaluation with the
  denoiser already in memory, and the denoiser's own ``train_seconds`` (its training loop alone) and held-out quality
  (test-split denoising MSE, beside the identity and mean-image denoisers') are printed with it.
* Per-job cost: the evaluation of ``--images`` test images with the denoiser in memory (what every further job in
  the same process pays), the minimum of ``--repeats`` runs; ``load_s``: getting the stored denoiser in a new process's
  store object (what a rerun or another worker pays once); and the floor that any score-alignment evaluation needs
  whatever the score (two input-gradients per image, the label logit and logsumexp). On ``gaussian_mixture`` the
  analytic path's cost is listed too.
* Every time is given as wall seconds and as this process's CPU seconds (``time.process_time``): with one thread
  the CPU seconds are what the step costs on an idle core, even when the machine is shared.
* Model: ``gibench_cnn`` (softplus) untrained, seed 0; the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import gibench
from gibench.api.plugin import EvalContext
from gibench.api.saliency import input_gradient
from gibench.evaluators.score_alignment import ScoreAlignment, logsumexp_gradient
from gibench.store.auxiliary import AuxiliaryModels
from gibench.testing import make_eval_context
from gibench.training.models import build_model


def context(model, bundle, aux: AuxiliaryModels, artifacts: Path) -> EvalContext:
    return make_eval_context(model, bundle, artifacts, batch_size=256, aux=aux)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def best(fn, repeats: int) -> tuple[float, float]:
    return min((timed(fn) for _ in range(repeats)), key=lambda t: t[0])


def pair(t: tuple[float, float]) -> dict[str, float]:
    return {"wall": round(t[0], 3), "cpu": round(t[1], 3)}


def floor(model, bundle, images: int) -> None:
    x, y = bundle.test.x[:images], bundle.test.y[:images]
    for i in range(0, len(y), 256):
        input_gradient(model, x[i:i + 256], y[i:i + 256])
        logsumexp_gradient(model, x[i:i + 256])


def measure(name: str, args: argparse.Namespace, root: Path) -> dict:
    bundle = gibench.load_dataset(name)
    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"act": "softplus"}, bundle).eval()
    options = dict(max_images=args.images, sigma=args.sigma, denoiser_epochs=args.epochs, denoiser_width=args.width)
    learned = ScoreAlignment(ScoreAlignment.Config(score="learned", **options))
    aux = AuxiliaryModels(root / name / "aux")
    first = timed(lambda: learned.evaluate(context(model, bundle, aux, root / name)))
    per_job = best(lambda: learned.evaluate(context(model, bundle, aux, root / name)), args.repeats)
    reloaded = AuxiliaryModels(root / name / "aux")
    load = timed(lambda: learned.score_function(context(model, bundle, reloaded, root / name)))
    assert len(aux.trained) == 1 and not reloaded.trained, "the denoiser must be trained exactly once"
    quality = json.loads(next((root / name / "aux").glob("denoiser-*/quality.json")).read_text())
    row = {"dataset": name, "image_size": list(bundle.image_size), "train_images": len(bundle.train),
           "train_s": pair((first[0] - per_job[0], first[1] - per_job[1])), "per_job_s": pair(per_job),
           "load_s": pair(load), "floor_s": pair(best(lambda: floor(model, bundle, args.images), args.repeats)),
           "quality": {k: round(v, 6) for k, v in quality.items()}}
    if "analytic_score" in bundle.capabilities:
        analytic = ScoreAlignment(ScoreAlignment.Config(score="analytic", max_images=args.images))
        row["analytic_per_job_s"] = pair(best(lambda: analytic.evaluate(context(model, bundle, aux, root / name)),
                                              args.repeats))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist_subset", "blockmnist", "gaussian_mixture"])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=ScoreAlignment.Config().denoiser_epochs)
    parser.add_argument("--width", type=int, default=ScoreAlignment.Config().denoiser_width)
    parser.add_argument("--sigma", type=float, default=ScoreAlignment.Config().sigma)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}, {platform.processor() or platform.machine()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            rows.append(measure(name, args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
