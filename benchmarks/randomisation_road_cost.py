"""Cost of the ``randomisation`` (eMPRT) and ``road`` evaluators against their floor, and against Quantus 0.6.0 per
pass where Quantus computes the same definition.

Run (CPU, one thread, a few minutes; Quantus optional: ``pip install quantus==0.6.0``)::

    python benchmarks/randomisation_road_cost.py [--images 500] [--repeats 3] [--train-epochs 1] [--threads 1] \\
        [--device cpu] [--json out.json]

Protocol:

* Data: the first ``--images`` test images of the bundled MNIST subset (1×28×28). Model: ``gibench_cnn`` with the
  softplus activation (the ``standard`` suite's backbone) behind its normalization layer, trained for
  ``--train-epochs`` epochs (``gibench.testing.trained_model``: Adam, lr 1e-3,
  batch 64, seed 0). Evaluation batch size 256, as the runner's.
* Evaluators at their defaults: ``randomisation`` (100 bins, no cascade) and ``road`` (9 fractions 0.1 … 0.9,
  noise 0.01), timed through ``evaluate`` (artifacts included).
* Floors, on the same images in the same batches: randomisation: 3 input-gradients per image (trained, fully
  re-initialized and top-layer re-initialized model, built before timing); road: 1 input-gradient and 1 clean forward
  per image plus the 3 × 9 forwards of the imputed batches (3·B rows per call, as the evaluator), on the unmodified
  images (no imputation). The ROAD imputation alone (``impute`` on the evaluator's masks, all orders and fractions)
  is timed separately: it is work no model pass can replace.
* Quantus (same model, images, labels, and gibench's Σ_c|g_c| pixel maps): ``EfficientMPRT`` (100 bins, bottom-up,
  a plain-gradient ``explain_func`` returning the pixel map; per image 2 input-gradients and 2 forwards, its
  prediction entropies) and ``ROAD`` (the same 9 percentages, noise 0.01, MoRF only: per image and percentage one
  SuperLU imputation and one forward; one batch holding every image, since Quantus scores only its first batch).
  Compared per image (eMPRT) and per image × order × fraction (ROAD).
* Every measurement is repeated ``--repeats`` times, floors, gibench and Quantus interleaved, and the minimum is
  reported (the machine may be shared). Imports and a first call are paid before timing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import gibench
from gibench.api.artifacts import batches
from gibench.api.saliency import input_gradient, pixel_scores
from gibench.data.tensors import make_bundle
from gibench.evaluators.randomisation import SEED_OFFSET, randomised_copy
from gibench.evaluators.road import ORDERS, impute, removal_ranks
from gibench.testing import make_eval_context, trained_model

BATCH = 256
FRACTIONS = tuple(round(0.1 * i, 10) for i in range(1, 10))


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def randomisation_floor(models: list[nn.Module], x, y, device) -> None:
    for sl in batches(len(y), BATCH):
        xb, yb = x[sl].to(device), y[sl].to(device)
        for m in models:
            input_gradient(m, xb, yb)


def road_floor(model: nn.Module, x, y, device) -> None:
    for sl in batches(len(y), BATCH):
        xb, yb = x[sl].to(device), y[sl].to(device)
        input_gradient(model, xb, yb)
        with torch.no_grad():
            model(xb)
            rows = xb.repeat(len(ORDERS), 1, 1, 1)
            for _ in FRACTIONS:
                model(rows)


def road_masks(model: nn.Module, x, y) -> list[tuple[slice, np.ndarray]]:
    """The evaluator's removal masks (every batch, order and fraction), for timing the imputation alone."""
    masks = []
    h, w = x.shape[2:]
    for sl in batches(len(y), BATCH):
        scores = pixel_scores(input_gradient(model, x[sl], y[sl]))
        perms = torch.stack([torch.from_numpy(np.random.default_rng([0, i]).permutation(h * w))
                             for i in range(sl.start, sl.stop)])
        ranks = removal_ranks(scores, perms)
        for f in FRACTIONS:
            k = int(np.floor(f * h * w + 0.5))
            masks.append((sl, (ranks < k).view(-1, h, w).numpy()))
    return masks


def quantus_runs(model: nn.Module, x, y, maps: np.ndarray) -> dict[str, Callable[[], object]]:
    try:
        import quantus
    except ImportError:
        return {}

    def explain(model, inputs, targets, **kwargs):
        xt, yt = torch.as_tensor(inputs), torch.as_tensor(targets)
        return pixel_scores(input_gradient(model, xt, yt)).unsqueeze(1).numpy()

    xn, yn = x.numpy(), y.numpy()

    def emprt():
        metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 100}, layer_order="bottom_up",
                                       disable_warnings=True)
        return metric(model=model, x_batch=xn, y_batch=yn, a_batch=None, explain_func=explain, device="cpu",
                      batch_size=BATCH)

    def road():
        metric = quantus.ROAD(percentages=[int(round(100 * f)) for f in FRACTIONS], noise=0.01, abs=False,
                              normalise=False, disable_warnings=True)
        return metric(model=model, x_batch=xn, y_batch=yn, a_batch=maps, device="cpu", batch_size=len(yn))

    return {"quantus.EfficientMPRT": emprt, "quantus.ROAD": road}


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    device = torch.device(args.device)
    full = gibench.load_dataset("mnist_subset")
    bundle = make_bundle("mnist_subset", full.train.x, full.train.y, full.test.x[:args.images],
                         full.test.y[:args.images], num_classes=10)
    model = trained_model(bundle, "gibench_cnn", {"act": "softplus"}, epochs=args.train_epochs, device=device)
    x, y = bundle.test.x, bundle.test.y
    ctx = make_eval_context(model, bundle, tempfile.mkdtemp(), batch_size=BATCH, device=device)
    rand_eval = gibench.create_evaluator("randomisation", max_images=0)
    road_eval = gibench.create_evaluator("road", max_images=0)
    models = [model, randomised_copy(model, SEED_OFFSET), randomised_copy(model, SEED_OFFSET, top=1)]
    cpu_model = copy.deepcopy(model).cpu()
    masks = road_masks(cpu_model, x, y)
    maps = pixel_scores(input_gradient(cpu_model, x, y)).unsqueeze(1).numpy()
    n, f = len(y), len(FRACTIONS)
    cases: dict[str, tuple[Callable[[], object], str, int]] = {
        "randomisation floor": (lambda: randomisation_floor(models, x, y, device), "3 fwd+bwd", n),
        "randomisation": (lambda: rand_eval.evaluate(ctx), "3 fwd+bwd", n),
        "road floor": (lambda: road_floor(model, x, y, device), f"1 fwd+bwd + {1 + 3 * f} fwd", n * 3 * f),
        "road": (lambda: road_eval.evaluate(ctx), f"1 fwd+bwd + {1 + 3 * f} fwd + {3 * f} solves", n * 3 * f),
        "road imputation alone": (lambda: [impute(x[sl].repeat(3, 1, 1, 1).numpy(), m) for sl, m in masks],
                                  f"{3 * f} solves", n * 3 * f),
    }
    if device.type == "cpu":
        for name, fn in quantus_runs(cpu_model, x, y, maps).items():
            units = n if "MPRT" in name else n * f
            cases[name] = (fn, "2 fwd+bwd + 2 fwd" if "MPRT" in name else f"{f} fwd + {f} solves", units)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn, _, _ in cases.values():  # imports and first calls
            fn()
        rows = []
        for name, (fn, passes, units) in cases.items():
            seconds = best(fn, args.repeats)
            rows.append({"case": name, "passes per image": passes, "seconds": seconds,
                         "ms per unit": 1e3 * seconds / units,
                         "unit": "image" if "MPRT" in name or name.startswith("randomisation") else
                         "image·order·fraction" if "quantus" not in name else "image·fraction"})
    by = {r["case"]: r for r in rows}
    for r in rows:
        base = "randomisation floor" if r["case"] in ("randomisation", "quantus.EfficientMPRT") else \
            "road floor" if r["case"] in ("road", "road imputation alone", "quantus.ROAD") else None
        r["ratio to floor"] = r["seconds"] / by[base]["seconds"] if base and "quantus" not in r["case"] else None
        if r["case"].startswith("quantus"):
            ours = by["randomisation" if "MPRT" in r["case"] else "road"]
            r["gibench per unit / quantus per unit"] = ours["ms per unit"] / r["ms per unit"]
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| case | passes per image | seconds | ratio to floor | ms per unit (unit) | gibench / Quantus per unit |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio to floor']:.2f}×" if r.get("ratio to floor") else ""
        versus = f"{r['gibench per unit / quantus per unit']:.2f}" if "gibench per unit / quantus per unit" in r else ""
        lines.append(f"| {r['case']} | {r['passes per image']} | {r['seconds']:.2f} | {ratio} "
                     f"| {r['ms per unit']:.3f} ({r['unit']}) | {versus} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.images} images, device {args.device}")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
